// The `fmam` command line as a user meets it: the real binary, run as a subprocess.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include <opencv2/imgcodecs.hpp>

#include "framework/model_file.h"
#include "tests/support/helpers.h"
#include "tests/support/tiny_model.h"

namespace {

namespace fs = std::filesystem;
using testing::HasSubstr;
using testing::Not;

using Result = fmam::test::CliResult;

// Runs fmam with `args` from the repo root; stdout and stderr captured separately.
Result fmam(const std::string& args) { return fmam::test::run_fmam(args, fmam::test::process_temp_dir("fmam_cli_test")); }

const std::string kExamplePlugin = std::string(FMAM_BINARY_DIR) + "/examples/libfmam_example_plugin.so";

TEST(CliTest, HelpAnswersTheNextQuestion) {
  Result r = fmam("--help");
  EXPECT_EQ(r.rc, 0);
  for (const char* c : {"run GRAPH", "describe", "check GRAPH", "dot GRAPH", "bench GRAPH"}) EXPECT_THAT(r.out, HasSubstr(c));
  for (const char* sub : {"run", "describe", "check", "dot", "bench"}) {
    Result h = fmam(std::string(sub) + " --help");
    EXPECT_EQ(h.rc, 0) << sub;
    EXPECT_THAT(h.out, HasSubstr("usage: fmam " + std::string(sub))) << sub;
    EXPECT_THAT(h.out, HasSubstr("example")) << sub;
  }
  Result bad = fmam("run --no-such-flag");
  EXPECT_EQ(bad.rc, 1);
  EXPECT_THAT(bad.err, HasSubstr("unknown option --no-such-flag; see fmam run --help"));
  EXPECT_EQ(fmam("frobnicate").rc, 2);
}

TEST(CliTest, DescribePrintsPortsAndParamsFromTheContract) {
  Result r = fmam("describe GaussianBlur");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("GaussianBlur"));
  EXPECT_THAT(r.out, HasSubstr("Inputs:"));
  EXPECT_THAT(r.out, HasSubstr("map"));
  EXPECT_THAT(r.out, HasSubstr("sigma"));
  EXPECT_THAT(r.out, HasSubstr("[0.5, 32]"));
  Result list = fmam("describe");
  EXPECT_THAT(list.out, HasSubstr("Resize"));
  EXPECT_THAT(list.out, HasSubstr("Data types:"));
  Result typo = fmam("describe Resise");
  EXPECT_EQ(typo.rc, 1);
  EXPECT_THAT(typo.err, HasSubstr("did you mean \"Resize\""));
}

TEST(CliTest, CheckReportsEveryMistakeWithFileNodeAndField) {
  Result r = fmam("check tests/testdata/graphs/many_mistakes.json");
  EXPECT_EQ(r.rc, 1);
  const std::string f = "tests/testdata/graphs/many_mistakes.json: ";
  EXPECT_THAT(r.err, HasSubstr(f + R"(node "resize" (Resize): param "width": must be in [8, 4096], got 0)"));
  EXPECT_THAT(r.err,
              HasSubstr(f + R"(node "resize" (Resize): unknown param "colour"; known: width, height, interpolation, normalize)"));
  EXPECT_THAT(r.err, HasSubstr(f + R"(nodes[1]: unknown type "GausianBlur"; did you mean "GaussianBlur"?)"));
  EXPECT_THAT(
      r.err,
      HasSubstr(
          f +
          R"(node "writer" (MapWriter): input "map" reads stream "x" of type Tensor (output of node "resize"); expected Map2D)"));
  EXPECT_THAT(r.err,
              HasSubstr(f + R"(node "writer2" (MapWriter): input "map" reads stream "no_such_stream", which no node produces)"));
  EXPECT_THAT(r.err,
              HasSubstr(f + R"(node "again" (Resize): output "tensor" writes stream "x", but node "resize" writes it too)"));
  EXPECT_THAT(r.err, HasSubstr(f + R"(graph output "score": no node produces stream "score")"));
  EXPECT_THAT(r.err, HasSubstr("(7 problems)"));
}

