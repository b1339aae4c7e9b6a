// The DDPM U-Net <-> diffusers UNet2DModel mapping; see diffusers_unet.h. Read against
// diffusers/models/unets/unet_2d.py, unet_2d_blocks.py, resnet.py and embeddings.py (0.42.1).
#include "trainer/export/diffusers_unet.h"

#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace difftrain::trainer {
namespace {

using nlohmann::json;

// UNet2DModel.__init__ defaults, for keys a config.json leaves out.
const json& unet2d_defaults() {
  static const json defaults = {
      {"sample_size", nullptr},
      {"in_channels", 3},
      {"out_channels", 3},
      {"center_input_sample", false},
      {"time_embedding_type", "positional"},
      {"time_embedding_dim", nullptr},
      {"freq_shift", 0},
      {"flip_sin_to_cos", true},
      {"down_block_types",
       {"DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"}},
      {"mid_block_type", "UNetMidBlock2D"},
      {"up_block_types", {"AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"}},
      {"block_out_channels", {224, 448, 672, 896}},
      {"layers_per_block", 2},
      {"mid_block_scale_factor", 1},
      {"downsample_padding", 1},
      {"downsample_type", "conv"},
      {"upsample_type", "conv"},
      {"dropout", 0.0},
      {"act_fn", "silu"},
      {"attention_head_dim", 8},
      {"norm_num_groups", 32},
      {"attn_norm_num_groups", nullptr},
      {"norm_eps", 1e-5},
      {"resnet_time_scale_shift", "default"},
      {"add_attention", true},
      {"class_embed_type", nullptr},
      {"num_class_embeds", nullptr},
      {"num_train_timesteps", nullptr}};
  return defaults;
}

bool has_attention(const UNetOptions& options, int64_t level) {
  const int64_t size = options.image_size >> level;
  const auto& sizes = options.attention_resolutions;
  return std::find(sizes.begin(), sizes.end(), size) != sizes.end();
}

std::vector<std::string> split(const std::string& name) {
  std::vector<std::string> parts;
  std::stringstream stream(name);
  std::string part;
  while (std::getline(stream, part, '.')) parts.push_back(part);
  return parts;
}

[[noreturn]] void unknown_name(const std::string& ours) {
  throw std::runtime_error("no diffusers name for U-Net parameter '" + ours + "'");
}

// ResBlock (resnet.py ResnetBlock2D) and AttnBlock (attention_processor.py Attention, built
// with _from_deprecated_attn_block) parameter names below the block.
std::string resnet_name(const std::string& ours, const std::vector<std::string>& parts, size_t at) {
  static const std::map<std::string, std::string> names = {
      {"norm1", "norm1"}, {"conv1", "conv1"}, {"temb_proj", "time_emb_proj"},
      {"norm2", "norm2"}, {"conv2", "conv2"}, {"nin_shortcut", "conv_shortcut"}};
  if (parts.size() != at + 2 || !names.count(parts[at])) unknown_name(ours);
  return names.at(parts[at]) + "." + parts[at + 1];
}

std::string attention_name(const std::string& ours, const std::vector<std::string>& parts,
                           size_t at) {
  static const std::map<std::string, std::string> names = {{"norm", "group_norm"},
                                                           {"q", "to_q"},
                                                           {"k", "to_k"},
                                                           {"v", "to_v"},
                                                           {"proj_out", "to_out.0"}};
  if (parts.size() != at + 2 || !names.count(parts[at])) unknown_name(ours);
  return names.at(parts[at]) + "." + parts[at + 1];
}

std::string dump(const json& value) { return value.dump(); }

}  // namespace

