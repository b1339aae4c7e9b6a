// Names shared by the shard writer and the dataset reader: what a shard file holds.
#pragma once

#include <cstdint>
#include <string>

namespace difftrain::data {

// Each shard is one HDF5 file:
//   "images"          uint8 [N,C,H,W], chunked one image per chunk, uncompressed
//   "labels"          int64 [N], only when the dataset is labelled
//   "format_version"  int attribute on the root group, = Manifest::kFormatVersion
inline constexpr const char* kImagesDataset = "images";
inline constexpr const char* kLabelsDataset = "labels";
inline constexpr const char* kFormatVersionAttribute = "format_version";

// "shard-00003.h5"
std::string shard_file_name(int64_t shard_index);

}  // namespace difftrain::data