TEST(CliTest, ChecksAndDrawsEveryShippedGraph) {
  for (const auto& dir : {"graphs", "examples/graphs"}) {
    for (const auto& e : fs::recursive_directory_iterator(fs::path(FMAM_SOURCE_DIR) / dir)) {
      if (e.path().extension() != ".json") continue;
      const std::string rel = fs::relative(e.path(), FMAM_SOURCE_DIR).string();
      Result c = fmam("check " + rel + " --plugin " + kExamplePlugin);
      EXPECT_EQ(c.rc, 0) << rel << "\n" << c.err;
      EXPECT_THAT(c.out, HasSubstr(": OK")) << rel;
      Result d = fmam("dot " + rel + " --plugin " + kExamplePlugin);
      EXPECT_EQ(d.rc, 0) << rel << "\n" << d.err;
      EXPECT_THAT(d.out, HasSubstr("digraph")) << rel;
      EXPECT_THAT(d.out, HasSubstr("->")) << rel;
    }
  }
}

TEST(CliTest, ExamplePluginGraphRunsAndSkipsABadImage) {
  const fs::path dir = fmam::test::process_temp_dir("fmam_cli_run");
  fs::create_directories(dir / "in");
  const std::string bottle = std::string(FMAM_SOURCE_DIR) + "/../shared/data/mvtec_ad/bottle/test/broken_large/";
  for (const char* n : {"000.png", "001.png", "002.png"}) {
    cv::Mat img = cv::imread(bottle + n);
    ASSERT_FALSE(img.empty()) << "needs ../shared/data: " << bottle << n;
    cv::imwrite((dir / "in" / n).string(), img);
  }
  std::ofstream(dir / "in" / "broken.png") << "this is not a png";
  Result r = fmam("run examples/graphs/edge_inspection.json --plugin " + kExamplePlugin + " -q -i " + (dir / "in").string() +
                  " -o " + (dir / "out").string());
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("skipped: examples/graphs/edge_inspection.json: node \"read_image\" (ImageSource): \""));
  EXPECT_THAT(r.err, HasSubstr("broken.png\": cannot decode"));
  EXPECT_THAT(r.err, HasSubstr("4 image(s), 1 skipped"));
  // Scores on stdout, in input order, and in scores.csv.
  EXPECT_THAT(r.out, HasSubstr("source,score\n"));
  const size_t p0 = r.out.find("000.png"), p1 = r.out.find("001.png"), p2 = r.out.find("002.png");
  ASSERT_NE(p2, std::string::npos);
  EXPECT_LT(p0, p1);
  EXPECT_LT(p1, p2);
  EXPECT_TRUE(fs::exists(dir / "out" / "scores.csv"));
  EXPECT_TRUE(fs::exists(dir / "out" / "in_000_edge_map.png"));
  EXPECT_TRUE(fs::exists(dir / "out" / "in_000_edge_map.tiff"));
  cv::Mat raw = cv::imread((dir / "out" / "in_000_edge_map.tiff").string(), cv::IMREAD_UNCHANGED);
  EXPECT_EQ(raw.type(), CV_32FC1);
  for (const auto& e : fs::directory_iterator(dir / "out")) EXPECT_THAT(e.path().filename().string(), Not(HasSubstr(".tmp")));
  fs::remove_all(dir);
}

