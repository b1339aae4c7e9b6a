// Exponential moving average of a model's weights, the weights `sample` uses by default.
#pragma once

#include <torch/nn/module.h>
#include <torch/serialize/archive.h>

#include <vector>

namespace difftrain::trainer {

// Keeps a shadow copy of every parameter and buffer on the model's device. After update number
// n (n = 1 after the first optimizer step) the decay used is min(decay, (1 + n) / (10 + n)), the
// usual warm-up, so that early EMA weights are not dominated by the random initialisation; or,
// with a power_std > 0, EDM2's power-function EMA (Karras et al. 2024): decay (1 - 1/n)^(gamma+1),
// an average of all weights so far with weight proportional to n^gamma, whose width relative to
// the run's length is power_std whatever the run's length.
//
// An update has a host half (begin_update: counts it and sets this update's weight, a device
// scalar) and a device half (apply_update: launches work only, reads nothing back), so that the
// device half can be captured once in a CUDA graph and replayed with a new weight each step.
// The shadow parameters live in one flat buffer: the update is one copy of the weights into a
// flat staging buffer and one whole-buffer lerp. The model's parameters must share one dtype
// and device, and keep the memory layout they had when the Ema was made. Not thread-safe.
class Ema {
 public:
  Ema(const torch::nn::Module& model, double decay, double power_std = 0.0);

  // begin_update() then apply_update(model).
  void update(const torch::nn::Module& model);
  // Counts an update and sets its weight 1 - d, d = decay_for(updates()) (a fill kernel on the
  // device, no wait). Not inside a CUDA graph capture.
  void begin_update();
  // shadow += (1 - d) * (weights - shadow) with the d of the last begin_update(); buffers are
  // copied. Device work only.
  void apply_update(const torch::nn::Module& model);

  double decay_for(int64_t update_number) const;
  int64_t updates() const { return updates_; }

  // Writes the shadow weights into `model` (same architecture).
  void copy_to(torch::nn::Module& model) const;
  void save(torch::serialize::OutputArchive& archive) const;
  void load(torch::serialize::InputArchive& archive);
  // Whether every shadow weight and buffer is finite (reads the device: synchronises).
  bool all_finite() const;

 private:
  double decay_;
  double power_gamma_ = -1.0;  // < 0: the classic decay with warm-up
  int64_t updates_ = 0;
  std::vector<std::string> names_;
  torch::Tensor shadow_flat_;                 // every parameter's shadow, in parameter order
  torch::Tensor staging_flat_;                // the current weights, same layout
  torch::Tensor weight_;                      // 0-dim: 1 - d of the update under way
  std::vector<torch::Tensor> shadow_params_;  // views into shadow_flat_, shaped like each parameter
  std::vector<std::string> buffer_names_;
  std::vector<torch::Tensor> shadow_buffers_;
};

// EDM2's exponent gamma of a power-function EMA of relative standard deviation std:
// std^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)), gamma >= 0, so std in (0, 12^-1/2].
// Throws std::invalid_argument outside that range.
double ema_power_gamma(double std);

}  // namespace difftrain::trainer
