// safetensors files (the format HuggingFace models travel in): an 8-byte little-endian header
// length, a JSON header naming each tensor's dtype, shape and byte range, then the raw
// little-endian tensor bytes. Read and written here without Python, for `export` and `import`.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace difftrain::trainer {

// Named tensors (written in this order; decoded in name order, as the JSON header keeps them),
// plus the optional string-to-string "__metadata__" map.
struct SafetensorsContent {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::map<std::string, std::string> metadata;

  // The tensor called `name`; throws std::runtime_error naming `origin` when there is none.
  const at::Tensor& at(const std::string& name, const std::string& origin) const;
  bool contains(const std::string& name) const;
};

// The file's bytes. Tensors may live on any device and in any layout; they are copied to the
// CPU contiguously. Supported dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL. Throws
// std::runtime_error on an unsupported dtype or a repeated name.
std::string encode_safetensors(const SafetensorsContent& content);

// Parses `bytes`, checking everything before trusting it: the header length fits the file, the
// header is a JSON object, each entry has a known dtype, a shape of non-negative sizes and
// data_offsets whose length matches dtype and shape, and the byte ranges tile the data exactly
// (no gap, overlap or trailing bytes). Throws std::runtime_error "<origin>: <what is wrong>".
// The tensors own their memory (CPU).
SafetensorsContent decode_safetensors(const std::string& bytes, const std::string& origin);

// decode_safetensors() of the file at `path` (errors name the path; a missing file too).
SafetensorsContent read_safetensors(const std::string& path);

// Writes encode_safetensors(content) to `path` (not atomically: callers write into a
// temporary folder or name and publish it).
void write_safetensors(const std::string& path, const SafetensorsContent& content);

}  // namespace difftrain::trainer
