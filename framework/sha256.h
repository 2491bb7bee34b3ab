// SHA-256 through OpenSSL's libcrypto, fed piece by piece: the weight files' check
// (networks/weights.cpp) and the model file's tensor checksum (model_file.cpp) both use it.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX, kept out of this header

namespace fmam {

class Sha256 {
 public:
  // Throws Error("<what>: OpenSSL SHA-256 is unavailable") if libcrypto cannot provide it; `what`
  // (a file, "model file") names the caller in every error.
  explicit Sha256(std::string what);
  void update(const void* data, size_t size);
  // Lower-case hex, what `sha256sum` prints. Ends the digest: call it once.
  std::string hex_digest();

 private:
  std::string what_;
  std::unique_ptr<evp_md_ctx_st, void (*)(evp_md_ctx_st*)> ctx_;
};

}  // namespace fmam
