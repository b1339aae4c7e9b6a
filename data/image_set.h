// ImageSet: a whole image collection held in memory, as the importers produce it and the
// shard writer consumes it; plus pad_to, which centres images on a larger canvas.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/manifest.h"

namespace difftrain::data {

struct ImageSet {
  SampleShape shape;
  std::vector<uint8_t> pixels;  // size()*C*H*W bytes, CHW per image, images back to back
  std::vector<int64_t> labels;  // empty (unlabelled) or one per image, in [0, label_count)
  int64_t label_count = 0;      // 0 = unlabelled
  std::string source;           // where the images came from, for the manifest

  // Number of images: pixels.size() / shape.bytes() (0 if the shape is empty).
  int64_t size() const;
};

// Centre-pads every image to size x size with `background` (an odd margin puts the extra
// row/column at the bottom/right). DataError if size < H or size < W.
ImageSet pad_to(const ImageSet& images, int64_t size, uint8_t background = 0);

}  // namespace difftrain::data
