// Averages gradients across ranks before the optimizer step. Gradients live as views into a
// few flat buckets, so one all-reduce per bucket replaces one per tensor and nothing is copied;
// each bucket's all-reduce starts during backward, as soon as its last gradient is final.
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "launch/communicator.h"

namespace difftrain::launch {

// Owns the gradient storage of `parameters`: each parameter's .grad() becomes a view into a
// flat bucket (reverse registration order, since backward produces the last layers' gradients
// first; first bucket small so that communication can start early). A hook on each parameter's
// gradient accumulator tells the reducer when a gradient is final; bucket i is launched once
// all its gradients are final and buckets 0..i-1 are launched, so every rank launches the same
// buckets in the same order. Parameters that get no gradient in a step hold off their bucket
// (and the ones after it) until reduce(), which never hangs on them.
//
// Per optimizer step:
//   zero_grad();
//   for each micro-step: prepare_for_backward(/*sync=*/last micro-step); loss.backward();
//   reduce();  // then clip and step
// Without prepare_for_backward() reduce() launches every bucket itself (no overlap). Between
// prepare_for_backward(true) and reduce() issue no other collective on the same communicator:
// ranks may have launched different numbers of buckets by then (use a second communicator).
//
// Callers must zero gradients with zero_grad() here, not with the optimizer (LibTorch 2.x's
// optimizer zero_grad drops .grad() and would detach it from the buckets). Construct it after
// the model is on its device and destroy it before the parameters. Not thread-safe: one thread
// calls the methods; autograd may run the hooks on its own thread (CUDA), which launches there
// only when the communicator launches_from_any_thread().
// One bucket's gradient storage: the .grad() of `parameters` are consecutive views into `flat`,
// in this order.
struct GradientBucket {
  at::Tensor flat;
  std::vector<at::Tensor> parameters;
};

class GradientReducer {
 public:
  // Collective-free. bucket_bytes > 0. Parameters that do not require grad are ignored.
  GradientReducer(Communicator& communicator, const std::vector<at::Tensor>& parameters,
                  int64_t bucket_bytes);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Sets every gradient to zero (keeps the bucket views). Throws std::logic_error while buckets
  // launched by a sync backward have not been reduce()d.
  void zero_grad();

  // Call before each backward of a step. sync = false (gradient accumulation micro-steps):
  // gradients only accumulate, nothing is communicated. sync = true (the step's last backward):
  // buckets are launched during this backward as they fill. Throws std::logic_error when a
  // previous sync backward's buckets have not been reduce()d.
  // Collective (with sync = true): every rank calls this, in the same order.
  void prepare_for_backward(bool sync);

  // Collective: every rank calls this, in the same order.
  // Launches the buckets that backward did not, waits for all, and replaces every gradient
  // with its mean over ranks. A parameter that got no gradient on a rank in this step
  // contributes zeros. Throws CollectiveTimeout at the deadline.
  void reduce();

  size_t bucket_count() const { return buckets_.size(); }
  // The buckets, in launch order (an optimizer can update whole buckets instead of tensors).
  std::vector<GradientBucket> buckets() const;
  // Number of elements in each bucket, in launch order (for tests and logs).
  std::vector<int64_t> bucket_sizes() const;
  // Seconds from the last step's first bucket launch to the end of reduce(): the span of its
  // communication, overlapped or not.
  double last_reduce_seconds() const { return last_reduce_seconds_; }
  // Seconds the last reduce() spent after backward had ended (launching what backward did not,
  // waiting, averaging): the communication that backward did not hide.
  double last_wait_seconds() const { return last_wait_seconds_; }
  // Buckets the last step launched during backward (0 without prepare_for_backward(true)).
  size_t last_overlapped_buckets() const { return last_overlapped_buckets_; }

 private:
  class ReadyHook;
  // The parameters' gradient accumulator nodes and our hooks on them (defined in the .cpp,
  // where the node pointer type of this LibTorch is known).
  struct Accumulators;
  using Clock = std::chrono::steady_clock;
  struct Bucket {
    at::Tensor flat;                    // on the parameters' device
    at::Tensor staging;                 // host copy when the backend cannot read device memory
    std::vector<size_t> parameter_ids;  // indices into parameters_
    size_t pending = 0;                 // gradients not yet final in this sync backward
    std::unique_ptr<Work> work;         // in flight between launch and reduce()
  };

  void rebind_grads();
  // Makes parameter's .grad() its bucket view again, copying a replacement's values when
  // keep_values (else zeros).
  void adopt_stolen_grad(size_t parameter, bool keep_values);
  // Called by the hooks: the gradient of parameters_[parameter] is final for this backward.
  void mark_ready(size_t parameter);
  bool may_launch_here() const;
  void launch_ready_buckets();
  void launch(Bucket& bucket);
  void reset_step_state();

  Communicator& communicator_;
  std::vector<Bucket> buckets_;
  std::vector<at::Tensor> parameters_;  // the trainable ones, registration order
  std::vector<size_t> bucket_of_;       // parameter -> bucket index
  std::vector<int64_t> offset_of_;      // parameter -> element offset in its bucket
  std::vector<char> ready_;             // parameter -> final in this sync backward
  std::unique_ptr<Accumulators> accumulators_;  // keeps the hooks alive

  std::mutex mutex_;                 // hooks may run on autograd's device thread
  bool armed_ = false;               // a sync backward is expected or under way
  size_t next_launch_ = 0;           // buckets [0, next_launch_) are launched
  std::thread::id backward_thread_;  // the thread that called prepare_for_backward()
  Clock::time_point first_launch_;

  double last_reduce_seconds_ = 0.0;
  double last_wait_seconds_ = 0.0;
  size_t last_overlapped_buckets_ = 0;
};

// A view of flat[offset, offset + like.numel()) with like's sizes, and with like's strides when
// like is non-overlapping and dense (a channels-last weight keeps its layout inside a bucket, so
// its gradient comes out of autograd in the same layout and is added without a transpose);
// contiguous strides otherwise. `flat` is 1-D and contiguous.
at::Tensor bucket_view(const at::Tensor& flat, int64_t offset, const at::Tensor& like);

// `tensor`'s elements as a 1-D tensor in the order bucket_view(flat, offset, tensor) lays them
// out in `flat`: a view in memory order where tensor is non-overlapping and dense, else a copy
// in logical order.
at::Tensor memory_order_flat(const at::Tensor& tensor);

// The first bucket holds at most this many bytes: the last layers' gradients, ready first.
constexpr int64_t kFirstBucketBytes = 1 << 20;

}  // namespace difftrain::launch
