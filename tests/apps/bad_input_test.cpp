// fmam under bad input (issue 16): the real binary over the corpus of tests/testdata/bad_inputs
// (made by make_bad_inputs.py) plus a folder and a broken link named like images, corrupted
// model files made from an untrained in-process model, and training folders that cannot train.
// Every case must end in a message naming the file (and node or field), never a crash, a hang
// or a silently wrong answer.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "framework/model_file.h"
#include "tests/support/helpers.h"
#include "tests/support/tiny_model.h"

namespace {

namespace fs = std::filesystem;
using testing::HasSubstr;
using testing::Not;

using Result = fmam::test::CliResult;  // rc -1: killed by a signal (a crash)

fs::path temp_dir() { return fmam::test::process_temp_dir("fmam_bad_input_test"); }

Result fmam(const std::string& args) { return fmam::test::run_fmam(args, temp_dir()); }

const std::string kCorpus = std::string(FMAM_SOURCE_DIR) + "/tests/testdata/bad_inputs";
const std::string kPlugin = " --plugin " + std::string(FMAM_BINARY_DIR) + "/examples/libfmam_example_plugin.so";
const std::string kBottle = std::string(FMAM_SOURCE_DIR) + "/../shared/data/mvtec_ad/bottle";

// The corpus copied to `dir`, with a folder and a dangling symbolic link named like images.
fs::path corpus_copy(const std::string& name) {
  const fs::path d = temp_dir() / name;
  fs::remove_all(d);
  fs::copy(kCorpus, d);
  fs::create_directories(d / "folder.png");
  fs::create_symlink(d / "nowhere.png", d / "dangling.png");
  return d;
}

// A tiny model (64x64) of `graph` saved as `name`.
std::string saved_model(const std::string& graph, const std::string& name, fmam::Model m = {}) {
  if (m.tensors.empty()) m = fmam::test::tiny_model(graph);
  const std::string p = (temp_dir() / name).string();
  fmam::save_model(p, m);
  return p;
}

TEST(BadInputTest, RunNamesEveryBadImageAndScoresTheRest) {
  const fs::path in = corpus_copy("run_in");
  Result r = fmam("run examples/graphs/edge_inspection.json" + kPlugin + " -q -i " + in.string() + " -o " +
                  (temp_dir() / "run_out").string());
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::string pre =
      "skipped: examples/graphs/edge_inspection.json: node \"read_image\" (ImageSource): \"" + in.string() + "/";
  EXPECT_THAT(r.err, HasSubstr(pre + "cut_png.png\": truncated PNG"));
  EXPECT_THAT(r.err, HasSubstr(pre + "cut_jpeg.jpg\": truncated JPEG"));
  // Complete but damaged inside: libjpeg used to print "Corrupt JPEG data" without the file and
  // OpenCV to score the picture, grey where the data was lost.
  EXPECT_THAT(r.err, HasSubstr(pre + "damaged_jpeg.jpg\": damaged JPEG: Corrupt JPEG data: premature end of data segment"));
  EXPECT_THAT(r.err, HasSubstr(pre + "damaged_png.png\": damaged PNG: chunk IDAT at byte 33 fails its CRC check"));
  EXPECT_THAT(r.err, Not(HasSubstr("\nCorrupt JPEG data")));  // libjpeg's own line, without the file
  EXPECT_THAT(r.err, Not(HasSubstr("libpng error")));
  EXPECT_THAT(r.err, HasSubstr(pre + "empty.png\": the file is empty"));
  EXPECT_THAT(r.err, HasSubstr(pre + "huge_header.png\": the header says 60000x60000 pixels, more than the bound"));
  EXPECT_THAT(r.err, HasSubstr(pre + "not_an_image.jpg\": cannot decode: not a PNG, JPEG, BMP, TIFF, WebP or PNM image"));
  // Found by the fuzzer: "DICM" at offset 128 sent it to GDCM, whose assert() aborted fmam.
  EXPECT_THAT(r.err, HasSubstr(pre + "dicom_like.png\": cannot decode: not a PNG, JPEG"));
  EXPECT_THAT(r.err, HasSubstr(pre + "folder.png\": a folder, not an image file"));
  EXPECT_THAT(r.err, HasSubstr(pre + "dangling.png\": a broken symbolic link"));
  EXPECT_THAT(r.err, HasSubstr("15 image(s), 10 skipped"));
  // The readable ones are scored: 16-bit, RGBA, JPEG and a non-ASCII name among them.
  for (const char* ok : {"good.png,", "gray16.png,", "rgba.png,", "photo.jpg,", "ünïcødé_画像.png,"})
    EXPECT_THAT(r.out, HasSubstr(ok));
  // No skipped file has a score (a truncated JPEG used to be scored, its missing half grey).
  for (const char* bad : {"cut_jpeg", "cut_png", "damaged_jpeg", "damaged_png", "empty", "huge_header", "folder", "dangling",
                          "dicom_like", "not_an_image"})
    EXPECT_THAT(r.out, Not(HasSubstr(bad)));
  EXPECT_FALSE(fs::exists(temp_dir() / "run_out" / "run_in_cut_jpeg_edge_map.png"));

  Result strict = fmam("run examples/graphs/edge_inspection.json" + kPlugin + " -q --strict -i " + in.string());
  EXPECT_EQ(strict.rc, 3) << strict.err;
  Result help = fmam("run --help");
  EXPECT_THAT(help.out, HasSubstr("3  with --strict: some images were skipped"));
  // Every image skipped is an error whatever the flags.
  Result none = fmam("run examples/graphs/edge_inspection.json" + kPlugin + " -q -i " + in.string() + "/cut_jpeg.jpg");
  EXPECT_EQ(none.rc, 1);
}

// The promise of docs/RELIABILITY.md: what run writes does not depend on --threads (nor on how
// many frames are in flight). Another --batch may differ in the last bits: batched convolutions
// sum in another order.
TEST(BadInputTest, RunOutputsAreIdenticalUnderAnyThreads) {
  const std::string m = saved_model("graphs/rkd.json", "threads.fmam");
  const std::string in = kBottle + "/test/broken_large";
  std::vector<fs::path> outs;
  for (const char* opts : {"--threads 1 --batch 4", "--threads 2 --batch 4 --max-in-flight 5"}) {
    outs.push_back(temp_dir() / ("threads_" + std::to_string(outs.size())));
    Result r = fmam("run graphs/rkd.json -q --model " + m + " -i '" + in + "/00*.png' -o " + outs.back().string() + " " + opts);
    ASSERT_EQ(r.rc, 0) << opts << "\n" << r.err;
  }
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(outs[0])) {
    const fs::path other = outs[1] / e.path().filename();
    ASSERT_TRUE(fs::exists(other)) << other;
    EXPECT_TRUE(fmam::test::read_bytes(e.path().string()) == fmam::test::read_bytes(other.string())) << e.path().filename();
    ++files;
  }
  EXPECT_GE(files, 10u * 3 + 1);  // heatmap, raw map and overlay per image, and scores.csv
}

