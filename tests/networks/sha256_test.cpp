// sha256_file (networks/weights.h), now OpenSSL's digest: the FIPS 180-4 test vectors, and files
// around the 64 KiB read size so the streaming path's chunk boundaries are covered, checked
// against coreutils' sha256sum.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "framework/error.h"
#include "networks/weights.h"
#include "tests/support/helpers.h"

namespace fmam {
namespace {

using test::TempDir;

std::string write(const TempDir& dir, const std::string& name, const std::string& bytes) {
  const std::string p = dir / name;
  std::ofstream(p, std::ios::binary) << bytes;
  return p;
}

// What `sha256sum` prints for the file: the independent reference.
std::string sha256sum(const std::string& path) {
  FILE* pipe = ::popen(("sha256sum '" + path + "'").c_str(), "r");
  if (!pipe) return "";
  char buf[65] = {};
  const size_t n = std::fread(buf, 1, 64, pipe);
  ::pclose(pipe);
  return std::string(buf, n);
}

TEST(Sha256Test, KnownVectors) {
  TempDir dir;
  EXPECT_EQ(sha256_file(write(dir, "empty", "")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_file(write(dir, "abc", "abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_file(write(dir, "two_blocks", "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // A million 'a's: sixteen 64 KiB reads, the last one short.
  EXPECT_EQ(sha256_file(write(dir, "million_a", std::string(1000000, 'a'))),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256Test, ChunkBoundariesMatchSha256sum) {
  TempDir dir;
  for (const size_t n : {size_t(65535), size_t(65536), size_t(65537), size_t(3 * 65536)}) {
    std::string bytes(n, '\0');
    for (size_t i = 0; i < n; ++i) bytes[i] = char((i * 131 + 7) & 0xff);
    const std::string p = write(dir, "f" + std::to_string(n), bytes);
    const std::string want = sha256sum(p);
    ASSERT_EQ(want.size(), 64u) << "sha256sum did not run";
    EXPECT_EQ(sha256_file(p), want) << n << " bytes";
  }
}

TEST(Sha256Test, MissingFileIsNamed) {
  EXPECT_THAT([] { sha256_file("/nonexistent/fmam/weights.pth"); },
              testing::ThrowsMessage<Error>(testing::HasSubstr("/nonexistent/fmam/weights.pth: cannot open")));
}

}  // namespace
}  // namespace fmam
