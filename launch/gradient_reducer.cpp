// Bucketed gradient averaging: gradients are views into flat buffers; one all-reduce per bucket,
// launched from a hook on the gradient accumulators as soon as a bucket's gradients are final.
#include "launch/gradient_reducer.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace difftrain::launch {
namespace {

double seconds_between(std::chrono::steady_clock::time_point from,
                       std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

}  // namespace

// Runs after a parameter's AccumulateGrad node has added this backward's gradient into .grad()
// (the same mechanism as PyTorch's own DDP reducer).
class GradientReducer::ReadyHook : public torch::autograd::FunctionPostHook {
 public:
  ReadyHook(GradientReducer* reducer, size_t parameter)
      : reducer_(reducer), parameter_(parameter) {}
  torch::autograd::variable_list operator()(
      const torch::autograd::variable_list& outputs,
      const torch::autograd::variable_list& /*inputs*/) override {
    reducer_->mark_ready(parameter_);
    return outputs;
  }

 private:
  GradientReducer* reducer_;
  size_t parameter_;
};

struct GradientReducer::Accumulators {
  std::vector<decltype(torch::autograd::impl::grad_accumulator(at::Tensor()))> nodes;
  std::vector<uintptr_t> hook_keys;
};

GradientReducer::GradientReducer(Communicator& communicator,
                                 const std::vector<at::Tensor>& parameters, int64_t bucket_bytes)
    : communicator_(communicator) {
  if (bucket_bytes <= 0) {
    throw std::logic_error("GradientReducer: bucket of " + std::to_string(bucket_bytes) +
                           " bytes, want > 0");
  }
  for (const auto& p : parameters) {
    if (p.requires_grad()) parameters_.push_back(p);
  }
  // Reverse registration order: backward produces the output layers' gradients first.
  std::vector<std::vector<size_t>> groups;
  int64_t group_bytes = 0;
  int64_t limit = std::min(bucket_bytes, kFirstBucketBytes);
  for (size_t k = parameters_.size(); k-- > 0;) {
    const at::Tensor& p = parameters_[k];
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    const bool same_kind = !groups.empty() &&
                           parameters_[groups.back().front()].scalar_type() == p.scalar_type() &&
                           parameters_[groups.back().front()].device() == p.device();
    if (groups.empty() || !same_kind || group_bytes + bytes > limit) {
      if (!groups.empty()) limit = bucket_bytes;
      groups.emplace_back();
      group_bytes = 0;
    }
    groups.back().push_back(k);
    group_bytes += bytes;
  }
  bucket_of_.resize(parameters_.size());
  offset_of_.resize(parameters_.size());
  ready_.assign(parameters_.size(), 0);
  for (auto& group : groups) {
    Bucket bucket;
    int64_t numel = 0;
    for (size_t k : group) {
      bucket_of_[k] = buckets_.size();
      offset_of_[k] = numel;
      numel += parameters_[k].numel();
    }
    const at::Tensor& first = parameters_[group.front()];
    bucket.flat = at::zeros({numel}, first.options().requires_grad(false));
    if (bucket.flat.is_cuda() && communicator_.backend() == "mpi") {
      bucket.staging =
          at::empty({numel}, bucket.flat.options().device(at::kCPU).pinned_memory(true));
    }
    bucket.parameter_ids = std::move(group);
    buckets_.push_back(std::move(bucket));
  }
  rebind_grads();
  reset_step_state();

  // The accumulator node of a leaf is owned by the graphs that use it and recreated when none
  // does; holding it keeps our hook on the node every future graph will use.
  accumulators_ = std::make_unique<Accumulators>();
  for (size_t k = 0; k < parameters_.size(); ++k) {
    auto accumulator = torch::autograd::impl::grad_accumulator(parameters_[k]);
    if (!accumulator) {
      throw std::runtime_error("GradientReducer: parameter " + std::to_string(k) +
                               " is not a leaf tensor; pass the model's parameters");
    }
    accumulators_->hook_keys.push_back(
        accumulator->add_post_hook(std::make_unique<ReadyHook>(this, k)));
    accumulators_->nodes.push_back(std::move(accumulator));
  }
}

GradientReducer::~GradientReducer() {
  // The accumulators may outlive us (a graph still holds one); they must not call into a
  // destroyed reducer.
  for (size_t k = 0; k < accumulators_->nodes.size(); ++k) {
    accumulators_->nodes[k]->del_post_hook(accumulators_->hook_keys[k]);
  }
}

std::vector<GradientBucket> GradientReducer::buckets() const {
  std::vector<GradientBucket> result;
  for (const auto& bucket : buckets_) {
    GradientBucket view{bucket.flat, {}};
    for (size_t k : bucket.parameter_ids) view.parameters.push_back(parameters_[k]);
    result.push_back(std::move(view));
  }
  return result;
}

void GradientReducer::rebind_grads() {
  for (auto& bucket : buckets_) {
    for (size_t k : bucket.parameter_ids) {
      at::Tensor& p = parameters_[k];
      at::Tensor view = bucket_view(bucket.flat, offset_of_[k], p);
      // Keep the existing gradient's values when the caller had one.
      if (p.grad().defined() && !p.grad().is_alias_of(bucket.flat)) view.copy_(p.grad());
      p.mutable_grad() = view;
    }
  }
}

void GradientReducer::adopt_stolen_grad(size_t parameter, bool keep_values) {
  // Autograd steals a freshly produced gradient instead of accumulating into the view when
  // .grad() was undefined (someone reset it); fold it back into the bucket.
  at::Tensor& p = parameters_[parameter];
  const Bucket& bucket = buckets_[bucket_of_[parameter]];
  if (p.grad().defined() && p.grad().is_alias_of(bucket.flat)) return;
  at::Tensor view = bucket_view(bucket.flat, offset_of_[parameter], p);
  if (keep_values && p.grad().defined()) {
    view.copy_(p.grad());
  } else {
    view.zero_();
  }
  p.mutable_grad() = view;
}

void GradientReducer::zero_grad() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (next_launch_ > 0) {
    throw std::logic_error(
        "GradientReducer::zero_grad: buckets of the last sync backward are "
        "still in flight; call reduce() first");
  }
  reset_step_state();
  for (auto& bucket : buckets_) bucket.flat.zero_();
  // Something (an optimizer's zero_grad, a user) may have replaced a .grad(); re-attach views.
  for (size_t k = 0; k < parameters_.size(); ++k) adopt_stolen_grad(k, /*keep_values=*/false);
}

