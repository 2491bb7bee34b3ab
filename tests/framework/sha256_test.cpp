// framework/sha256.h, the one SHA-256 (weight files, model-file checksums): the FIPS 180-4 test
// vectors, whatever pieces the bytes are fed in.
#include "framework/sha256.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace fmam {
namespace {

// The digest of `bytes` fed in pieces of `piece` bytes (the last one shorter).
std::string digest_in_pieces(const std::string& bytes, size_t piece) {
  Sha256 sha("test");
  for (size_t i = 0; i < bytes.size(); i += piece) sha.update(bytes.data() + i, std::min(piece, bytes.size() - i));
  return sha.hex_digest();
}

TEST(Sha256DigestTest, KnownVectors) {
  Sha256 empty("test");
  EXPECT_EQ(empty.hex_digest(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(digest_in_pieces("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(digest_in_pieces(std::string(1000000, 'a'), 1 << 16),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256DigestTest, PiecesDoNotChangeTheDigest) {
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  for (size_t piece : {size_t(1), size_t(7), size_t(55), size_t(56), size_t(64)})
    EXPECT_EQ(digest_in_pieces(two_blocks, piece), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        << "pieces of " << piece;
}

}  // namespace
}  // namespace fmam
