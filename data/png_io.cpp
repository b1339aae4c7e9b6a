// libpng's classic API reports errors by longjmp. The functions that call setjmp hold only
// trivially destructible locals, so a longjmp skips no destructor; C++ objects (buffers, the
// RAII guard) live in their callers.
#include "data/png_io.h"

#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>

#include "data/data_error.h"
#include "data/file_util.h"

namespace difftrain::data {
namespace {

// libpng state plus the last error message, filled in by on_error before it longjmps.
struct PngContext {
  FILE* file = nullptr;
  png_structp png = nullptr;
  png_infop info = nullptr;
  bool writing = false;
  char message[256] = {};

  ~PngContext() {
    if (writing) {
      png_destroy_write_struct(&png, info != nullptr ? &info : nullptr);
    } else if (png != nullptr) {
      png_destroy_read_struct(&png, info != nullptr ? &info : nullptr, nullptr);
    }
    if (file != nullptr) std::fclose(file);
  }
};

void on_error(png_structp png, png_const_charp message) {
  auto* context = static_cast<PngContext*>(png_get_error_ptr(png));
  std::snprintf(context->message, sizeof context->message, "%s", message);
  png_longjmp(png, 1);
}

// libpng warnings (e.g. an unknown chunk) would go to stderr; they do not stop the read.
void on_warning(png_structp, png_const_charp) {}

// Reads the header and sets up the transforms to 8-bit grey or RGB. Returns false after a
// libpng error (message in context). Only trivially destructible locals: see the banner.
bool read_header(PngContext* context, png_uint_32* width, png_uint_32* height, int* channels,
                 size_t* row_bytes) {
  if (setjmp(png_jmpbuf(context->png))) return false;
  png_init_io(context->png, context->file);
  png_read_info(context->png, context->info);
  const int color_type = png_get_color_type(context->png, context->info);
  const int bit_depth = png_get_bit_depth(context->png, context->info);
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(context->png);
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) {
    png_set_expand_gray_1_2_4_to_8(context->png);
  }
  if (bit_depth == 16) png_set_scale_16(context->png);
  if (color_type & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(context->png);
  png_set_interlace_handling(context->png);
  png_read_update_info(context->png, context->info);
  *width = png_get_image_width(context->png, context->info);
  *height = png_get_image_height(context->png, context->info);
  *channels = png_get_channels(context->png, context->info);
  *row_bytes = png_get_rowbytes(context->png, context->info);
  return true;
}

bool read_rows(PngContext* context, png_bytepp rows) {
  if (setjmp(png_jmpbuf(context->png))) return false;
  png_read_image(context->png, rows);
  png_read_end(context->png, nullptr);
  return true;
}

bool write_all(PngContext* context, png_uint_32 width, png_uint_32 height, int color_type,
               png_bytepp rows) {
  if (setjmp(png_jmpbuf(context->png))) return false;
  png_init_io(context->png, context->file);
  png_set_IHDR(context->png, context->info, width, height, 8, color_type, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(context->png, context->info);
  png_write_image(context->png, rows);
  png_write_end(context->png, nullptr);
  return true;
}

// Opens `path` for reading with libpng, past the signature. DataError naming the file.
void open_png(const std::string& path, PngContext& context) {
  context.file = std::fopen(path.c_str(), "rb");
  if (context.file == nullptr) throw DataError(path + ": cannot open (" + errno_text() + ")");
  png_byte signature[8];
  if (std::fread(signature, 1, 8, context.file) != 8 || png_sig_cmp(signature, 0, 8) != 0) {
    throw DataError(path + ": not a PNG file (bad signature)");
  }
  context.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &context, on_error, on_warning);
  if (context.png == nullptr) throw DataError(path + ": png_create_read_struct failed");
  context.info = png_create_info_struct(context.png);
  if (context.info == nullptr) throw DataError(path + ": png_create_info_struct failed");
  png_set_sig_bytes(context.png, 8);
}

// Reads and checks the header: 8-bit grey or RGB after the transforms, at most kMaxPngPixels.
PngInfo read_checked_header(const std::string& path, PngContext& context, size_t* row_bytes) {
  png_uint_32 width = 0, height = 0;
  int channels = 0;
  if (!read_header(&context, &width, &height, &channels, row_bytes)) {
    throw DataError(path + ": invalid PNG: " + context.message);
  }
  if ((channels != 1 && channels != 3) || *row_bytes != size_t{width} * channels) {
    throw DataError(path + ": PNG decodes to " + std::to_string(channels) + " channels / " +
                    std::to_string(*row_bytes) + " bytes per row, want 8-bit grey or RGB");
  }
  const PngInfo info{static_cast<int64_t>(height), static_cast<int64_t>(width), channels};
  if (info.height * info.width > kMaxPngPixels) {
    throw DataError(path + ": PNG header says " + std::to_string(info.width) + "x" +
                    std::to_string(info.height) + " pixels, more than the " +
                    std::to_string(kMaxPngPixels) + " difftrain reads");
  }
  return info;
}

}  // namespace

PngInfo read_png_info(const std::string& path) {
  PngContext context;
  open_png(path, context);
  size_t row_bytes = 0;
  return read_checked_header(path, context, &row_bytes);
}

Image read_png(const std::string& path) {
  PngContext context;
  open_png(path, context);
  size_t row_bytes = 0;
  const PngInfo info = read_checked_header(path, context, &row_bytes);
  const auto height = static_cast<png_uint_32>(info.height);
  Image image;
  image.height = info.height;
  image.width = info.width;
  image.channels = info.channels;
  image.pixels.resize(size_t{height} * row_bytes);
  std::vector<png_bytep> rows(height);
  for (png_uint_32 y = 0; y < height; ++y) rows[y] = image.pixels.data() + y * row_bytes;
  if (!read_rows(&context, rows.data())) {
    throw DataError(path + ": invalid PNG: " + context.message);
  }
  return image;
}

void write_png(const std::string& path, const uint8_t* pixels_hwc, int64_t height, int64_t width,
               int64_t channels) {
  if (channels != 1 && channels != 3) {
    throw DataError(path + ": cannot write a PNG with " + std::to_string(channels) +
                    " channels, want 1 (grey) or 3 (RGB)");
  }
  if (height <= 0 || width <= 0 || height > PNG_UINT_31_MAX || width > PNG_UINT_31_MAX) {
    throw DataError(path + ": cannot write a PNG of " + std::to_string(height) + "x" +
                    std::to_string(width) + " pixels");
  }
  const std::string temp = temp_path_for(path);
  {
    PngContext context;
    context.writing = true;
    context.file = std::fopen(temp.c_str(), "wb");
    if (context.file == nullptr) {
      throw DataError(path + ": cannot create " + temp + " (" + errno_text() + ")");
    }
    context.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &context, on_error, on_warning);
    if (context.png != nullptr) context.info = png_create_info_struct(context.png);
    std::vector<png_bytep> rows(static_cast<size_t>(height));
    for (int64_t y = 0; y < height; ++y) {
      // libpng takes non-const row pointers but only reads them when writing.
      rows[y] = const_cast<png_bytep>(pixels_hwc + y * width * channels);
    }
    const bool ok =
        context.png != nullptr && context.info != nullptr &&
        write_all(&context, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height),
                  channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, rows.data());
    const bool flushed = ok && std::fflush(context.file) == 0;
    if (!ok || !flushed) {
      const std::string reason = !ok ? std::string(context.message) : errno_text();
      std::remove(temp.c_str());
      throw DataError(path + ": PNG write failed: " + reason);
    }
  }  // closes the file before it is published
  publish_file(temp, path);
}

}  // namespace difftrain::data