json diffusers_unet_config(const UNetOptions& options) {
  validate(options);
  if (options.channel_mult.front() != 1) {
    throw std::runtime_error(
        "model.channel_mult = [" + std::to_string(options.channel_mult.front()) +
        ", ...]: diffusers' UNet2DModel cannot express a first multiplier other than 1 (its "
        "conv_in and conv_out use block_out_channels[0] channels, ours model.channels)");
  }
  const int64_t levels = static_cast<int64_t>(options.channel_mult.size());
  json down = json::array(), up = json::array(), block_out = json::array();
  for (int64_t level = 0; level < levels; ++level) {
    down.push_back(has_attention(options, level) ? "AttnDownBlock2D" : "DownBlock2D");
    up.push_back(has_attention(options, levels - 1 - level) ? "AttnUpBlock2D" : "UpBlock2D");
    block_out.push_back(options.channels * options.channel_mult[static_cast<size_t>(level)]);
  }
  return {
      {"_class_name", "UNet2DModel"},
      {"_diffusers_version", kDiffusersVersion},
      {"sample_size", options.image_size},
      {"in_channels", options.in_channels},
      {"out_channels", options.in_channels},
      {"center_input_sample", false},
      {"time_embedding_type", "positional"},
      {"time_embedding_dim", nullptr},
      // [sin, cos] with frequencies exp(-ln(10000) i / (half - 1)).
      {"flip_sin_to_cos", false},
      {"freq_shift", 1},
      {"down_block_types", down},
      {"mid_block_type", "UNetMidBlock2D"},
      {"up_block_types", up},
      {"block_out_channels", block_out},
      {"layers_per_block", options.num_res_blocks},
      {"mid_block_scale_factor", 1},
      // Padding 0 makes Downsample2D pad one zero row and column at the bottom/right.
      {"downsample_padding", 0},
      {"downsample_type", "conv"},
      {"upsample_type", "conv"},
      {"dropout", options.dropout},
      {"act_fn", "silu"},
      // null: one head of all the channels at every level, as our AttnBlock.
      {"attention_head_dim", nullptr},
      {"norm_num_groups", kGroupNormGroups},
      {"attn_norm_num_groups", nullptr},
      {"norm_eps", kGroupNormEps},
      {"resnet_time_scale_shift", "default"},
      {"add_attention", true},
      {"class_embed_type", nullptr},
      {"num_class_embeds", options.num_classes > 0 ? json(options.num_classes + 1) : json(nullptr)},
      {"num_train_timesteps", nullptr}};
}

void check_diffusers_unet_config(const json& theirs, const UNetOptions& options,
                                 const std::string& origin) {
  const json want = diffusers_unet_config(options);
  const json& defaults = unet2d_defaults();
  for (const auto& [key, wanted] : want.items()) {
    if (key == "_class_name" || key == "_diffusers_version" || key == "dropout") continue;
    const json& have = theirs.contains(key) ? theirs[key] : defaults[key];
    bool same = have == wanted;
    if (key == "act_fn") same = have == "silu" || have == "swish";
    if (key == "attention_head_dim" && have.is_number_integer()) {
      // A fixed head size is one head only where every attention block has that many channels.
      same = have.get<int64_t>() == want["block_out_channels"].back().get<int64_t>();
      for (size_t level = 0; level < options.channel_mult.size(); ++level) {
        if (has_attention(options, static_cast<int64_t>(level))) {
          same = same && have == want["block_out_channels"][level];
        }
      }
    }
    if (!same) {
      throw std::runtime_error(origin + ": " + key + " = " + dump(have) +
                               ", but the model config " + "needs " + dump(wanted) +
                               " (difftrain's DDPM U-Net)");
    }
  }
}

