// Config: defaults, YAML + --set overrides, unknown keys and bad values, the resolved dump, and
// that README.md documents every key.
#include "trainer/config.h"

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
      error_of([] { load_config("", {"diffusion.schedule=quadratic"}); }).find("linear, cosine"),
      std::string::npos);
  EXPECT_NE(error_of([] { load_config("", {"model.image_size=30"}); }).find("divisible"),
            std::string::npos);
  EXPECT_NE(error_of([] { load_config("", {"train.lr"}); }).find("want key=value"),
            std::string::npos);
  EXPECT_NE(
      error_of([] { load_config("/nonexistent/x.yaml"); }).find("/nonexistent/x.yaml: cannot open"),
      std::string::npos);
}

TEST(Config, ResolvedYamlRoundTrips) {
  const Config c =
      load_config("", {"train.lr=0.0005", "model.channel_mult=[1,2,4]", "data.dir=a b/c"});
  const Config back = parse_config(to_yaml(c), "dump");
  EXPECT_EQ(to_yaml(back), to_yaml(c));
  EXPECT_DOUBLE_EQ(back.train.lr, 0.0005);
  EXPECT_EQ(back.data.dir, "a b/c");
}

TEST(Config, ReadmeDocumentsEveryKey) {
  std::ifstream in(std::string(DIFFTRAIN_SOURCE_DIR) + "/README.md");
  ASSERT_TRUE(in) << "README.md not found";
  std::stringstream text;
  text << in.rdbuf();
  for (const auto& key : config_keys()) {
    EXPECT_NE(text.str().find("| `" + key.name + "` |"), std::string::npos)
        << key.name << " is missing from README.md's config table";
  }
}

}  // namespace
}  // namespace difftrain::trainer
