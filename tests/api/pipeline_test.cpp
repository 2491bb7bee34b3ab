// fmam::Pipeline, the library API every face (CLI, GStreamer, Python) runs on: one frame, a batch,
// a stream and files all give the same score for the same image; model-bound params reach nodes
// by their contract; misuse is an error naming what went wrong.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <ATen/ops/zeros.h>

#include "fmam/evaluate.h"
#include "fmam/pipeline.h"
#include "framework/cpu_features.h"
#include "framework/model_binding.h"
#include "framework/model_file.h"
#include "tests/support/helpers.h"
#include "tests/support/tiny_model.h"

namespace fmam {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kSrc = FMAM_SOURCE_DIR;
const std::string kImages = kSrc + "/../shared/data/mvtec_ad/bottle/test/broken_large";

fs::path temp_dir() { return fmam::test::process_temp_dir("fmam_pipeline_test"); }

// A 64x64 RKD model (untrained weights: the numbers only need to agree between paths), with a
// calibrated threshold so verdicts exist.
std::string model_file(double threshold = -1) {
  const std::string path = (temp_dir() / ("rkd_" + std::to_string(threshold) + ".fmam")).string();
  if (!fs::exists(path)) {
    Model m = test::tiny_model("graphs/rkd.json", 64);
    if (threshold >= 0) m.threshold = threshold;
    save_model(path, m);
  }
  return path;
}

std::vector<std::string> some_images(size_t n) {
  std::vector<std::string> f;
  for (size_t i = 0; i < n; ++i) {
    char b[16];
    std::snprintf(b, sizeof b, "/%03zu.png", i);
    f.push_back(kImages + b);
  }
  return f;
}

class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kImages)) GTEST_SKIP() << "no shared images at " << kImages;
  }
};

TEST_F(PipelineTest, OneFrameABatchAStreamAndFilesGiveTheSameScores) {
  PipelineOptions o;
  o.model = model_file();
  o.batch = 2;
  Pipeline p(kSrc + "/graphs/rkd.json", o);
  const auto files = some_images(5);
  std::vector<double> from_files;
  p.run_files(files, [&](const Detection& d) {
    ASSERT_FALSE(d.skipped) << d.error;
    from_files.push_back(d.score);
  });
  ASSERT_EQ(from_files.size(), files.size());
  std::vector<cv::Mat> images;
  for (const auto& f : files) images.push_back(cv::imread(f, cv::IMREAD_COLOR));
  const std::vector<Detection> batch = p.detect_batch(images);
  ASSERT_EQ(batch.size(), files.size());
  std::vector<std::pair<std::string, double>> streamed;
  p.open_stream([&](const Detection& d) { streamed.emplace_back(*std::static_pointer_cast<std::string>(d.user), d.score); });
  for (size_t i = 0; i < images.size(); ++i) p.push(images[i], files[i], std::make_shared<std::string>(files[i]));
  const RunSummary s = p.close_stream();
  EXPECT_EQ(s.frames, (long long)files.size());
  ASSERT_EQ(streamed.size(), files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    const Detection one = p.detect(images[i]);
    EXPECT_NEAR(one.score, from_files[i], 1e-5 * std::abs(from_files[i])) << files[i];
    EXPECT_NEAR(batch[i].score, from_files[i], 1e-5 * std::abs(from_files[i])) << files[i];
    EXPECT_EQ(streamed[i].first, files[i]) << "results come back in push order with their user data";
    EXPECT_NEAR(streamed[i].second, from_files[i], 1e-5 * std::abs(from_files[i])) << files[i];
    EXPECT_EQ(one.map.size(), cv::Size(64, 64)) << "the map is at the model's resolution";
    EXPECT_EQ(map_at(one, images[i].size()).size(), images[i].size());
  }
}

