// SHA-256 through OpenSSL's EVP interface (the SHA256_* functions are deprecated in 3.0).
#include "data/sha256.h"

#include <openssl/evp.h>

#include "data/data_error.h"

namespace difftrain::data {

struct Sha256::Impl {
  EVP_MD_CTX* context = nullptr;
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  impl_->context = EVP_MD_CTX_new();
  if (impl_->context == nullptr || EVP_DigestInit_ex(impl_->context, EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(impl_->context);
    throw DataError("sha256: OpenSSL EVP_DigestInit_ex failed");
  }
}

Sha256::~Sha256() { EVP_MD_CTX_free(impl_->context); }

void Sha256::update(const uint8_t* bytes, int64_t size) {
  if (size > 0 && EVP_DigestUpdate(impl_->context, bytes, static_cast<size_t>(size)) != 1) {
    throw DataError("sha256: OpenSSL EVP_DigestUpdate failed");
  }
}

std::string Sha256::hex_digest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_DigestFinal_ex(impl_->context, digest, &length) != 1) {
    throw DataError("sha256: OpenSSL EVP_DigestFinal_ex failed");
  }
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * length);
  for (unsigned int i = 0; i < length; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 0xF];
  }
  return hex;
}

std::string sha256_hex(const uint8_t* bytes, int64_t size) {
  Sha256 hash;
  hash.update(bytes, size);
  return hash.hex_digest();
}

}  // namespace difftrain::data
