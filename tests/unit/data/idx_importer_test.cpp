// read_idx: plain and gzip IDX files written here, their failure modes, and the real
// Fashion-MNIST test split when the Debian package is installed.
#include "data/idx_importer.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <random>

#include "data/data_error.h"
#include "test_util.h"

namespace difftrain::data {
namespace {

using testing::TempDir;
using testing::write_bytes;

void put_u32(std::vector<uint8_t>& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(value >> shift));
}

std::vector<uint8_t> idx_images(uint32_t n, uint32_t h, uint32_t w) {
  std::vector<uint8_t> bytes;
  put_u32(bytes, 0x00000803);
  put_u32(bytes, n);
  put_u32(bytes, h);
  put_u32(bytes, w);
  // Random pixels: incompressible, so half a gzip file is half the data, not the header.
  std::mt19937 rng(n);
  for (uint32_t i = 0; i < n * h * w; ++i) bytes.push_back(static_cast<uint8_t>(rng()));
  return bytes;
}

std::vector<uint8_t> idx_labels(const std::vector<uint8_t>& labels) {
  std::vector<uint8_t> bytes;
  put_u32(bytes, 0x00000801);
  put_u32(bytes, static_cast<uint32_t>(labels.size()));
  bytes.insert(bytes.end(), labels.begin(), labels.end());
  return bytes;
}

void write_gzip(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr);
  ASSERT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(file), Z_OK);
}

template <typename Action>
void expect_data_error(Action action, const std::vector<std::string>& fragments) {
  try {
    action();
    FAIL() << "no DataError";
  } catch (const DataError& e) {
    for (const std::string& fragment : fragments) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos)
          << "message: " << e.what() << "\nwant: " << fragment;
    }
  }
}

void expect_matches(const ImageSet& images, const std::vector<uint8_t>& idx,
                    const std::vector<int64_t>& labels) {
  EXPECT_EQ(images.shape, (SampleShape{1, 3, 2}));
  EXPECT_EQ(images.size(), 4);
  EXPECT_EQ(images.pixels, std::vector<uint8_t>(idx.begin() + 16, idx.end()));
  EXPECT_EQ(images.labels, labels);
  EXPECT_EQ(images.label_count, 10);  // max label 9, + 1
}

TEST(IdxImporterTest, PlainRoundTrip) {
  TempDir dir;
  const std::vector<uint8_t> images = idx_images(4, 3, 2);
  write_bytes(dir.file("images"), images);
  write_bytes(dir.file("labels"), idx_labels({3, 9, 0, 3}));
  expect_matches(read_idx(dir.file("images"), dir.file("labels")), images, {3, 9, 0, 3});
  // Labels are optional.
  const ImageSet unlabelled = read_idx(dir.file("images"));
  EXPECT_TRUE(unlabelled.labels.empty());
  EXPECT_EQ(unlabelled.label_count, 0);
}

TEST(IdxImporterTest, GzipRoundTrip) {
  TempDir dir;
  const std::vector<uint8_t> images = idx_images(4, 3, 2);
  write_gzip(dir.file("images.gz"), images);
  write_gzip(dir.file("labels.gz"), idx_labels({3, 9, 0, 3}));
  ASSERT_EQ(testing::read_bytes(dir.file("images.gz"))[0], 0x1f);  // really compressed
  expect_matches(read_idx(dir.file("images.gz"), dir.file("labels.gz")), images, {3, 9, 0, 3});
}

TEST(IdxImporterTest, RejectsWrongMagic) {
  TempDir dir;
  std::vector<uint8_t> bytes = idx_images(2, 2, 2);
  bytes[0] = 0x12;
  bytes[1] = 0x34;
  write_bytes(dir.file("bad"), bytes);
  expect_data_error([&] { read_idx(dir.file("bad")); },
                    {dir.file("bad"), "not an IDX file (magic 0x12340803)"});
  // A label file passed as images: right magic family, wrong rank.
  write_bytes(dir.file("labels"), idx_labels({1, 2}));
  expect_data_error([&] { read_idx(dir.file("labels")); }, {"1 dimensions, want 3"});
}

TEST(IdxImporterTest, RejectsTruncatedFile) {
  TempDir dir;
  std::vector<uint8_t> bytes = idx_images(4, 3, 2);
  bytes.resize(bytes.size() - 5);
  write_bytes(dir.file("short"), bytes);
  expect_data_error([&] { read_idx(dir.file("short")); },
                    {dir.file("short"), "truncated", "24", "19"});
  // A gzip stream cut short is truncation too, not garbage.
  write_gzip(dir.file("full.gz"), idx_images(50, 8, 8));
  std::vector<uint8_t> gz = testing::read_bytes(dir.file("full.gz"));
  gz.resize(gz.size() / 2);
  write_bytes(dir.file("short.gz"), gz);
  expect_data_error([&] { read_idx(dir.file("short.gz")); }, {dir.file("short.gz"), "truncated"});
  // Extra bytes after the data are as suspect as missing ones.
  bytes = idx_images(4, 3, 2);
  bytes.push_back(0);
  write_bytes(dir.file("long"), bytes);
  expect_data_error([&] { read_idx(dir.file("long")); }, {dir.file("long"), "more data"});
}

TEST(IdxImporterTest, RejectsLabelCountMismatch) {
  TempDir dir;
  write_bytes(dir.file("images"), idx_images(4, 3, 2));
  write_bytes(dir.file("labels"), idx_labels({1, 2, 3}));
  expect_data_error([&] { read_idx(dir.file("images"), dir.file("labels")); },
                    {dir.file("labels"), "3 labels", "4 images"});
}

TEST(IdxImporterTest, RejectsMissingFile) {
  TempDir dir;
  expect_data_error([&] { read_idx(dir.file("nope")); }, {dir.file("nope"), "cannot open"});
}

TEST(IdxImporterTest, ReadsRealFashionMnistTestSplit) {
  const std::string base = "/usr/share/datasets/fashion-mnist/";
  const std::string images_path = base + "t10k-images-idx3-ubyte.gz";
  const std::string labels_path = base + "t10k-labels-idx1-ubyte.gz";
  if (!std::filesystem::exists(images_path) || !std::filesystem::exists(labels_path)) {
    GTEST_SKIP() << "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): "
                 << images_path;
  }
  const ImageSet images = read_idx(images_path, labels_path);
  EXPECT_EQ(images.size(), 10000);
  EXPECT_EQ(images.shape, (SampleShape{1, 28, 28}));
  EXPECT_EQ(images.label_count, 10);
  ASSERT_EQ(images.labels.size(), 10000u);
  std::vector<int> per_class(10, 0);
  for (int64_t label : images.labels) ++per_class.at(static_cast<size_t>(label));
  for (int count : per_class) EXPECT_EQ(count, 1000);  // the test split is balanced
  // First test image is an ankle boot (class 9), as in the published dataset.
  EXPECT_EQ(images.labels[0], 9);
}

}  // namespace
}  // namespace difftrain::data
