// Dataset: reading back what write_shards wrote, and the errors for damaged datasets.
#include "data/dataset.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <random>

#include "data/data_error.h"
#include "data/hdf5_util.h"
#include "data/shard_writer.h"
#include "test_util.h"

namespace difftrain::data {
namespace {

namespace fs = std::filesystem;
using testing::make_images;
using testing::read_bytes;
using testing::TempDir;
using testing::write_bytes;

const SampleShape kShape{3, 4, 5};

// Expects `action` to throw a DataError whose message contains every fragment.
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

TEST(DatasetTest, ReadsRandomDuplicateUnsortedIndicesAcrossShards) {
  TempDir dir;
  const ImageSet images = make_images(50, kShape, 7);
  write_shards(images, dir.path(), 4);
  const Dataset dataset(dir.path());
  EXPECT_EQ(dataset.size(), 50);
  EXPECT_EQ(dataset.manifest().shape, kShape);
  EXPECT_EQ(dataset.dir(), dir.path());

  std::mt19937_64 rng(1);
  std::vector<int64_t> indices;
  for (int i = 0; i < 40; ++i) indices.push_back(static_cast<int64_t>(rng() % 50));
  // Duplicates within a shard and across the request, descending runs, both ends.
  indices.insert(indices.end(), {49, 0, 13, 13, 12, 11, 49, 25, 24, 0});
  std::vector<uint8_t> pixels(indices.size() * kShape.bytes());
  std::vector<int64_t> labels(indices.size(), -1);
  dataset.read(indices, pixels.data(), labels.data());
  for (size_t p = 0; p < indices.size(); ++p) {
    const int64_t id = indices[p];
    ASSERT_TRUE(std::equal(pixels.begin() + p * kShape.bytes(),
                           pixels.begin() + (p + 1) * kShape.bytes(),
                           images.pixels.begin() + id * kShape.bytes()))
        << "position " << p << " id " << id;
    EXPECT_EQ(labels[p], id % 7) << "position " << p;
  }

  // label() answers from memory, across shard boundaries.
  for (int64_t id = 0; id < 50; ++id) EXPECT_EQ(dataset.label(id), id % 7) << "id " << id;

  // Labels are optional.
  std::vector<uint8_t> one(kShape.bytes());
  dataset.read({17}, one.data(), nullptr);
  EXPECT_TRUE(std::equal(one.begin(), one.end(), images.pixels.begin() + 17 * kShape.bytes()));
}

TEST(DatasetTest, UnlabelledDatasetReadsZeroLabels) {
  TempDir dir;
  write_shards(make_images(6, kShape, 0), dir.path(), 2);
  const Dataset dataset(dir.path());
  EXPECT_EQ(dataset.manifest().label_count, 0);
  std::vector<uint8_t> pixels(3 * kShape.bytes());
  std::vector<int64_t> labels(3, -1);
  dataset.read({5, 0, 3}, pixels.data(), labels.data());
  EXPECT_EQ(labels, (std::vector<int64_t>{0, 0, 0}));
  EXPECT_EQ(dataset.label(5), 0);
}

TEST(DatasetTest, RejectsIndexOutOfRange) {
  TempDir dir;
  write_shards(make_images(6, kShape, 0), dir.path(), 2);
  const Dataset dataset(dir.path());
  std::vector<uint8_t> pixels(kShape.bytes());
  expect_data_error([&] { dataset.read({6}, pixels.data(), nullptr); }, {"6", "[0, 6)"});
  expect_data_error([&] { dataset.read({-1}, pixels.data(), nullptr); }, {"-1"});
  expect_data_error([&] { dataset.label(6); }, {"6", "[0, 6)"});
}

TEST(DatasetTest, MissingShardFileNamesTheShard) {
  TempDir dir;
  write_shards(make_images(6, kShape, 2), dir.path(), 3);
  fs::remove(dir.file("shard-00001.h5"));
  expect_data_error([&] { Dataset dataset(dir.path()); }, {dir.file("shard-00001.h5"), "missing"});
}

TEST(DatasetTest, TruncatedShardNamesTheShard) {
  TempDir dir;
  write_shards(make_images(20, kShape, 2), dir.file("good"), 2);
  fs::copy(dir.file("good"), dir.file("bad"));
  const std::string shard = dir.file("bad/shard-00001.h5");
  fs::resize_file(shard, fs::file_size(shard) / 2);
  expect_data_error([&] { Dataset dataset(dir.file("bad")); }, {"shard " + shard});
  // The original is untouched and still opens.
  EXPECT_NO_THROW(Dataset dataset(dir.file("good")));
}

TEST(DatasetTest, CorruptShardNamesTheShard) {
  TempDir dir;
  write_shards(make_images(6, kShape, 2), dir.path(), 2);
  write_bytes(dir.file("shard-00000.h5"), std::vector<uint8_t>(4096, 0x5A));
  expect_data_error([&] { Dataset dataset(dir.path()); }, {"shard " + dir.file("shard-00000.h5")});
}

TEST(DatasetTest, ShardOfWrongShapeNamesShardAndShapes) {
  TempDir dir;
  write_shards(make_images(6, kShape, 0), dir.path(), 2);
  // Replace shard 1 (3 samples of [3,4,5]) with a hand-written [3,28,28] uint8 dataset.
  {
    Hdf5Lock lock;
    H5Handle file(DIFFTRAIN_H5_CHECK(H5Fcreate(dir.file("shard-00001.h5").c_str(), H5F_ACC_TRUNC,
                                               H5P_DEFAULT, H5P_DEFAULT)),
                  H5Fclose);
    H5Handle scalar(DIFFTRAIN_H5_CHECK(H5Screate(H5S_SCALAR)), H5Sclose);
    H5Handle attribute(DIFFTRAIN_H5_CHECK(H5Acreate2(file.get(), "format_version", H5T_STD_I32LE,
                                                     scalar.get(), H5P_DEFAULT, H5P_DEFAULT)),
                       H5Aclose);
    const int version = 1;
    DIFFTRAIN_H5_CHECK(H5Awrite(attribute.get(), H5T_NATIVE_INT, &version));
    const hsize_t dims[3] = {3, 28, 28};
    H5Handle space(DIFFTRAIN_H5_CHECK(H5Screate_simple(3, dims, nullptr)), H5Sclose);
    H5Handle images(DIFFTRAIN_H5_CHECK(H5Dcreate2(file.get(), "images", H5T_STD_U8LE, space.get(),
                                                  H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)),
                    H5Dclose);
  }
  expect_data_error(
      [&] { Dataset dataset(dir.path()); },
      {"shard " + dir.file("shard-00001.h5"), "'images' has shape [3,28,28]", "want [3,3,4,5]"});
}

TEST(DatasetTest, LabelOutOfRangeNamesShardAndLabel) {
  TempDir dir;
  write_shards(make_images(6, kShape, 3), dir.path(), 2);
  {
    Hdf5Lock lock;
    H5Handle file(
        DIFFTRAIN_H5_CHECK(H5Fopen(dir.file("shard-00000.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT)),
        H5Fclose);
    H5Handle labels(DIFFTRAIN_H5_CHECK(H5Dopen2(file.get(), "labels", H5P_DEFAULT)), H5Dclose);
    const int64_t values[3] = {0, 3, 1};  // 3 is outside [0, 3)
    DIFFTRAIN_H5_CHECK(
        H5Dwrite(labels.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, values));
  }
  expect_data_error([&] { Dataset dataset(dir.path()); },
                    {"shard " + dir.file("shard-00000.h5"), "label 3 at row 1"});
}

TEST(DatasetTest, VerifyPassesIntactAndCatchesFlippedImageByte) {
  TempDir dir;
  const ImageSet images = make_images(12, kShape, 3);
  write_shards(images, dir.path(), 3);
  EXPECT_TRUE(Dataset(dir.path()).verify().empty());

  // Find image 5 (shard 1's second image; chunks are stored raw) in the file and flip a byte.
  const std::string shard = dir.file("shard-00001.h5");
  std::vector<uint8_t> bytes = read_bytes(shard);
  const auto image = images.pixels.begin() + 5 * kShape.bytes();
  const auto at = std::search(bytes.begin(), bytes.end(), image, image + kShape.bytes());
  ASSERT_NE(at, bytes.end()) << "image 5 not found raw in " << shard;
  at[7] ^= 0x01;
  write_bytes(shard, bytes);

  const std::vector<std::string> problems = Dataset(dir.path()).verify();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find(shard), std::string::npos) << problems[0];
  EXPECT_NE(problems[0].find("sha256"), std::string::npos) << problems[0];
}

TEST(DatasetTest, DescribeSummarisesManifest) {
  TempDir dir;
  const Manifest manifest = write_shards(make_images(6, kShape, 2), dir.path(), 2);
  const std::string text = describe(manifest, dir.path());
  for (const std::string& fragment : {dir.path(), std::string("[3,4,5]"), std::string("2 classes"),
                                      std::string("shard-00001.h5")}) {
    EXPECT_NE(text.find(fragment), std::string::npos) << text;
  }
}

}  // namespace
}  // namespace difftrain::data