TEST(BadInputTest, OutputNameCollisionsAreRefusedBeforeAnyWork) {
  const fs::path in = temp_dir() / "collide";
  for (const char* p : {"p/a/x.png", "q/a/x.png"}) {
    fs::create_directories((in / p).parent_path());
    fs::copy_file(kCorpus + "/good.png", in / p);
  }
  const fs::path out = temp_dir() / "collide_out";
  Result r = fmam("run examples/graphs/edge_inspection.json" + kPlugin + " -q -r -i " + in.string() + " -o " + out.string());
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err, HasSubstr("\"" + (in / "p/a/x.png").string() + "\" and \"" + (in / "q/a/x.png").string() +
                               "\" would both write outputs named \"a_x_*\""));
  EXPECT_FALSE(fs::exists(out / "scores.csv"));
  // Without --output nothing is written, so nothing collides.
  EXPECT_EQ(fmam("run examples/graphs/edge_inspection.json" + kPlugin + " -q -r -i " + in.string()).rc, 0);
}

TEST(BadInputTest, CountsAndThresholdAreChecked) {
  const std::string run = "run examples/graphs/edge_inspection.json" + kPlugin + " -q -i " + kCorpus + "/good.png ";
  struct Case {
    std::string args, message;
  };
  for (const Case& c : std::vector<Case>{{"--threads -1", "--threads must be an integer in [1, 4096], got \"-1\""},
                                         {"--threads 0", "--threads must be an integer in [1, 4096], got \"0\""},
                                         {"--threads=0", "--threads must be an integer in [1, 4096], got \"0\""},
                                         {"--batch 0", "--batch must be at least 1, got 0"},
                                         {"--batch -5", "--batch must be at least 1, got -5"},
                                         {"--max-in-flight 0", "--max-in-flight must be at least 1, got 0"},
                                         {"--threshold nan", "--threshold must be a finite number, got nan"},
                                         {"--threshold inf", "--threshold must be a finite number, got inf"},
                                         {"--threshold -1", "--threshold must be >= 0"}}) {
    Result r = fmam(run + c.args);
    EXPECT_EQ(r.rc, 1) << c.args;
    EXPECT_THAT(r.err, HasSubstr(c.message)) << c.args;
  }
  Result frames = fmam("bench examples/graphs/edge_inspection.json" + kPlugin + " -i " + kCorpus + "/good.png --frames -5");
  EXPECT_EQ(frames.rc, 1);
  EXPECT_THAT(frames.err, HasSubstr("--frames must be at least 1, got -5"));
}

