// Importer for the IDX format of MNIST and Fashion-MNIST (yann.lecun.com/exdb/mnist):
// uint8 image tensors and label vectors, gzip-compressed or plain.
#pragma once

#include <string>

#include "data/image_set.h"

namespace difftrain::data {

// Reads an IDX3 uint8 image file [N,H,W] (C = 1) and, when labels_path is not empty, an IDX1
// uint8 label file [N]. Either file may be gzip-compressed (detected by content, not name).
// DataError naming the file for: wrong magic, unsupported element type or rank, zero
// dimensions, truncated or over-long data, label count != image count.
// label_count = max label + 1 (0 without labels). Thread-safe (no shared state).
ImageSet read_idx(const std::string& images_path, const std::string& labels_path = "");

}  // namespace difftrain::data
