// Building blocks of the DDPM U-Net (Ho et al. 2020, official TF code and its pytorch_diffusion
// port): timestep embedding, residual block, self-attention, down/up-sampling. Submodule names
// follow that port, so its converted checkpoints map one to one onto ours.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <vector>

namespace difftrain::trainer {

// GroupNorm(32) everywhere, as in the reference (eps 1e-6 as TF's group_norm).
inline constexpr int64_t kGroupNormGroups = 32;
inline constexpr double kGroupNormEps = 1e-6;

// Sinusoidal embedding of integer timesteps t [B] -> float32 [B, dim] on t's device
// (Vaswani et al. 2017 as used by DDPM: [sin(t w_i), cos(t w_i)], w_i = 10000^(-i/(dim/2-1))).
// Precondition: dim even and >= 4.
at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim);

// GroupNorm computed in the layer's parameter dtype: CUDA autocast runs group_norm in float32
// anyway, and CPU autocast then matches it.
at::Tensor group_norm(torch::nn::GroupNorm& norm, const at::Tensor& x);

// Weight initialisation used by every block: DDPM's variance_scaling(1, fan_avg, uniform), i.e.
// Xavier-uniform weights and zero biases; init_zero() for the layers DDPM starts at zero.
void init_default(torch::nn::Conv2d& conv);
void init_default(torch::nn::Linear& linear);
void init_zero(torch::nn::Conv2d& conv);

// t -> sinusoidal(channels) -> Linear(channels, 4 channels) -> SiLU -> Linear(4c, 4c).
// Submodules: dense.0, dense.1.
class TimeEmbeddingImpl : public torch::nn::Cloneable<TimeEmbeddingImpl> {
 public:
  TimeEmbeddingImpl(int64_t channels, int64_t embedding_channels);
  void reset() override;
  // t int64 [B] -> float [B, embedding_channels].
  at::Tensor forward(const at::Tensor& t);

 private:
  int64_t channels_;
  int64_t embedding_channels_;
  // Accessed by index, not through cached pointers: clone() replaces a ModuleList's contents.
  torch::nn::ModuleList dense_{nullptr};
};
TORCH_MODULE(TimeEmbedding);

// Pre-activation residual block: GroupNorm, SiLU, conv3x3, + Linear(SiLU(temb)), GroupNorm,
// SiLU, dropout, conv3x3 (zero-initialised, so the block starts as the identity), plus a 1x1
// `nin_shortcut` when the channel count changes.
class ResBlockImpl : public torch::nn::Cloneable<ResBlockImpl> {
 public:
  ResBlockImpl(int64_t in_channels, int64_t out_channels, int64_t embedding_channels,
               double dropout);
  void reset() override;
  // x [B, in, H, W], temb [B, embedding_channels] -> [B, out, H, W].
  at::Tensor forward(const at::Tensor& x, const at::Tensor& temb);

 private:
  int64_t in_channels_;
  int64_t out_channels_;
  int64_t embedding_channels_;
  double dropout_p_;
  torch::nn::GroupNorm norm1_{nullptr};
  torch::nn::Conv2d conv1_{nullptr};
  torch::nn::Linear temb_proj_{nullptr};
  torch::nn::GroupNorm norm2_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
  torch::nn::Conv2d conv2_{nullptr};
  torch::nn::Conv2d nin_shortcut_{nullptr};  // only when in_channels != out_channels
};
TORCH_MODULE(ResBlock);

// Single-head self-attention over the H*W positions with a residual connection; the output
// projection `proj_out` is zero-initialised so the block starts as the identity.
class AttnBlockImpl : public torch::nn::Cloneable<AttnBlockImpl> {
 public:
  explicit AttnBlockImpl(int64_t channels);
  void reset() override;
  // x [B, C, H, W] -> [B, C, H, W]. Memory O(B (HW)^2): the reference uses it at 16x16 only.
  at::Tensor forward(const at::Tensor& x);

 private:
  int64_t channels_;
  torch::nn::GroupNorm norm_{nullptr};
  torch::nn::Conv2d q_{nullptr};
  torch::nn::Conv2d k_{nullptr};
  torch::nn::Conv2d v_{nullptr};
  torch::nn::Conv2d proj_out_{nullptr};
};
TORCH_MODULE(AttnBlock);

// Stride-2 conv3x3 with TF "SAME" padding (zero row/column at the bottom/right only), as the
// reference: [B, C, H, W] -> [B, C, H/2, W/2] for even H, W.
class DownsampleImpl : public torch::nn::Cloneable<DownsampleImpl> {
 public:
  explicit DownsampleImpl(int64_t channels);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);

 private:
  int64_t channels_;
  torch::nn::Conv2d conv_{nullptr};
};
TORCH_MODULE(Downsample);

// Nearest-neighbour x2 followed by conv3x3: [B, C, H, W] -> [B, C, 2H, 2W].
class UpsampleImpl : public torch::nn::Cloneable<UpsampleImpl> {
 public:
  explicit UpsampleImpl(int64_t channels);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);

 private:
  int64_t channels_;
  torch::nn::Conv2d conv_{nullptr};
};
TORCH_MODULE(Upsample);

// One U-Net level: ResBlocks (each followed by an AttnBlock when the level has attention) and
// an optional resampler. Submodules: block.i, attn.i, downsample | upsample. The U-Net drives the
// skip connections, so the level exposes its blocks one at a time.
enum class Resample { kNone, kDown, kUp };
class UNetLevelImpl : public torch::nn::Cloneable<UNetLevelImpl> {
 public:
  // Block i maps block_in_channels[i] -> out_channels.
  UNetLevelImpl(std::vector<int64_t> block_in_channels, int64_t out_channels, bool attention,
                Resample resample, int64_t embedding_channels, double dropout);
  void reset() override;
  int64_t num_blocks() const { return static_cast<int64_t>(block_in_channels_.size()); }
  // ResBlock i (then AttnBlock i where the level has attention).
  at::Tensor forward_block(int64_t i, const at::Tensor& h, const at::Tensor& temb);
  // Precondition: resample != kNone.
  at::Tensor resample(const at::Tensor& h);

 private:
  std::vector<int64_t> block_in_channels_;
  int64_t out_channels_;
  bool attention_;
  Resample resample_kind_;
  int64_t embedding_channels_;
  double dropout_p_;
  // Accessed by index, not through cached pointers: clone() replaces a ModuleList's contents.
  torch::nn::ModuleList block_{nullptr};
  torch::nn::ModuleList attn_{nullptr};
  Downsample downsample_{nullptr};
  Upsample upsample_{nullptr};
};
TORCH_MODULE(UNetLevel);

// The bottleneck: ResBlock, AttnBlock, ResBlock at the lowest resolution.
// Submodules: block_1, attn_1, block_2.
class UNetMiddleImpl : public torch::nn::Cloneable<UNetMiddleImpl> {
 public:
  UNetMiddleImpl(int64_t channels, int64_t embedding_channels, double dropout);
  void reset() override;
  at::Tensor forward(const at::Tensor& h, const at::Tensor& temb);

 private:
  int64_t channels_;
  int64_t embedding_channels_;
  double dropout_p_;
  ResBlock block_1_{nullptr};
  AttnBlock attn_1_{nullptr};
  ResBlock block_2_{nullptr};
};
TORCH_MODULE(UNetMiddle);

}  // namespace difftrain::trainer
