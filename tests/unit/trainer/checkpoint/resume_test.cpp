// Resume compatibility follows the config table: every key marked OnResume::kMustMatch refuses
// a changed value, naming the key; every other key may change.
#include "trainer/checkpoint/resume.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>

#include "tests/unit/trainer/test_util.h"
#include "trainer/checkpoint/checkpoint.h"

namespace difftrain::trainer {
namespace {

// A valid other value for each key a run must keep: the model's shape, what it predicts and the
// diffusion process it learns.
const std::map<std::string, std::string> kMustMatch = {
    {"model.in_channels", "3"},         {"model.image_size", "64"},
    {"model.channels", "96"},           {"model.channel_mult", "[1,2]"},
    {"model.num_res_blocks", "3"},      {"model.attention_resolutions", "[8]"},
    {"model.prediction", "v"},          {"model.num_classes", "10"},
    {"diffusion.schedule", "cosine"},   {"diffusion.timesteps", "500"},
    {"diffusion.beta_start", "0.0002"}, {"diffusion.beta_end", "0.03"},
    {"diffusion.formulation", "edm"},   {"diffusion.sigma_data", "0.7"},
};

TEST(Resume, TheTableMarksExactlyTheModelAndDiffusionKeys) {
  std::set<std::string> marked, expected;
  for (const auto& key : config_keys()) {
    if (key.on_resume == OnResume::kMustMatch) marked.insert(key.name);
  }
  for (const auto& [name, value] : kMustMatch) expected.insert(name);
  EXPECT_EQ(marked, expected);
}

TEST(Resume, EveryKeyThatMustMatchRefusesAChangeNamingIt) {
  const Config then = load_config("");
  for (const auto& [name, value] : kMustMatch) {
    // Log-normal noise levels (a key that may change) so that the EDM formulation is valid.
    const Config now = load_config("", {name + "=" + value, "train.timestep_sampling=lognormal"});
    try {
      check_resume_compatible(now, then, "run/checkpoints/step-000000010.ckpt", 64, 64, 1, 1);
      ADD_FAILURE() << name << " = " << value << " was accepted";
    } catch (const CheckpointError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("run/checkpoints/step-000000010.ckpt: " + name + " is "),
                std::string::npos)
          << message;
      EXPECT_NE(message.find("a run cannot change its model"), std::string::npos) << message;
    }
  }
}

TEST(Resume, OtherKeysMayChange) {
  const Config then = load_config("");
  const Config now = load_config(
      "", {"train.lr=0.001", "train.steps=99", "data.dir=elsewhere", "model.dropout=0.3",
           "model.label_dropout=0.2", "train.channels_last=true", "train.batch_size=8",
           "sample.sampler=ddpm", "checkpoint.keep=9", "ema.decay=0.99", "dist.bucket_mb=5"});
  EXPECT_NO_THROW(check_resume_compatible(now, then, "x.ckpt", 64, 64, 2, 1));
}

}  // namespace
}  // namespace difftrain::trainer