void GradientReducer::prepare_for_backward(bool sync) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (next_launch_ > 0) {
    throw std::logic_error(
        "GradientReducer::prepare_for_backward: buckets of the last sync "
        "backward are still in flight; call reduce() before the next step");
  }
  reset_step_state();
  armed_ = sync;
  backward_thread_ = std::this_thread::get_id();
}

void GradientReducer::reset_step_state() {
  armed_ = false;
  next_launch_ = 0;
  std::fill(ready_.begin(), ready_.end(), 0);
  for (auto& bucket : buckets_) {
    bucket.pending = bucket.parameter_ids.size();
    bucket.work.reset();
  }
}

bool GradientReducer::may_launch_here() const {
  return communicator_.world_size() > 1 && (communicator_.launches_from_any_thread() ||
                                            std::this_thread::get_id() == backward_thread_);
}

void GradientReducer::mark_ready(size_t parameter) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_) return;  // an accumulation micro-step, or a backward outside the training step
  if (ready_[parameter]) {
    throw std::logic_error(
        "GradientReducer: parameter " + std::to_string(parameter) +
        " received a second gradient in one sync backward (backward called twice between "
        "prepare_for_backward(true) and reduce()?); its bucket may already be on the wire");
  }
  ready_[parameter] = 1;
  adopt_stolen_grad(parameter, /*keep_values=*/true);
  Bucket& bucket = buckets_[bucket_of_[parameter]];
  --bucket.pending;
  if (!may_launch_here()) return;
  // Let in-flight buckets progress (MPI moves data only inside MPI calls), then launch.
  for (size_t i = 0; i < next_launch_; ++i) buckets_[i].work->is_completed();
  launch_ready_buckets();
}

void GradientReducer::launch_ready_buckets() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    if (next_launch_ == 0) first_launch_ = Clock::now();
    launch(buckets_[next_launch_]);
    ++next_launch_;
  }
}

// Collective: every rank calls this, in the same order (bucket index order).
void GradientReducer::launch(Bucket& bucket) {
  if (bucket.staging.defined()) {
    bucket.staging.copy_(bucket.flat);
    bucket.work = communicator_.all_reduce_sum_async(bucket.staging);
  } else {
    bucket.work = communicator_.all_reduce_sum_async(bucket.flat);
  }
}

void GradientReducer::reduce() {
  const auto start = Clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  const size_t overlapped = next_launch_;
  if (overlapped == 0) first_launch_ = start;
  // Gradients that did not pass through a hook (unused parameters, or no
  // prepare_for_backward) may still have been stolen by autograd.
  for (size_t k = 0; k < parameters_.size(); ++k) {
    if (!ready_[k]) adopt_stolen_grad(k, /*keep_values=*/true);
  }
  const int world = communicator_.world_size();
  if (world > 1) {
    for (size_t i = next_launch_; i < buckets_.size(); ++i) launch(buckets_[i]);
    next_launch_ = buckets_.size();
    for (auto& bucket : buckets_) {
      bucket.work->wait();
      if (bucket.staging.defined()) bucket.flat.copy_(bucket.staging);
      bucket.flat.div_(static_cast<double>(world));
    }
  }
  reset_step_state();
  const auto end = Clock::now();
  last_wait_seconds_ = seconds_between(start, end);
  last_reduce_seconds_ = seconds_between(first_launch_, end);
  last_overlapped_buckets_ = overlapped;
}

at::Tensor bucket_view(const at::Tensor& flat, int64_t offset, const at::Tensor& like) {
  const at::Tensor slice = flat.narrow(0, offset, like.numel());
  if (!like.is_non_overlapping_and_dense()) return slice.view(like.sizes());
  return slice.as_strided(like.sizes(), like.strides());
}

at::Tensor memory_order_flat(const at::Tensor& tensor) {
  if (!tensor.is_non_overlapping_and_dense()) return tensor.reshape({-1});
  return tensor.as_strided({tensor.numel()}, {1});
}

std::vector<int64_t> GradientReducer::bucket_sizes() const {
  std::vector<int64_t> sizes;
  for (const auto& bucket : buckets_) sizes.push_back(bucket.flat.numel());
  return sizes;
}

}  // namespace difftrain::launch
