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

// Throws std::runtime_error naming the first offending key and value: in_channels >= 1,
// channels a positive multiple of 32, channel_mult non-empty with entries >= 1,
// num_res_blocks >= 1, image_size divisible by 2^(levels-1), every attention resolution one of
// the level resolutions, dropout in [0, 1), num_classes >= 0.
void validate(const UNetOptions& options);

// Hyper-parameters of the paper's CIFAR-10 model (in_channels 3, 32x32, channels 128,
// mult {1,2,2,2}, 2 blocks, attention at 16, dropout 0.1).
UNetOptions ddpm_cifar10_options();

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

  // x [B, in_channels, H, W] floating point, t [B] integer timesteps on x's device ->
  // eps_hat [B, in_channels, H, W]. H and W must be divisible by 2^(levels-1); attention sits at
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
