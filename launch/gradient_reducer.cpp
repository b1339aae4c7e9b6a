// Bucketed gradient averaging: gradients are views into flat buffers; one all-reduce per bucket.
#include "launch/gradient_reducer.h"

#include <ATen/ATen.h>

#include <chrono>
#include <memory>

namespace difftrain::launch {

GradientReducer::GradientReducer(Communicator& communicator,
                                 const std::vector<at::Tensor>& parameters, int64_t bucket_bytes)
    : communicator_(communicator) {
  if (bucket_bytes <= 0) {
    throw std::runtime_error("dist.bucket_mb must be > 0, got " +
                             std::to_string(bucket_bytes / 1e6) + " MB");
  }
  std::vector<at::Tensor> trainable;
  for (const auto& p : parameters) {
    if (p.requires_grad()) trainable.push_back(p);
  }
  // Reverse registration order: backward produces the output layers' gradients first.
  std::vector<std::vector<at::Tensor>> groups;
  int64_t group_bytes = 0;
  int64_t limit = std::min(bucket_bytes, kFirstBucketBytes);
  for (auto it = trainable.rbegin(); it != trainable.rend(); ++it) {
    const int64_t bytes = it->numel() * it->element_size();
    const bool same_kind = !groups.empty() && !groups.back().empty() &&
                           groups.back().front().scalar_type() == it->scalar_type() &&
                           groups.back().front().device() == it->device();
    if (groups.empty() || !same_kind || group_bytes + bytes > limit) {
      if (!groups.empty()) limit = bucket_bytes;
      groups.emplace_back();
      group_bytes = 0;
    }
    groups.back().push_back(*it);
    group_bytes += bytes;
  }
  for (auto& group : groups) {
    int64_t numel = 0;
    for (const auto& p : group) numel += p.numel();
    Bucket bucket;
    bucket.flat = at::zeros({numel}, group.front().options().requires_grad(false));
    if (bucket.flat.is_cuda() && communicator_.backend() == "mpi") {
      bucket.staging = at::empty({numel}, bucket.flat.options().device(at::kCPU).pinned_memory(true));
    }
    bucket.parameters = std::move(group);
    buckets_.push_back(std::move(bucket));
  }
  rebind_grads();
}

void GradientReducer::rebind_grads() {
  for (auto& bucket : buckets_) {
    int64_t offset = 0;
    for (auto& p : bucket.parameters) {
      at::Tensor view = bucket.flat.narrow(0, offset, p.numel()).view(p.sizes());
      // Keep the existing gradient's values when the caller had one.
      if (p.grad().defined() && !p.grad().is_alias_of(bucket.flat)) view.copy_(p.grad());
      p.mutable_grad() = view;
      offset += p.numel();
    }
  }
}

void GradientReducer::zero_grad() {
  for (auto& bucket : buckets_) bucket.flat.zero_();
  // Something (an optimizer's zero_grad, a user) may have replaced a .grad(); re-attach views.
  for (auto& bucket : buckets_) {
    for (auto& p : bucket.parameters) {
      if (!p.grad().defined() || !p.grad().is_alias_of(bucket.flat)) {
        rebind_grads();
        return;
      }
    }
  }
}

void GradientReducer::reduce() {
  const auto start = std::chrono::steady_clock::now();
  // Autograd may have stolen a freshly produced gradient instead of accumulating into the view
  // (it does when .grad() was undefined); fold such gradients back into the buckets.
  for (auto& bucket : buckets_) {
    for (auto& p : bucket.parameters) {
      if (p.grad().defined() && !p.grad().is_alias_of(bucket.flat)) {
        rebind_grads();
        break;
      }
    }
  }
  const int world = communicator_.world_size();
  if (world > 1) {
    std::vector<std::unique_ptr<Work>> pending;
    pending.reserve(buckets_.size());
    for (auto& bucket : buckets_) {
      if (bucket.staging.defined()) {
        bucket.staging.copy_(bucket.flat);
        pending.push_back(communicator_.all_reduce_sum_async(bucket.staging));
      } else {
        pending.push_back(communicator_.all_reduce_sum_async(bucket.flat));
      }
    }
    for (size_t i = 0; i < buckets_.size(); ++i) {
      pending[i]->wait();
      auto& bucket = buckets_[i];
      if (bucket.staging.defined()) bucket.flat.copy_(bucket.staging);
      bucket.flat.div_(static_cast<double>(world));
    }
  }
  last_reduce_seconds_ =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::vector<int64_t> GradientReducer::bucket_sizes() const {
  std::vector<int64_t> sizes;
  for (const auto& bucket : buckets_) sizes.push_back(bucket.flat.numel());
  return sizes;
}

}  // namespace difftrain::launch
