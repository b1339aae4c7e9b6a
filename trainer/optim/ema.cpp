// EMA of model weights with warm-up: a flat shadow updated by one lerp with a device weight.
#include "trainer/optim/ema.h"

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "launch/gradient_reducer.h"

namespace difftrain::trainer {
namespace {

// Each tensor as a 1-D tensor in memory order (a view where it is dense: channels-last weights
// are not transposed), the order in which the shadow views lay them out.
std::vector<at::Tensor> flattened(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> flat;
  flat.reserve(tensors.size());
  for (const auto& t : tensors) flat.push_back(launch::memory_order_flat(t.detach()));
  return flat;
}

}  // namespace

double ema_power_gamma(double std) {
  const auto variance = [](double gamma) {
    return (gamma + 1) / ((gamma + 2) * (gamma + 2) * (gamma + 3));
  };  // decreasing for gamma >= 0
  if (!(std > 0) || std * std > variance(0.0)) {
    throw std::invalid_argument("EMA std " + std::to_string(std) + " is not in (0, 0.2886]");
  }
  double lo = 0.0, hi = 1.0;
  while (variance(hi) > std * std) hi *= 2;
  for (int i = 0; i < 200 && hi - lo > 1e-12 * hi; ++i) {
    const double mid = 0.5 * (lo + hi);
    (variance(mid) > std * std ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

Ema::Ema(const torch::nn::Module& model, double decay, double power_std) : decay_(decay) {
  if (power_std > 0) power_gamma_ = ema_power_gamma(power_std);
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> params;
  for (const auto& item : model.named_parameters()) {
    names_.push_back(item.key());
    params.push_back(item.value());
  }
  if (params.empty()) throw std::logic_error("Ema: the model has no parameters");
  for (const auto& p : params) {
    if (p.scalar_type() != params.front().scalar_type() || p.device() != params.front().device()) {
      throw std::logic_error("Ema: parameters of different dtypes or devices");
    }
  }
  shadow_flat_ = at::cat(flattened(params));
  staging_flat_ = at::empty_like(shadow_flat_);
  weight_ = at::zeros({}, shadow_flat_.options());
  int64_t offset = 0;
  for (const auto& p : params) {
    shadow_params_.push_back(launch::bucket_view(shadow_flat_, offset, p));
    offset += p.numel();
  }
  for (const auto& item : model.named_buffers()) {
    buffer_names_.push_back(item.key());
    shadow_buffers_.push_back(item.value().detach().clone());
  }
}

double Ema::decay_for(int64_t update_number) const {
  const double n = static_cast<double>(update_number);
  if (power_gamma_ >= 0) return std::pow(1.0 - 1.0 / n, power_gamma_ + 1.0);
  return std::min(decay_, (1.0 + n) / (10.0 + n));
}

void Ema::update(const torch::nn::Module& model) {
  begin_update();
  apply_update(model);
}

void Ema::begin_update() {
  ++updates_;
  weight_.fill_(1.0 - decay_for(updates_));  // a kernel argument: no copy, no wait
}

void Ema::apply_update(const torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  const std::vector<at::Tensor> params = model.parameters();
  for (size_t k = 0; k < params.size(); ++k) {
    // The flat copy below is in memory order: a weight whose layout changed (channels-last set
    // after this Ema was made) would be averaged into the wrong shadow elements.
    if (params[k].is_non_overlapping_and_dense() &&
        params[k].strides() != shadow_params_[k].strides()) {
      throw std::logic_error("Ema: parameter " + names_[k] +
                             " changed its memory layout after the Ema was made");
    }
  }
  at::cat_out(staging_flat_, flattened(params));
  shadow_flat_.lerp_(staging_flat_, weight_);
  size_t i = 0;
  for (const auto& b : model.buffers()) shadow_buffers_[i++].copy_(b);
}

void Ema::copy_to(torch::nn::Module& model) const {
  torch::NoGradGuard no_grad;
  size_t i = 0;
  for (auto& p : model.parameters()) p.copy_(shadow_params_[i++]);
  i = 0;
  for (auto& b : model.buffers()) b.copy_(shadow_buffers_[i++]);
}

void Ema::save(torch::serialize::OutputArchive& archive) const {
  archive.write("updates", c10::IValue(updates_));
  for (size_t i = 0; i < names_.size(); ++i) archive.write("param." + names_[i], shadow_params_[i]);
  for (size_t i = 0; i < buffer_names_.size(); ++i) {
    archive.write("buffer." + buffer_names_[i], shadow_buffers_[i], /*is_buffer=*/true);
  }
}

void Ema::load(torch::serialize::InputArchive& archive) {
  torch::NoGradGuard no_grad;
  c10::IValue updates;
  archive.read("updates", updates);
  updates_ = updates.toInt();
  for (size_t i = 0; i < names_.size(); ++i) {
    at::Tensor value;
    archive.read("param." + names_[i], value);
    shadow_params_[i].copy_(value);
  }
  for (size_t i = 0; i < buffer_names_.size(); ++i) {
    at::Tensor value;
    archive.read("buffer." + buffer_names_[i], value, /*is_buffer=*/true);
    shadow_buffers_[i].copy_(value);
  }
}

bool Ema::all_finite() const {
  if (!torch::isfinite(shadow_flat_).all().item<bool>()) return false;
  for (const auto& b : shadow_buffers_) {
    if (b.is_floating_point() && !torch::isfinite(b).all().item<bool>()) return false;
  }
  return true;
}

}  // namespace difftrain::trainer
