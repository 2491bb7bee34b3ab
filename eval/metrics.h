// Evaluation metrics for anomaly detection, with the MVTec AD conventions.
//
//  * Image level: ROC AUC and ROC curve as scikit-learn computes them (roc_auc_score, roc_curve;
//    ties handled by the trapezoid over distinct thresholds), F1-max over scikit-learn's
//    precision_recall_curve. A sample is predicted anomalous when score >= threshold.
//  * Pixel level: AUROC over all pixels of all test images (exact: one sort, integer counts) and
//    AUPRO as the official MVTec AD evaluation code computes it (pro_curve_util.compute_pro +
//    generic_util.trapezoid with x_max = fpr_limit, divided by fpr_limit): ground-truth regions are
//    the 8-connected components of each mask (scipy.ndimage.label with a 3x3 ones structure), the
//    PRO at a threshold is the mean over all regions of all images of the covered fraction, the FPR
//    is over all normal pixels of all images (good images included), and the curve is cut at
//    fpr_limit with linear interpolation.
//  * A mask pixel is anomalous when non-zero (0/255 and 0/1 masks both work).
//
// Undefined metrics (only one class present, no anomalous region, ...) are NaN, never an
// exception; the reason is given through the optional `why` argument or the `notes` of a
// GroupMetrics. Invalid input (NaN/inf scores, size/type mismatches) throws MetricsError naming
// the offending item (its index, and its name when names are given).
#pragma once

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace fmam::eval {

// Thrown on invalid input; the message names the offending item.
class MetricsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---------------------------------------------------------------------------------------------
// Image level (also usable for any binary scoring problem).

// ROC curve like sklearn.metrics.roc_curve (scikit-learn 1.2): one point per distinct score,
// thresholds decreasing, starting at (0, 0) with thresholds[0] = max score + 1 (scikit-learn >=
// 1.3 uses +inf there; +1 keeps the value finite for JSON). drop_intermediate=false (the default
// here, unlike sklearn) keeps every distinct threshold; true drops collinear points exactly as
// sklearn does. Empty when the curve is undefined (no positive or no negative sample).
struct RocCurve {
  std::vector<double> fpr, tpr, thresholds;
};

// ROC AUC, equal to sklearn.metrics.roc_auc_score (ties: trapezoid between distinct thresholds,
// i.e. the Mann-Whitney U statistic with ties counted one half). labels: nonzero = anomalous.
// Returns NaN (reason in *why) when there is no positive or no negative sample.
// Throws MetricsError on a size mismatch or a non-finite score (naming its index).
double auroc(const std::vector<float>& scores, const std::vector<uint8_t>& labels, std::string* why = nullptr);
RocCurve roc_curve(const std::vector<float>& scores, const std::vector<uint8_t>& labels, bool drop_intermediate = false);

// Precision-recall curve like sklearn.metrics.precision_recall_curve (scikit-learn 1.2): thresholds
// increasing (the distinct scores), precision/recall have one more element, the final (1, 0).
struct PrCurve {
  std::vector<double> precision, recall, thresholds;
};
PrCurve precision_recall_curve(const std::vector<float>& scores, const std::vector<uint8_t>& labels);

// Maximum of F1 = 2PR/(P+R) over the points of the precision-recall curve that have a threshold
// (F1 = 0 where P+R = 0). When several thresholds reach the maximum, the lowest one is reported
// (numpy's argmax over sklearn's increasing thresholds). NaN with the reason when there is no
// positive sample or no sample at all.
struct F1Max {
  double f1 = kNaN, threshold = kNaN, precision = kNaN, recall = kNaN;
};
F1Max f1_max(const std::vector<float>& scores, const std::vector<uint8_t>& labels, std::string* why = nullptr);

// ---------------------------------------------------------------------------------------------
// Pixel level. maps: single-channel CV_32F (any size, one per image); masks: single-channel CV_8U
// of the same size, nonzero = anomalous; an empty mask means "all normal" (good images often have
// no mask file). names (optional, same length) only serve the error messages.

// generic_util.trapezoid from the MVTec AD evaluation: the area under the curve (x increasing),
// integrated up to x_max (NaN = the whole curve) with y at x_max interpolated linearly when x_max
// is not a sample. Non-finite points are skipped.
double trapezoid_area(const std::vector<double>& x, const std::vector<double>& y, double x_max = kNaN);

// The PRO curve of compute_pro: points at the distinct thresholds (decreasing), FPR increasing,
// with (0, 0) prepended and (1, 1) appended, values clipped to 1.
struct ProCurve {
  std::vector<double> fpr, pro;
  int64_t n_regions = 0, n_normal_pixels = 0;
};

struct PixelMetrics {
  double auroc = kNaN;  // over all pixels
  double aupro = kNaN;  // integrated to fpr_limit, divided by fpr_limit
  double fpr_limit = 0.3;
  int64_t n_pixels = 0, n_anomalous_pixels = 0, n_regions = 0;
  std::vector<std::string> notes;  // why a value is NaN
};

// Both metrics from a single sort of all pixels (8 bytes per pixel of working memory).
PixelMetrics pixel_metrics(const std::vector<cv::Mat>& maps, const std::vector<cv::Mat>& masks, double fpr_limit = 0.3,
                           const std::vector<std::string>& names = {});
double pixel_auroc(const std::vector<cv::Mat>& maps, const std::vector<cv::Mat>& masks,
                   const std::vector<std::string>& names = {}, std::string* why = nullptr);
double aupro(const std::vector<cv::Mat>& maps, const std::vector<cv::Mat>& masks, double fpr_limit = 0.3,
             const std::vector<std::string>& names = {}, std::string* why = nullptr);
// The full curve (no cut at fpr_limit); empty fpr/pro when undefined (no region / no normal pixel).
ProCurve pro_curve(const std::vector<cv::Mat>& maps, const std::vector<cv::Mat>& masks,
                   const std::vector<std::string>& names = {});

// ---------------------------------------------------------------------------------------------
// A whole test set, per defect type.

struct EvalSample {
  std::string name;         // shown in messages and in the report
  std::string defect_type;  // e.g. "good", "scratch"; only used to group the anomalous samples
  float score = 0.f;        // image-level anomaly score
  bool anomalous = false;   // ground truth at image level
  cv::Mat anomaly_map;      // CV_32F, optional (empty for all samples = no pixel metrics)
  cv::Mat gt_mask;          // CV_8U, nonzero = anomalous; empty = all normal
};

struct EvalOptions {
  double fpr_limit = 0.3;     // AUPRO integration limit
  bool pixel_metrics = true;  // compute them when the samples carry anomaly maps
};

// Metrics of one group of samples. Per-type convention: the group of defect type T holds the
// anomalous samples of type T plus ALL normal samples (so each type's AUROC is "T vs good"); the
// group "all" holds every sample. Pixel metrics use the same samples.
struct GroupMetrics {
  std::string defect_type;  // "all" for the aggregate
  int n_images = 0, n_normal = 0, n_anomalous = 0;
  double image_auroc = kNaN;
  double pixel_auroc = kNaN;
  double aupro = kNaN;
  double f1_max = kNaN, f1_threshold = kNaN, f1_precision = kNaN, f1_recall = kNaN;
  int64_t n_pixels = 0, n_anomalous_pixels = 0, n_regions = 0;
  RocCurve roc;                    // image-level, drop_intermediate = false
  std::vector<std::string> notes;  // why a metric is NaN
};

struct EvalResult {
  GroupMetrics all;
  std::vector<GroupMetrics> per_type;  // anomalous defect types, sorted by name
  bool has_pixel_metrics = false;
  double fpr_limit = 0.3;
};

// Validates everything first (throws MetricsError naming the sample: non-finite score or map
// value, map/mask size or type mismatch, a map missing on some samples only, an anomalous sample
// without mask, no sample at all), then computes. Anomalous samples with an empty defect_type are
// grouped under "defect".
EvalResult evaluate(const std::vector<EvalSample>& samples, const EvalOptions& options = {});

}  // namespace fmam::eval
