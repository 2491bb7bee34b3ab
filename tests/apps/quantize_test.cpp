// fmam quantize as a user meets it (the real binary): it calibrates a model on a folder or a
// category's train/good, reports and skips an unreadable image, writes a copy with --out and
// leaves the model as it was; the calibrated model then runs with --precision int8 (bench counts
// the int8 teacher's arithmetic too); an uncalibrated one is refused with the command to run; and
// a missing option or folder is named.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "framework/model_file.h"
#include "tests/support/helpers.h"
#include "tests/support/tiny_model.h"

namespace {

namespace fs = std::filesystem;
using testing::HasSubstr;

using Result = fmam::test::CliResult;

fs::path temp_dir() { return fmam::test::process_temp_dir("fmam_quantize_test"); }
Result fmam(const std::string& args) { return fmam::test::run_fmam(args, temp_dir()); }

const std::string kBottle = std::string(FMAM_SOURCE_DIR) + "/../shared/data/mvtec_ad/bottle";

std::string tiny_rkd(const std::string& name) {
  const std::string p = (temp_dir() / name).string();
  fmam::save_model(p, fmam::test::tiny_model("graphs/rkd.json"));
  return p;
}

// The teacher's GFLOP per image in fmam bench's table ("-" when nothing was counted).
std::string teacher_gflop(const std::string& bench_out) {
  std::istringstream lines(bench_out);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream f(line);
    std::string id, type, ms_call, ms_image, share, gflop;
    if (f >> id >> type >> ms_call >> ms_image >> share >> gflop && type == "Backbone") return gflop;
  }
  return "";
}

TEST(QuantizeTest, CalibratesAFolderSkippingABadImageThenRunsInt8) {
  const std::string model = tiny_rkd("rkd.fmam"), copy = (temp_dir() / "rkd_int8.fmam").string();
  const fs::path folder = temp_dir() / "good";
  fs::create_directories(folder);
  for (const char* f : {"000.png", "001.png", "002.png"}) fs::copy_file(kBottle + "/train/good/" + f, folder / f);
  fmam::test::write_bytes((folder / "001_cut.png").string(), "\x89PNG\r\n\x1a\n cut short");

  Result q = fmam("quantize graphs/rkd.json -m " + model + " -d " + folder.string() + " --out " + copy + " -q");
  ASSERT_EQ(q.rc, 0) << q.err;
  EXPECT_THAT(q.err, HasSubstr("skipped " + (folder / "001_cut.png").string()));
  EXPECT_THAT(q.err, HasSubstr("calibrated " + copy + " for int8: 22 activation ranges of teacher from 3 image(s), 1 skipped"));
  EXPECT_TRUE(fmam::load_model(model).int8_ranges.empty()) << "--out leaves the model as it was";
  EXPECT_EQ(fmam::load_model(copy).int8_ranges.size(), 22u);

  const std::string image = kBottle + "/test/broken_large/000.png";
  Result b = fmam("bench graphs/rkd.json -m " + copy + " -i " + image + " --frames 2 --warmup 1 --repeat 1 --precision int8");
  ASSERT_EQ(b.rc, 0) << b.err;
  EXPECT_THAT(b.out, HasSubstr("precision int8"));
  // ResNet-18 to layer3 at 64x64: 2 * 0.21 GMAC, a 16th of its 256x256 work, as in float.
  const std::string gflop = teacher_gflop(b.out);
  ASSERT_NE(gflop, "") << b.out;
  ASSERT_NE(gflop, "-") << b.out;
  EXPECT_NEAR(std::stod(gflop), 3.664 / 16, 0.01) << b.out;

  Result refused = fmam("run graphs/rkd.json -m " + model + " -i " + image + " -q --precision int8");
  EXPECT_EQ(refused.rc, 1);
  EXPECT_THAT(refused.err,
              HasSubstr(model + ": the model is not calibrated for int8; run fmam quantize graphs/rkd.json --model " + model +
                        " --data"));
}

TEST(QuantizeTest, ACategoryMeansItsTrainGoodSpreadOverTheSet) {
  const std::string model = tiny_rkd("category.fmam");
  Result q = fmam("quantize graphs/rkd.json --model " + model + " --data " + kBottle + " --images 5 -q");
  ASSERT_EQ(q.rc, 0) << q.err;
  EXPECT_THAT(q.err, HasSubstr("for int8: 22 activation ranges of teacher from 5 image(s), 0 skipped"));
  const fmam::Model m = fmam::load_model(model);
  EXPECT_THAT(m.int8_calibration, HasSubstr("train/good/000.png"));
  EXPECT_THAT(m.int8_calibration, HasSubstr("\"images\":5"));
}

TEST(QuantizeTest, MistakesAreNamed) {
  Result help = fmam("quantize --help");
  EXPECT_EQ(help.rc, 0);
  EXPECT_THAT(help.out, HasSubstr("usage: fmam quantize GRAPH --model MODEL --data DIR"));
  EXPECT_THAT(help.out, HasSubstr("example"));
  const std::string model = tiny_rkd("mistakes.fmam");
  Result no_data = fmam("quantize graphs/rkd.json -m " + model);
  EXPECT_EQ(no_data.rc, 1);
  EXPECT_THAT(no_data.err, HasSubstr("--data is required; see fmam quantize --help"));
  Result nowhere = fmam("quantize graphs/rkd.json -m " + model + " -d " + (temp_dir() / "nowhere").string());
  EXPECT_EQ(nowhere.rc, 1);
  EXPECT_THAT(nowhere.err, HasSubstr((temp_dir() / "nowhere").string()));
  Result no_teacher = fmam("quantize graphs/rkd.json -m " + (temp_dir() / "absent.fmam").string() + " -d " + kBottle);
  EXPECT_EQ(no_teacher.rc, 1);
  EXPECT_THAT(no_teacher.err, HasSubstr("absent.fmam: cannot open model file"));
}

}  // namespace