TEST(BadInputTest, CorruptModelsFailNamingTheFileAndNeverCrash) {
  const std::string img = kCorpus + "/good.png";
  const std::string good = saved_model("graphs/rkd.json", "good.fmam");
  ASSERT_EQ(fmam("run graphs/rkd.json -q --model " + good + " -i " + img).rc, 0);

  std::string b = fmam::test::read_bytes(good);
  for (int k = 0; k < 50; ++k) b[b.size() / 4 + size_t(k) * (b.size() / 100)] ^= 0x5A;
  const std::string flipped = (temp_dir() / "flipped.fmam").string();
  fmam::test::write_bytes(flipped, b);
  Result f = fmam("run graphs/rkd.json -q --model " + flipped + " -i " + img);
  EXPECT_EQ(f.rc, 1);
  EXPECT_THAT(f.err, HasSubstr(flipped + ": the model's tensors do not match their checksum"));

  fmam::Model nan = fmam::test::tiny_model("graphs/rkd.json");
  for (auto& [k, t] : nan.tensors)
    if (t.is_floating_point()) t = t.clone().fill_(std::numeric_limits<float>::quiet_NaN());
  const std::string nan_path = saved_model("graphs/rkd.json", "nan.fmam", nan);
  // analyze used to die with SIGSEGV on NaN weights (rc -1 here).
  const fs::path data = temp_dir() / "nan_data";
  fs::create_directories(data / "test" / "good");
  fs::copy_file(img, data / "test" / "good" / "000.png");
  Result a = fmam("analyze graphs/rkd.json:" + nan_path + " -q -d " + data.string() + " -o " + (temp_dir() / "nan_out").string());
  EXPECT_EQ(a.rc, 1) << a.err;
  EXPECT_THAT(a.err, HasSubstr(nan_path + ": tensor \""));
  EXPECT_THAT(a.err, HasSubstr("holds NaN or infinite values"));

  Result d = fmam("run graphs/rkd.json -q --model " + temp_dir().string() + " -i " + img);
  EXPECT_EQ(d.rc, 1);
  EXPECT_THAT(d.err, HasSubstr(temp_dir().string() + ": a folder, not a model file"));
}

TEST(BadInputTest, TheModelsImageSizeCannotBeOverriddenSilently) {
  const std::string m = saved_model("graphs/rkd.json", "size.fmam");
  const std::string run = "run graphs/rkd.json -q --model " + m + " -i " + kCorpus + "/good.png ";
  Result r = fmam(run + "--set resize.width=128");
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err,
              HasSubstr("--set resize.width=128: node \"resize\" (Resize) takes \"width\" from the model's image_width (64, in " +
                        m + ")"));
  Result u = fmam(run + "--set upsample.height=300");
  EXPECT_EQ(u.rc, 1);
  EXPECT_THAT(u.err, HasSubstr("node \"upsample\" (UpsampleSum)"));
  EXPECT_EQ(fmam(run + "--set resize.width=64").rc, 0) << "the model's own size is not a change";
}

TEST(BadInputTest, AStageOneCheckpointIsNamedAsOne) {
  fmam::Model ck = fmam::test::tiny_model("graphs/rkd.json");
  ck.progress = R"({"batches":0,"epoch":1,"history":[],"stage":0})";
  const std::string p = saved_model("graphs/rkd.json", "stage1.fmam", ck);
  Result r = fmam("run graphs/fmam_rkd.json -q --model " + p + " -i " + kCorpus + "/good.png");
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err,
              HasSubstr(p + ": an unfinished training checkpoint (stopped in stage 1 after 1 epoch(s)), not a finished model"));
  EXPECT_THAT(r.err, HasSubstr("finish it with fmam train --resume"));
}