TEST_F(PipelineTest, TheModelsThresholdGivesVerdictsAndAnExplicitOneWins) {
  const cv::Mat img = cv::imread(some_images(1)[0], cv::IMREAD_COLOR);
  PipelineOptions o;
  o.model = model_file(0.0);  // every score is >= 0: FAIL
  Pipeline fail(kSrc + "/graphs/rkd.json", o);
  EXPECT_EQ(fail.threshold(), 0.0);
  EXPECT_EQ(fail.detect(img).verdict, Verdict::kFail);
  o.threshold = 1e9;
  Pipeline pass(kSrc + "/graphs/rkd.json", o);
  EXPECT_EQ(pass.detect(img).verdict, Verdict::kPass);
  o.model = model_file();
  o.threshold = -1;
  EXPECT_EQ(Pipeline(kSrc + "/graphs/rkd.json", o).detect(img).verdict, Verdict::kNone) << "no threshold, no verdict";
}

// A calibration stands for the graph it was made on: another graph on the same weights (the raw +
// mapped ablation) gets no verdicts or colour range from it unless given a threshold, and
// fmam eval --calibrate will not overwrite it with that graph's.
TEST_F(PipelineTest, TheModelsCalibrationHoldsOnlyForItsOwnGraph) {
  const std::string path = (temp_dir() / "fmam_rkd_calibrated.fmam").string();
  Model model = test::tiny_model("graphs/fmam_rkd.json", 64);
  model.threshold = 0.0;  // every score is >= 0: FAIL
  model.map_lo = 0.1;
  model.map_hi = 0.9;
  save_model(path, model);
  const cv::Mat img = cv::imread(some_images(1)[0], cv::IMREAD_COLOR);
  PipelineOptions o;
  o.model = path;
  double lo = 0, hi = 0;
  Pipeline own(kSrc + "/graphs/fmam_rkd.json", o);
  EXPECT_EQ(own.detect(img).verdict, Verdict::kFail);
  EXPECT_TRUE(own.map_range(&lo, &hi));
  const std::string other = kSrc + "/graphs/ablations/fmam_rkd_raw_plus_mapped.json";
  testing::internal::CaptureStderr();
  Pipeline ablation(other, o);
  const std::string warning = testing::internal::GetCapturedStderr();
  EXPECT_THAT(warning, HasSubstr("was calibrated on graph \"fmam_rkd\"; graph \"fmam_rkd_raw_plus_mapped\" scores on its "
                                 "own scale"));
  EXPECT_LT(ablation.threshold(), 0);
  EXPECT_EQ(ablation.detect(img).verdict, Verdict::kNone);
  EXPECT_FALSE(ablation.map_range(&lo, &hi));
  o.threshold = 0.0;
  EXPECT_EQ(Pipeline(other, o).detect(img).verdict, Verdict::kFail) << "an explicit threshold still gives verdicts";
  EvalOptions e;
  e.model = path;
  e.data = kSrc + "/../shared/data/mvtec_ad/bottle";
  e.calibrate = true;
  EXPECT_THAT([&] { evaluate(other, e); },
              testing::ThrowsMessage<Error>(HasSubstr("--calibrate: " + path + " belongs to graph \"fmam_rkd\"")));
  EXPECT_EQ(load_model(path).threshold, 0.0) << "the model is untouched";
}

TEST_F(PipelineTest, GrayAndBgraFramesAreScoredAndOthersRefused) {
  PipelineOptions o;
  o.model = model_file();
  Pipeline p(kSrc + "/graphs/rkd.json", o);
  const cv::Mat bgr = cv::imread(some_images(1)[0], cv::IMREAD_COLOR);
  cv::Mat gray, bgra;
  cv::cvtColor(bgr, gray, cv::COLOR_BGR2GRAY);
  cv::cvtColor(bgr, bgra, cv::COLOR_BGR2BGRA);
  EXPECT_TRUE(std::isfinite(p.detect(gray).score));
  EXPECT_NEAR(p.detect(bgra).score, p.detect(bgr).score, 1e-6);
  cv::Mat f32;
  bgr.convertTo(f32, CV_32F);
  try {
    p.detect(f32);
    FAIL() << "a float image was accepted";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("graphs/rkd.json: detect: images must be 8-bit gray, BGR or BGRA"));
  }
  EXPECT_THROW(p.detect(cv::Mat()), std::runtime_error);
}

