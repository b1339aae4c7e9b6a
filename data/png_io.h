// PNG reading and writing (libpng) for the folder importer and for sample grids.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace difftrain::data {

// An 8-bit image in HWC order.
struct Image {
  int64_t height = 0, width = 0, channels = 0;
  std::vector<uint8_t> pixels;  // height*width*channels bytes
};

// What a PNG decodes to, from its header alone.
struct PngInfo {
  int64_t height = 0, width = 0, channels = 0;
};

// The most pixels read_png() decodes (16384 x 16384): a larger header is refused before any
// pixel memory is taken.
constexpr int64_t kMaxPngPixels = int64_t{1} << 28;

// The header of a PNG as read_png() would decode it, without decoding the pixels: callers
// check the size before paying for the image. Same errors as read_png(). Thread-safe.
PngInfo read_png_info(const std::string& path);

// Reads any PNG as 8-bit grey (channels 1) or RGB (channels 3): palette images become RGB,
// 16-bit samples are scaled to 8 bits, sub-byte grey is expanded, alpha (and tRNS) is dropped.
// DataError naming the file if it is missing, not a valid PNG or larger than kMaxPngPixels.
// Thread-safe.
Image read_png(const std::string& path);

// Writes an 8-bit grey (channels 1) or RGB (channels 3) PNG from HWC pixels. The file is
// written under a temporary name, fsynced and renamed onto path, so it is never seen half
// written. DataError naming the file on bad arguments or I/O failure. Thread-safe.
void write_png(const std::string& path, const uint8_t* pixels_hwc, int64_t height, int64_t width,
               int64_t channels);

}  // namespace difftrain::data