TEST(BadInputTest, AnalyzeNeedsImagesAndBothKindsOfPixels) {
  const std::string m = saved_model("graphs/rkd.json", "analyze.fmam");
  const fs::path bad = temp_dir() / "analyze_bad";
  fs::create_directories(bad / "test" / "good");
  for (const char* f : {"cut_png.png", "cut_jpeg.jpg", "empty.png"}) fs::copy_file(kCorpus + "/" + f, bad / "test" / "good" / f);
  Result none = fmam("analyze graphs/rkd.json:" + m + " -q -d " + bad.string() + " -o " + (temp_dir() / "an_out1").string());
  EXPECT_EQ(none.rc, 1);
  EXPECT_THAT(none.err, HasSubstr("no test image of " + (bad / "test").string() + " could be read (3 skipped"));

  const fs::path good = temp_dir() / "analyze_good";
  fs::create_directories(good / "test" / "good");
  fs::copy_file(kCorpus + "/good.png", good / "test" / "good" / "000.png");
  const fs::path out = temp_dir() / "an_out2";
  Result r = fmam("analyze graphs/rkd.json:" + m + " -q -d " + good.string() + " -o " + out.string());
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("undefined"));
  EXPECT_THAT(r.err, HasSubstr("separation undefined: no defect pixels"));
  const auto j = nlohmann::json::parse(fmam::test::read_bytes((out / "analysis.json").string()));
  EXPECT_TRUE(j[0]["separation"].is_null());
}

// --set reaches every GRAPH (an ablation's param without a graph file per variant) and a bad one
// is named: doubling every level's weight doubles the summed map.
TEST(BadInputTest, AnalyzeAppliesSetToTheGraphAndNamesABadOne) {
  const std::string m = saved_model("graphs/rkd.json", "analyze_set.fmam");
  const fs::path data = temp_dir() / "analyze_set";
  fs::create_directories(data / "test" / "good");
  fs::copy_file(kCorpus + "/good.png", data / "test" / "good" / "000.png");
  auto normal_mean = [&](const std::string& set, const std::string& out) {
    Result r = fmam("analyze graphs/rkd.json:" + m + " -q -d " + data.string() + " -o " + (temp_dir() / out).string() + set);
    EXPECT_EQ(r.rc, 0) << r.err;
    const auto j = nlohmann::json::parse(fmam::test::read_bytes((temp_dir() / out / "analysis.json").string()));
    return std::make_pair(j[0]["normal"]["mean"].get<double>(), j[0]["set"]);
  };
  const auto [plain, no_set] = normal_mean("", "an_set1");
  const auto [doubled, set] = normal_mean(" --set upsample.weights=[2,2,2]", "an_set2");
  EXPECT_GT(plain, 0.0);
  EXPECT_NEAR(doubled, 2 * plain, 1e-6 * plain);
  EXPECT_TRUE(no_set.empty());
  EXPECT_EQ(set, nlohmann::json::array({"upsample.weights=[2,2,2]"}));  // the JSON says what was run
  Result bad = fmam("analyze graphs/rkd.json:" + m + " -q -d " + data.string() + " -o " + (temp_dir() / "an_set3").string() +
                    " --set nope.x=1");
  EXPECT_EQ(bad.rc, 1);
  EXPECT_THAT(bad.err, HasSubstr("graphs/rkd.json: --set nope.x: no node \"nope\""));
}

TEST(BadInputTest, AnalyzeStrictExitsThreeWhenAnImageWasSkippedAndNamesDefectsWithoutMasks) {
  const std::string m = saved_model("graphs/rkd.json", "analyze_strict.fmam");
  const fs::path data = temp_dir() / "analyze_strict";
  fs::create_directories(data / "test" / "good");
  fs::create_directories(data / "test" / "crack");
  fs::copy_file(kCorpus + "/good.png", data / "test" / "good" / "000.png");
  fs::copy_file(kCorpus + "/cut_png.png", data / "test" / "good" / "001.png");
  fs::copy_file(kCorpus + "/good.png", data / "test" / "crack" / "000.png");  // no ground_truth/crack/000_mask.png
  const std::string cmd =
      "analyze graphs/rkd.json:" + m + " -q -d " + data.string() + " -o " + (temp_dir() / "an_strict").string();
  Result lax = fmam(cmd);
  ASSERT_EQ(lax.rc, 0) << lax.err;
  EXPECT_THAT(lax.err, HasSubstr("001.png"));
  EXPECT_THAT(lax.err, HasSubstr("left out: " + (data / "test" / "crack" / "000.png").string() + ": no ground-truth mask"));
  Result strict = fmam(cmd + " --strict");
  EXPECT_EQ(strict.rc, 3) << strict.err;
  EXPECT_TRUE(fs::exists(temp_dir() / "an_strict" / "analysis.json"));
}

