// ImageSet helpers: image count and centre padding.
#include "data/image_set.h"

#include <algorithm>
#include <cstring>

#include "data/data_error.h"

namespace difftrain::data {

int64_t ImageSet::size() const {
  const int64_t bytes = shape.bytes();
  return bytes > 0 ? static_cast<int64_t>(pixels.size()) / bytes : 0;
}

ImageSet pad_to(const ImageSet& images, int64_t size, uint8_t background) {
  const SampleShape& in = images.shape;
  if (size < in.height || size < in.width) {
    throw DataError(images.source + ": cannot pad images of shape " + in.str() + " to " +
                    std::to_string(size) + "x" + std::to_string(size) +
                    " (smaller than the images)");
  }
  ImageSet out;
  out.shape = SampleShape{in.channels, size, size};
  out.labels = images.labels;
  out.label_count = images.label_count;
  out.source = images.source;
  const int64_t count = images.size();
  out.pixels.assign(static_cast<size_t>(count * out.shape.bytes()), background);
  const int64_t top = (size - in.height) / 2;
  const int64_t left = (size - in.width) / 2;
  for (int64_t n = 0; n < count; ++n) {
    for (int64_t c = 0; c < in.channels; ++c) {
      const uint8_t* src = images.pixels.data() + ((n * in.channels + c) * in.height) * in.width;
      uint8_t* dst = out.pixels.data() + ((n * in.channels + c) * size + top) * size + left;
      for (int64_t y = 0; y < in.height; ++y) {
        std::memcpy(dst + y * size, src + y * in.width, static_cast<size_t>(in.width));
      }
    }
  }
  return out;
}

}  // namespace difftrain::data
