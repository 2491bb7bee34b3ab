// The evaluation report: a self-contained HTML page (inline CSS, inline SVG charts, thumbnails as
// base64 PNG data URIs; opens offline), results.json, and the charts as standalone SVG files.
//
// Page content: title, summary table (one row per defect type plus "all": image AUROC, pixel
// AUROC, AUPRO, F1-max, its threshold, image counts), the confusion counts at the decision
// threshold, image-level ROC curves (one per defect type + all), the normal-vs-anomalous
// score histogram with the threshold line, and a grid of overlay thumbnails, worst first:
//   1. false positives (normal images predicted anomalous), highest score first,
//   2. false negatives (anomalous images predicted normal), lowest score first,
//   3. the correctly classified rest, closest to the threshold first.
// An image is predicted anomalous when score >= threshold (sklearn's convention for the F1
// threshold). Every file is written atomically: to a temporary name in the same folder, then
// renamed over the target, so a reader never sees a half-written file.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "eval/metrics.h"

namespace fmam::eval {

struct ReportImage {
  std::string name, defect_type;
  double score = 0.0;
  bool anomalous = false;  // ground truth
  cv::Mat overlay;         // CV_8UC1/3/4 (BGR as OpenCV loads it), any size; empty = listed, no picture
};

struct ReportInput {
  std::string title = "Anomaly detection report";
  std::string subtitle;              // one line under the title (model, data set, date, ...)
  EvalResult metrics;                // from evaluate()
  std::vector<ReportImage> images;   // every test image (the histogram and verdicts use their scores)
  double threshold = kNaN;           // decision threshold; NaN = metrics.all.f1_threshold
  int thumbnail_px = 192;            // longest side of an embedded thumbnail
  std::size_t max_thumbnails = 300;  // 0 = all; the worst come first, so they are the ones kept
  int histogram_bins = 30;
};

enum class Verdict { kTrueNegative, kTruePositive, kFalsePositive, kFalseNegative };

// The threshold the report uses: input.threshold, or the F1-max threshold of "all" when NaN.
double report_threshold(const ReportInput& input);
Verdict verdict_of(const ReportImage& image, double threshold);
// "true negative", "true positive", "false positive", "false negative"
const char* verdict_name(Verdict v);
// Indices into images in the order of the thumbnail grid (worst first, see above).
std::vector<std::size_t> worst_first_order(const std::vector<ReportImage>& images, double threshold);

// The pieces, as strings.
std::string roc_svg(const EvalResult& metrics);  // image-level ROC, one curve per type + all
std::string histogram_svg(const std::vector<ReportImage>& images, double threshold, int bins = 30);
std::string render_html_report(const ReportInput& input);
std::string results_json(const ReportInput& input);  // metrics, threshold, confusion, per-image verdicts

// The files (atomic; throw std::runtime_error naming the path on failure).
void write_html_report(const std::string& path, const ReportInput& input);
void write_results_json(const std::string& path, const ReportInput& input);
void write_roc_svg(const std::string& path, const EvalResult& metrics);
void write_histogram_svg(const std::string& path, const ReportInput& input);
// dir/report.html, dir/results.json, dir/roc.svg, dir/score_histogram.svg (dir is created).
void write_report_bundle(const std::string& dir, const ReportInput& input);

// Writes content to path through a temporary file in the same folder and a rename (fmam::atomic_write_text),
// into a folder that must exist.
void write_file_atomic(const std::string& path, const std::string& content);

}  // namespace fmam::eval
