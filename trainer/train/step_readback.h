// Reads each training step's small device results (loss, gradient norm, skip flag) back to the
// host without making the step wait for the device: the values are copied asynchronously into
// page-locked memory and handed to their callback a step later, when the copy has long landed.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <deque>
#include <functional>
#include <memory>

namespace c10 {
struct Event;
}

namespace difftrain::trainer {

class StepReadback {
 public:
  // Called on the training thread with the pushed values, in push order.
  using Finish = std::function<void(const double* values)>;

  // lag: how many pushes may be in flight before the oldest is finished. For CPU tensors the
  // copy is immediate, but finishing follows the same lag so both paths behave alike.
  explicit StepReadback(size_t lag = 1);
  ~StepReadback();  // drops unfinished entries without calling them
  StepReadback(const StepReadback&) = delete;
  StepReadback& operator=(const StepReadback&) = delete;

  // Starts copying `values` (a 1-D float64 tensor on the device) to the host, then finishes the
  // entries beyond `lag`, oldest first (waiting for their copies where still running). An
  // exception from a Finish propagates; that entry is gone, later ones stay.
  void push(const at::Tensor& values, Finish finish);
  // Finishes every entry (waits for the device).
  void drain();
  size_t pending() const { return pending_.size(); }

 private:
  struct Entry;
  void finish_oldest();

  size_t lag_;
  std::deque<std::unique_ptr<Entry>> pending_;
};

}  // namespace difftrain::trainer
