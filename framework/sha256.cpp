#include "framework/sha256.h"

#include <openssl/evp.h>

#include <utility>

#include "framework/error.h"

namespace fmam {

Sha256::Sha256(std::string what) : what_(std::move(what)), ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
  if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1) throw Error(what_ + ": OpenSSL SHA-256 is unavailable");
}

void Sha256::update(const void* data, size_t size) {
  if (EVP_DigestUpdate(ctx_.get(), data, size) != 1) throw Error(what_ + ": SHA-256 failed");
}

std::string Sha256::hex_digest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx_.get(), md, &len) != 1) throw Error(what_ + ": SHA-256 failed");
  std::string hex(2 * size_t(len), '0');
  static const char digits[] = "0123456789abcdef";
  for (unsigned i = 0; i < len; ++i) {
    hex[2 * i] = digits[md[i] >> 4];
    hex[2 * i + 1] = digits[md[i] & 0xf];
  }
  return hex;
}

}  // namespace fmam
