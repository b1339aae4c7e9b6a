// Averages gradients across ranks before the optimizer step. Gradients live as views into a
// few flat buckets, so one all-reduce per bucket replaces one per tensor and nothing is copied.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "launch/communicator.h"

namespace difftrain::launch {

// Owns the gradient storage of `parameters`: each parameter's .grad() becomes a view into a
// flat bucket (reverse registration order, since backward produces the last layers' gradients
// first; first bucket small so that communication can start early). Callers must zero
// gradients with zero_grad() here, not with the optimizer (LibTorch 2.x's optimizer zero_grad
// drops .grad() and would detach it from the buckets). Not thread-safe.
class GradientReducer {
 public:
  // Collective-free. bucket_bytes > 0. Parameters that do not require grad are ignored.
  GradientReducer(Communicator& communicator, const std::vector<at::Tensor>& parameters,
                  int64_t bucket_bytes);

  // Sets every gradient to zero (keeps the bucket views).
  void zero_grad();

  // Collective: every rank calls this, in the same order.
  // Replaces every gradient with its mean over ranks. A parameter that got no gradient on a
  // rank in this step contributes zeros. Throws CollectiveTimeout at the deadline.
  void reduce();

  size_t bucket_count() const { return buckets_.size(); }
  // Number of elements in each bucket, in launch order (for tests and logs).
  std::vector<int64_t> bucket_sizes() const;
  // Seconds the last reduce() spent (launch to last completion).
  double last_reduce_seconds() const { return last_reduce_seconds_; }

 private:
  struct Bucket {
    at::Tensor flat;     // on the parameters' device
    at::Tensor staging;  // host copy when the backend cannot read device memory
    std::vector<at::Tensor> parameters;
  };
  void rebind_grads();

  Communicator& communicator_;
  std::vector<Bucket> buckets_;
  double last_reduce_seconds_ = 0.0;
};

// The first bucket holds at most this many bytes: the last layers' gradients, ready first.
constexpr int64_t kFirstBucketBytes = 1 << 20;

}  // namespace difftrain::launch
