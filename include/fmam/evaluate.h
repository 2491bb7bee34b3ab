// fmam's evaluation API: a detector on a category's test split (MVTec AD layout) -> image AUROC,
// pixel AUROC, AUPRO (to FPR 0.3), F1-max per defect type, an HTML report, and optionally the
// calibration (threshold, heatmap range) written back into the model. `fmam eval` and the
// Python module's evaluate() are faces over it.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace fmam {

struct EvalOptions {
  std::string model;                   // the trained model (required)
  std::string data;                    // DIR with test/<type>/ and ground_truth/<type>/
  std::string report_dir;              // if set: report.html, results.json, roc.svg, score_histogram.svg
  bool calibrate = false;              // write the F1-max threshold and heatmap range into the model
  std::vector<std::string> overrides;  // "node.param=value"
  std::vector<std::string> plugins;
  int batch = 4;
  int threads = 0;
  std::string precision = "auto";  // auto | fp32 | bf16, as PipelineOptions::precision
  // When the precision is not fp32: also evaluate in fp32 and report both (EvalResult::fp32), so
  // the accuracy reduced precision costs is measured on this model and data. Doubles the time.
  bool fp32_delta = true;
  std::function<void(long long done, long long total)> progress;  // per image
};

struct EvalGroup {
  std::string defect_type;  // "all" for the whole split
  int images = 0;
  double image_auroc = 0, pixel_auroc = 0, aupro = 0, f1_max = 0, threshold = 0;
};

struct EvalResult {
  EvalGroup all;
  std::vector<EvalGroup> per_type;
  long long skipped = 0;  // unreadable test images (each reported on stderr)
  double seconds = 0;
  double map_lo = 0, map_hi = 0;   // the calibrated heatmap range
  std::vector<std::string> notes;  // e.g. a metric undefined for a type with one class
  std::string precision;           // what ran: "fp32" or "bf16"
  bool has_fp32 = false;           // fp32 below is set (precision bf16 with fp32_delta)
  EvalGroup fp32;                  // the whole split's metrics in fp32
  std::string results_json;        // the same as results.json
};

// Throws Error naming the file or field on a bad graph, model or data folder.
EvalResult evaluate(const std::string& graph_file, const EvalOptions& options);

}  // namespace fmam
