// fmam eval: runs a model over the test split of an MVTec-layout category and writes the
// metrics (image AUROC, pixel AUROC, AUPRO to FPR 0.3, F1-max, per defect type), results.json and
// a self-contained HTML report; --calibrate writes the threshold and heatmap range back into the
// model so `fmam run` prints PASS/FAIL and colours heatmaps consistently.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "apps/cli.h"
#include "eval/metrics.h"
#include "eval/report.h"
#include "framework/executor.h"
#include "framework/graph.h"
#include "framework/io.h"
#include "framework/model_file.h"
#include "framework/node_runner.h"
#include "framework/types.h"

namespace fmam {

namespace fs = std::filesystem;

namespace {

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

}  // namespace

int cmd_eval(int argc, char** argv) {
  auto opts = cli::common_options();
  opts.insert(opts.begin(),
              {{"model", "FILE", "the trained model (fmam train)", false, "m"},
               {"data", "DIR", "a category in MVTec AD layout: DIR/test/<type>/, DIR/ground_truth/<type>/", false, "d"},
               {"out", "DIR", "report folder: report.html, results.json, roc.svg, score_histogram.svg", false, "o"},
               {"calibrate", "", "write the F1-max threshold and the heatmap colour range into the model", false, ""},
               {"set", "ID.PARAM=VALUE", "override a node param", true, ""},
               {"batch", "N", "frames stacked per call of batchable nodes (default 4: the networks run ~25% faster\n                              than frame by frame; 1 for the lowest latency)", false, ""},
               {"quiet", "", "no progress bar", false, "q"}});
  cli::Args a("eval", "fmam eval GRAPH --model MODEL --data CATEGORY_DIR --out REPORT_DIR [--calibrate]",
              "Evaluate a detector on a category's test split: image AUROC, pixel AUROC, AUPRO (to FPR\n"
              "0.3, normalised, as MVTec AD's evaluation code), image F1-max and its threshold, for all\n"
              "images and per defect type. Writes results.json and a self-contained HTML report (ROC\n"
              "curves, score histograms, overlays with the worst mistakes first).",
              opts,
              "example:\n"
              "  fmam eval graphs/fmam_rkd.json -m bottle.fmam -d ../shared/data/mvtec_ad/bottle -o report/ --calibrate\n"
              "then open report/report.html; with --calibrate, fmam run prints PASS/FAIL per image.");
  if (!a.parse(argc, argv)) return 0;
  cli::load_plugins(a);
  if (a.positionals().size() != 1) throw Error("fmam eval: expected one GRAPH; see fmam eval --help");
  for (const char* req : {"model", "data", "out"})
    if (a.get(req).empty()) throw Error(std::string("fmam eval: --") + req + " is required; see fmam eval --help");
  const std::string model_path = a.get("model");
  Model model = load_model(model_path);
  GraphConfig g = load_graph_file(a.positionals()[0]);
  std::vector<ParamOverride> ov;
  for (const auto& s : a.all("set")) ov.push_back(parse_override(s));
  apply_overrides(g, ov);
  cli::apply_model_settings(g, model, -1, a.all("set"), model_path);
  std::string map_stream, score_stream;
  for (const auto& [s, t] : g.outputs) {
    if (t == "Map2D" && map_stream.empty()) map_stream = s;
    if (t == "Scalar" && score_stream.empty()) score_stream = s;
  }
  if (map_stream.empty() || score_stream.empty())
    throw Error(g.file + ": fmam eval needs a graph with a Map2D output (the anomaly map) and a Scalar output (the score)");
  cli::attach_io(g, true, "");
  ValidatedGraph vg = validate(g);
  std::vector<TestImage> tests = list_test_split(a.get("data"));

  RunOptions ro;
  ro.batch = a.get_int("batch", 4);
  ro.threads = a.get_int("threads", 0);
  Executor ex(vg, ro);
  apply_model(model, ex, model_path);

  std::vector<eval::EvalSample> samples(tests.size());
  std::vector<bool> ok(tests.size(), false);
  size_t next = 0;
  long long done = 0;
  cli::Progress bar("eval", (long long)tests.size(), 1, "images/s");
  RunStats st = ex.run(
      [&](Frame& f) {
        if (next >= tests.size()) return false;
        f.source = tests[next++].path;
        return true;
      },
      [&](const Frame& f) {
        const size_t i = size_t(f.id());
        ++done;
        if (f.dropped) {
          cli::log("skipped: " + f.drop_reason);
        } else {
          auto& s = samples[i];
          s.name = tests[i].defect_type + "/" + fs::path(tests[i].path).filename().string();
          s.defect_type = tests[i].defect_type;
          s.anomalous = tests[i].defect_type != "good";
          s.score = float(f.get<Scalar>(score_stream).value);
          s.anomaly_map = f.get<Map2D>(map_stream).mat.clone();
          if (!tests[i].mask_path.empty()) {
            cv::Mat m = cli::read_mask(tests[i].mask_path, tests[i].path);
            cv::resize(m, s.gt_mask, s.anomaly_map.size(), 0, 0, cv::INTER_NEAREST);
          } else {
            s.gt_mask = cv::Mat::zeros(s.anomaly_map.size(), CV_8U);
            if (s.anomalous) cli::log("warning: no ground-truth mask for " + tests[i].path + "; pixels count as normal");
          }
          ok[i] = true;
        }
        if (!a.flag("quiet")) bar.update(done);
      });
  if (!a.flag("quiet")) bar.finish();
  std::vector<eval::EvalSample> kept;
  std::vector<size_t> kept_index;
  for (size_t i = 0; i < samples.size(); ++i)
    if (ok[i]) {
      kept.push_back(samples[i]);
      kept_index.push_back(i);
    }
  if (kept.empty()) throw Error("fmam eval: no test image could be read");
  eval::EvalResult res = eval::evaluate(kept);

  // Calibration: threshold at F1-max; heatmap range from the maps themselves: `lo` = the 99th
  // percentile of pixels of normal images (normal texture stays cold), `hi` = the median of the
  // pixels the ground truth marks anomalous (half of a typical defect shows fully hot).
  std::vector<float> normal_px, anomalous_px;
  for (const auto& s : kept) {
    cv::Mat m = s.anomaly_map;
    for (int y = 0; y < m.rows; y += 2)
      for (int x = 0; x < m.cols; x += 2) {
        const float v = m.at<float>(y, x);
        if (!s.anomalous) normal_px.push_back(v);
        else if (s.gt_mask.at<uchar>(y, x)) anomalous_px.push_back(v);
      }
  }
  double lo = percentile(normal_px, 0.99), hi = percentile(anomalous_px, 0.5);
  if (!std::isfinite(hi) || hi <= lo) hi = lo + std::max(1e-6, std::fabs(lo) * 0.5);
  const double threshold = res.all.f1_threshold;

  // Overlays through the Overlay node itself, coloured by the calibrated range.
  eval::ReportInput rin;
  rin.title = "fmam evaluation: " + fs::path(a.get("data")).filename().string();
  rin.subtitle = "graph " + vg.config.file + ", model " + model_path + " (" + model.graph_name + ", " +
                 std::to_string(model.image_width) + "x" + std::to_string(model.image_height) + ")";
  rin.metrics = res;
  rin.threshold = threshold;
  {
    char params[256];
    std::snprintf(params, sizeof params,
                  R"({"id": "overlay", "type": "Overlay", "params": {"lo": %.9g, "hi": %.9g, "threshold": %.9g}})", lo, hi,
                  std::isfinite(threshold) ? threshold : -1.0);
    NodeRunner overlay(params);
    for (size_t k = 0; k < kept.size(); ++k) {
      cv::Mat img = cv::imread(tests[kept_index[k]].path, cv::IMREAD_COLOR);
      const double s = 320.0 / std::max(img.cols, img.rows);
      if (s < 1) cv::resize(img, img, cv::Size(), s, s, cv::INTER_AREA);
      overlay.push(In<Image>("image"), Image{img});
      overlay.push(In<Map2D>("map"), Map2D{kept[k].anomaly_map});
      overlay.push(In<Scalar>("score"), Scalar{kept[k].score});
    }
    overlay.run();
    for (size_t k = 0; k < kept.size(); ++k) {
      eval::ReportImage ri;
      ri.name = kept[k].name;
      ri.defect_type = kept[k].defect_type;
      ri.score = kept[k].score;
      ri.anomalous = kept[k].anomalous;
      ri.overlay = overlay.pop(Out<Image>("image")).mat;
      rin.images.push_back(ri);
    }
  }
  const std::string out = a.get("out");
  eval::write_report_bundle(out, rin);

  std::printf("%-16s %6s %12s %12s %8s %8s %10s\n", "defect type", "images", "image AUROC", "pixel AUROC", "AUPRO",
              "F1-max", "threshold");
  auto row = [](const eval::GroupMetrics& m) {
    std::printf("%-16s %6d %12.4f %12.4f %8.4f %8.4f %10.5g\n", m.defect_type.c_str(), m.n_images, m.image_auroc,
                m.pixel_auroc, m.aupro, m.f1_max, m.f1_threshold);
  };
  for (const auto& m : res.per_type) row(m);
  row(res.all);
  for (const auto& n : res.all.notes) cli::log("note: " + n);
  if (a.flag("calibrate")) {
    model.threshold = threshold;
    model.map_lo = lo;
    model.map_hi = hi;
    save_model(model_path, model);
    char b[200];
    std::snprintf(b, sizeof b, "calibrated %s: threshold %.6g (F1-max), heatmap range [%.6g, %.6g]", model_path.c_str(),
                  threshold, lo, hi);
    cli::log(b);
  }
  char b[160];
  std::snprintf(b, sizeof b, "%lld test image(s) in %.1f s", st.frames, st.wall_ms / 1000);
  cli::log(b);
  std::cout << "report: " << (fs::path(out) / "report.html").string() << "\n";
  return 0;
}

}  // namespace fmam
