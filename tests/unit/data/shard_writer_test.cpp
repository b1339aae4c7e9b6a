// write_shards: slicing, the refusal to overwrite, and the on-disk layout the reader relies on.
#include "data/shard_writer.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "data/data_error.h"
#include "data/hdf5_util.h"
#include "data/sha256.h"
#include "test_util.h"

namespace difftrain::data {
namespace {

using testing::make_images;
using testing::TempDir;

TEST(ShardWriterTest, WritesContiguousNearEqualShardsAndIndex) {
  TempDir dir;
  const ImageSet images = make_images(10, SampleShape{1, 4, 4}, 3);
  const std::string out = dir.file("set");  // does not exist yet: write_shards creates it
  const Manifest manifest = write_shards(images, out, 3);

  ASSERT_EQ(manifest.shards.size(), 3u);
  EXPECT_EQ(manifest.shards[0].file, "shard-00000.h5");
  EXPECT_EQ(manifest.shards[2].file, "shard-00002.h5");
  EXPECT_EQ(manifest.shards[0].samples, 4);
  EXPECT_EQ(manifest.shards[1].samples, 3);
  EXPECT_EQ(manifest.shards[2].samples, 3);
  EXPECT_EQ(manifest.sample_count, 10);
  EXPECT_EQ(manifest.label_count, 3);
  // Contiguous slices: shard 1's checksum is that of images 4..6.
  EXPECT_EQ(manifest.shards[1].sha256, sha256_hex(images.pixels.data() + 4 * 16, 3 * 16));

  const Manifest loaded = Manifest::load(out);
  EXPECT_EQ(loaded.shards[1].sha256, manifest.shards[1].sha256);
  // Only the shards and the index: no temporary files left behind.
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(out)) {
    (void)entry;
    ++files;
  }
  EXPECT_EQ(files, 4);
}

TEST(ShardWriterTest, RefusesDirectoryThatHoldsADataset) {
  TempDir dir;
  const ImageSet images = make_images(4, SampleShape{1, 2, 2}, 0);
  write_shards(images, dir.path(), 1);
  try {
    write_shards(images, dir.path(), 1);
    FAIL() << "no DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("already holds a dataset"), std::string::npos) << e.what();
  }
}

TEST(ShardWriterTest, RejectsBadShardCountAndInconsistentImages) {
  TempDir dir;
  ImageSet images = make_images(4, SampleShape{1, 2, 2}, 2);
  EXPECT_THROW(write_shards(images, dir.file("a"), 0), DataError);
  EXPECT_THROW(write_shards(images, dir.file("b"), 5), DataError);
  images.labels[3] = 2;  // outside [0, label_count)
  EXPECT_THROW(write_shards(images, dir.file("c"), 1), DataError);
  images = make_images(4, SampleShape{1, 2, 2}, 2);
  images.labels.pop_back();
  EXPECT_THROW(write_shards(images, dir.file("d"), 1), DataError);
  EXPECT_FALSE(std::filesystem::exists(dir.file("d/index.json")));
}

// The reader's speed depends on this layout (RECIPES): one image per chunk, no filters.
TEST(ShardWriterTest, ShardIsChunkedOneImagePerChunkUncompressedWithLabels) {
  TempDir dir;
  write_shards(make_images(5, SampleShape{3, 4, 6}, 2), dir.path(), 1);
  Hdf5Lock lock;
  H5Handle file(
      DIFFTRAIN_H5_CHECK(H5Fopen(dir.file("shard-00000.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)),
      H5Fclose);
  H5Handle images(DIFFTRAIN_H5_CHECK(H5Dopen2(file.get(), "images", H5P_DEFAULT)), H5Dclose);
  H5Handle create(DIFFTRAIN_H5_CHECK(H5Dget_create_plist(images.get())), H5Pclose);
  ASSERT_EQ(H5Pget_layout(create.get()), H5D_CHUNKED);
  hsize_t chunk[4] = {};
  ASSERT_EQ(H5Pget_chunk(create.get(), 4, chunk), 4);
  EXPECT_EQ(chunk[0], 1u);
  EXPECT_EQ(chunk[1], 3u);
  EXPECT_EQ(chunk[2], 4u);
  EXPECT_EQ(chunk[3], 6u);
  EXPECT_EQ(H5Pget_nfilters(create.get()), 0);

  H5Handle labels(DIFFTRAIN_H5_CHECK(H5Dopen2(file.get(), "labels", H5P_DEFAULT)), H5Dclose);
  H5Handle type(DIFFTRAIN_H5_CHECK(H5Dget_type(labels.get())), H5Tclose);
  EXPECT_EQ(H5Tget_size(type.get()), 8u);
  EXPECT_GT(DIFFTRAIN_H5_CHECK(H5Aexists(file.get(), "format_version")), 0);
}

}  // namespace
}  // namespace difftrain::data