TEST(BadInputTest, EvalRefusesAMaskOfAnotherSize) {
  const std::string m = saved_model("graphs/rkd.json", "eval.fmam");
  const fs::path data = temp_dir() / "eval_data";
  fs::create_directories(data / "test" / "good");
  fs::create_directories(data / "test" / "crack");
  fs::create_directories(data / "ground_truth" / "crack");
  fs::copy_file(kCorpus + "/good.png", data / "test" / "good" / "000.png");
  fs::copy_file(kCorpus + "/good.png", data / "test" / "crack" / "000.png");
  cv::imwrite((data / "ground_truth" / "crack" / "000_mask.png").string(), cv::Mat(23, 37, CV_8U, cv::Scalar(255)));
  Result r = fmam("eval graphs/rkd.json -q --model " + m + " -d " + data.string() + " -o " + (temp_dir() / "eval_out").string());
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err, HasSubstr((data / "ground_truth" / "crack" / "000_mask.png").string() +
                               ": the ground-truth mask is 37x23, its image " + (data / "test" / "crack" / "000.png").string() +
                               " is 64x48; a mask must have its image's size"));
}

// A train/good folder of `n` bottle images at `sizes` (cycled), small so training is quick.
fs::path train_folder(const std::string& name, std::vector<int> sizes, int n = 2) {
  const fs::path d = temp_dir() / name;
  fs::create_directories(d / "train" / "good");
  for (int i = 0; i < n; ++i) {
    char src[64];
    std::snprintf(src, sizeof src, "/train/good/%03d.png", i);
    cv::Mat img = cv::imread(kBottle + src);
    EXPECT_FALSE(img.empty()) << "needs ../shared/data: " << kBottle << src;
    const int s = sizes[size_t(i) % sizes.size()];
    cv::resize(img, img, cv::Size(s, s), 0, 0, cv::INTER_AREA);
    cv::imwrite((d / "train" / "good" / (std::to_string(i) + ".png")).string(), img);
  }
  return d;
}

const std::string kTiny = " -q --threads 2 --set train.image_size=64 --set train.batch_size=2";

TEST(BadInputTest, TrainingOnNothingIsAnError) {
  const fs::path d = temp_dir() / "train_nothing";
  fs::create_directories(d / "train" / "good");
  for (const char* f : {"cut_png.png", "cut_jpeg.jpg", "empty.png"}) fs::copy_file(kCorpus + "/" + f, d / "train" / "good" / f);
  const fs::path model = temp_dir() / "nothing.fmam";
  Result r = fmam("train graphs/rkd_train.json -d " + d.string() + " -o " + model.string() + kTiny +
                  " --set stage1.epochs=1 --set stage2.epochs=0");
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err, HasSubstr("fmam train: stage1 epoch 1 trained on no image: all 3 image(s) of " +
                               (d / "train" / "good").string() + " were skipped (each named above); no model written"));
  EXPECT_THAT(r.err, HasSubstr("cut_jpeg.jpg\": truncated JPEG"));
  EXPECT_FALSE(fs::exists(model));

  const fs::path ok = train_folder("train_zero", {96});
  Result z = fmam("train graphs/rkd_train.json -d " + ok.string() + " -o " + model.string() + kTiny +
                  " --set stage1.epochs=0 --set stage2.epochs=0");
  EXPECT_EQ(z.rc, 1);
  EXPECT_THAT(z.err, HasSubstr("graphs/rkd_train.json: every stage has 0 epochs: nothing to train"));
  EXPECT_FALSE(fs::exists(model));
}

TEST(BadInputTest, ResumeKeepsTheCheckpointsImageAndBatchSize) {
  const fs::path d = train_folder("train_resume", {96});
  const std::string model = (temp_dir() / "resume.fmam").string();
  ASSERT_EQ(fmam("train graphs/rkd_train.json -d " + d.string() + " -o " + model + kTiny +
                 " --set stage1.epochs=1 --set stage2.epochs=0")
                .rc,
            0);
  const std::string base = "train graphs/rkd_train.json --resume -d " + d.string() + " -o " + model +
                           " -q --threads 2 --set stage1.epochs=2 --set stage2.epochs=0";
  Result size = fmam(base + " --set train.image_size=96 --set train.batch_size=2");
  EXPECT_EQ(size.rc, 1);
  EXPECT_THAT(size.err, HasSubstr("fmam train --resume: " + model +
                                  " was trained with train.image_size=64x64, train.batch_size=2; this run asks for 96, 2"));
  Result batch = fmam(base + " --set train.image_size=64 --set train.batch_size=1");
  EXPECT_EQ(batch.rc, 1);
  EXPECT_THAT(batch.err, HasSubstr("this run asks for 64, 1"));
  EXPECT_EQ(fmam::load_model(model).image_width, 64) << "the refused runs left the model alone";
}

