// The dataset manifest: index.json next to the shards, saying what the shards hold (sample
// count and shape, dtype, labels, per-shard counts and checksums) and where they came from.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace difftrain::data {

// Shape of one sample, channels-first.
struct SampleShape {
  int64_t channels = 0, height = 0, width = 0;

  int64_t bytes() const;    // C*H*W (uint8 samples)
  std::string str() const;  // "[1,32,32]"
  bool operator==(const SampleShape& other) const;
  bool operator!=(const SampleShape& other) const { return !(*this == other); }
};

struct ShardEntry {
  std::string file;  // file name relative to the dataset directory, e.g. "shard-00003.h5"
  int64_t samples = 0;
  std::string sha256;  // lowercase hex SHA-256 of the shard's image bytes, in order
};

struct Manifest {
  static constexpr int kFormatVersion = 1;
  static constexpr const char* kFileName = "index.json";

  int format_version = kFormatVersion;
  int64_t sample_count = 0;
  SampleShape shape;
  std::string dtype = "uint8";
  int64_t label_count = 0;  // 0 = unlabelled; otherwise labels lie in [0, label_count)
  std::vector<ShardEntry> shards;
  std::string source;  // free text, e.g. the IDX path

  // Reads dir/index.json and validates it. DataError naming the file and the field (missing,
  // wrong type, bad value; shard counts that do not sum to sample_count).
  static Manifest load(const std::string& dir);
  // Validates, then writes dir/index.json atomically (temp file, fsync, rename). dir must
  // exist. DataError on an invalid manifest or an I/O failure.
  void save(const std::string& dir) const;
  // Throws DataError "<where>: <problem>" for the first invalid field.
  void validate(const std::string& where) const;
};

}  // namespace difftrain::data
