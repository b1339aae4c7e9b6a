// AdamW with device-side clipping and non-finite skip over flat buckets.
#include "trainer/optim/bucket_adamw.h"

#include <ATen/ATen.h>
#include <torch/optim/adamw.h>
#include <torch/serialize/archive.h>

#include <limits>
#include <stdexcept>
#include <string>

namespace difftrain::trainer {
namespace {

// torch::optim's state map is keyed by the parameter's TensorImpl address.
void* state_key(const at::Tensor& parameter) { return parameter.unsafeGetTensorImpl(); }

torch::optim::AdamWOptions shell_options(const AdamWSettings& settings, double lr) {
  return torch::optim::AdamWOptions(lr)
      .betas(std::make_tuple(settings.beta1, settings.beta2))
      .eps(settings.eps)
      .weight_decay(settings.weight_decay);
}

}  // namespace

BucketAdamW::BucketAdamW(const std::vector<at::Tensor>& parameters,
                         const std::vector<launch::GradientBucket>& buckets,
                         const AdamWSettings& settings)
    : parameters_(parameters), places_(parameters.size()), settings_(settings) {
  if (buckets.empty()) throw std::logic_error("BucketAdamW: no gradient buckets");
  for (const auto& source : buckets) {
    Bucket bucket;
    bucket.grad = source.flat;
    bucket.exp_avg = at::zeros_like(source.flat);
    bucket.exp_avg_sq = at::zeros_like(source.flat);
    bucket.next_exp_avg = at::zeros_like(source.flat);
    bucket.next_exp_avg_sq = at::zeros_like(source.flat);
    bucket.update = at::zeros_like(source.flat);
    bucket.parameters = source.parameters;
    int64_t offset = 0;
    for (const auto& p : source.parameters) {
      bucket.update_views.push_back(launch::bucket_view(bucket.update, offset, p));
      size_t index = 0;
      while (index < parameters_.size() && !parameters_[index].is_same(p)) ++index;
      if (index == parameters_.size()) {
        throw std::logic_error("BucketAdamW: a bucket's parameter is not among the parameters");
      }
      places_[index] = {static_cast<int64_t>(buckets_.size()), offset};
      offset += p.numel();
    }
    if (offset != source.flat.numel()) {
      throw std::logic_error("BucketAdamW: a bucket's parameters do not fill its flat gradient");
    }
    buckets_.push_back(std::move(bucket));
  }
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const Place& place = places_[i];
    if (place.bucket < 0) continue;
    const at::Tensor& p = parameters_[i];
    gradient_views_.push_back(
        launch::bucket_view(buckets_[static_cast<size_t>(place.bucket)].grad, place.offset, p));
  }
  const at::TensorOptions scalar = buckets_.front().grad.options().dtype(at::kDouble);
  step_ = at::zeros({}, scalar);
  lr_ = at::zeros({}, scalar);
}

void BucketAdamW::set_learning_rate(double lr) {
  lr_.fill_(lr);  // a kernel argument: no copy, no wait
}

at::Tensor BucketAdamW::step(double lr) {
  set_learning_rate(lr);
  return step();
}

at::Tensor BucketAdamW::step() {
  at::NoGradGuard no_grad;
  const AdamWSettings& s = settings_;
  // Global norm as clip_grad_norm_ computes it, the norm of the per-parameter norms in
  // parameter order, so that it does not depend on the bucket layout.
  const at::Tensor norm = at::stack(at::_foreach_norm(gradient_views_)).norm();
  const at::Tensor finite_norm = at::isfinite(norm);
  // Gradients become zero when the norm is not finite; otherwise they are scaled by
  // clip_grad_norm_'s min(1, max / (norm + 1e-6)).
  const at::Tensor scale =
      s.max_grad_norm > 0
          ? at::where(finite_norm, (s.max_grad_norm / (norm.to(at::kDouble) + 1e-6)).clamp_max(1.0),
                      at::zeros({}, norm.options().dtype(at::kDouble)))
          : finite_norm.to(at::kDouble);

  // The step is first computed aside: the next moments and the update, with the bias
  // corrections of the step count it would reach.
  const at::Tensor taken = (step_ + 1.0).clamp_min(1.0);
  const at::Tensor bias1 = 1.0 - at::pow(s.beta1, taken);
  const at::Tensor inv_sqrt_bias2 = (1.0 - at::pow(s.beta2, taken)).rsqrt();
  at::Tensor all_finite = finite_norm;
  for (auto& b : buckets_) {
    b.grad.nan_to_num_(0.0, 0.0, 0.0).mul_(scale);
    at::mul_out(b.next_exp_avg, b.exp_avg, s.beta1).add_(b.grad, 1.0 - s.beta1);
    at::mul_out(b.next_exp_avg_sq, b.exp_avg_sq, s.beta2).addcmul_(b.grad, b.grad, 1.0 - s.beta2);
    // update = m / bias1 / (sqrt(v) / sqrt(bias2) + eps) + weight_decay * p, times lr.
    at::sqrt_out(b.update, b.next_exp_avg_sq).mul_(inv_sqrt_bias2).add_(s.eps);
    at::div_out(b.update, b.next_exp_avg, b.update).div_(bias1);
    if (s.weight_decay != 0.0) at::_foreach_add_(b.update_views, b.parameters, s.weight_decay);
    b.update.mul_(lr_);
    // The new weights p - update stay finite when max|p| + max|update| does.
    const at::Tensor weight_bound =
        at::stack(at::_foreach_norm(b.parameters, std::numeric_limits<double>::infinity())).max() +
        at::linalg_vector_norm(b.update, std::numeric_limits<double>::infinity());
    all_finite = all_finite.logical_and(at::isfinite(b.next_exp_avg).all())
                     .logical_and(at::isfinite(b.next_exp_avg_sq).all())
                     .logical_and(at::isfinite(weight_bound));
  }
  // Taken only when the gradient norm, the moments and the update are all finite; otherwise
  // parameters, moments and the step count stay as they were (a learning rate that overflows
  // the update is caught here, before it reaches the weights).
  const at::Tensor skip = all_finite.logical_not();
  for (auto& b : buckets_) {
    b.exp_avg.copy_(at::where(all_finite, b.next_exp_avg, b.exp_avg));
    b.exp_avg_sq.copy_(at::where(all_finite, b.next_exp_avg_sq, b.exp_avg_sq));
    b.update.masked_fill_(skip, 0.0);
    at::_foreach_sub_(b.parameters, b.update_views);
  }
  step_.add_(all_finite.to(at::kDouble));
  return at::stack({norm.to(at::kDouble), skip.to(at::kDouble)});
}