std::string diffusers_parameter_name(const std::string& ours, int64_t levels) {
  const std::vector<std::string> parts = split(ours);
  if (parts.size() < 2) unknown_name(ours);
  const std::string& head = parts[0];
  if (head == "temb" && parts.size() == 4 && parts[1] == "dense" &&
      (parts[2] == "0" || parts[2] == "1")) {
    return std::string("time_embedding.linear_") + (parts[2] == "0" ? "1" : "2") + "." + parts[3];
  }
  if (parts.size() == 2 && (head == "conv_in" || head == "conv_out")) return ours;
  if (parts.size() == 2 && head == "norm_out") return "conv_norm_out." + parts[1];
  if (parts.size() == 2 && head == "label_emb") return "class_embedding." + parts[1];
  if (head == "mid" && parts.size() >= 3) {
    if (parts[1] == "block_1") return "mid_block.resnets.0." + resnet_name(ours, parts, 2);
    if (parts[1] == "attn_1") return "mid_block.attentions.0." + attention_name(ours, parts, 2);
    if (parts[1] == "block_2") return "mid_block.resnets.1." + resnet_name(ours, parts, 2);
    unknown_name(ours);
  }
  if ((head == "down" || head == "up") && parts.size() >= 4) {
    int64_t level = -1;
    try {
      level = std::stoll(parts[1]);
    } catch (const std::exception&) {
      unknown_name(ours);
    }
    if (level < 0 || level >= levels) unknown_name(ours);
    // diffusers numbers its up blocks in the order they run, lowest resolution first.
    const std::string block = head == "down" ? "down_blocks." + parts[1]
                                             : "up_blocks." + std::to_string(levels - 1 - level);
    if (parts[2] == "block" && parts.size() >= 5) {
      return block + ".resnets." + parts[3] + "." + resnet_name(ours, parts, 4);
    }
    if (parts[2] == "attn" && parts.size() >= 5) {
      return block + ".attentions." + parts[3] + "." + attention_name(ours, parts, 4);
    }
    if (parts.size() == 5 && parts[3] == "conv" &&
        ((head == "down" && parts[2] == "downsample") ||
         (head == "up" && parts[2] == "upsample"))) {
      return block + (head == "down" ? ".downsamplers.0.conv." : ".upsamplers.0.conv.") + parts[4];
    }
  }
  unknown_name(ours);
}

bool is_attention_projection_weight(const std::string& ours) {
  const std::vector<std::string> parts = split(ours);
  if (parts.size() < 3 || parts.back() != "weight") return false;
  const std::string& layer = parts[parts.size() - 2];
  const std::string& block = parts[parts.size() - 3];
  const bool in_attention =
      block == "attn_1" || (parts.size() >= 4 && parts[parts.size() - 4] == "attn");
  return in_attention && (layer == "q" || layer == "k" || layer == "v" || layer == "proj_out");
}

SafetensorsContent diffusers_state(UNetImpl& model) {
  const int64_t levels = static_cast<int64_t>(model.options().channel_mult.size());
  SafetensorsContent state;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    at::Tensor value = item.value().detach().to(at::kCPU, at::kFloat).contiguous();
    if (is_attention_projection_weight(item.key()))
      value = value.reshape({value.size(0), value.size(1)});
    state.tensors.emplace_back(diffusers_parameter_name(item.key(), levels), value);
  }
  return state;
}

void load_diffusers_state(UNetImpl& model, const SafetensorsContent& state,
                          const std::string& origin) {
  const int64_t levels = static_cast<int64_t>(model.options().channel_mult.size());
  std::map<std::string, at::Tensor> theirs(state.tensors.begin(), state.tensors.end());
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;  // (our parameter, their value)
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    const std::string name = diffusers_parameter_name(item.key(), levels);
    const auto found = theirs.find(name);
    if (found == theirs.end()) {
      throw std::runtime_error(origin + ": no tensor '" + name + "', which the model config needs");
    }
    std::vector<int64_t> want = item.value().sizes().vec();
    if (is_attention_projection_weight(item.key())) want.resize(2);
    if (found->second.sizes().vec() != want || !found->second.is_floating_point()) {
      std::ostringstream message;
      message << origin << ": tensor '" << name << "' is " << found->second.scalar_type() << " "
              << found->second.sizes() << ", the model config needs floating point "
              << at::IntArrayRef(want);
      throw std::runtime_error(message.str());
    }
    copies.emplace_back(item.value(), found->second.reshape(item.value().sizes()));
    theirs.erase(found);
  }
  if (!theirs.empty()) {
    throw std::runtime_error(origin + ": tensor '" + theirs.begin()->first + "' (and " +
                             std::to_string(theirs.size() - 1) +
                             " more) has no place in the model config's U-Net");
  }
  torch::NoGradGuard no_grad;
  for (auto& [parameter, value] : copies) parameter.copy_(value);
}

}  // namespace difftrain::trainer