TEST_F(PipelineTest, StreamMisuseIsAnErrorNotAHang) {
  PipelineOptions o;
  o.model = model_file();
  Pipeline p(kSrc + "/graphs/rkd.json", o);
  const cv::Mat img = cv::imread(some_images(1)[0], cv::IMREAD_COLOR);
  EXPECT_THROW(p.push(img), std::runtime_error) << "push without open_stream";
  EXPECT_THROW(p.close_stream(), std::runtime_error);
  p.open_stream({});
  EXPECT_THROW(p.open_stream({}), std::runtime_error);
  EXPECT_THROW(p.detect(img), std::runtime_error) << "detect while a stream is open";
  p.push(img);
  EXPECT_EQ(p.close_stream().frames, 1);
  EXPECT_FALSE(p.stream_open());
  // A callback that throws ends the stream; the error reaches close_stream().
  p.open_stream([](const Detection&) { throw std::runtime_error("downstream refused the frame"); });
  p.push(img);
  try {
    for (int i = 0; i < 50; ++i) p.push(img);  // the stream may end while pushing: push rethrows
    p.close_stream();
    FAIL() << "the callback's error was lost";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("downstream refused the frame"));
  }
  EXPECT_FALSE(p.stream_open());
  EXPECT_NEAR(p.detect(img).score, p.detect(img).score, 0) << "the pipeline is usable after a failed stream";
}

TEST_F(PipelineTest, AStreamOfManyFramesKeepsOrderWithPartialBatches) {
  PipelineOptions o;
  o.model = model_file();
  o.batch = 4;
  o.max_in_flight = 3;  // push blocks; the executor still needs to fill batches of 4
  Pipeline p(kSrc + "/graphs/rkd.json", o);
  const cv::Mat img = cv::imread(some_images(1)[0], cv::IMREAD_COLOR);
  std::vector<long long> order;
  p.open_stream([&](const Detection& d) { order.push_back(d.index); });
  for (int i = 0; i < 23; ++i) p.push(img, "frame" + std::to_string(i));
  EXPECT_EQ(p.close_stream().frames, 23);
  ASSERT_EQ(order.size(), 23u);
  for (size_t i = 0; i < order.size(); ++i) EXPECT_EQ(order[i], (long long)i);
}

