// Incremental SHA-256 (OpenSSL EVP) for the per-shard checksums in index.json.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace difftrain::data {

// Feed bytes with update(), read the lowercase hex digest once with hex_digest().
// Not thread-safe; one object per stream.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(const uint8_t* bytes, int64_t size);
  // Finishes the hash: 64 lowercase hex characters. Call at most once.
  std::string hex_digest();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One-shot helper.
std::string sha256_hex(const uint8_t* bytes, int64_t size);

}  // namespace difftrain::data
