// The GStreamer elements fmam and fmamoverlay as a user meets them: gst_parse_launch pipelines
// over the built libgstfmam.so, with a small model trained by the real CLI, scores checked
// against `fmam run` on the same files, errors checked on the bus (with timeouts: never hang).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <gst/gst.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "gst/fmam_meta.h"  // the struct layout only; the API type is looked up by name

namespace {

namespace fs = std::filesystem;
using testing::HasSubstr;

const std::string kSrc = FMAM_SOURCE_DIR, kBin = FMAM_BINARY_DIR;

fs::path shared_dir() {
  const char* env = std::getenv("FMAM_SHARED");
  return env && *env ? fs::path(env) : fs::path(kSrc) / ".." / "shared";
}

// Runs a shell command from the repo root; stdout captured, status returned.
int sh(const std::string& cmd, std::string* out = nullptr) {
  FILE* p = popen(("cd " + kSrc + " && " + cmd).c_str(), "r");
  if (!p) return -1;
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
  const int status = pclose(p);
  if (out) *out = text;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

struct Result {
  double score;
  guint64 frame, pts;
  std::string verdict;
};

struct Outcome {
  std::vector<Result> results;
  bool eos = false, timed_out = false;
  std::string error;  // message + debug of the first ERROR
};

// Reads the bus until EOS, ERROR or the timeout; collects every fmam-result message.
void drain_bus(GstElement* pipeline, Outcome& run, int timeout_s) {
  GstBus* bus = gst_element_get_bus(pipeline);
  const gint64 deadline = g_get_monotonic_time() + gint64(timeout_s) * G_USEC_PER_SEC;
  while (true) {
    const gint64 left = deadline - g_get_monotonic_time();
    if (left <= 0) {
      run.timed_out = true;
      break;
    }
    GstMessage* msg = gst_bus_timed_pop_filtered(bus, left * GST_USECOND,
                                                 GstMessageType(GST_MESSAGE_EOS | GST_MESSAGE_ERROR | GST_MESSAGE_ELEMENT));
    if (!msg) continue;
    const GstMessageType type = GST_MESSAGE_TYPE(msg);
    if (type == GST_MESSAGE_ELEMENT && gst_message_has_name(msg, "fmam-result")) {
      const GstStructure* s = gst_message_get_structure(msg);
      Result r{};
      gst_structure_get_double(s, "score", &r.score);
      gst_structure_get_uint64(s, "frame", &r.frame);
      gst_structure_get_uint64(s, "pts", &r.pts);
      r.verdict = gst_structure_get_string(s, "verdict") ? gst_structure_get_string(s, "verdict") : "";
      run.results.push_back(r);
    } else if (type == GST_MESSAGE_ERROR && run.error.empty()) {
      GError* err = nullptr;
      gchar* debug = nullptr;
      gst_message_parse_error(msg, &err, &debug);
      run.error = std::string(err ? err->message : "?") + " | " + (debug ? debug : "");
      g_clear_error(&err);
      g_free(debug);
    }
    gst_message_unref(msg);
    if (type == GST_MESSAGE_EOS) run.eos = true;
    if (type == GST_MESSAGE_EOS || type == GST_MESSAGE_ERROR) break;
  }
  gst_object_unref(bus);
}

// Parses, plays to EOS or ERROR (or the timeout) and tears down a pipeline description.
// `setup` (optional) runs on the parsed pipeline before it plays.
Outcome play(const std::string& desc, int timeout_s = 60, const std::function<void(GstElement*)>& setup = nullptr) {
  Outcome run;
  GError* err = nullptr;
  GstElement* pipeline = gst_parse_launch(desc.c_str(), &err);
  if (err) {
    run.error = std::string("parse: ") + err->message;
    g_clear_error(&err);
    if (pipeline) gst_object_unref(pipeline);
    return run;
  }
  if (setup) setup(pipeline);
  const bool failed = gst_element_set_state(pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE;
  drain_bus(pipeline, run, timeout_s);
  if (failed) run.error += " | set_state failed";
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pipeline);
  return run;
}

class GstElementTest : public testing::Test {
 protected:
  static inline fs::path dir_;                   // temp: model, images
  static inline std::string model_;              // trained by the CLI
  static inline std::string skip_;               // why the suite cannot run, or ""
  static inline std::vector<double> reference_;  // fmam run's scores for 000.png ... 005.png

  static void SetUpTestSuite() {
    const fs::path images = shared_dir() / "data/mvtec_ad/bottle";
    if (!fs::exists(images / "test/broken_large")) {
      skip_ = "no shared data at " + (images / "test/broken_large").string() + " (set FMAM_SHARED)";
      return;
    }
    dir_ = fs::temp_directory_path() / ("fmam_gst_test_" + std::to_string(getpid()));
    fs::create_directories(dir_ / "imgs");
    model_ = (dir_ / "m.fmam").string();
    const std::string train = kBin + "/apps/fmam train graphs/rkd_train.json --data " + images.string() + " --out " + model_ +
                              " --set stage1.epochs=1 --set stage2.epochs=0 --set train.image_size=64" +
                              " --max-images 8 -q 2>&1";
    std::string log;
    if (sh(train, &log) != 0 || !fs::exists(model_)) {
      skip_ = "training the test model failed: " + log;
      return;
    }
    std::vector<fs::path> pngs;
    for (const auto& e : fs::directory_iterator(images / "test/broken_large")) pngs.push_back(e.path());
    std::sort(pngs.begin(), pngs.end());
    for (int i = 0; i < 6 && i < int(pngs.size()); ++i) {
      char name[16];
      std::snprintf(name, sizeof name, "%03d.png", i);
      fs::create_symlink(fs::absolute(pngs[i]), dir_ / "imgs" / name);
    }
    std::string csv;
    sh(kBin + "/apps/fmam run graphs/rkd.json --model " + model_ + " -q -i '" + (dir_ / "imgs").string() + "/*.png'", &csv);
    std::stringstream ss(csv);
    std::string line;
    while (std::getline(ss, line))  // source,score[,verdict]; the header and the rest skipped
      if (line.find(".png,") != std::string::npos) reference_.push_back(std::stod(line.substr(line.find(',') + 1)));
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
  }

  static std::string fmam_el(const std::string& extra = "") { return "fmam graph=graphs/rkd.json model=" + model_ + " " + extra; }
  static std::string png_src(int last) {
    return "multifilesrc location=" + (dir_ / "imgs").string() + "/%03d.png index=0 stop-index=" + std::to_string(last) +
           " caps=image/png,framerate=1/1 ! pngdec ! videoconvert";
  }
};

// (a) The element scores decoded frames exactly as fmam run scores the files.
TEST_F(GstElementTest, ScoresMatchFmamRunOnTheSameImages) {
  ASSERT_EQ(reference_.size(), 6u) << "fmam run printed no scores";
  Outcome run = play(png_src(5) + " ! video/x-raw,format=BGR ! " + fmam_el() + " ! fakesink");
  ASSERT_TRUE(run.eos) << run.error;
  ASSERT_EQ(run.results.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(run.results[i].frame, i);
    EXPECT_EQ(run.results[i].pts, i * GST_SECOND) << "frame " << i;
    EXPECT_NEAR(run.results[i].score, reference_[i], 1e-4 * std::abs(reference_[i])) << "frame " << i;
    EXPECT_EQ(run.results[i].verdict, "none");  // the test model has no calibrated threshold
  }
  // RGB frames are converted to BGR: the same scores.
  Outcome rgb = play(png_src(5) + " ! video/x-raw,format=RGB ! " + fmam_el("batch=2") + " ! fakesink");
  ASSERT_TRUE(rgb.eos) << rgb.error;
  ASSERT_EQ(rgb.results.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_NEAR(rgb.results[i].score, reference_[i], 1e-4 * std::abs(reference_[i]));
}

TEST_F(GstElementTest, GrayFramesScoreFinite) {
  Outcome run = play(png_src(2) + " ! video/x-raw,format=GRAY8 ! " + fmam_el() + " ! fakesink");
  ASSERT_TRUE(run.eos) << run.error;
  ASSERT_EQ(run.results.size(), 3u);
  for (const auto& r : run.results) EXPECT_TRUE(std::isfinite(r.score) && r.score > 0) << r.score;
}

TEST_F(GstElementTest, ThresholdGivesVerdicts) {
  ASSERT_FALSE(reference_.empty());
  Outcome low = play(png_src(1) + " ! video/x-raw,format=BGR ! " + fmam_el("threshold=0") + " ! fakesink");
  Outcome high = play(png_src(1) + " ! video/x-raw,format=BGR ! " + fmam_el("threshold=1e9") + " ! fakesink");
  ASSERT_EQ(low.results.size(), 2u) << low.error;
  ASSERT_EQ(high.results.size(), 2u) << high.error;
  EXPECT_EQ(low.results[0].verdict, "FAIL");
  EXPECT_EQ(high.results[0].verdict, "PASS");
}

TEST_F(GstElementTest, OverridesReachTheGraph) {
  Outcome base = play(png_src(0) + " ! video/x-raw,format=BGR ! " + fmam_el() + " ! fakesink");
  Outcome k1 =
      play(png_src(0) + " ! video/x-raw,format=BGR ! " + fmam_el("overrides=\"score.k=1; blur.sigma=1\"") + " ! fakesink");
  ASSERT_EQ(base.results.size(), 1u) << base.error;
  ASSERT_EQ(k1.results.size(), 1u) << k1.error;
  EXPECT_GT(k1.results[0].score, base.results[0].score);  // the single largest value >= the mean of the top 100
  Outcome bad = play(png_src(0) + " ! " + fmam_el("overrides=score.no_such=1") + " ! fakesink", 30);
  EXPECT_FALSE(bad.timed_out);
  EXPECT_THAT(bad.error, HasSubstr("no_such"));
}

// precision=fp32 is what fmam run --precision fp32 computes; a bad value is an error naming it.
TEST_F(GstElementTest, PrecisionReachesThePipeline) {
  Outcome fp32 = play(png_src(0) + " ! video/x-raw,format=BGR ! " + fmam_el("precision=fp32") + " ! fakesink");
  Outcome bf16 = play(png_src(0) + " ! video/x-raw,format=BGR ! " + fmam_el("precision=bf16") + " ! fakesink");
  ASSERT_EQ(fp32.results.size(), 1u) << fp32.error;
  ASSERT_EQ(bf16.results.size(), 1u) << bf16.error;
  EXPECT_NEAR(bf16.results[0].score, fp32.results[0].score, 0.03 * fp32.results[0].score);
  EXPECT_NE(bf16.results[0].score, fp32.results[0].score);
  Outcome bad = play(png_src(0) + " ! " + fmam_el("precision=half") + " ! fakesink", 30);
  EXPECT_FALSE(bad.timed_out);
  EXPECT_THAT(bad.error, HasSubstr("precision must be auto, fp32, bf16 or int8"));
}

// Pulls every frame from the appsink named `sink` until EOS.
std::vector<std::vector<guint8>> pull_frames(const std::string& desc, std::vector<bool>* has_meta = nullptr) {
  std::vector<std::vector<guint8>> frames;
  GstElement* pipeline = gst_parse_launch(desc.c_str(), nullptr);
  if (!pipeline) return frames;
  GstElement* sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  const GType meta_api = g_type_from_name("GstFmamMetaAPI");
  while (true) {
    GstSample* sample = nullptr;
    g_signal_emit_by_name(sink, "try-pull-sample", GstClockTime(30 * GST_SECOND), &sample);
    if (!sample) break;  // EOS, error or timeout
    GstBuffer* buf = gst_sample_get_buffer(sample);
    GstMapInfo map;
    gst_buffer_map(buf, &map, GST_MAP_READ);
    frames.emplace_back(map.data, map.data + map.size);
    gst_buffer_unmap(buf, &map);
    if (has_meta) {
      auto* meta = meta_api ? reinterpret_cast<GstFmamMeta*>(gst_buffer_get_meta(buf, meta_api)) : nullptr;
      has_meta->push_back(meta && meta->map && meta->map_width > 0 && meta->map_height > 0 && std::isfinite(meta->score));
    }
    gst_sample_unref(sample);
  }
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(sink);
  gst_object_unref(pipeline);
  return frames;
}

// (b) Synthetic video: 10 results, EOS, the overlay draws; frames pass fmam unchanged.
TEST_F(GstElementTest, VideoThroughFmamAndOverlay) {
  const std::string src = "videotestsrc num-buffers=10 ! video/x-raw,format=RGB,width=320,height=240 ! ";
  Outcome run = play(src + fmam_el() + " ! fmamoverlay ! fakesink");
  EXPECT_TRUE(run.eos) << run.error;
  EXPECT_EQ(run.results.size(), 10u);

  std::vector<bool> meta;
  auto raw = pull_frames(src + "appsink name=sink sync=false");
  auto scored = pull_frames(src + fmam_el() + " ! appsink name=sink sync=false", &meta);
  auto drawn = pull_frames(src + fmam_el() + " ! fmamoverlay lo=0 hi=4 ! appsink name=sink sync=false");
  auto no_meta = pull_frames(src + "fmamoverlay ! appsink name=sink sync=false");
  ASSERT_EQ(raw.size(), 10u);
  ASSERT_EQ(scored.size(), 10u);
  ASSERT_EQ(drawn.size(), 10u);
  ASSERT_EQ(no_meta.size(), 10u);
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_TRUE(raw[i] == scored[i]) << "fmam changed frame " << i;
    EXPECT_TRUE(meta[i]) << "frame " << i << " has no GstFmamMeta with a map";
    EXPECT_TRUE(raw[i] != drawn[i]) << "fmamoverlay drew nothing on frame " << i;
    EXPECT_TRUE(raw[i] == no_meta[i]) << "fmamoverlay changed frame " << i << " without a meta";
  }
}

// The model's calibrated heatmap range travels in the meta, so fmamoverlay colours frames as the
// eval report does without the user copying numbers; an uncalibrated model carries none.
TEST_F(GstElementTest, CalibratedRangeTravelsInTheMeta) {
  const std::string calibrated = (dir_ / "calibrated.fmam").string();
  fs::copy_file(model_, calibrated, fs::copy_options::overwrite_existing);
  std::string log;
  ASSERT_EQ(sh(kBin + "/apps/fmam eval graphs/rkd.json -q --calibrate -m " + calibrated + " -d " +
                   (shared_dir() / "data/mvtec_ad/bottle").string() + " -o " + (dir_ / "report").string() + " 2>&1",
               &log),
            0)
      << log;
  auto ranges = [&](const std::string& model) {
    std::vector<std::pair<double, double>> out;  // (lo, hi) per frame, (nan, nan) without a range
    GstElement* pipeline = gst_parse_launch(
        (png_src(2) + " ! video/x-raw,format=BGR ! fmam graph=graphs/rkd.json model=" + model + " ! appsink name=sink sync=false")
            .c_str(),
        nullptr);
    GstElement* sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
    gst_element_set_state(pipeline, GST_STATE_PLAYING);
    const GType api = g_type_from_name("GstFmamMetaAPI");
    while (GstSample* sample = [&] {
      GstSample* x = nullptr;
      g_signal_emit_by_name(sink, "try-pull-sample", GstClockTime(30 * GST_SECOND), &x);
      return x;
    }()) {
      auto* m = reinterpret_cast<GstFmamMeta*>(gst_buffer_get_meta(gst_sample_get_buffer(sample), api));
      out.emplace_back(m && m->has_range ? m->map_lo : NAN, m && m->has_range ? m->map_hi : NAN);
      gst_sample_unref(sample);
    }
    gst_element_set_state(pipeline, GST_STATE_NULL);
    gst_object_unref(sink);
    gst_object_unref(pipeline);
    return out;
  };
  const auto with = ranges(calibrated), without = ranges(model_);
  ASSERT_EQ(with.size(), 3u);
  ASSERT_EQ(without.size(), 3u);
  const size_t at = log.find("heatmap range [");
  ASSERT_NE(at, std::string::npos) << log;
  const double lo = std::stod(log.substr(at + 15)), hi = std::stod(log.substr(log.find(", ", at) + 2));
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_NEAR(with[i].first, lo, 1e-5 * std::abs(lo)) << "frame " << i;
    EXPECT_NEAR(with[i].second, hi, 1e-5 * std::abs(hi)) << "frame " << i;
    EXPECT_TRUE(std::isnan(without[i].first)) << "an uncalibrated model has no range";
  }
}

// (c) The same pipeline object played twice, through NULL.
TEST_F(GstElementTest, PlayNullPlayGivesResultsBothTimes) {
  GstElement* pipeline = gst_parse_launch(
      ("videotestsrc num-buffers=5 ! video/x-raw,format=BGR,width=160,height=120 ! " + fmam_el() + " ! fakesink").c_str(),
      nullptr);
  ASSERT_NE(pipeline, nullptr);
  for (int round = 0; round < 2; ++round) {
    Outcome run;
    ASSERT_NE(gst_element_set_state(pipeline, GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE) << "round " << round;
    drain_bus(pipeline, run, 60);
    EXPECT_TRUE(run.eos) << "round " << round << ": " << run.error;
    EXPECT_EQ(run.results.size(), 5u) << "round " << round;
    if (!run.results.empty()) {
      EXPECT_EQ(run.results.front().frame, 0u);
    }
    gst_element_set_state(pipeline, GST_STATE_NULL);
  }
  gst_object_unref(pipeline);
}

// Stopping mid-stream (PLAYING -> NULL with frames in flight) neither hangs nor crashes, and a
// seek (flush) while playing still ends in EOS.
TEST_F(GstElementTest, StopAndFlushMidStream) {
  GstElement* pipeline =
      gst_parse_launch(("videotestsrc num-buffers=200 ! video/x-raw,format=BGR,width=160,height=120,framerate=30/1 ! " +
                        fmam_el("batch=4") + " ! fakesink sync=false")
                           .c_str(),
                       nullptr);
  ASSERT_NE(pipeline, nullptr);
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  gst_element_get_state(pipeline, nullptr, nullptr, 30 * GST_SECOND);
  g_usleep(300000);
  EXPECT_TRUE(gst_element_seek_simple(pipeline, GST_FORMAT_TIME, GstSeekFlags(GST_SEEK_FLAG_FLUSH), 6 * GST_SECOND));
  Outcome run;
  drain_bus(pipeline, run, 120);
  EXPECT_TRUE(run.eos) << run.error;
  EXPECT_FALSE(run.timed_out);
  gst_element_set_state(pipeline, GST_STATE_NULL);

  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  g_usleep(300000);
  EXPECT_EQ(gst_element_set_state(pipeline, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
  gst_object_unref(pipeline);
}

// (d) A missing model and a bad graph: an ERROR that names the file, and no hang.
TEST_F(GstElementTest, MissingModelAndBadGraphPostErrorsNamingTheFile) {
  const std::string src = "videotestsrc num-buffers=3 ! video/x-raw,format=BGR,width=64,height=64 ! ";
  const std::string missing = (dir_ / "no_such_model.fmam").string();
  Outcome a = play(src + "fmam graph=graphs/rkd.json model=" + missing + " ! fakesink", 30);
  EXPECT_FALSE(a.timed_out);
  EXPECT_FALSE(a.eos);
  EXPECT_THAT(a.error, HasSubstr(missing));

  const fs::path bad = dir_ / "bad_graph.json";
  std::ofstream(bad) << R"({"schema": 1, "name": "bad", "nodes": [{"id": "x", "type": "NoSuchNode"}]})";
  Outcome b = play(src + "fmam graph=" + bad.string() + " ! fakesink", 30);
  EXPECT_FALSE(b.timed_out);
  EXPECT_THAT(b.error, HasSubstr(bad.string()));
  EXPECT_THAT(b.error, HasSubstr("NoSuchNode"));

  Outcome c = play(src + "fmam ! fakesink", 30);  // no graph property at all
  EXPECT_THAT(c.error, HasSubstr("graph"));
}

// (e) A format the element does not take: refused when linking, and, forced on a linked
// pipeline with a capsfilter, a negotiation error at run time; no crash, no hang.
TEST_F(GstElementTest, UnsupportedCapsFailNegotiation) {
  Outcome link = play("videotestsrc num-buffers=3 ! video/x-raw,format=I420 ! " + fmam_el() + " ! fakesink", 30);
  EXPECT_THAT(link.error, HasSubstr("could not link"));
  Outcome run = play("videotestsrc num-buffers=3 ! capsfilter name=cf ! " + fmam_el() + " ! fakesink", 30, [](GstElement* p) {
    GstElement* cf = gst_bin_get_by_name(GST_BIN(p), "cf");
    GstCaps* caps = gst_caps_from_string("video/x-raw,format=I420,width=64,height=64");
    g_object_set(cf, "caps", caps, nullptr);
    gst_caps_unref(caps);
    gst_object_unref(cf);
  });
  EXPECT_FALSE(run.timed_out);
  EXPECT_FALSE(run.eos);
  EXPECT_THAT(run.error, HasSubstr("not-negotiated"));
  EXPECT_TRUE(run.results.empty());
}

// (f) gst-inspect-1.0 documents every property.
TEST(GstInspectTest, DocumentsEveryProperty) {
  std::string out;
  ASSERT_EQ(sh("gst-inspect-1.0 fmam 2>&1", &out), 0) << out;
  for (const char* p : {"graph", "model", "threshold", "batch", "threads", "overrides", "precision"})
    EXPECT_THAT(out, testing::ContainsRegex(std::string("\n  ") + p + " +: [A-Z]")) << p;
  ASSERT_EQ(sh("gst-inspect-1.0 fmamoverlay 2>&1", &out), 0) << out;
  for (const char* p : {"lo", "hi", "alpha", "show-score"})
    EXPECT_THAT(out, testing::ContainsRegex(std::string("\n  ") + p + " +: [A-Z]")) << p;
}

}  // namespace

int main(int argc, char** argv) {
  // Outcome directly (not through ctest), the plugin is found in this build tree.
  setenv("GST_PLUGIN_PATH", (kBin + "/gst").c_str(), 0);
  testing::InitGoogleTest(&argc, argv);
  gst_init(&argc, &argv);
  return RUN_ALL_TESTS();
}