// bf16-mixed inference: what "auto" becomes follows the CPU; scores stay within bfloat16's
// rounding of fp32's (the anomaly map is 1 - cos of features the convolutions round); a bad
// precision is an error naming the field; device cuda leaves the networks' precision as it is.
TEST_F(PipelineTest, PrecisionIsChosenPerRunAndBf16StaysCloseToFp32) {
  PipelineOptions o;
  o.model = model_file();
  std::map<std::string, std::vector<double>> scores;
  for (const std::string p : {"fp32", "bf16", "auto"}) {
    o.precision = p;
    testing::internal::CaptureStderr();
    Pipeline pipe(kSrc + "/graphs/rkd.json", o);
    const std::string warning = testing::internal::GetCapturedStderr();
    EXPECT_EQ(pipe.precision(), p == "auto" ? (cpu_has_native_bf16() ? "bf16" : "fp32") : p);
    // bf16 asked for on a CPU that emulates it (several times slower than fp32) says so, and only then.
    EXPECT_EQ(warning.find("no native bfloat16") != std::string::npos, p == "bf16" && !cpu_has_native_bf16()) << warning;
    // ... and, where oneDNN has no bfloat16 kernels (no AVX-512), that it is less accurate too.
    EXPECT_EQ(warning.find("less accurate") != std::string::npos, p == "bf16" && !cpu_has_bf16_kernels()) << warning;
    pipe.run_files(some_images(4), [&](const Detection& d) { scores[p].push_back(d.score); });
  }
  ASSERT_EQ(scores["fp32"].size(), 4u);
  ASSERT_EQ(scores["bf16"].size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(scores["bf16"][i], scores["fp32"][i], 0.03 * scores["fp32"][i]) << i;
    EXPECT_NE(scores["bf16"][i], scores["fp32"][i]) << i << ": bf16 did not run";
  }
  o.precision = "half";
  try {
    Pipeline p(kSrc + "/graphs/rkd.json", o);
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("precision must be auto, fp32, bf16 or int8, got \"half\""));
  }
  // device = cuda moves only the Halide kernels (to the GPU, or back to the CPU where there is
  // none): the networks keep bf16, so the scores are bf16's, not fp32's.
  o.precision = "auto";
  o.device = "cuda";
  Pipeline on_cuda(kSrc + "/graphs/rkd.json", o);
  EXPECT_EQ(on_cuda.precision(), cpu_has_native_bf16() ? "bf16" : "fp32");
  o.precision = "bf16";
  Pipeline bf16_on_cuda(kSrc + "/graphs/rkd.json", o);
  std::vector<double> cuda_scores;
  bf16_on_cuda.run_files(some_images(4), [&](const Detection& d) { cuda_scores.push_back(d.score); });
  ASSERT_EQ(cuda_scores.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(cuda_scores[i], scores["bf16"][i], 1e-5 * scores["bf16"][i]) << i;
}

// int8: a model must be calibrated first, and saying so names the command; calibrate_int8
// records the teacher's activation ranges (in float32, whatever was asked) into a copy of the
// model, reporting and skipping an unreadable image; the calibrated copy then runs the teacher
// in int8 (auto picks it on CPUs with AVX2 or VNNI), its scores close to fp32's, and the original file
// is left as it was.
TEST_F(PipelineTest, Int8RunsACalibratedModelCloseToFp32) {
  PipelineOptions o;
  o.model = model_file();
  o.precision = "int8";
  try {
    Pipeline uncalibrated(kSrc + "/graphs/rkd.json", o);
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr(o.model + ": the model is not calibrated for int8; run fmam quantize " + kSrc +
                                    "/graphs/rkd.json --model " + o.model));
  }
  o.model = "";
  EXPECT_THROW(Pipeline(kSrc + "/graphs/rkd.json", o), std::runtime_error);

  o.model = model_file();
  o.precision = "fp32";
  Pipeline fp32(kSrc + "/graphs/rkd.json", o);
  const std::string bad = (temp_dir() / "truncated.png").string();
  test::write_bytes(bad, "\x89PNG not really");
  std::vector<std::string> files = some_images(6);
  files.insert(files.begin() + 2, bad);
  std::vector<std::string> seen;
  const std::string copy = (temp_dir() / "rkd_int8.fmam").string();
  const Int8Calibration c = fp32.calibrate_int8(files, copy, [&](const Detection& d) { seen.push_back(d.source); });
  EXPECT_EQ(c.images, 6);
  EXPECT_EQ(c.skipped, 1);
  EXPECT_EQ(c.nodes, std::vector<std::string>{"teacher"});
  EXPECT_EQ(c.points, 22u);  // resnet18 to layer3
  EXPECT_EQ(c.saved_to, copy);
  EXPECT_EQ(seen.size(), files.size());
  const Model saved = load_model(copy);
  EXPECT_EQ(saved.int8_ranges.size(), 22u);
  EXPECT_TRUE(saved.int8_ranges.count("teacher/layer3.1.out"));
  EXPECT_THAT(saved.int8_calibration, HasSubstr("\"images\":6"));
  EXPECT_TRUE(load_model(model_file()).int8_ranges.empty());
  std::vector<double> want;
  fp32.run_files(some_images(4), [&](const Detection& d) { want.push_back(d.score); });

  o.model = copy;
  o.precision = "auto";  // a calibrated model: int8 where the CPU has int8 dot products
  EXPECT_EQ(Pipeline(kSrc + "/graphs/rkd.json", o).precision(),
            cpu_has_fast_int8() ? "int8" : (cpu_has_native_bf16() ? "bf16" : "fp32"));
  o.precision = "int8";
  Pipeline int8(kSrc + "/graphs/rkd.json", o);
  EXPECT_EQ(int8.precision(), "int8");
  std::vector<double> got;
  int8.run_files(some_images(4), [&](const Detection& d) { got.push_back(d.score); });
  ASSERT_EQ(got.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(got[i], want[i], 0.05 * want[i]) << i;
    EXPECT_NE(got[i], want[i]) << i << ": int8 did not run";
  }

  // A damaged range (another tool wrote the file) is named with the file and the node.
  Model damaged = saved;
  damaged.int8_ranges["teacher/stem"] = at::zeros({3});
  const std::string bad_model = (temp_dir() / "rkd_int8_damaged.fmam").string();
  save_model(bad_model, damaged);
  o.model = bad_model;
  try {
    Pipeline(kSrc + "/graphs/rkd.json", o).run_files(some_images(1), {});
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr(bad_model + ": " + kSrc +
                                    "/graphs/rkd.json: node \"teacher\" (Backbone): int8 calibration: "
                                    "activation \"stem\" must be a [min, max] float tensor"));
  }
}