// run, eval and train go on past an unreadable image (named on stderr) and exit 0; --strict
// makes that exit 3, for scripts that must not accept a partial answer. eval and train used to
// have no --strict.
TEST(BadInputTest, EvalAndTrainExitThreeWithStrictWhenImagesWereSkipped) {
  const std::string m = saved_model("graphs/rkd.json", "strict.fmam");
  const fs::path data = temp_dir() / "strict_data";
  fs::create_directories(data / "test" / "good");
  fs::create_directories(data / "test" / "crack");
  fs::create_directories(data / "ground_truth" / "crack");
  fs::copy_file(kCorpus + "/good.png", data / "test" / "good" / "000.png");
  fs::copy_file(kCorpus + "/damaged_jpeg.jpg", data / "test" / "good" / "001.jpg");
  fs::copy_file(kCorpus + "/photo.jpg", data / "test" / "crack" / "000.jpg");
  cv::imwrite((data / "ground_truth" / "crack" / "000_mask.png").string(), cv::Mat(48, 64, CV_8U, cv::Scalar(255)));
  const std::string eval =
      "eval graphs/rkd.json -q --model " + m + " -d " + data.string() + " -o " + (temp_dir() / "strict_out").string();
  Result r = fmam(eval);
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("001.jpg\": damaged JPEG"));
  EXPECT_THAT(r.err, HasSubstr("3 test image(s), 1 skipped"));
  EXPECT_EQ(fmam(eval + " --strict").rc, 3);
  EXPECT_THAT(fmam("eval --help").out, HasSubstr("3  with --strict: the report was written, but some images were skipped"));

  const fs::path t = train_folder("train_strict", {64});
  fs::copy_file(kCorpus + "/cut_png.png", t / "train" / "good" / "cut.png");
  const std::string train = "train graphs/rkd_train.json -d " + t.string() + " -o " +
                            (temp_dir() / "strict_train.fmam").string() + kTiny + " --set stage1.epochs=2 --set stage2.epochs=0";
  Result tr = fmam(train);
  EXPECT_EQ(tr.rc, 0) << tr.err;
  EXPECT_THAT(tr.err, HasSubstr("1 training image(s) skipped as unreadable"));  // once, though read in each epoch
  EXPECT_EQ(fmam(train + " --strict").rc, 3);
  EXPECT_THAT(fmam("train --help").out, HasSubstr("3  with --strict: the model was written, but some images were skipped"));
}

// Stage 2 stacks AnomalySynth's masks at the source size: mixed sizes used to fail there, after
// all of stage 1 (hours), with libtorch's "Sizes of tensors must match" and a backtrace.
TEST(BadInputTest, MixedImageSizesAreRefusedBeforeStageOneNamingTwoFiles) {
  const fs::path d = train_folder("train_mixed", {80, 96});
  const std::string model = (temp_dir() / "mixed.fmam").string();
  Result r = fmam("train graphs/fmam_rkd_train.json -d " + d.string() + " -o " + model + kTiny +
                  " --set stage1.epochs=1 --set stage2.epochs=1");
  EXPECT_EQ(r.rc, 1);
  const std::string good = (d / "train" / "good").string();
  EXPECT_THAT(r.err,
              HasSubstr("fmam train: " + good + ": images of different sizes: " + good + "/0.png is 80x80, " + good +
                        "/1.png is 96x96; graphs/fmam_rkd_train.json: stream \"syn_mask\" of node \"synth\" keeps the "
                        "source size and is batched (train.batch_size=2): use images of one size, or --set train.batch_size=1"));
  EXPECT_THAT(r.err, Not(HasSubstr("stage1 epoch")));  // before any work
  EXPECT_FALSE(fs::exists(model));
  // Where every batched stream is resized (no stage-2 masks), mixed sizes train.
  Result ok = fmam("train graphs/fmam_rkd_train.json -d " + d.string() + " -o " + model + kTiny +
                   " --set stage1.epochs=1 --set stage2.epochs=0");
  EXPECT_EQ(ok.rc, 0) << ok.err;
}

}  // namespace
