// framework/pickle_archive.h: the streamed archive is torch::pickle_save's, byte for byte (so
// torch.load and pickle_load read it as before), and a failing stream is an error, not a file.
#include "framework/pickle_archive.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <streambuf>
#include <string>
#include <vector>

#include "framework/atomic_file.h"
#include "framework/error.h"
#include "tests/support/helpers.h"

namespace fmam {
namespace {

namespace fs = std::filesystem;

// A model-file-like dict: strings, numbers, None, and tensors of several dtypes, including a
// non-contiguous view and an empty tensor (pickle_save copies such tensors before writing).
c10::IValue sample_value() {
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("format", std::string("fmam-model"));
  d.insert("version", int64_t(3));
  d.insert("threshold", c10::IValue(0.25));
  d.insert("map_lo", c10::IValue());
  d.insert("image_size", std::vector<int64_t>{256, 128});
  c10::Dict<std::string, at::Tensor> t;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  t.insert("conv.weight", at::randn({64, 32, 3, 3}, gen));
  t.insert("bn.num_batches_tracked", at::tensor(int64_t(12)));
  t.insert("half", at::randn({5, 7}, gen).to(at::kBFloat16));
  t.insert("transposed", at::randn({6, 4}, gen).t());
  t.insert("empty", at::zeros({0, 3}));
  d.insert("tensors", t);
  return d;
}

std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

std::string streamed(const c10::IValue& v) {
  std::ostringstream out;
  write_pickle_archive(v, out);
  return out.str();
}

TEST(PickleArchiveTest, BytesAreThoseOfPickleSave) {
  const c10::IValue v = sample_value();
  const std::vector<char> reference = torch::pickle_save(v);
  const std::string bytes = streamed(v);
  ASSERT_EQ(bytes.size(), reference.size());
  EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), reference.begin()));
  // And it reads back: the tensors, values included.
  const c10::IValue back = torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
  const auto d = back.toGenericDict();
  EXPECT_EQ(d.at("format").toStringRef(), "fmam-model");
  const auto tensors = d.at("tensors").toGenericDict();
  EXPECT_TRUE(at::equal(tensors.at("conv.weight").toTensor(),
                        v.toGenericDict().at("tensors").toGenericDict().at("conv.weight").toTensor()));
  EXPECT_TRUE(at::equal(tensors.at("transposed").toTensor(),
                        v.toGenericDict().at("tensors").toGenericDict().at("transposed").toTensor()));
  EXPECT_EQ(tensors.at("half").toTensor().scalar_type(), at::kBFloat16);
}

// A stream buffer that takes `room` bytes and then fails, as a full disk does.
class FullDisk : public std::streambuf {
 public:
  explicit FullDisk(size_t room) : room_(room) {}

 protected:
  std::streamsize xsputn(const char*, std::streamsize n) override {
    const std::streamsize took = std::min<std::streamsize>(n, std::streamsize(room_));
    room_ -= size_t(took);
    return took;
  }
  int_type overflow(int_type c) override { return room_ > 0 ? (--room_, c) : traits_type::eof(); }

 private:
  size_t room_;
};

// A full disk mid-archive: the stream is left failed (no crash: the zip writer once threw twice
// and terminated the process), and the atomic write throws naming the file and leaves nothing.
TEST(PickleArchiveTest, AFailingStreamIsReportedAndTheAtomicWriteLeavesNoFile) {
  FullDisk disk(10000);
  std::ostream out(&disk);
  write_pickle_archive(sample_value(), out);
  EXPECT_FALSE(out.good());

  test::TempDir d("fmam_pickle_archive_test");
  const std::string path = d / "model.fmam";
  auto on_full_disk = [&](std::ostream& o) {
    write_pickle_archive(sample_value(), o);
    o.setstate(std::ios::badbit);  // what a full disk does to the file stream
  };
  EXPECT_THAT([&] { atomic_write_stream(path, on_full_disk); }, testing::ThrowsMessage<Error>(testing::HasSubstr(path)));
  EXPECT_TRUE(fs::is_empty(d.path));
  atomic_write_stream(path, [&](std::ostream& o) { write_pickle_archive(sample_value(), o); });
  EXPECT_EQ(file_bytes(path), streamed(sample_value()));
}

}  // namespace
}  // namespace fmam
