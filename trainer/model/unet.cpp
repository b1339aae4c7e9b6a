// DDPM U-Net assembly: options validation, the encoder/middle/decoder wiring with skip
// connections, and the printable layer plan.
#include "trainer/model/unet.h"

#include <torch/nn/init.h>

#include <algorithm>
#include <iomanip>
#include <sstream>
#include <stdexcept>

namespace difftrain::trainer {
namespace {

namespace nn = torch::nn;

template <typename T>
std::string list_to_string(const std::vector<T>& values) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < values.size(); ++i) out << (i ? ", " : "") << values[i];
  out << ']';
  return out.str();
}

std::string with_thousands(int64_t value) {
  std::string digits = std::to_string(value);
  for (int pos = static_cast<int>(digits.size()) - 3; pos > 0; pos -= 3) digits.insert(pos, ",");
  return digits;
}

std::string resolution(int64_t size) { return std::to_string(size) + "x" + std::to_string(size); }

// "  <name padded>  <resolution padded>  <what>".
std::string plan_line(const std::string& name, const std::string& where, const std::string& what) {
  std::ostringstream out;
  out << "  " << std::left << std::setw(20) << name << ' ' << std::setw(14) << where << ' ' << what;
  return out.str();
}

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error(message); }

}  // namespace

std::optional<ShapeProblem> find_shape_problem(const UNetOptions& options) {
  if (options.in_channels < 1 || options.in_channels > 4) {
    return ShapeProblem{"model.in_channels",
                        "model.in_channels = " + std::to_string(options.in_channels) +
                            ": must be in [1, 4] (grey, grey+alpha, RGB, RGBA images)"};
  }
  if (options.channels < kGroupNormGroups || options.channels % kGroupNormGroups != 0) {
    return ShapeProblem{"model.channels",
                        "model.channels = " + std::to_string(options.channels) +
                            ": must be a positive multiple of 32 (GroupNorm(32))"};
  }
  if (options.channel_mult.empty()) {
    return ShapeProblem{"model.channel_mult",
                        "model.channel_mult = []: must list at least one level"};
  }
  for (const int64_t mult : options.channel_mult) {
    if (mult < 1) {
      return ShapeProblem{"model.channel_mult",
                          "model.channel_mult = " + list_to_string(options.channel_mult) +
                              ": every entry must be >= 1"};
    }
  }
  if (options.num_res_blocks < 1) {
    return ShapeProblem{
        "model.num_res_blocks",
        "model.num_res_blocks = " + std::to_string(options.num_res_blocks) + ": must be >= 1"};
  }
  const int64_t levels = static_cast<int64_t>(options.channel_mult.size());
  const int64_t factor = int64_t{1} << (levels - 1);
  if (levels > 16 || options.image_size < factor || options.image_size % factor != 0) {
    return ShapeProblem{"model.image_size",
                        "model.image_size = " + std::to_string(options.image_size) +
                            ": must be a positive multiple of " + std::to_string(factor) +
                            " (2^(levels-1) for " + std::to_string(levels) +
                            " levels in model.channel_mult)"};
  }
  std::vector<int64_t> level_sizes;
  for (int64_t level = 0; level < levels; ++level) {
    level_sizes.push_back(options.image_size >> level);
  }
  for (const int64_t size : options.attention_resolutions) {
    if (std::find(level_sizes.begin(), level_sizes.end(), size) == level_sizes.end()) {
      return ShapeProblem{
          "model.attention_resolutions",
          "model.attention_resolutions = " + list_to_string(options.attention_resolutions) + ": " +
              std::to_string(size) + " is not a level resolution (" + list_to_string(level_sizes) +
              " for model.image_size " + std::to_string(options.image_size) + ")"};
    }
  }
  if (options.num_classes < 0) {
    return ShapeProblem{"model.num_classes",
                        "model.num_classes = " + std::to_string(options.num_classes) +
                            ": must be >= 0 (0 = unconditional)"};
  }
  if (!(options.dropout >= 0.0 && options.dropout < 1.0)) {
    std::ostringstream value;
    value << options.dropout;
    return ShapeProblem{"model.dropout", "model.dropout = " + value.str() + ": must be in [0, 1)"};
  }
  return std::nullopt;
}

void validate(const UNetOptions& options) {
  if (const auto problem = find_shape_problem(options)) throw std::runtime_error(problem->message);
}

UNetImpl::UNetImpl(const UNetOptions& options) : options_(options) {
  validate(options_);
  reset();
}

