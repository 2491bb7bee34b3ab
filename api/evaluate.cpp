// evaluate(): a model over the test split of an MVTec-layout category through fmam::Pipeline,
// then the metrics (eval/metrics.h), the calibration (threshold at F1-max, heatmap range) and the
// HTML report (eval/report.h).
#include "fmam/evaluate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "eval/metrics.h"
#include "eval/report.h"
#include "fmam/pipeline.h"
#include "framework/error.h"
#include "framework/graph.h"
#include "framework/io.h"
#include "framework/model_binding.h"
#include "framework/model_file.h"
#include "framework/node_runner.h"
#include "framework/types.h"

namespace fmam {

namespace fs = std::filesystem;

namespace {

void log(const std::string& msg) { std::fprintf(stderr, "fmam: %s\n", msg.c_str()); }

struct TestImage {
  std::string path, defect_type, mask_path;  // mask_path "" for good images
};

// DIR/test/<type>/<name> with masks DIR/ground_truth/<type>/<stem>_mask.png (MVTec AD, MPDD).
std::vector<TestImage> list_test_split(const std::string& dir) {
  const fs::path test = fs::path(dir) / "test";
  if (!fs::is_directory(test)) throw Error("--data \"" + dir + "\": no test/ folder (MVTec AD layout expected)");
  std::vector<std::string> types;
  for (const auto& e : fs::directory_iterator(test))
    if (e.is_directory()) types.push_back(e.path().filename().string());
  std::sort(types.begin(), types.end());
  std::vector<TestImage> out;
  for (const auto& t : types) {
    for (const auto& p : list_images((test / t).string())) {
      TestImage ti{p, t, ""};
      if (t != "good") {
        fs::path m = fs::path(dir) / "ground_truth" / t / (fs::path(p).stem().string() + "_mask.png");
        ti.mask_path = fs::exists(m) ? m.string() : "";
      }
      out.push_back(ti);
    }
  }
  if (out.empty()) throw Error("--data \"" + dir + "\": test/ holds no image");
  return out;
}

double percentile(std::vector<float>& v, double q) {
  if (v.empty()) return std::nan("");
  size_t k = std::min(v.size() - 1, size_t(q * (v.size() - 1)));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return v[k];
}

eval::EvalSample to_sample(const TestImage& t, const Detection& d) {
  eval::EvalSample s;
  s.name = t.defect_type + "/" + fs::path(t.path).filename().string();
  s.defect_type = t.defect_type;
  s.anomalous = t.defect_type != "good";
  s.score = float(d.score);
  s.anomaly_map = d.map.clone();
  if (!t.mask_path.empty()) {
    cv::resize(read_mask(t.mask_path, t.path), s.gt_mask, s.anomaly_map.size(), 0, 0, cv::INTER_NEAREST);
  } else {
    s.gt_mask = cv::Mat::zeros(s.anomaly_map.size(), CV_8U);
    if (s.anomalous) log("warning: no ground-truth mask for " + t.path + "; pixels count as normal");
  }
  return s;
}

// The heatmap range from the maps themselves: `lo` = the 99th percentile of pixels of normal
// images (normal texture stays cold), `hi` = the median of the pixels the ground truth marks
// anomalous (half of a typical defect shows fully hot).
std::pair<double, double> heatmap_range(const std::vector<eval::EvalSample>& samples) {
  std::vector<float> normal_px, anomalous_px;
  for (const auto& s : samples) {
    const cv::Mat& m = s.anomaly_map;
    for (int y = 0; y < m.rows; y += 2)
      for (int x = 0; x < m.cols; x += 2) {
        const float v = m.at<float>(y, x);
        if (!s.anomalous)
          normal_px.push_back(v);
        else if (s.gt_mask.at<uchar>(y, x))
          anomalous_px.push_back(v);
      }
  }
  double lo = percentile(normal_px, 0.99), hi = percentile(anomalous_px, 0.5);
  if (!std::isfinite(hi) || hi <= lo) hi = lo + std::max(1e-6, std::fabs(lo) * 0.5);
  return {lo, hi};
}

// The report's overlays through the Overlay node itself, coloured by the calibrated range.
std::vector<eval::ReportImage> report_images(const std::vector<eval::EvalSample>& kept,
                                             const std::vector<const TestImage*>& tests, double lo, double hi, double threshold) {
  char params[256];
  std::snprintf(params, sizeof params,
                R"({"id": "overlay", "type": "Overlay", "params": {"lo": %.9g, "hi": %.9g, "threshold": %.9g}})", lo, hi,
                std::isfinite(threshold) ? threshold : -1.0);
  NodeRunner overlay(params);
  for (size_t k = 0; k < kept.size(); ++k) {
    cv::Mat img = cv::imread(tests[k]->path, cv::IMREAD_COLOR);
    const double s = 320.0 / std::max(img.cols, img.rows);
    if (s < 1) cv::resize(img, img, cv::Size(), s, s, cv::INTER_AREA);
    overlay.push(In<Image>("image"), Image{img});
    overlay.push(In<Map2D>("map"), Map2D{kept[k].anomaly_map});
    overlay.push(In<Scalar>("score"), Scalar{kept[k].score});
  }
  overlay.run();
  std::vector<eval::ReportImage> out;
  for (const auto& s : kept) {
    eval::ReportImage ri;
    ri.name = s.name;
    ri.defect_type = s.defect_type;
    ri.score = s.score;
    ri.anomalous = s.anomalous;
    ri.overlay = overlay.pop(Out<Image>("image")).mat;
    out.push_back(ri);
  }
  return out;
}

EvalGroup to_group(const eval::GroupMetrics& m) {
  return {m.defect_type, m.n_images, m.image_auroc, m.pixel_auroc, m.aupro, m.f1_max, m.f1_threshold};
}

// Scores every test image with `pipeline`: the samples read, in order, and the tests they are.
struct Scored {
  std::vector<eval::EvalSample> kept;
  std::vector<const TestImage*> tests;
  RunSummary run;
};
Scored score_split(Pipeline& pipeline, const std::vector<TestImage>& tests,
                   const std::function<void(long long, long long)>& progress) {
  std::vector<std::string> files;
  for (const auto& t : tests) files.push_back(t.path);
  Scored s;
  long long done = 0;
  s.run = pipeline.run_files(files, [&](const Detection& d) {
    ++done;
    if (d.skipped) {
      log("skipped: " + d.error);
    } else {
      s.kept.push_back(to_sample(tests[size_t(d.index)], d));
      s.tests.push_back(&tests[size_t(d.index)]);
    }
    if (progress) progress(done, (long long)tests.size());
  });
  return s;
}

PipelineOptions pipeline_options(const EvalOptions& options, const std::string& precision) {
  PipelineOptions po;
  po.model = options.model;
  po.overrides = options.overrides;
  po.plugins = options.plugins;
  po.batch = options.batch;
  po.threads = options.threads;
  po.precision = precision;
  po.images = false;
  return po;
}

// --calibrate writes the threshold and range into the model, where they stand for the model's own
// graph: another graph's would replace them on a different scale, unseen.
void refuse_calibrating_another_graph(const std::string& graph_file, const std::string& model_file) {
  const Model model = load_model(model_file);
  const std::string name = load_graph_file(graph_file).name;
  if (!calibration_applies(model, name))
    throw Error(graph_file + ": --calibrate: " + model_file + " belongs to graph \"" + model.graph_name +
                "\"; calibrating it on graph \"" + name +
                "\" would replace that graph's threshold and heatmap range with another scale's. Calibrate with "
                "graph \"" +
                model.graph_name + "\", or evaluate this one without --calibrate");
}

}  // namespace

EvalResult evaluate(const std::string& graph_file, const EvalOptions& options) {
  if (options.model.empty()) throw Error(graph_file + ": evaluate needs a model (--model)");
  if (options.data.empty()) throw Error(graph_file + ": evaluate needs a data folder (--data)");
  if (options.calibrate) refuse_calibrating_another_graph(graph_file, options.model);
  Pipeline pipeline(graph_file, pipeline_options(options, options.precision));
  if (pipeline.map_stream().empty() || pipeline.score_stream().empty())
    throw Error(graph_file + ": evaluation needs a graph with a Map2D output (the anomaly map) and a Scalar output (the score)");
  const std::vector<TestImage> tests = list_test_split(options.data);
  Scored scored = score_split(pipeline, tests, options.progress);
  std::vector<eval::EvalSample>& kept = scored.kept;
  std::vector<const TestImage*>& kept_tests = scored.tests;
  const RunSummary& run = scored.run;
  if (kept.empty()) throw Error("fmam eval: no test image of " + options.data + " could be read");
  const eval::EvalResult metrics = eval::evaluate(kept);
  const auto [lo, hi] = heatmap_range(kept);
  const double threshold = metrics.all.f1_threshold;

  EvalResult r;
  r.all = to_group(metrics.all);
  for (const auto& m : metrics.per_type) r.per_type.push_back(to_group(m));
  r.skipped = run.skipped;
  r.seconds = run.seconds;
  r.map_lo = lo;
  r.map_hi = hi;
  r.notes = metrics.all.notes;
  r.precision = pipeline.precision();
  if (r.precision != "fp32" && options.fp32_delta) {
    Pipeline reference(graph_file, pipeline_options(options, "fp32"));
    const Scored s32 = score_split(reference, tests, nullptr);
    if (!s32.kept.empty()) {
      r.fp32 = to_group(eval::evaluate(s32.kept).all);
      r.has_fp32 = true;
    }
  }

  eval::ReportInput rin;
  rin.title = "fmam evaluation: " + fs::path(options.data).filename().string();
  rin.subtitle = "graph " + graph_file + ", model " + options.model + " (" + pipeline.graph_name() + ", " +
                 std::to_string(pipeline.model_width()) + "x" + std::to_string(pipeline.model_height()) + ")";
  rin.metrics = metrics;
  rin.threshold = threshold;
  if (!options.report_dir.empty())
    rin.images = report_images(kept, kept_tests, lo, hi, threshold);
  else
    for (const auto& s : kept) rin.images.push_back({s.name, s.defect_type, s.score, s.anomalous, cv::Mat()});
  r.results_json = eval::results_json(rin);
  if (!options.report_dir.empty()) eval::write_report_bundle(options.report_dir, rin);
  if (options.calibrate) {
    Model model = load_model(options.model);
    model.threshold = threshold;
    model.map_lo = lo;
    model.map_hi = hi;
    save_model(options.model, model);
  }
  return r;
}

}  // namespace fmam
