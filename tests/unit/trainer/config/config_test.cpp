// Config: defaults, YAML + --set overrides, unknown keys and bad values, the resolved dump, and
// that README.md documents every key.
#include "trainer/config/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/unit/trainer/test_util.h"

namespace difftrain::trainer {
namespace {

std::string write_temp(const std::string& text) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("difftrain-config-" + std::to_string(getpid()) + ".yaml"))
                               .string();
  std::ofstream(path) << text;
  return path;
}

using test_util::error_of;

TEST(Config, DefaultsAreValid) {
  const Config c = load_config("");
  EXPECT_EQ(c.train.batch_size, 64);
  EXPECT_EQ(c.model.channel_mult, (std::vector<int64_t>{1, 2, 2}));
}

TEST(Config, YamlThenOverrides) {
  const std::string path =
      write_temp("train:\n  lr: 0.001\n  steps: 7\nmodel:\n  channel_mult: [1, 2]\n");
  const Config c = load_config(path, {"train.steps=9", "model.attention_resolutions=[]"});
  EXPECT_DOUBLE_EQ(c.train.lr, 0.001);
  EXPECT_EQ(c.train.steps, 9);
  EXPECT_EQ(c.model.channel_mult, (std::vector<int64_t>{1, 2}));
  EXPECT_TRUE(c.model.attention_resolutions.empty());
  std::filesystem::remove(path);
}

TEST(Config, UnknownKeyNamesFileAndKey) {
  const std::string path = write_temp("train:\n  lrr: 0.1\n");
  const std::string error = error_of([&] { load_config(path); });
  EXPECT_NE(error.find(path), std::string::npos) << error;
  EXPECT_NE(error.find("unknown key 'train.lrr'"), std::string::npos) << error;
  std::filesystem::remove(path);
  EXPECT_NE(error_of([] { load_config("", {"nope.x=1"}); }).find("unknown key 'nope.x'"),
            std::string::npos);
}

TEST(Config, NegativeLearningRateIsRejected) {
  const std::string error = error_of([] { load_config("", {"train.lr=-1"}); });
  EXPECT_NE(error.find("--set train.lr=-1"), std::string::npos) << error;
  EXPECT_NE(error.find("must be > 0"), std::string::npos) << error;
}

TEST(Config, BadValuesAreRejected) {
  EXPECT_NE(error_of([] { load_config("", {"train.steps=abc"}); }).find("'abc' is not"),
            std::string::npos);
  EXPECT_NE(error_of([] { load_config("", {"model.channels=48"}); }).find("multiple of 32"),
            std::string::npos);
  EXPECT_NE(
      error_of([] { load_config("", {"diffusion.schedule=quadratic"}); }).find("linear or cosine"),
      std::string::npos);
  EXPECT_EQ(error_of([] { load_config("", {"model.image_size=30"}); }),
            "--set model.image_size=30: model.image_size = 30: must be a positive multiple of 4 "
            "(2^(levels-1) for 3 levels in model.channel_mult)");
  EXPECT_NE(error_of([] { load_config("", {"train.lr"}); }).find("want key=value"),
            std::string::npos);
  EXPECT_NE(
      error_of([] { load_config("/nonexistent/x.yaml"); }).find("/nonexistent/x.yaml: cannot open"),
      std::string::npos);
}

// EDM's formulation fixes its own output, loss weight and noise levels: other values are
// refused in one line naming both keys; heun needs it.
TEST(Config, EdmRefusesWhatItReplaces) {
  const std::vector<std::string> edm = {"diffusion.formulation=edm",
                                        "train.timestep_sampling=lognormal"};
  EXPECT_EQ(error_of([&] { load_config("", edm); }), "<no exception>");
  const auto with = [&](const std::string& extra) {
    std::vector<std::string> overrides = edm;
    overrides.push_back(extra);
    return error_of([&] { load_config("", overrides); });
  };
  EXPECT_NE(with("model.prediction=v").find("diffusion.formulation = edm: needs model.prediction"),
            std::string::npos)
      << with("model.prediction=v");
  EXPECT_NE(with("train.loss_weighting=min_snr").find("needs train.loss_weighting = none"),
            std::string::npos);
  EXPECT_NE(with("train.timestep_sampling=uniform").find("needs train.timestep_sampling"),
            std::string::npos);
  EXPECT_EQ(with("sample.sampler=heun"), "<no exception>");
  EXPECT_NE(error_of([] {
              load_config("", {"sample.sampler=heun"});
            }).find("sample.sampler = heun: needs diffusion.formulation = edm"),
            std::string::npos)
      << error_of([] { load_config("", {"sample.sampler=heun"}); });
  EXPECT_NE(with("diffusion.sigma_max=0.001").find("must be > diffusion.sigma_min"),
            std::string::npos);
  EXPECT_NE(with("sample.churn=-1").find("must be >= 0"), std::string::npos);
}

