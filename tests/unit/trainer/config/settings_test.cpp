// The enumerated settings: every name parses to its value and back, a wrong name is one error
// naming the key, the value and the choices, and config keys and command options use the same
// table.
#include "trainer/config/settings.h"

#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <set>
#include <string>

#include "tests/unit/trainer/test_util.h"
#include "trainer/commands/setting_option.h"
#include "trainer/config/config.h"

namespace difftrain::trainer {
namespace {

using test_util::error_of;

template <typename E>
void expect_round_trip() {
  std::set<std::string> seen;
  for (const auto& entry : SettingNames<E>::kAll) {
    EXPECT_TRUE(seen.insert(entry.name).second) << "two values named " << entry.name;
    EXPECT_EQ(parse_setting<E>(entry.name, "key"), entry.value) << entry.name;
    EXPECT_EQ(setting_name(entry.value), entry.name);
  }
}

TEST(SettingsTest, EveryNameParsesToItsValueAndBack) {
  expect_round_trip<Prediction>();
  expect_round_trip<BetaSchedule>();
  expect_round_trip<SamplerKind>();
  expect_round_trip<DdpmVariance>();
  expect_round_trip<Precision>();
  expect_round_trip<DeviceRequest>();
  expect_round_trip<Backend>();
  expect_round_trip<Formulation>();
  expect_round_trip<LrDecay>();
}

TEST(SettingsTest, AWrongNameNamesTheKeyTheValueAndTheChoices) {
  EXPECT_EQ(error_of([] { parse_setting<SamplerKind>("dpm", "--sampler"); }),
            "--sampler = 'dpm': want ddpm, ddim, dpmpp2m or heun");
  EXPECT_EQ(error_of([] { parse_setting<Prediction>("x0", "model.prediction"); }),
            "model.prediction = 'x0': want eps or v");
  EXPECT_EQ(setting_choices<BetaSchedule>("`"), "`linear` or `cosine`");
}

TEST(SettingsTest, ConfigKeysReadWriteAndDocumentTheNames) {
  const Config config =
      load_config("", {"sample.sampler=dpmpp2m", "model.prediction=v", "train.precision=bf16",
                       "dist.backend=nccl", "train.device=cpu", "diffusion.schedule=cosine",
                       "sample.ddpm_variance=posterior"});
  EXPECT_EQ(config.sample.sampler, SamplerKind::kDpmSolverPP2M);
  EXPECT_EQ(config.model.prediction, Prediction::kV);
  EXPECT_EQ(config.train.precision, Precision::kBf16);
  EXPECT_EQ(config.dist.backend, Backend::kNccl);
  EXPECT_EQ(config.train.device, DeviceRequest::kCpu);
  EXPECT_EQ(config.diffusion.schedule, BetaSchedule::kCosine);
  EXPECT_EQ(config.sample.ddpm_variance, DdpmVariance::kPosterior);
  const std::string yaml = to_yaml(config);
  EXPECT_NE(yaml.find("  sampler: dpmpp2m\n"), std::string::npos) << yaml;
  EXPECT_EQ(parse_config(yaml, "round trip").sample.sampler, SamplerKind::kDpmSolverPP2M);
  EXPECT_EQ(error_of([] { load_config("", {"sample.sampler=dpm"}); }),
            "--set sample.sampler=dpm: sample.sampler: 'dpm' is not one of ddpm, ddim, dpmpp2m or "
            "heun");
  EXPECT_NE(config_markdown_table().find("One of `ddpm`, `ddim`, `dpmpp2m` or `heun`."),
            std::string::npos);
}

TEST(SettingsTest, CommandOptionsAcceptTheSameNames) {
  CLI::App app;
  SamplerKind sampler = SamplerKind::kDdim;
  add_setting_option(&app, "--sampler", &sampler, "Sampler");
  app.parse(std::vector<std::string>{"dpmpp2m", "--sampler"});  // CLI11 parses reversed vectors
  EXPECT_EQ(sampler, SamplerKind::kDpmSolverPP2M);
  EXPECT_THROW(app.parse(std::vector<std::string>{"dpm", "--sampler"}), CLI::ValidationError);
}

}  // namespace
}  // namespace difftrain::trainer
