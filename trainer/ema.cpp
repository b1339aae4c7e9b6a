// EMA of model weights with warm-up, updated with multi-tensor (foreach) operations.
#include "trainer/ema.h"

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <algorithm>

namespace difftrain::trainer {

Ema::Ema(const torch::nn::Module& model, double decay) : decay_(decay) {
  torch::NoGradGuard no_grad;
  for (const auto& item : model.named_parameters()) {
    names_.push_back(item.key());
    shadow_params_.push_back(item.value().detach().clone());
  }
  for (const auto& item : model.named_buffers()) {
    buffer_names_.push_back(item.key());
    shadow_buffers_.push_back(item.value().detach().clone());
  }
}

double Ema::decay_for(int64_t update_number) const {
  const double n = static_cast<double>(update_number);
  return std::min(decay_, (1.0 + n) / (10.0 + n));
}

void Ema::update(const torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  const double d = decay_for(updates_ + 1);
  std::vector<at::Tensor> params;
  params.reserve(shadow_params_.size());
  for (const auto& p : model.parameters()) params.push_back(p.detach());
  at::_foreach_mul_(shadow_params_, d);
  at::_foreach_add_(shadow_params_, params, 1.0 - d);
  size_t i = 0;
  for (const auto& b : model.buffers()) shadow_buffers_[i++].copy_(b);
  ++updates_;
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

}  // namespace difftrain::trainer