void UNetImpl::reset() {
  const int64_t ch = options_.channels;
  const int64_t temb_ch = 4 * ch;
  const int64_t levels = static_cast<int64_t>(options_.channel_mult.size());
  const int64_t blocks = options_.num_res_blocks;
  const double dropout = options_.dropout;
  const auto has_attention = [&](int64_t size) {
    const auto& sizes = options_.attention_resolutions;
    return std::find(sizes.begin(), sizes.end(), size) != sizes.end();
  };
  plan_lines_.clear();
  auto& plan = plan_lines_;

  temb_ = register_module("temb", TimeEmbedding(ch, temb_ch));
  plan.push_back(plan_line("temb", "",
                           "sinusoidal(" + std::to_string(ch) + ") -> Linear " +
                               std::to_string(ch) + "->" + std::to_string(temb_ch) +
                               " -> SiLU -> Linear " + std::to_string(temb_ch) + "->" +
                               std::to_string(temb_ch)));
  if (options_.num_classes > 0) {
    // Added to the time embedding, so every ResBlock sees the label as it sees the timestep.
    // Zero at first: a fresh conditional model computes what the unconditional one does.
    label_emb_ = register_module(
        "label_emb", nn::Embedding(nn::EmbeddingOptions(options_.num_classes + 1, temb_ch)));
    nn::init::zeros_(label_emb_->weight);
    plan.push_back(plan_line("label_emb", "",
                             "Embedding " + std::to_string(options_.num_classes) +
                                 " classes + no-label -> " + std::to_string(temb_ch) +
                                 ", added to temb"));
  }
  conv_in_ = register_module("conv_in",
                             nn::Conv2d(nn::Conv2dOptions(options_.in_channels, ch, 3).padding(1)));
  init_default(conv_in_);
  int64_t size = options_.image_size;
  plan.push_back(
      plan_line("conv_in", resolution(size),
                "conv3x3 " + std::to_string(options_.in_channels) + " -> " + std::to_string(ch)));

  // Encoder. `skips` mirrors the activations the forward pass stacks for the decoder.
  down_ = register_module("down", nn::ModuleList());
  std::vector<int64_t> skips = {ch};
  int64_t block_in = ch;
  for (int64_t level = 0; level < levels; ++level) {
    const int64_t out = ch * options_.channel_mult[static_cast<size_t>(level)];
    const bool attention = has_attention(size);
    const bool last = level == levels - 1;
    std::vector<int64_t> ins;
    for (int64_t i = 0; i < blocks; ++i) {
      ins.push_back(i == 0 ? block_in : out);
      skips.push_back(out);
      plan.push_back(plan_line("down." + std::to_string(level) + ".block." + std::to_string(i),
                               resolution(size),
                               "ResBlock " + std::to_string(ins.back()) + " -> " +
                                   std::to_string(out) + (attention ? " + attention" : "")));
    }
    down_->push_back(
        UNetLevel(ins, out, attention, last ? Resample::kNone : Resample::kDown, temb_ch, dropout));
    if (!last) {
      skips.push_back(out);
      plan.push_back(plan_line("down." + std::to_string(level) + ".downsample",
                               resolution(size) + "->" + resolution(size / 2),
                               "conv3x3 stride 2, " + std::to_string(out) + " channels"));
      size /= 2;
    }
    block_in = out;
  }

  mid_ = register_module("mid", UNetMiddle(block_in, temb_ch, dropout));
  plan.push_back(plan_line("mid", resolution(size),
                           "ResBlock " + std::to_string(block_in) + ", attention, ResBlock " +
                               std::to_string(block_in)));

  // Decoder, lowest resolution first; each block eats one skip, num_res_blocks + 1 per level.
  std::vector<UNetLevel> decoder(static_cast<size_t>(levels), nullptr);
  for (int64_t level = levels - 1; level >= 0; --level) {
    const int64_t out = ch * options_.channel_mult[static_cast<size_t>(level)];
    const bool attention = has_attention(size);
    std::vector<int64_t> ins;
    for (int64_t i = 0; i <= blocks; ++i) {
      const int64_t skip = skips.back();
      skips.pop_back();
      ins.push_back(block_in + skip);
      plan.push_back(
          plan_line("up." + std::to_string(level) + ".block." + std::to_string(i), resolution(size),
                    "ResBlock " + std::to_string(block_in) + "+" + std::to_string(skip) + " -> " +
                        std::to_string(out) + (attention ? " + attention" : "")));
      block_in = out;
    }
    decoder[static_cast<size_t>(level)] = UNetLevel(
        ins, out, attention, level == 0 ? Resample::kNone : Resample::kUp, temb_ch, dropout);
    if (level != 0) {
      plan.push_back(plan_line("up." + std::to_string(level) + ".upsample",
                               resolution(size) + "->" + resolution(size * 2),
                               "nearest x2 + conv3x3, " + std::to_string(out) + " channels"));
      size *= 2;
    }
  }
  up_ = register_module("up", nn::ModuleList());
  for (const UNetLevel& level : decoder) up_->push_back(level);

  norm_out_ = register_module(
      "norm_out",
      nn::GroupNorm(nn::GroupNormOptions(kGroupNormGroups, block_in).eps(kGroupNormEps)));
  conv_out_ = register_module(
      "conv_out", nn::Conv2d(nn::Conv2dOptions(block_in, options_.in_channels, 3).padding(1)));
  init_zero(conv_out_);
  plan.push_back(plan_line("norm_out, conv_out", resolution(size),
                           "GroupNorm, SiLU, conv3x3 " + std::to_string(block_in) + " -> " +
                               std::to_string(options_.in_channels)));
}