// bench names the precision and prints each network node's work and rate: the ResNet-18 teacher
// to layer3 at 64x64 does 2 * 0.21 GMAC (a 16th of its 256x256 work), the post-processing none.
TEST(CliTest, BenchPrintsPrecisionAndGflopsPerNode) {
  Result r = fmam(
      "bench graphs/rkd.json -i ../shared/data/mvtec_ad/bottle/test/good/000.png --frames 2 --warmup 2 "
      "--repeat 1 --batch 1 --precision fp32 --set resize.width=64 --set resize.height=64");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("precision fp32"));
  EXPECT_THAT(r.out, HasSubstr("GFLOP/img"));
  std::istringstream lines(r.out);
  std::string line;
  bool teacher = false;
  while (std::getline(lines, line)) {
    std::istringstream f(line);
    std::string id, type, gflop, rate;
    double ms_call, ms_image;
    std::string share;
    if (!(f >> id >> type >> ms_call >> ms_image >> share >> gflop >> rate)) continue;
    if (type == "Backbone") {
      teacher = true;
      EXPECT_NEAR(std::stod(gflop), 3.5 / 16, 0.03) << line;
      EXPECT_GT(std::stod(rate), 0.0) << line;
    }
    if (type == "GaussianBlur") EXPECT_EQ(gflop, "-") << line;
  }
  EXPECT_TRUE(teacher) << r.out;
}

// A progress bar's rate is measured, not guessed: eval's bar starts at its first image, so that
// image came "microseconds" after the start and the bar printed "2207505.5 images/s". Until a
// quarter second has passed the rate reads "--"; after, no rate can exceed images / 0.25 s.
TEST(CliTest, ProgressRatesAreMeasuredNotGuessed) {
  const fs::path dir = fmam::test::process_temp_dir("fmam_cli_test") / "progress";
  const fs::path bottle = fs::path(FMAM_SOURCE_DIR) / "../shared/data/mvtec_ad/bottle";
  fs::remove_all(dir);
  for (const char* t : {"good", "broken_large"}) fs::create_directories(dir / "data" / "test" / t);
  fs::create_directories(dir / "data" / "ground_truth" / "broken_large");
  fs::copy_file(bottle / "test/good/000.png", dir / "data/test/good/000.png");
  fs::copy_file(bottle / "test/good/001.png", dir / "data/test/good/001.png");
  fs::copy_file(bottle / "test/broken_large/000.png", dir / "data/test/broken_large/000.png");
  fs::copy_file(bottle / "ground_truth/broken_large/000_mask.png", dir / "data/ground_truth/broken_large/000_mask.png");
  fmam::save_model((dir / "m.fmam").string(), fmam::test::tiny_model("graphs/rkd.json"));
  Result r = fmam("eval graphs/rkd.json --model " + (dir / "m.fmam").string() + " -d " + (dir / "data").string() + " -o " +
                  (dir / "report").string() + " --precision fp32");
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::regex bar(R"(eval \[[=> ]+\] (\d+)/3  (--|[0-9.]+) images/s  ETA (--|\d+s))");
  int lines = 0;
  for (auto it = std::sregex_iterator(r.err.begin(), r.err.end(), bar); it != std::sregex_iterator(); ++it) {
    ++lines;
    const std::string rate = (*it)[2];
    if (rate != "--") EXPECT_LE(std::stod(rate), 3 / 0.25) << it->str();
    EXPECT_EQ(rate == "--", (*it)[3] == "--") << "a rate and its ETA come together: " << it->str();
  }
  EXPECT_GE(lines, 1) << r.err;
  fs::remove_all(dir);
}

TEST(CliTest, RunWithoutInputSaysWhatIsMissing) {
  Result r = fmam("run examples/graphs/edge_inspection.json --plugin " + kExamplePlugin);
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err, HasSubstr("--input is required"));
  Result m = fmam("run examples/graphs/edge_inspection.json --plugin " + kExamplePlugin + " -i /no/such/dir");
  EXPECT_EQ(m.rc, 1);
  EXPECT_THAT(m.err, HasSubstr("--input \"/no/such/dir\": no such file or folder"));
  Result p = fmam("describe --plugin /no/such/plugin.so");
  EXPECT_EQ(p.rc, 1);
  EXPECT_THAT(p.err, HasSubstr("/no/such/plugin.so: plugin file does not exist"));
}

}  // namespace