int64_t BucketAdamW::step_count() const { return static_cast<int64_t>(step_.item<double>()); }

bool BucketAdamW::all_finite() const {
  for (const auto& b : buckets_) {
    if (!at::isfinite(b.exp_avg).all().item<bool>()) return false;
    if (!at::isfinite(b.exp_avg_sq).all().item<bool>()) return false;
  }
  return true;
}

void BucketAdamW::save(torch::serialize::OutputArchive& archive) const {
  at::NoGradGuard no_grad;
  torch::optim::AdamW shell(parameters_, shell_options(settings_, lr_.item<double>()));
  const int64_t steps = step_count();
  auto& state = shell.state();
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const Place& place = places_[i];
    if (place.bucket < 0 || steps == 0) continue;  // AdamW has no state before a first step
    const Bucket& b = buckets_[static_cast<size_t>(place.bucket)];
    const at::Tensor& p = parameters_[i];
    auto entry = std::make_unique<torch::optim::AdamWParamState>();
    entry->step(steps);
    // Saved contiguous whatever the parameter's layout: the file does not depend on it.
    entry->exp_avg(launch::bucket_view(b.exp_avg, place.offset, p).contiguous());
    entry->exp_avg_sq(launch::bucket_view(b.exp_avg_sq, place.offset, p).contiguous());
    state[state_key(p)] = std::move(entry);
  }
  shell.save(archive);
}

void BucketAdamW::load(torch::serialize::InputArchive& archive) {
  at::NoGradGuard no_grad;
  torch::optim::AdamW shell(parameters_, shell_options(settings_, 0.0));
  shell.load(archive);
  auto& state = shell.state();
  int64_t steps = 0;
  for (auto& b : buckets_) {
    b.exp_avg.zero_();
    b.exp_avg_sq.zero_();
  }
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const Place& place = places_[i];
    const auto found = state.find(state_key(parameters_[i]));
    if (place.bucket < 0 || found == state.end()) continue;
    const auto& entry = static_cast<const torch::optim::AdamWParamState&>(*found->second);
    const Bucket& b = buckets_[static_cast<size_t>(place.bucket)];
    const at::Tensor& p = parameters_[i];
    launch::bucket_view(b.exp_avg, place.offset, p).copy_(entry.exp_avg().reshape(p.sizes()));
    launch::bucket_view(b.exp_avg_sq, place.offset, p).copy_(entry.exp_avg_sq().reshape(p.sizes()));
    steps = std::max(steps, entry.step());
  }
  step_.fill_(static_cast<double>(steps));
}

std::vector<launch::GradientBucket> single_gradient_bucket(
    const std::vector<at::Tensor>& parameters) {
  launch::GradientBucket bucket;
  int64_t numel = 0;
  for (const auto& p : parameters) {
    if (!p.requires_grad()) continue;
    bucket.parameters.push_back(p);
    numel += p.numel();
  }
  if (bucket.parameters.empty()) throw std::logic_error("single_gradient_bucket: no parameters");
  bucket.flat = at::zeros({numel}, bucket.parameters.front().options().requires_grad(false));
  int64_t offset = 0;
  for (auto& p : bucket.parameters) {
    p.mutable_grad() = launch::bucket_view(bucket.flat, offset, p);
    offset += p.numel();
  }
  return {bucket};
}

}  // namespace difftrain::trainer