TEST(Config, DuplicateKeysNameTheKeyAndBothLines) {
  const std::string path = write_temp("train:\n  steps: 20\n  steps: 3\n");
  EXPECT_EQ(error_of([&] { load_config(path); }),
            "config " + path + ": duplicate key 'train.steps' at line 3 (first at line 2)");
  std::ofstream(path) << "train:\n  steps: 20\nmodel:\n  channels: 64\ntrain:\n  lr: 0.1\n";
  EXPECT_EQ(error_of([&] { load_config(path); }),
            "config " + path + ": duplicate key 'train' at line 5 (first at line 1)");
  std::filesystem::remove(path);
}

TEST(Config, NonFiniteNumbersAreRejected) {
  for (const std::string bad : {"train.lr=.inf", "train.lr=.nan", "dist.bucket_mb=.inf",
                                "dist.timeout_s=-.inf", "ema.decay=.NaN"}) {
    const std::string value = bad.substr(bad.find('=') + 1);
    EXPECT_EQ(error_of([&] { load_config("", {bad}); }), "--set " + bad + ": " +
                                                             bad.substr(0, bad.find('=')) + ": '" +
                                                             value + "' is not a finite number");
  }
  EXPECT_EQ(error_of([] { load_config("", {"dist.bucket_mb=1e300"}); }),
            "--set dist.bucket_mb=1e300: dist.bucket_mb = 1.0e+300: must be in (0, 100000]");
}

TEST(Config, ResolvedYamlRoundTrips) {
  const Config c =
      load_config("", {"train.lr=0.0005", "model.channel_mult=[1,2,4]", "data.dir=a b/c"});
  const Config back = parse_config(to_yaml(c), "dump");
  EXPECT_EQ(to_yaml(back), to_yaml(c));
  EXPECT_DOUBLE_EQ(back.train.lr, 0.0005);
  EXPECT_EQ(back.data.dir, "a b/c");
}

TEST(Config, ReadmeHoldsTheTableTheCodeMakes) {
  std::ifstream in(std::string(DIFFTRAIN_SOURCE_DIR) + "/README.md");
  ASSERT_TRUE(in) << "README.md not found";
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_NE(text.str().find(config_markdown_table()), std::string::npos)
      << "README.md's config table is not `difftrain inspect config`'s output; paste it in:\n"
      << config_markdown_table();
}

TEST(Config, ModelShapeIsCheckedByTheModelsOwnRules) {
  // Attention must sit at a level resolution (32, 16, 8 for a 32x32 image over 3 levels).
  EXPECT_NO_THROW(load_config("", {"model.attention_resolutions=[8]"}));
  EXPECT_EQ(error_of([] { load_config("", {"model.attention_resolutions=[5]"}); }),
            "--set model.attention_resolutions=[5]: model.attention_resolutions = [5]: 5 is not a "
            "level resolution ([32, 16, 8] for model.image_size 32)");
  EXPECT_NE(error_of([] { load_config("", {"model.in_channels=5"}); }).find("must be in [1, 4]"),
            std::string::npos);
  // The error names where the value came from, though the rule spans several keys.
  const std::string path = write_temp("model:\n  channel_mult: [1, 2, 2, 2, 2, 2, 2]\n");
  EXPECT_NE(error_of([&] { load_config(path); }).find("config " + path + ": model.image_size"),
            std::string::npos);
  std::filesystem::remove(path);
}

TEST(Config, DoublesPrintShortestRoundTrip) {
  const std::string table = config_markdown_table();
  EXPECT_NE(table.find("| `model.dropout` | float | `0.1` |"), std::string::npos) << table;
  EXPECT_NE(table.find("| `train.lr` | float | `0.0002` |"), std::string::npos) << table;
  EXPECT_EQ(table.find("0000000001"), std::string::npos) << table;
  const Config c = load_config("", {"train.lr=0.1", "train.adam_eps=1e-30"});
  const Config back = parse_config(to_yaml(c), "dump");
  EXPECT_EQ(back.train.lr, 0.1);
  EXPECT_EQ(back.train.adam_eps, 1e-30);
  EXPECT_NE(to_yaml(c).find("  lr: 0.1\n"), std::string::npos);
}

}  // namespace
}  // namespace difftrain::trainer
