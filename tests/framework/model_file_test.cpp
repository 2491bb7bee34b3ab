// Model file integrity: the tensors' SHA-256 written and verified at load, files without it
// (older fmam, Python) still loading, and every malformed field named.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include <torch/serialize.h>

#include "framework/error.h"
#include "framework/model_file.h"
#include "tests/support/helpers.h"
#include "tests/support/tiny_model.h"

namespace fmam {
namespace {

namespace fs = std::filesystem;
using testing::HasSubstr;
using testing::ThrowsMessage;

fs::path dir() { return fmam::test::process_temp_dir("fmam_model_file_test"); }

const Model& rkd() {
  static Model m = test::tiny_model("graphs/rkd.json");
  return m;
}

// Rewrites a saved model's top-level dict through `edit`, as another tool would.
void rewrite(const std::string& path, const std::function<void(c10::impl::GenericDict&)>& edit) {
  const std::string b = test::read_bytes(path);
  c10::IValue v = torch::pickle_load(std::vector<char>(b.begin(), b.end()));
  auto d = v.toGenericDict();
  edit(d);
  std::vector<char> out = torch::pickle_save(d);
  test::write_bytes(path, std::string(out.begin(), out.end()));
}

TEST(ModelFileTest, ChecksumIsWrittenAndARoundTripLoads) {
  const std::string p = (dir() / "ok.fmam").string();
  save_model(p, rkd());
  const std::string b = test::read_bytes(p);
  c10::IValue v = torch::pickle_load(std::vector<char>(b.begin(), b.end()));
  ASSERT_TRUE(v.toGenericDict().contains("tensors_sha256"));
  EXPECT_EQ(v.toGenericDict().at("tensors_sha256").toStringRef().size(), 64u);
  Model m = load_model(p);
  ASSERT_EQ(m.tensors.size(), rkd().tensors.size());
  for (const auto& [k, t] : rkd().tensors) EXPECT_TRUE(t.equal(m.tensors.at(k))) << k;
}

TEST(ModelFileTest, AFlippedTensorByteFailsTheChecksum) {
  const std::string p = (dir() / "flipped.fmam").string();
  save_model(p, rkd());
  // The tensors are the bulk of the file: flip bytes in its middle half (stored uncompressed).
  std::string b = test::read_bytes(p);
  for (int k = 0; k < 50; ++k) b[b.size() / 4 + size_t(k) * (b.size() / 100)] ^= 0x5A;
  test::write_bytes(p, b);
  EXPECT_THAT([&] { load_model(p); }, ThrowsMessage<Error>(HasSubstr(p + ": the model's tensors do not match their checksum")));
}

TEST(ModelFileTest, AReplacedTensorFailsTheChecksum) {
  const std::string p = (dir() / "replaced.fmam").string();
  save_model(p, rkd());
  rewrite(p, [](c10::impl::GenericDict& d) {
    auto t = d.at("tensors").toGenericDict();
    const std::string key = t.begin()->key().toStringRef();
    t.insert_or_assign(key, t.begin()->value().toTensor() + 1);
  });
  EXPECT_THAT([&] { load_model(p); }, ThrowsMessage<Error>(HasSubstr("do not match their checksum")));
}

TEST(ModelFileTest, AModelWithoutAChecksumStillLoads) {
  const std::string p = (dir() / "old.fmam").string();
  save_model(p, rkd());
  rewrite(p, [](c10::impl::GenericDict& d) { d.erase("tensors_sha256"); });
  EXPECT_EQ(load_model(p).tensors.size(), rkd().tensors.size());
}

// scripts/rd4ad_official.py export loads an fmam model in Python, replaces the student's tensors
// and saves the dict again, keeping the other fields: the template's checksum among them. Python's
// torch.save names the zip records after the file, not "archive/", and such files load.
TEST(ModelFileTest, AFileRewrittenByPythonWithAStaleChecksumStillLoads) {
  const std::string p = (dir() / "python.fmam").string();
  save_model(p, rkd());
  rewrite(p, [](c10::impl::GenericDict& d) {  // new tensors, the old checksum kept
    auto t = d.at("tensors").toGenericDict();
    const std::string key = t.begin()->key().toStringRef();
    t.insert_or_assign(key, t.begin()->value().toTensor() * 0.5);
  });
  std::string b = test::read_bytes(p);
  for (size_t at = b.find("archive/"); at != std::string::npos; at = b.find("archive/", at)) b.replace(at, 8, "off_fmm/");
  test::write_bytes(p, b);
  const Model m = load_model(p);
  EXPECT_TRUE(m.tensors.begin()->second.equal(rkd().tensors.begin()->second * 0.5));
}

// What the model-file fuzzer found (tests/testdata/bad_models/README.md): a pickled string whose
// length made libtorch allocate gigabytes, and a storage larger than its record, which libtorch
// turned into a tensor reading past its data (AddressSanitizer: out-of-memory, heap overflow).
TEST(ModelFileTest, FuzzerFindingsAreErrorsNotCrashes) {
  const std::string p = (dir() / "huge_string.fmam").string();
  save_model(p, rkd());
  std::string b = test::read_bytes(p);
  const std::string storage("X\x07\0\0\0storage", 12);  // BINUNICODE 'storage'
  const size_t at = b.find(storage);
  ASSERT_NE(at, std::string::npos);
  b.replace(at + 1, 4, std::string("\xf0\xff\xff\xff", 4));  // now it claims 4 GB
  test::write_bytes(p, b);
  EXPECT_THAT([&] { load_model(p); },
              ThrowsMessage<Error>(HasSubstr(p + ": not a model file (zip entry \"archive/data.pkl\": a pickled string claims "
                                                 "4294967280 bytes")));
  const std::string d = std::string(FMAM_SOURCE_DIR) + "/tests/testdata/bad_models/";
  EXPECT_THAT([&] { load_model(d + "storage_past_record.fmam"); },
              ThrowsMessage<Error>(HasSubstr("storage_past_record.fmam: not a model file (tensor storage \"0\" claims 48 bytes, "
                                             "its record holds 12)")));
  EXPECT_THAT([&] { load_model(d + "memo_index.fmam"); },
              ThrowsMessage<Error>(HasSubstr("memo_index.fmam: not a model file (zip entry \"archive/data.pkl\": memo index "
                                             "2101703279 in a pickle of 1054 bytes)")));
  EXPECT_THAT([&] { load_model(d + "zip64_record.fmam"); },
              ThrowsMessage<Error>(HasSubstr("zip64_record.fmam: not a model file (a damaged zip64 record)")));
  // A zip64 record at offset 2^64 - 1: the bound check wrapped around and read before the buffer.
  EXPECT_THAT([&] { load_model(d + "zip64_offset_wraps.fmam"); },
              ThrowsMessage<Error>(HasSubstr("zip64_offset_wraps.fmam: not a model file (a damaged zip64 record)")));
  EXPECT_THAT(
      [&] { load_model(d + "duplicate_entry.fmam"); },
      ThrowsMessage<Error>(HasSubstr("duplicate_entry.fmam: not a model file (zip entry \"archive/data/0\" appears twice)")));
}

// libtorch 1.13's unpickler trusts the pickle's stack: TUPLE2 on a stack of one made it free
// memory it did not allocate (fmam aborted, "free(): invalid size"). Found by the fuzzer twice.
TEST(ModelFileTest, UnbalancedOrDamagedPicklesNeverReachLibtorch) {
  const std::string d = std::string(FMAM_SOURCE_DIR) + "/tests/testdata/bad_models/";
  for (const char* f : {"unpickler_bad_free.fmam", "unpickler_bad_free_crc_fixed.fmam"})
    EXPECT_THAT(
        [&] { load_model(d + f); },
        ThrowsMessage<Error>(HasSubstr(std::string(f) + ": not a model file (zip entry \"archive/data.pkl\": the pickle's "
                                                        "opcode 0x86 at byte 40 takes 2 item(s), the stack holds 1)")));
  // Damage that keeps the pickle's structure (a letter of a string) is caught by the zip's CRC-32.
  const std::string p = (dir() / "crc.fmam").string();
  save_model(p, rkd());
  std::string b = test::read_bytes(p);
  const size_t at = b.find("fmam-model");
  ASSERT_NE(at, std::string::npos);
  b[at] = 'F';
  test::write_bytes(p, b);
  EXPECT_THAT([&] { load_model(p); },
              ThrowsMessage<Error>(HasSubstr(p + ": not a model file (zip entry \"archive/data.pkl\" fails its CRC-32 check")));
}

TEST(ModelFileTest, NaNWeightsAreAnErrorNamingTheTensor) {
  Model m = rkd();
  const std::string key = m.tensors.begin()->first;
  m.tensors.begin()->second = m.tensors.begin()->second.clone().fill_(std::numeric_limits<float>::quiet_NaN());
  const std::string p = (dir() / "nan.fmam").string();
  save_model(p, m);
  EXPECT_THAT([&] { load_model(p); },
              ThrowsMessage<Error>(HasSubstr(p + ": tensor \"" + key + "\" holds NaN or infinite values")));
}

TEST(ModelFileTest, FieldsOfTheWrongTypeAreNamed) {
  const std::string p = (dir() / "typed.fmam").string();
  save_model(p, rkd());
  rewrite(p, [](c10::impl::GenericDict& d) { d.insert_or_assign("image_size", std::string("256")); });
  EXPECT_THAT([&] { load_model(p); }, ThrowsMessage<Error>(HasSubstr(R"(model field "image_size" must hold [height, width])")));
  save_model(p, rkd());
  rewrite(p, [](c10::impl::GenericDict& d) { d.insert_or_assign("normalize", int64_t(3)); });
  EXPECT_THAT([&] { load_model(p); }, ThrowsMessage<Error>(HasSubstr(R"(model field "normalize" must be a string, got Int)")));
  save_model(p, rkd());
  rewrite(p, [](c10::impl::GenericDict& d) { d.insert_or_assign("threshold", std::string("high")); });
  EXPECT_THAT([&] { load_model(p); }, ThrowsMessage<Error>(HasSubstr(R"(model field "threshold" must be a number or None)")));
}

// int8 calibration (fmam quantize): kept through a round trip, absent in older files (which
// still load, uncalibrated), and a NaN range is named like a NaN weight.
TEST(ModelFileTest, Int8RangesRoundTripAndOlderFilesLoadWithout) {
  Model m = rkd();
  m.int8_ranges["teacher/stem"] = at::tensor({0.f, 4.5f});
  m.int8_ranges["teacher/layer1.0.conv2"] = at::tensor({-3.25f, 2.f});
  m.int8_calibration = R"({"images": 64})";
  const std::string p = (dir() / "int8.fmam").string();
  save_model(p, m);
  const Model back = load_model(p);
  ASSERT_EQ(back.int8_ranges.size(), 2u);
  EXPECT_TRUE(back.int8_ranges.at("teacher/layer1.0.conv2").equal(at::tensor({-3.25f, 2.f})));
  EXPECT_EQ(back.int8_calibration, m.int8_calibration);

  rewrite(p, [](c10::impl::GenericDict& d) {
    d.erase("int8_ranges");
    d.erase("int8_calibration");
  });
  EXPECT_TRUE(load_model(p).int8_ranges.empty());

  m.int8_ranges["teacher/stem"] = at::tensor({0.f, std::numeric_limits<float>::infinity()});
  save_model(p, m);
  EXPECT_THAT([&] { load_model(p); }, ThrowsMessage<Error>(HasSubstr("tensor \"teacher/stem\" holds NaN or infinite values")));
}

TEST(ModelFileTest, FoldersMissingEmptyAndTruncatedFilesAreNamed) {
  EXPECT_THAT([&] { load_model(dir().string()); },
              ThrowsMessage<Error>(HasSubstr(dir().string() + ": a folder, not a model file")));
  EXPECT_THAT([&] { load_model((dir() / "none.fmam").string()); },
              ThrowsMessage<Error>(HasSubstr("none.fmam: cannot open model file (no such file)")));
  const std::string e = (dir() / "empty.fmam").string();
  test::write_bytes(e, "");
  EXPECT_THAT([&] { load_model(e); }, ThrowsMessage<Error>(HasSubstr(e + ": the model file is empty")));
  const std::string p = (dir() / "cut.fmam").string();
  save_model(p, rkd());
  const std::string b = test::read_bytes(p);
  test::write_bytes(p, b.substr(0, b.size() / 2));
  EXPECT_THAT([&] { load_model(p); }, ThrowsMessage<Error>(HasSubstr(p + ": not a model file")));
}

}  // namespace
}  // namespace fmam
