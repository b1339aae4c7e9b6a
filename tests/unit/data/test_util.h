// Helpers shared by the data unit tests: a self-deleting temp folder and tiny image sets.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "data/image_set.h"

namespace difftrain::data::testing {

// A fresh folder under $TMPDIR (or /tmp), removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base != nullptr ? base : "/tmp") + "/difftrain-data-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code error;
    std::filesystem::remove_all(path_, error);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// n images of `shape` whose bytes encode (image index, byte position), so any misplaced or
// swapped image shows up; labels i % label_count when label_count > 0.
inline ImageSet make_images(int64_t n, SampleShape shape, int64_t label_count) {
  ImageSet images;
  images.shape = shape;
  images.source = "test";
  images.pixels.resize(static_cast<size_t>(n * shape.bytes()));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t b = 0; b < shape.bytes(); ++b) {
      images.pixels[i * shape.bytes() + b] = static_cast<uint8_t>((i * 7 + b * 13 + i / 37) & 0xFF);
    }
  }
  images.label_count = label_count;
  if (label_count > 0) {
    for (int64_t i = 0; i < n; ++i) images.labels.push_back(i % label_count);
  }
  return images;
}

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

}  // namespace difftrain::data::testing