at::Tensor UNetImpl::forward(const at::Tensor& x, const at::Tensor& t) {
  return forward(x, t, at::Tensor());
}

at::Tensor UNetImpl::forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels) {
  const int64_t levels = static_cast<int64_t>(options_.channel_mult.size());
  const int64_t factor = int64_t{1} << (levels - 1);
  if (x.dim() != 4 || x.size(1) != options_.in_channels || x.size(2) % factor != 0 ||
      x.size(3) % factor != 0 || !x.is_floating_point()) {
    std::ostringstream message;
    message << "UNet: input x has shape " << x.sizes() << " and dtype " << x.scalar_type()
            << ", want floating point [B, " << options_.in_channels
            << ", H, W] with H, W multiples of " << factor;
    fail(message.str());
  }
  if (t.dim() != 1 || t.size(0) != x.size(0) || t.is_complex() || t.scalar_type() == at::kBool) {
    std::ostringstream message;
    message << "UNet: timesteps t have shape " << t.sizes() << " and dtype " << t.scalar_type()
            << ", want integer or floating point [" << x.size(0) << "]";
    fail(message.str());
  }

  if (labels.defined()) {
    if (options_.num_classes == 0) {
      fail("UNet: labels given to an unconditional model (model.num_classes = 0)");
    }
    if (labels.dim() != 1 || labels.size(0) != x.size(0) || labels.is_floating_point() ||
        labels.is_complex()) {
      std::ostringstream message;
      message << "UNet: labels have shape " << labels.sizes() << " and dtype "
              << labels.scalar_type() << ", want integer [" << x.size(0) << "]";
      fail(message.str());
    }
  }

  at::Tensor temb = temb_(t);
  if (options_.num_classes > 0) {
    const at::Tensor index =
        labels.defined() ? labels.to(at::kLong)
                         : at::full({x.size(0)}, options_.num_classes,
                                    at::TensorOptions().dtype(at::kLong).device(x.device()));
    temb = temb + label_emb_(index).to(temb.scalar_type());
  }
  std::vector<at::Tensor> hs;
  hs.reserve(static_cast<size_t>(levels * (options_.num_res_blocks + 1)));
  hs.push_back(conv_in_(x));
  for (int64_t level = 0; level < levels; ++level) {
    auto* down = down_[static_cast<size_t>(level)]->as<UNetLevelImpl>();
    for (int64_t i = 0; i < down->num_blocks(); ++i) {
      at::Tensor h = down->forward_block(i, hs.back(), temb);
      hs.push_back(std::move(h));
    }
    if (level != levels - 1) {
      at::Tensor h = down->resample(hs.back());
      hs.push_back(std::move(h));
    }
  }

  at::Tensor h = mid_(hs.back(), temb);
  for (int64_t level = levels - 1; level >= 0; --level) {
    auto* up = up_[static_cast<size_t>(level)]->as<UNetLevelImpl>();
    for (int64_t i = 0; i < up->num_blocks(); ++i) {
      h = up->forward_block(i, at::cat({h, hs.back()}, 1), temb);
      hs.pop_back();
    }
    if (level != 0) h = up->resample(h);
  }
  return conv_out_(at::silu(group_norm(norm_out_, h)));
}

std::string UNetImpl::layer_plan() const {
  std::ostringstream out;
  out << "UNet: " << with_thousands(parameter_count(*this)) << " parameters; in_channels "
      << options_.in_channels << ", image_size " << options_.image_size << ", channels "
      << options_.channels << ", channel_mult " << list_to_string(options_.channel_mult)
      << ", num_res_blocks " << options_.num_res_blocks << ", attention_resolutions "
      << list_to_string(options_.attention_resolutions) << ", dropout " << options_.dropout;
  if (options_.num_classes > 0) out << ", num_classes " << options_.num_classes;
  out << '\n';
  for (const std::string& line : plan_lines_) out << line << '\n';
  return out.str();
}

int64_t parameter_count(const torch::nn::Module& module) {
  int64_t count = 0;
  for (const at::Tensor& parameter : module.parameters(/*recurse=*/true)) {
    count += parameter.numel();
  }
  return count;
}

}  // namespace difftrain::trainer
