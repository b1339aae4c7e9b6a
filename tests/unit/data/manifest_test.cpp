// Manifest: index.json round trip and the validation errors a damaged index must raise.
#include "data/manifest.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/data_error.h"
#include "test_util.h"

namespace difftrain::data {
namespace {

using testing::TempDir;

Manifest sample_manifest() {
  Manifest manifest;
  manifest.sample_count = 7;
  manifest.shape = SampleShape{1, 32, 32};
  manifest.label_count = 10;
  manifest.source = "/x/train-images.gz";
  manifest.shards = {{"shard-00000.h5", 4, std::string(64, 'a')},
                     {"shard-00001.h5", 3, std::string(64, 'b')}};
  return manifest;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

void write_json(const std::string& path, const nlohmann::json& json) {
  std::ofstream(path) << json.dump(2);
}

// Expects Manifest::load to throw a DataError whose message contains every fragment.
void expect_load_error(const std::string& dir, const std::vector<std::string>& fragments) {
  try {
    Manifest::load(dir);
    FAIL() << "no DataError";
  } catch (const DataError& e) {
    for (const std::string& fragment : fragments) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos)
          << "message: " << e.what() << "\nwant: " << fragment;
    }
  }
}

TEST(ManifestTest, SampleShapeBytesAndString) {
  const SampleShape shape{3, 32, 16};
  EXPECT_EQ(shape.bytes(), 3 * 32 * 16);
  EXPECT_EQ(shape.str(), "[3,32,16]");
}

TEST(ManifestTest, SaveLoadRoundTrip) {
  TempDir dir;
  const Manifest saved = sample_manifest();
  saved.save(dir.path());
  const Manifest loaded = Manifest::load(dir.path());
  EXPECT_EQ(loaded.format_version, Manifest::kFormatVersion);
  EXPECT_EQ(loaded.sample_count, 7);
  EXPECT_EQ(loaded.shape, saved.shape);
  EXPECT_EQ(loaded.dtype, "uint8");
  EXPECT_EQ(loaded.label_count, 10);
  EXPECT_EQ(loaded.source, saved.source);
  ASSERT_EQ(loaded.shards.size(), 2u);
  EXPECT_EQ(loaded.shards[1].file, "shard-00001.h5");
  EXPECT_EQ(loaded.shards[1].samples, 3);
  EXPECT_EQ(loaded.shards[1].sha256, std::string(64, 'b'));
  // Atomic save leaves only index.json behind, no temporary file.
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    ++files;
    EXPECT_EQ(entry.path().filename(), "index.json");
  }
  EXPECT_EQ(files, 1);
}

TEST(ManifestTest, SaveRefusesInvalidManifest) {
  TempDir dir;
  Manifest manifest = sample_manifest();
  manifest.sample_count = 8;
  EXPECT_THROW(manifest.save(dir.path()), DataError);
  EXPECT_FALSE(std::filesystem::exists(dir.file("index.json")));
}

TEST(ManifestTest, LoadRejectsBadVersion) {
  TempDir dir;
  sample_manifest().save(dir.path());
  nlohmann::json json = read_json(dir.file("index.json"));
  json["format_version"] = 2;
  write_json(dir.file("index.json"), json);
  expect_load_error(dir.path(), {dir.file("index.json"), "format_version", "2"});
}

TEST(ManifestTest, LoadRejectsCountsThatDoNotSum) {
  TempDir dir;
  sample_manifest().save(dir.path());
  nlohmann::json json = read_json(dir.file("index.json"));
  json["shards"][1]["samples"] = 4;
  write_json(dir.file("index.json"), json);
  expect_load_error(dir.path(), {dir.file("index.json"), "sum to 8", "sample_count"});
}

TEST(ManifestTest, LoadRejectsMissingField) {
  TempDir dir;
  sample_manifest().save(dir.path());
  nlohmann::json json = read_json(dir.file("index.json"));
  json.erase("label_count");
  write_json(dir.file("index.json"), json);
  expect_load_error(dir.path(), {dir.file("index.json"), "missing field 'label_count'"});

  json = read_json(dir.file("index.json"));
  json["label_count"] = 10;
  json["shape"].erase("height");
  write_json(dir.file("index.json"), json);
  expect_load_error(dir.path(), {"missing field 'shape.height'"});
}

TEST(ManifestTest, LoadRejectsBadValues) {
  TempDir dir;
  sample_manifest().save(dir.path());
  const nlohmann::json good = read_json(dir.file("index.json"));

  nlohmann::json json = good;
  json["shape"]["width"] = 0;
  write_json(dir.file("index.json"), json);
  expect_load_error(dir.path(), {"'shape'", "[1,32,0]"});

  json = good;
  json["dtype"] = "float32";
  write_json(dir.file("index.json"), json);
  expect_load_error(dir.path(), {"'dtype'", "float32"});

  json = good;
  json["sample_count"] = "7";
  write_json(dir.file("index.json"), json);
  expect_load_error(dir.path(), {"'sample_count'"});

  json = good;
  json["shards"][0]["file"] = "../elsewhere.h5";
  write_json(dir.file("index.json"), json);
  expect_load_error(dir.path(), {"shards[0].file", "../elsewhere.h5"});
}

TEST(ManifestTest, LoadRejectsMissingFileAndBadJson) {
  TempDir dir;
  expect_load_error(dir.path(), {dir.file("index.json"), "cannot open"});
  std::ofstream(dir.file("index.json")) << "{ not json";
  expect_load_error(dir.path(), {dir.file("index.json"), "invalid JSON"});
}

}  // namespace
}  // namespace difftrain::data
