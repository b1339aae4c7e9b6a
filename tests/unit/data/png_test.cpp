// PNG I/O, the class-per-folder importer and pad_to.
#include <gtest/gtest.h>
#include <png.h>

#include <filesystem>

#include "data/data_error.h"
#include "data/image_set.h"
#include "data/png_folder_importer.h"
#include "data/png_io.h"
#include "test_util.h"

namespace difftrain::data {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

std::vector<uint8_t> pattern(size_t n, int salt) {
  std::vector<uint8_t> bytes(n);
  for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<uint8_t>(i * 37 + salt);
  return bytes;
}

TEST(PngIoTest, GreyRoundTrip) {
  TempDir dir;
  const std::vector<uint8_t> pixels = pattern(5 * 7, 1);
  write_png(dir.file("grey.png"), pixels.data(), 5, 7, 1);
  const Image image = read_png(dir.file("grey.png"));
  EXPECT_EQ(image.height, 5);
  EXPECT_EQ(image.width, 7);
  EXPECT_EQ(image.channels, 1);
  EXPECT_EQ(image.pixels, pixels);
  // Published by rename: no temporary file remains.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(PngIoTest, RgbRoundTrip) {
  TempDir dir;
  const std::vector<uint8_t> pixels = pattern(4 * 6 * 3, 2);
  write_png(dir.file("rgb.png"), pixels.data(), 4, 6, 3);
  const Image image = read_png(dir.file("rgb.png"));
  EXPECT_EQ(image.height, 4);
  EXPECT_EQ(image.width, 6);
  EXPECT_EQ(image.channels, 3);
  EXPECT_EQ(image.pixels, pixels);
}

TEST(PngIoTest, RgbaReadsAsRgbWithAlphaDropped) {
  TempDir dir;
  const std::vector<uint8_t> rgba = pattern(3 * 2 * 4, 3);
  png_image spec{};
  spec.version = PNG_IMAGE_VERSION;
  spec.width = 2;
  spec.height = 3;
  spec.format = PNG_FORMAT_RGBA;
  ASSERT_TRUE(
      png_image_write_to_file(&spec, dir.file("rgba.png").c_str(), 0, rgba.data(), 0, nullptr));
  const Image image = read_png(dir.file("rgba.png"));
  ASSERT_EQ(image.channels, 3);
  for (size_t p = 0; p < 6; ++p) {
    for (size_t c = 0; c < 3; ++c) EXPECT_EQ(image.pixels[p * 3 + c], rgba[p * 4 + c]);
  }
}

TEST(PngIoTest, RejectsNonPngAndBadChannels) {
  TempDir dir;
  testing::write_bytes(dir.file("x.png"), {1, 2, 3, 4, 5, 6, 7, 8, 9});
  EXPECT_THROW(read_png(dir.file("x.png")), DataError);
  EXPECT_THROW(read_png(dir.file("missing.png")), DataError);
  const std::vector<uint8_t> pixels(8);
  EXPECT_THROW(write_png(dir.file("two.png"), pixels.data(), 2, 2, 2), DataError);
  EXPECT_FALSE(fs::exists(dir.file("two.png")));
}

// CRC-32 as PNG chunks carry it (ISO 3309, bitwise).
uint32_t png_crc(const uint8_t* bytes, size_t n) {
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) {
    crc ^= bytes[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

TEST(PngIoTest, AHugeHeaderIsRefusedBeforeAnyPixelIsDecoded) {
  // A valid 2x2 PNG whose IHDR (with a correct CRC) claims 30000x30000: 900 million pixels.
  TempDir dir;
  const std::vector<uint8_t> pixels(4, 7);
  write_png(dir.file("huge.png"), pixels.data(), 2, 2, 1);
  std::vector<uint8_t> bytes = testing::read_bytes(dir.file("huge.png"));
  ASSERT_EQ(std::string(bytes.begin() + 12, bytes.begin() + 16), "IHDR");
  for (int field = 0; field < 2; ++field) {  // width, height: big-endian at 16 and 20
    const uint32_t side = 30000;
    for (int b = 0; b < 4; ++b)
      bytes[16 + field * 4 + b] = static_cast<uint8_t>(side >> (24 - 8 * b));
  }
  const uint32_t crc = png_crc(bytes.data() + 12, 4 + 13);  // type and data
  for (int b = 0; b < 4; ++b) bytes[29 + b] = static_cast<uint8_t>(crc >> (24 - 8 * b));
  testing::write_bytes(dir.file("huge.png"), bytes);
  for (const auto& read : {+[](const std::string& p) { (void)read_png_info(p); },
                           +[](const std::string& p) { (void)read_png(p); }}) {
    try {
      read(dir.file("huge.png"));
      ADD_FAILURE() << "a 30000x30000 header was accepted";
    } catch (const DataError& e) {
      EXPECT_NE(std::string(e.what()).find("huge.png: PNG header says 30000x30000 pixels"),
                std::string::npos)
          << e.what();
    }
  }
  write_png(dir.file("small.png"), pixels.data(), 2, 2, 1);
  const PngInfo small = read_png_info(dir.file("small.png"));
  EXPECT_EQ(small.height, 2);
  EXPECT_EQ(small.width, 2);
  EXPECT_EQ(small.channels, 1);
}

TEST(PngFolderImporterTest, TwoClassesSortedWithChwPixels) {
  TempDir dir;
  fs::create_directories(dir.file("zebra"));
  fs::create_directories(dir.file("ant"));
  const std::vector<uint8_t> a0 = pattern(2 * 3 * 3, 10), a1 = pattern(2 * 3 * 3, 20),
                             z0 = pattern(2 * 3 * 3, 30);
  write_png(dir.file("ant/b.png"), a1.data(), 2, 3, 3);
  write_png(dir.file("ant/a.png"), a0.data(), 2, 3, 3);
  write_png(dir.file("zebra/only.PNG"), z0.data(), 2, 3, 3);
  testing::write_bytes(dir.file("zebra/notes.txt"), {1, 2});

  const ImageSet images = read_png_folder(dir.path());
  EXPECT_EQ(images.shape, (SampleShape{3, 2, 3}));
  EXPECT_EQ(images.size(), 3);
  EXPECT_EQ(images.label_count, 2);
  EXPECT_EQ(images.labels, (std::vector<int64_t>{0, 0, 1}));  // ant=0 (a, b), zebra=1
  // CHW: image 1 (ant/b.png), channel 2, row 1, column 0 = HWC pixel (1, 0), channel 2.
  EXPECT_EQ(images.pixels[1 * 18 + 2 * 6 + 1 * 3 + 0], a1[(1 * 3 + 0) * 3 + 2]);
  EXPECT_EQ(images.pixels[0], a0[0]);
  EXPECT_EQ(images.pixels[2 * 18 + 6], z0[1]);  // zebra, channel 1, pixel 0
}

TEST(PngFolderImporterTest, RejectsMixedShapesAndEmptyLayout) {
  TempDir dir;
  fs::create_directories(dir.file("a"));
  fs::create_directories(dir.file("b"));
  const std::vector<uint8_t> pixels = pattern(4 * 4 * 3, 1);
  write_png(dir.file("a/1.png"), pixels.data(), 4, 4, 3);
  write_png(dir.file("b/1.png"), pixels.data(), 4, 4, 1);
  try {
    read_png_folder(dir.path());
    FAIL() << "no DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find(dir.file("b/1.png")), std::string::npos) << e.what();
  }
  TempDir empty;
  EXPECT_THROW(read_png_folder(empty.path()), DataError);
}

TEST(DataImageSetTest, PadTo28To32CentresWithBackground) {
  ImageSet images = testing::make_images(2, SampleShape{1, 28, 28}, 10);
  const ImageSet padded = pad_to(images, 32, 7);
  EXPECT_EQ(padded.shape, (SampleShape{1, 32, 32}));
  EXPECT_EQ(padded.size(), 2);
  EXPECT_EQ(padded.labels, images.labels);
  for (int64_t n = 0; n < 2; ++n) {
    for (int64_t y = 0; y < 32; ++y) {
      for (int64_t x = 0; x < 32; ++x) {
        const uint8_t got = padded.pixels[(n * 32 + y) * 32 + x];
        const bool inside = y >= 2 && y < 30 && x >= 2 && x < 30;
        const uint8_t want = inside ? images.pixels[(n * 28 + (y - 2)) * 28 + (x - 2)] : uint8_t{7};
        ASSERT_EQ(got, want) << "image " << n << " y " << y << " x " << x;
      }
    }
  }
  EXPECT_THROW(pad_to(images, 27), DataError);
}

}  // namespace
}  // namespace difftrain::data
