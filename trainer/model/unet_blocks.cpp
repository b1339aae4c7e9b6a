// DDPM U-Net building blocks; see unet_blocks.h. Shapes and initialisation follow the official
// DDPM code (diffusion_tf/models/unet.py) so that parameter counts and names match the paper's.
#include "trainer/model/unet_blocks.h"

#include <torch/nn/functional/padding.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/nn/init.h>

#include <cmath>
#include <string>
#include <utility>

namespace difftrain::trainer {
namespace {

namespace nn = torch::nn;

nn::GroupNorm make_norm(int64_t channels) {
  return nn::GroupNorm(nn::GroupNormOptions(kGroupNormGroups, channels).eps(kGroupNormEps));
}

nn::Conv2d make_conv(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride,
                     int64_t padding) {
  return nn::Conv2d(
      nn::Conv2dOptions(in_channels, out_channels, kernel).stride(stride).padding(padding));
}

}  // namespace

at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim) {
  const int64_t half = dim / 2;
  // Float32 even under autocast: sin(t w) for t ~ 1000 needs the mantissa. The exponent is
  // rounded as diffusers' get_timestep_embedding rounds it (multiply, then divide): a frequency
  // one ulp off moves sin(999 w) by ~1e-4, more than an exported model may differ by.
  const at::Tensor exponent = at::arange(half, t.options().dtype(at::kFloat)) *
                              (-std::log(10000.0)) / static_cast<double>(half - 1);
  const at::Tensor freqs = at::exp(exponent);
  const at::Tensor args = t.to(at::kFloat).unsqueeze(1) * freqs.unsqueeze(0);
  return at::cat({at::sin(args), at::cos(args)}, 1);
}

at::Tensor group_norm(nn::GroupNorm& norm, const at::Tensor& x) {
  return norm(x.to(norm->weight.scalar_type()));
}

void init_default(nn::Conv2d& conv) {
  nn::init::xavier_uniform_(conv->weight);
  nn::init::zeros_(conv->bias);
}

void init_default(nn::Linear& linear) {
  nn::init::xavier_uniform_(linear->weight);
  nn::init::zeros_(linear->bias);
}

void init_zero(nn::Conv2d& conv) {
  nn::init::zeros_(conv->weight);
  nn::init::zeros_(conv->bias);
}

// --- TimeEmbedding -------------------------------------------------------------------------

TimeEmbeddingImpl::TimeEmbeddingImpl(int64_t channels, int64_t embedding_channels)
    : channels_(channels), embedding_channels_(embedding_channels) {
  reset();
}

void TimeEmbeddingImpl::reset() {
  nn::Linear dense0(channels_, embedding_channels_);
  nn::Linear dense1(embedding_channels_, embedding_channels_);
  init_default(dense0);
  init_default(dense1);
  dense_ = register_module("dense", nn::ModuleList(dense0, dense1));
}

at::Tensor TimeEmbeddingImpl::forward(const at::Tensor& t) {
  at::Tensor h = dense_[0]->as<nn::LinearImpl>()->forward(timestep_embedding(t, channels_));
  return dense_[1]->as<nn::LinearImpl>()->forward(at::silu(h));
}

// --- ResBlock ------------------------------------------------------------------------------

ResBlockImpl::ResBlockImpl(int64_t in_channels, int64_t out_channels, int64_t embedding_channels,
                           double dropout)
    : in_channels_(in_channels),
      out_channels_(out_channels),
      embedding_channels_(embedding_channels),
      dropout_p_(dropout) {
  reset();
}

void ResBlockImpl::reset() {
  norm1_ = register_module("norm1", make_norm(in_channels_));
  conv1_ = register_module("conv1", make_conv(in_channels_, out_channels_, 3, 1, 1));
  temb_proj_ = register_module("temb_proj", nn::Linear(embedding_channels_, out_channels_));
  norm2_ = register_module("norm2", make_norm(out_channels_));
  dropout_ = register_module("dropout", nn::Dropout(dropout_p_));
  conv2_ = register_module("conv2", make_conv(out_channels_, out_channels_, 3, 1, 1));
  init_default(conv1_);
  init_default(temb_proj_);
  init_zero(conv2_);
  if (in_channels_ != out_channels_) {
    nin_shortcut_ =
        register_module("nin_shortcut", make_conv(in_channels_, out_channels_, 1, 1, 0));
    init_default(nin_shortcut_);
  } else {
    nin_shortcut_ = nullptr;
  }
}

at::Tensor ResBlockImpl::forward(const at::Tensor& x, const at::Tensor& temb) {
  at::Tensor h = conv1_(at::silu(group_norm(norm1_, x)));
  h = h + temb_proj_(at::silu(temb)).unsqueeze(-1).unsqueeze(-1);
  h = conv2_(dropout_(at::silu(group_norm(norm2_, h))));
  return (nin_shortcut_ ? nin_shortcut_(x) : x) + h;
}

// --- AttnBlock -----------------------------------------------------------------------------

AttnBlockImpl::AttnBlockImpl(int64_t channels) : channels_(channels) { reset(); }

