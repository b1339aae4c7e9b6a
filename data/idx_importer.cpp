// IDX reading through zlib's gz* API, which reads gzip and plain files alike.
#include "data/idx_importer.h"

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "data/data_error.h"
#include "data/file_util.h"

namespace difftrain::data {
namespace {

constexpr uint8_t kTypeUint8 = 0x08;
// Refuse absurd headers before allocating: 2^36 bytes is far beyond any IDX file.
constexpr uint64_t kMaxPayloadBytes = uint64_t{1} << 36;

// An open IDX file and its parsed header.
class IdxFile {
 public:
  explicit IdxFile(const std::string& path) : path_(path) {
    file_ = gzopen(path.c_str(), "rb");
    if (file_ == nullptr) throw DataError(path + ": cannot open (" + errno_text() + ")");
    gzbuffer(file_, 1 << 20);
  }
  ~IdxFile() { gzclose(file_); }
  IdxFile(const IdxFile&) = delete;
  IdxFile& operator=(const IdxFile&) = delete;

  // Reads the magic and dimensions; checks the type is uint8 and the rank is want_rank.
  std::vector<uint64_t> read_header(int want_rank, const char* what) {
    uint8_t magic[4];
    if (read(magic, 4) != 4) throw DataError(path_ + ": too short for an IDX header");
    const uint32_t magic_value = (uint32_t{magic[0]} << 24) | (uint32_t{magic[1]} << 16) |
                                 (uint32_t{magic[2]} << 8) | magic[3];
    if (magic[0] != 0 || magic[1] != 0) {
      char hex[16];
      std::snprintf(hex, sizeof hex, "0x%08x", magic_value);
      throw DataError(path_ + ": not an IDX file (magic " + hex + ")");
    }
    if (magic[2] != kTypeUint8) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", magic[2]);
      throw DataError(path_ + ": IDX element type " + hex + " not supported, want 0x08 (uint8)");
    }
    if (magic[3] != want_rank) {
      throw DataError(path_ + ": IDX file has " + std::to_string(magic[3]) + " dimensions, want " +
                      std::to_string(want_rank) + " (" + what + ")");
    }
    std::vector<uint64_t> dims(want_rank);
    uint64_t total = 1;
    for (int i = 0; i < want_rank; ++i) {
      uint8_t b[4];
      if (read(b, 4) != 4) throw DataError(path_ + ": truncated IDX header");
      dims[i] = (uint64_t{b[0]} << 24) | (uint64_t{b[1]} << 16) | (uint64_t{b[2]} << 8) | b[3];
      if (dims[i] == 0) {
        throw DataError(path_ + ": IDX dimension " + std::to_string(i) + " is 0");
      }
      total *= dims[i];
      if (total > kMaxPayloadBytes) {
        throw DataError(path_ + ": IDX header claims more than 2^36 bytes of data");
      }
    }
    return dims;
  }

  // Reads exactly `bytes` payload bytes and checks nothing follows them.
  std::vector<uint8_t> read_payload(uint64_t bytes) {
    std::vector<uint8_t> data(bytes);
    const uint64_t got = read(data.data(), bytes);
    if (got != bytes) {
      throw DataError(path_ + ": truncated: header promises " + std::to_string(bytes) +
                      " data bytes, file holds " + std::to_string(got));
    }
    uint8_t extra;
    if (read(&extra, 1) != 0) {
      throw DataError(path_ + ": holds more data than its header describes (" +
                      std::to_string(bytes) + " bytes)");
    }
    return data;
  }

 private:
  // Reads up to `bytes`, looping over gzread's unsigned-int limit; returns the count read.
  // A damaged gzip stream is an error; a short plain or gzip file just returns fewer bytes.
  uint64_t read(uint8_t* out, uint64_t bytes) {
    uint64_t done = 0;
    while (done < bytes) {
      const unsigned int want =
          static_cast<unsigned int>(std::min<uint64_t>(bytes - done, 1u << 30));
      const int n = gzread(file_, out + done, want);
      if (n < 0) {
        int code = 0;
        const char* message = gzerror(file_, &code);
        // A gzip stream cut short reports Z_BUF_ERROR: that is truncation, which the caller
        // reports with the byte counts.
        if (code == Z_BUF_ERROR) break;
        throw DataError(path_ + ": read failed: " + (message ? message : "zlib error"));
      }
      if (n == 0) break;
      done += static_cast<uint64_t>(n);
    }
    return done;
  }

  std::string path_;
  gzFile file_ = nullptr;
};

}  // namespace

ImageSet read_idx(const std::string& images_path, const std::string& labels_path) {
  ImageSet images;
  {
    IdxFile file(images_path);
    const std::vector<uint64_t> dims = file.read_header(3, "images [N,H,W]");
    images.shape = SampleShape{1, static_cast<int64_t>(dims[1]), static_cast<int64_t>(dims[2])};
    images.pixels = file.read_payload(dims[0] * dims[1] * dims[2]);
  }
  images.source = images_path;
  if (labels_path.empty()) return images;

  IdxFile file(labels_path);
  const std::vector<uint64_t> dims = file.read_header(1, "labels [N]");
  if (static_cast<int64_t>(dims[0]) != images.size()) {
    throw DataError(labels_path + ": has " + std::to_string(dims[0]) + " labels, " + images_path +
                    " has " + std::to_string(images.size()) + " images");
  }
  const std::vector<uint8_t> labels = file.read_payload(dims[0]);
  images.labels.assign(labels.begin(), labels.end());
  images.label_count = 1 + *std::max_element(labels.begin(), labels.end());
  images.source = images_path + " + " + labels_path;
  return images;
}

}  // namespace difftrain::data