TEST_F(PipelineTest, ErrorsNameTheFileAndField) {
  PipelineOptions o;
  o.model = (temp_dir() / "absent.fmam").string();
  try {
    Pipeline p(kSrc + "/graphs/rkd.json", o);
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("absent.fmam"));
  }
  o.model = model_file();
  o.overrides = {"blur.sigma_x=2"};
  try {
    Pipeline p(kSrc + "/graphs/rkd.json", o);
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("node \"blur\" (GaussianBlur): unknown param \"sigma_x\""));
  }
}

// Model-bound params come from the contract (Contract::from_model), not from code that names
// node types: every Resize and UpsampleSum takes the model's size, an Overlay the calibration,
// unless the graph set it; a --set that a forced value would replace is refused.
TEST(ModelBindingTest, BindsByContractAndRefusesSilentReplacement) {
  GraphConfig g = load_graph_file(kSrc + "/graphs/fmam_rkd.json");
  g.nodes.back().params.emplace_back("hi", Value(9.0));  // the overlay's own choice
  std::vector<ModelBinding> b = image_size_bindings(96, 48);
  b.push_back({"map_lo", Value(0.25), false});
  b.push_back({"map_hi", Value(0.75), false});
  bind_params(g, b);
  auto param = [&](const std::string& id, const std::string& name) -> std::string {
    for (const auto& n : g.nodes)
      if (n.id == id)
        for (const auto& [k, v] : n.params)
          if (k == name) return v.str();
    return "(unset)";
  };
  EXPECT_EQ(param("resize", "width"), "96");
  EXPECT_EQ(param("resize", "height"), "48");
  EXPECT_EQ(param("upsample", "width"), "96");
  EXPECT_EQ(param("overlay", "lo"), "0.25");
  EXPECT_EQ(param("overlay", "hi"), "9") << "a default binding does not replace the graph's own value";
  EXPECT_EQ(param("blur", "sigma"), "4") << "unbound params are untouched";
  try {
    bind_params(g, image_size_bindings(64, 64), {"upsample.height=300"}, "m.fmam");
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("--set upsample.height=300: node \"upsample\" (UpsampleSum) takes \"height\" from the "
                                    "model's image_height (64, in m.fmam)"));
  }
  EXPECT_NO_THROW(bind_params(g, image_size_bindings(64, 64), {"upsample.height=64"}, "m.fmam"));
}

}  // namespace
}  // namespace fmam
