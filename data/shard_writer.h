// Writes an in-memory ImageSet as a sharded HDF5 dataset: shard-NNNNN.h5 files plus
// index.json (see shard_format.h and manifest.h).
#pragma once

#include <cstdint>
#include <string>

#include "data/image_set.h"
#include "data/manifest.h"

namespace difftrain::data {

// Creates out_dir (and parents) and writes num_shards shards holding contiguous, near-equal
// slices of `images` (the first N % num_shards shards get one extra image), each written
// under a temporary name and renamed; index.json is written last, so a directory with an
// index.json is always complete. Returns the manifest it wrote.
// DataError if out_dir/index.json already exists ("already holds a dataset"), if num_shards
// is not in [1, N], if images is empty or inconsistent (pixel count, label count, label out
// of range), or on any I/O failure. Takes the library's HDF5 lock while writing.
Manifest write_shards(const ImageSet& images, const std::string& out_dir, int64_t num_shards);

}  // namespace difftrain::data