void AttnBlockImpl::reset() {
  norm_ = register_module("norm", make_norm(channels_));
  q_ = register_module("q", make_conv(channels_, channels_, 1, 1, 0));
  k_ = register_module("k", make_conv(channels_, channels_, 1, 1, 0));
  v_ = register_module("v", make_conv(channels_, channels_, 1, 1, 0));
  proj_out_ = register_module("proj_out", make_conv(channels_, channels_, 1, 1, 0));
  init_default(q_);
  init_default(k_);
  init_default(v_);
  init_zero(proj_out_);
}

at::Tensor AttnBlockImpl::forward(const at::Tensor& x) {
  const int64_t batch = x.size(0);
  const int64_t channels = x.size(1);
  const int64_t positions = x.size(2) * x.size(3);
  const at::Tensor h = group_norm(norm_, x);
  // Scaling q (C x HW elements) is cheaper than scaling the HW x HW logits.
  const double scale = 1.0 / std::sqrt(static_cast<double>(channels));
  const at::Tensor q = (q_(h) * scale).reshape({batch, channels, positions});
  const at::Tensor k = k_(h).reshape({batch, channels, positions});
  const at::Tensor v = v_(h).reshape({batch, channels, positions});
  // weights[b, i, j] = softmax_j <q_i, k_j> / sqrt(C); out[b, :, i] = sum_j weights[b, i, j] v_j.
  const at::Tensor weights = at::softmax(at::bmm(q.transpose(1, 2), k), -1);
  const at::Tensor out = at::bmm(v, weights.transpose(1, 2)).reshape(x.sizes());
  return x + proj_out_(out);
}

// --- Downsample / Upsample -----------------------------------------------------------------

DownsampleImpl::DownsampleImpl(int64_t channels) : channels_(channels) { reset(); }

void DownsampleImpl::reset() {
  conv_ = register_module("conv", make_conv(channels_, channels_, 3, 2, 0));
  init_default(conv_);
}

at::Tensor DownsampleImpl::forward(const at::Tensor& x) {
  namespace F = torch::nn::functional;
  return conv_(F::pad(x, F::PadFuncOptions({0, 1, 0, 1})));
}

UpsampleImpl::UpsampleImpl(int64_t channels) : channels_(channels) { reset(); }

void UpsampleImpl::reset() {
  conv_ = register_module("conv", make_conv(channels_, channels_, 3, 1, 1));
  init_default(conv_);
}

at::Tensor UpsampleImpl::forward(const at::Tensor& x) {
  namespace F = torch::nn::functional;
  const std::vector<int64_t> size = {2 * x.size(2), 2 * x.size(3)};
  return conv_(F::interpolate(x, F::InterpolateFuncOptions().size(size).mode(torch::kNearest)));
}

// --- UNetLevel -----------------------------------------------------------------------------

UNetLevelImpl::UNetLevelImpl(std::vector<int64_t> block_in_channels, int64_t out_channels,
                             bool attention, Resample resample, int64_t embedding_channels,
                             double dropout)
    : block_in_channels_(std::move(block_in_channels)),
      out_channels_(out_channels),
      attention_(attention),
      resample_kind_(resample),
      embedding_channels_(embedding_channels),
      dropout_p_(dropout) {
  reset();
}

void UNetLevelImpl::reset() {
  block_ = register_module("block", nn::ModuleList());
  attn_ = register_module("attn", nn::ModuleList());
  for (const int64_t in_channels : block_in_channels_) {
    block_->push_back(ResBlock(in_channels, out_channels_, embedding_channels_, dropout_p_));
    if (attention_) attn_->push_back(AttnBlock(out_channels_));
  }
  downsample_ = nullptr;
  upsample_ = nullptr;
  if (resample_kind_ == Resample::kDown) {
    downsample_ = register_module("downsample", Downsample(out_channels_));
  } else if (resample_kind_ == Resample::kUp) {
    upsample_ = register_module("upsample", Upsample(out_channels_));
  }
}

at::Tensor UNetLevelImpl::forward_block(int64_t i, const at::Tensor& h, const at::Tensor& temb) {
  at::Tensor out = block_[static_cast<size_t>(i)]->as<ResBlockImpl>()->forward(h, temb);
  if (attention_) out = attn_[static_cast<size_t>(i)]->as<AttnBlockImpl>()->forward(out);
  return out;
}

at::Tensor UNetLevelImpl::resample(const at::Tensor& h) {
  return resample_kind_ == Resample::kDown ? downsample_(h) : upsample_(h);
}

// --- UNetMiddle ----------------------------------------------------------------------------

UNetMiddleImpl::UNetMiddleImpl(int64_t channels, int64_t embedding_channels, double dropout)
    : channels_(channels), embedding_channels_(embedding_channels), dropout_p_(dropout) {
  reset();
}

void UNetMiddleImpl::reset() {
  block_1_ =
      register_module("block_1", ResBlock(channels_, channels_, embedding_channels_, dropout_p_));
  attn_1_ = register_module("attn_1", AttnBlock(channels_));
  block_2_ =
      register_module("block_2", ResBlock(channels_, channels_, embedding_channels_, dropout_p_));
}

at::Tensor UNetMiddleImpl::forward(const at::Tensor& h, const at::Tensor& temb) {
  return block_2_(attn_1_(block_1_(h, temb)), temb);
}

}  // namespace difftrain::trainer
