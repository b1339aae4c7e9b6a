// The diffusers name mapping: every parameter of our U-Net gets a distinct diffusers name (the
// paper's CIFAR-10 model, attention, class labels), known names map as diffusers spells them,
// weights survive state -> model, and what UNet2DModel cannot express is refused in one line.
// diffusers itself checks the same mapping in tests/integration/diffusers_test.sh.
#include "trainer/export/diffusers_unet.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>
#include <string>

#include "tests/unit/trainer/test_util.h"

namespace difftrain::trainer {
namespace {

using test_util::error_of;

UNetOptions cifar10_options() {
  UNetOptions options;
  options.in_channels = 3;
  options.image_size = 32;
  options.channels = 128;
  options.channel_mult = {1, 2, 2, 2};
  options.num_res_blocks = 2;
  options.attention_resolutions = {16};
  return options;
}

TEST(DiffusersUnet, EveryParameterHasADistinctName) {
  UNetOptions conditional = test_util::small_unet_options(16, 3);
  conditional.num_classes = 10;
  for (const UNetOptions& options : {cifar10_options(), conditional}) {
    UNet model(options);
    const SafetensorsContent state = diffusers_state(*model);
    std::set<std::string> names;
    int64_t count = 0;
    for (const auto& [name, tensor] : state.tensors) {
      names.insert(name);
      count += tensor.numel();
    }
    EXPECT_EQ(names.size(), model->named_parameters().size());
    EXPECT_EQ(count, parameter_count(*model));
  }
  EXPECT_EQ(parameter_count(*UNet(cifar10_options())), 35746307);
}

TEST(DiffusersUnet, NamesAsDiffusersSpellsThem) {
  EXPECT_EQ(diffusers_parameter_name("temb.dense.0.weight", 4), "time_embedding.linear_1.weight");
  EXPECT_EQ(diffusers_parameter_name("temb.dense.1.bias", 4), "time_embedding.linear_2.bias");
  EXPECT_EQ(diffusers_parameter_name("label_emb.weight", 4), "class_embedding.weight");
  EXPECT_EQ(diffusers_parameter_name("norm_out.weight", 4), "conv_norm_out.weight");
  EXPECT_EQ(diffusers_parameter_name("down.1.block.0.nin_shortcut.weight", 4),
            "down_blocks.1.resnets.0.conv_shortcut.weight");
  EXPECT_EQ(diffusers_parameter_name("down.1.block.0.temb_proj.bias", 4),
            "down_blocks.1.resnets.0.time_emb_proj.bias");
  EXPECT_EQ(diffusers_parameter_name("down.1.attn.1.proj_out.weight", 4),
            "down_blocks.1.attentions.1.to_out.0.weight");
  EXPECT_EQ(diffusers_parameter_name("down.2.downsample.conv.weight", 4),
            "down_blocks.2.downsamplers.0.conv.weight");
  EXPECT_EQ(diffusers_parameter_name("mid.attn_1.norm.bias", 4),
            "mid_block.attentions.0.group_norm.bias");
  EXPECT_EQ(diffusers_parameter_name("mid.block_2.conv1.weight", 4),
            "mid_block.resnets.1.conv1.weight");
  // Up levels run lowest resolution first in diffusers.
  EXPECT_EQ(diffusers_parameter_name("up.3.block.2.norm1.weight", 4),
            "up_blocks.0.resnets.2.norm1.weight");
  EXPECT_EQ(diffusers_parameter_name("up.1.upsample.conv.bias", 4),
            "up_blocks.2.upsamplers.0.conv.bias");
  EXPECT_EQ(diffusers_parameter_name("up.1.attn.0.q.weight", 4),
            "up_blocks.2.attentions.0.to_q.weight");
  EXPECT_TRUE(is_attention_projection_weight("up.1.attn.0.q.weight"));
  EXPECT_TRUE(is_attention_projection_weight("mid.attn_1.proj_out.weight"));
  EXPECT_FALSE(is_attention_projection_weight("mid.attn_1.proj_out.bias"));
  EXPECT_FALSE(is_attention_projection_weight("up.1.block.0.conv1.weight"));
  EXPECT_EQ(error_of([] { diffusers_parameter_name("down.9.block.0.conv1.weight", 4); }),
            "no diffusers name for U-Net parameter 'down.9.block.0.conv1.weight'");
}

TEST(DiffusersUnet, StateLoadsBackIntoAFreshModel) {
  const UNetOptions options = test_util::small_unet_options(16, 3);
  UNet source(options);
  for (auto& p : source->parameters()) p.data().normal_();
  UNet target(options);
  load_diffusers_state(*target, diffusers_state(*source), "state");
  const auto a = source->named_parameters(), b = target->named_parameters();
  for (const auto& item : a) EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();

  SafetensorsContent state = diffusers_state(*source);
  state.tensors.pop_back();
  EXPECT_EQ(error_of([&] { load_diffusers_state(*target, state, "w.safetensors"); }),
            "w.safetensors: no tensor 'conv_out.bias', which the model config needs");
  state = diffusers_state(*source);
  state.tensors.emplace_back("extra.weight", torch::zeros({1}));
  EXPECT_EQ(error_of([&] { load_diffusers_state(*target, state, "w.safetensors"); }),
            "w.safetensors: tensor 'extra.weight' (and 0 more) has no place in the model "
            "config's U-Net");
  UNetOptions wider = options;
  wider.channels = 64;
  const std::string wider_error =
      error_of([&] { load_diffusers_state(*UNet(wider), diffusers_state(*source), "w"); });
  EXPECT_NE(wider_error.find("is Float [128, 32], the model config needs floating point [256, 64]"),
            std::string::npos)
      << wider_error;
}

TEST(DiffusersUnet, ConfigDescribesTheNetwork) {
  UNetOptions options = cifar10_options();
  options.num_classes = 10;
  const nlohmann::json config = diffusers_unet_config(options);
  EXPECT_EQ(config["block_out_channels"], nlohmann::json({128, 256, 256, 256}));
  EXPECT_EQ(config["down_block_types"],
            nlohmann::json({"DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"}));
  EXPECT_EQ(config["up_block_types"],
            nlohmann::json({"UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"}));
  EXPECT_EQ(config["num_class_embeds"], 11);
  EXPECT_EQ(config["downsample_padding"], 0);
  EXPECT_NO_THROW(check_diffusers_unet_config(config, options, "c"));

  nlohmann::json flipped = config;
  flipped["flip_sin_to_cos"] = true;
  EXPECT_EQ(error_of([&] { check_diffusers_unet_config(flipped, options, "c.json"); }),
            "c.json: flip_sin_to_cos = true, but the model config needs false (difftrain's DDPM "
            "U-Net)");
  nlohmann::json missing = config;
  missing.erase("freq_shift");  // UNet2DModel's default is 0
  EXPECT_NE(error_of([&] {
              check_diffusers_unet_config(missing, options, "c.json");
            }).find("freq_shift = 0"),
            std::string::npos);
  nlohmann::json heads = config;
  heads["attention_head_dim"] = 256;  // one head wherever there is attention (256 channels)
  EXPECT_NO_THROW(check_diffusers_unet_config(heads, options, "c"));
  heads["attention_head_dim"] = 8;
  EXPECT_NE(error_of([&] {
              check_diffusers_unet_config(heads, options, "c");
            }).find("attention_head_dim = 8"),
            std::string::npos);

  options.channel_mult = {2, 2};
  EXPECT_NE(error_of([&] {
              diffusers_unet_config(options);
            }).find("cannot express a first multiplier other than 1"),
            std::string::npos);
}

}  // namespace
}  // namespace difftrain::trainer
