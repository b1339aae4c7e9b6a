// Our DDPM U-Net as diffusers' UNet2DModel: the config.json that builds the same network in
// diffusers, the name of each of our parameters there, and the weights moved either way.
// Checked against diffusers itself by tests/integration/diffusers_test.sh.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "trainer/export/safetensors.h"
#include "trainer/model/unet.h"

namespace difftrain::trainer {

// The diffusers version whose UNet2DModel these mappings were checked against (written as
// "_diffusers_version"; python/requirements.txt pins the same).
inline constexpr const char* kDiffusersVersion = "0.42.1";

// unet/config.json for `options`: DownBlock2D/AttnDownBlock2D per level (attention where ours
// has it), block_out_channels = channels x channel_mult, layers_per_block = num_res_blocks,
// one attention head (attention_head_dim null), GroupNorm(32, eps 1e-6), positional time
// embedding [sin, cos] with frequencies 10000^(-i/(half-1)) (flip_sin_to_cos false,
// freq_shift 1), TF "SAME" stride-2 downsampling (downsample_padding 0), and
// num_class_embeds = num_classes + 1 (the last row is our "no label"). Throws
// std::runtime_error with one line saying why when UNet2DModel cannot express `options`.
nlohmann::json diffusers_unet_config(const UNetOptions& options);

// Throws std::runtime_error "<origin>: <key> = <value>, ..." unless the diffusers config
// `theirs` builds the network that `options` describes (keys it omits take UNet2DModel's
// defaults). Training-only keys (dropout) may differ.
void check_diffusers_unet_config(const nlohmann::json& theirs, const UNetOptions& options,
                                 const std::string& origin);

// The diffusers state-dict name of our parameter `ours` ("down.1.attn.0.q.weight" ->
// "down_blocks.1.attentions.0.to_q.weight") in a U-Net of `levels` levels. Throws
// std::runtime_error for a name our U-Net does not have.
std::string diffusers_parameter_name(const std::string& ours, int64_t levels);

// Whether `ours` is an attention q/k/v/proj_out weight: a 1x1 conv [C, C, 1, 1] here, a
// Linear [C, C] in diffusers.
bool is_attention_projection_weight(const std::string& ours);

// Every parameter of `model` under its diffusers name, float32, CPU.
SafetensorsContent diffusers_state(UNetImpl& model);

// Copies the diffusers state dict `state` into `model` (any float dtype, converted). Throws
// std::runtime_error "<origin>: ..." naming the first tensor that is missing, extra, or of
// another shape than `model` needs; `model` is unchanged then.
void load_diffusers_state(UNetImpl& model, const SafetensorsContent& state,
                          const std::string& origin);

}  // namespace difftrain::trainer
