// An in-process Communicator for unit tests: pretends to be one of `world_size` identical
// ranks (a sum multiplies by world_size) and records every all-reduce it is asked for. Like a
// real transport it reads the buffer when the collective is launched, so a bucket launched
// before its gradients were final comes back wrong.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <thread>
#include <vector>

#include "launch/communicator.h"

namespace difftrain::launch {

class FakeCommunicator : public Communicator {
 public:
  struct Launch {
    int64_t numel;
    std::thread::id thread;
  };

  explicit FakeCommunicator(int world_size, bool any_thread = false)
      : world_size_(world_size), any_thread_(any_thread) {}

  std::unique_ptr<Work> all_reduce_sum_async(const at::Tensor& tensor) override {
    launches.push_back({tensor.numel(), std::this_thread::get_id()});
    return std::make_unique<FakeWork>(tensor, world_size_, &waits);
  }
  void broadcast(const at::Tensor&, int) override {}
  void barrier() override {}
  int rank() const override { return 0; }
  int world_size() const override { return world_size_; }
  std::string backend() const override { return "fake"; }
  bool launches_from_any_thread() const override { return any_thread_; }

  std::vector<Launch> launches;
  int waits = 0;

 private:
  class FakeWork : public Work {
   public:
    FakeWork(at::Tensor tensor, int world_size, int* waits)
        : tensor_(std::move(tensor)),
          sent_(tensor_.clone()),
          world_size_(world_size),
          waits_(waits) {}
    void wait() override {
      if (done_) return;
      tensor_.copy_(sent_ * world_size_);  // the sum over world_size ranks sending the same
      ++*waits_;
      done_ = true;
    }
    bool is_completed() override { return done_; }

   private:
    at::Tensor tensor_;
    at::Tensor sent_;  // the buffer as it was at launch
    int world_size_;
    int* waits_;
    bool done_ = false;
  };

  int world_size_;
  bool any_thread_;
};

}  // namespace difftrain::launch
