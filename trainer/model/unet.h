// The DDPM noise-prediction U-Net (Ho et al. 2020, appendix B): eps_hat = UNet(x_t, t).
// Architecture, parameter count and checkpoint key names match the official DDPM code as
// ported to PyTorch (pytorch_diffusion); the ddpm-cifar10 options give 35,746,307 parameters.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "trainer/model/unet_blocks.h"

namespace difftrain::trainer {

// Architecture hyper-parameters; config keys are `model.<field>`.
struct UNetOptions {
  int64_t in_channels = 1;  // image channels (output has the same count: predicts eps)
  int64_t image_size = 32;  // H = W the attention resolutions refer to
  int64_t channels = 64;    // base width (model.channels); multiple of 32 for GroupNorm(32)
  std::vector<int64_t> channel_mult = {1, 2, 2};  // width multiplier per level, highest res first
  int64_t num_res_blocks = 2;                     // ResBlocks per encoder level (decoder: +1)
  std::vector<int64_t> attention_resolutions = {16};  // resolutions that get self-attention
  double dropout = 0.1;                               // inside every ResBlock
  // Class labels 0..num_classes-1 (0 = unconditional, no label embedding). Label num_classes
  // is "no label": the unconditional prediction that classifier-free guidance needs.
  int64_t num_classes = 0;
};

// The model's shape rules, the one place they are written (the config checks model.* keys
// with them): in_channels in [1, 4], channels a positive multiple of 32, channel_mult
// non-empty with entries >= 1, num_res_blocks >= 1, image_size a positive multiple of
// 2^(levels-1), every attention resolution one of the level resolutions, dropout in [0, 1),
// num_classes >= 0.
struct ShapeProblem {
  std::string key;      // the config key at fault, "model.image_size"
  std::string message;  // "model.image_size = 30: must be a positive multiple of 4 (...)"
};
// The first rule `options` breaks, if any.
std::optional<ShapeProblem> find_shape_problem(const UNetOptions& options);
// Throws std::runtime_error with the message of the first rule broken.
void validate(const UNetOptions& options);

// Not thread-safe (like every torch::nn::Module); clone() gives an independent deep copy (for
// EMA weights), train()/eval() switch dropout.
class UNetImpl : public torch::nn::Cloneable<UNetImpl> {
 public:
  // Validates `options` (see validate()) and builds the network with DDPM's initialisation:
  // Xavier-uniform weights, zero biases, and zero for each ResBlock's last conv, each attention
  // output projection and the output conv (and the label embedding, when num_classes > 0).
  explicit UNetImpl(const UNetOptions& options);

  // Rebuilds and re-initialises every submodule (torch::nn::Cloneable contract).
  void reset() override;

  // x [B, in_channels, H, W] floating point, t [B] on x's device: integer timesteps, or EDM's
  // continuous c_noise (floating point; both feed the sinusoidal embedding) ->
  // output [B, in_channels, H, W]. H and W must be divisible by 2^(levels-1); attention sits at
  // the levels chosen for image_size. Works under autocast (the time embedding stays float32).
  // Throws std::runtime_error on a shape or dtype mismatch; never reads tensor values (no
  // device synchronisation).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t);

  // Class-conditional form: labels integer [B] on x's device, each in [0, num_classes] (the
  // value num_classes = no label; not range-checked, to avoid a device sync: out-of-range
  // labels fail inside the embedding). An undefined `labels`, or forward(x, t) on a conditional
  // model, means "no label" for every sample. Throws std::runtime_error if labels are given
  // to an unconditional model (num_classes 0) or have the wrong shape or dtype.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels);

  // Human-readable plan, one line per block with its checkpoint name, resolution, channels and
  // attention, plus the parameter count; for `difftrain inspect model`.
  std::string layer_plan() const;

  const UNetOptions& options() const { return options_; }

 private:
  UNetOptions options_;
  std::vector<std::string> plan_lines_;  // filled by reset(), alongside the modules
  TimeEmbedding temb_{nullptr};
  torch::nn::Embedding label_emb_{nullptr};  // num_classes + 1 rows of 4*channels; only if > 0
  torch::nn::Conv2d conv_in_{nullptr};
  torch::nn::ModuleList down_{nullptr};  // of UNetLevel, index = level (0 = full resolution)
  UNetMiddle mid_{nullptr};
  torch::nn::ModuleList up_{nullptr};  // of UNetLevel, index = level
  torch::nn::GroupNorm norm_out_{nullptr};
  torch::nn::Conv2d conv_out_{nullptr};
};
TORCH_MODULE(UNet);

// Number of scalar parameters of `module` and all its submodules.
int64_t parameter_count(const torch::nn::Module& module);

}  // namespace difftrain::trainer
