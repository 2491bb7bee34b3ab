#include "eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <sstream>

#include <opencv2/imgproc.hpp>

namespace fmam::eval {
namespace {

void set_why(std::string* why, const std::string& text) {
  if (why) *why = text;
}

std::string item_label(size_t i, const std::vector<std::string>& names) {
  std::ostringstream s;
  if (i < names.size() && !names[i].empty())
    s << "'" << names[i] << "' (#" << i << ")";
  else
    s << "#" << i;
  return s.str();
}

std::string fmt_value(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

void check_scores(const std::vector<float>& scores, const std::vector<uint8_t>& labels) {
  if (scores.size() != labels.size())
    throw MetricsError("metrics: " + std::to_string(scores.size()) + " scores but " + std::to_string(labels.size()) + " labels");
  for (size_t i = 0; i < scores.size(); ++i)
    if (!std::isfinite(scores[i]))
      throw MetricsError("metrics: score #" + std::to_string(i) + " is " + fmt_value(scores[i]) + " (scores must be finite)");
}

// sklearn's _binary_clf_curve: cumulative true/false positives at each distinct score,
// thresholds decreasing.
struct ClfCurve {
  std::vector<int64_t> tps, fps;
  std::vector<float> thresholds;
};

ClfCurve binary_clf_curve(const std::vector<float>& scores, const std::vector<uint8_t>& labels) {
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  ClfCurve c;
  int64_t tp = 0, fp = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    const size_t i = order[k];
    if (labels[i])
      ++tp;
    else
      ++fp;
    // -0.0 == 0.0 here, like numpy's diff.
    if (k + 1 == order.size() || scores[order[k + 1]] != scores[i]) {
      c.tps.push_back(tp);
      c.fps.push_back(fp);
      c.thresholds.push_back(scores[i]);
    }
  }
  return c;
}

// Order-preserving map of a finite float to uint32 (-0.0 and +0.0 map to the same key).
inline uint32_t float_key(float f) {
  if (f == 0.f) f = 0.f;  // -0.0 has another bit pattern: make it +0.0 so that the two tie
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  // Negative floats order backwards as bits (flip them all); positive ones above every negative.
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// ---- pixel level --------------------------------------------------------------------------------

constexpr uint32_t kNormalFlag = 0x80000000u;

// All pixels of all images, sorted once by decreasing score. Each entry: (~key << 32) | payload,
// payload = region id (1-based, global) for an anomalous pixel, kNormalFlag | image for a normal one.
struct PixelTable {
  std::vector<uint64_t> sorted;
  std::vector<uint32_t> region_image;  // [region id] -> image (index 0 unused)
  std::vector<int64_t> region_size;    // [region id] -> pixel count
  std::vector<int64_t> image_normal;   // per image: normal pixels
  std::vector<int64_t> image_anomalous;
  std::vector<int64_t> image_regions;
};

void check_pixel_input(const std::vector<cv::Mat>& maps, const std::vector<cv::Mat>& masks,
                       const std::vector<std::string>& names) {
  if (maps.size() != masks.size())
    throw MetricsError("pixel metrics: " + std::to_string(maps.size()) + " anomaly maps but " + std::to_string(masks.size()) +
                       " masks");
  if (!names.empty() && names.size() != maps.size())
    throw MetricsError("pixel metrics: " + std::to_string(names.size()) + " names for " + std::to_string(maps.size()) +
                       " anomaly maps");
  for (size_t i = 0; i < maps.size(); ++i) {
    const cv::Mat& m = maps[i];
    const cv::Mat& g = masks[i];
    const std::string who = item_label(i, names);
    if (m.empty()) throw MetricsError("pixel metrics: anomaly map of " + who + " is empty");
    if (m.type() != CV_32FC1 || m.dims != 2)
      throw MetricsError("pixel metrics: anomaly map of " + who + " must be a 2-D single-channel CV_32F matrix, got type " +
                         cv::typeToString(m.type()));
    if (!g.empty()) {
      if (g.type() != CV_8UC1 || g.dims != 2)
        throw MetricsError("pixel metrics: mask of " + who + " must be a 2-D single-channel CV_8U matrix, got type " +
                           cv::typeToString(g.type()));
      if (g.size() != m.size())
        throw MetricsError("pixel metrics: size mismatch for " + who + ": anomaly map " + std::to_string(m.cols) + "x" +
                           std::to_string(m.rows) + " (WxH) but mask " + std::to_string(g.cols) + "x" + std::to_string(g.rows));
    }
  }
  if (maps.size() >= kNormalFlag) throw MetricsError("pixel metrics: too many images");
}

PixelTable build_pixel_table(const std::vector<cv::Mat>& maps, const std::vector<cv::Mat>& masks,
                             const std::vector<std::string>& names) {
  check_pixel_input(maps, masks, names);
  PixelTable t;
  size_t total = 0;
  for (const cv::Mat& m : maps) total += m.total();
  t.sorted.reserve(total);
  t.region_image.push_back(0);
  t.region_size.push_back(0);
  t.image_normal.assign(maps.size(), 0);
  t.image_anomalous.assign(maps.size(), 0);
  t.image_regions.assign(maps.size(), 0);
  cv::Mat labels, stats, centroids, binary;
  for (size_t i = 0; i < maps.size(); ++i) {
    const cv::Mat& m = maps[i];
    int n_labels = 1;
    if (!masks[i].empty()) {
      cv::compare(masks[i], 0, binary, cv::CMP_NE);
      // 8-connectivity = scipy.ndimage.label with a 3x3 ones structure (MVTec AD evaluation).
      n_labels = cv::connectedComponentsWithStats(binary, labels, stats, centroids, 8, CV_32S);
    }
    const uint32_t first_region = uint32_t(t.region_size.size());  // global id of label 1
    if (uint64_t(first_region) + uint64_t(n_labels) >= kNormalFlag)
      throw MetricsError("pixel metrics: too many ground-truth regions");
    for (int l = 1; l < n_labels; ++l) {
      t.region_image.push_back(uint32_t(i));
      t.region_size.push_back(stats.at<int>(l, cv::CC_STAT_AREA));
      t.image_anomalous[i] += stats.at<int>(l, cv::CC_STAT_AREA);
    }
    t.image_regions[i] = n_labels - 1;
    t.image_normal[i] = int64_t(m.total()) - t.image_anomalous[i];
    for (int y = 0; y < m.rows; ++y) {
      const float* row = m.ptr<float>(y);
      const int* lab = masks[i].empty() ? nullptr : labels.ptr<int>(y);
      for (int x = 0; x < m.cols; ++x) {
        const float v = row[x];
        if (!std::isfinite(v))
          throw MetricsError("pixel metrics: anomaly map of " + item_label(i, names) + " has a non-finite value (" +
                             fmt_value(v) + ") at row " + std::to_string(y) + ", col " + std::to_string(x));
        const uint32_t payload = (lab && lab[x] > 0) ? first_region + uint32_t(lab[x] - 1) : (kNormalFlag | uint32_t(i));
        t.sorted.push_back((uint64_t(~float_key(v)) << 32) | payload);
      }
    }
  }
  // The key is stored inverted, so ascending integers are decreasing scores: one radix-friendly
  // sort of plain integers instead of a comparator over (score, payload) pairs.
  std::sort(t.sorted.begin(), t.sorted.end());  // decreasing score
  return t;
}

struct PixelWalk {
  double auroc = kNaN, aupro = kNaN;
  ProCurve curve;
  int64_t n_pixels = 0, n_anomalous = 0, n_regions = 0;
  std::vector<std::string> notes;
};

// One pass over the sorted table, restricted to the images with include[i] != 0 (all when
// empty). Computes the exact pixel AUROC and the PRO curve (up to the first point past
// curve_limit; the whole curve when curve_limit is NaN), then AUPRO if fpr_limit is finite.
PixelWalk walk_pixels(const PixelTable& t, const std::vector<uint8_t>& include, double curve_limit, double fpr_limit) {
  PixelWalk w;
  const size_t n_images = t.image_normal.size();
  auto included = [&](size_t img) { return include.empty() || include[img]; };
  int64_t n_ok = 0;
  for (size_t i = 0; i < n_images; ++i)
    if (included(i)) {
      n_ok += t.image_normal[i];
      w.n_anomalous += t.image_anomalous[i];
      w.n_regions += t.image_regions[i];
    }
  w.n_pixels = n_ok + w.n_anomalous;
  w.curve.n_regions = w.n_regions;
  w.curve.n_normal_pixels = n_ok;
  const bool auroc_defined = n_ok > 0 && w.n_anomalous > 0;
  const bool pro_defined = n_ok > 0 && w.n_regions > 0;
  if (w.n_pixels == 0)
    w.notes.push_back("no pixel to evaluate");
  else if (w.n_anomalous == 0)
    w.notes.push_back("pixel AUROC and AUPRO undefined: the ground-truth masks have no anomalous pixel");
  else if (n_ok == 0)
    w.notes.push_back("pixel AUROC and AUPRO undefined: the ground-truth masks have no normal pixel");
  if (!auroc_defined && !pro_defined) return w;

  // AUROC: 2 * area * P * N accumulated exactly in integers.
  int64_t tp = 0, fp = 0, tp_prev = 0, fp_prev = 0;
  long double area2 = 0;  // sum of dfp * (tp + tp_prev); fits int64 too, but stay safe
  double pro_sum = 0.0;
  bool collecting = pro_defined;
  const double inv_regions = pro_defined ? 1.0 / double(w.n_regions) : 0.0;
  std::vector<double>& fprs = w.curve.fpr;
  std::vector<double>& pros = w.curve.pro;
  if (pro_defined) {
    fprs.push_back(0.0);
    pros.push_back(0.0);
  }
  // Pixels of equal score form one ROC step (a threshold cannot separate them): the trapezoid
  // (not a staircase) over the step is what sklearn's roc_auc_score counts for ties.
  auto close_group = [&]() {
    area2 += (long double)(fp - fp_prev) * (long double)(tp + tp_prev);
    tp_prev = tp;
    fp_prev = fp;
    if (collecting) {
      const double fpr = std::min(1.0, double(fp) / double(n_ok));
      const double pro = std::min(1.0, pro_sum * inv_regions);
      fprs.push_back(fpr);
      pros.push_back(pro);
      if (!std::isnan(curve_limit) && fpr > curve_limit) collecting = false;
    }
  };
  bool pending = false;
  uint32_t prev_key = 0;
  for (const uint64_t e : t.sorted) {
    const uint32_t payload = uint32_t(e);
    const bool normal = (payload & kNormalFlag) != 0;
    const size_t img = normal ? (payload & ~kNormalFlag) : t.region_image[payload];
    if (!included(img)) continue;
    const uint32_t key = uint32_t(e >> 32);
    if (pending && key != prev_key) close_group();
    prev_key = key;
    pending = true;
    if (normal) {
      ++fp;
    } else {
      ++tp;
      // PRO is the mean over regions of the covered fraction: each pixel adds 1/|region|, so the
      // running sum over regions never needs a per-region table during the walk.
      pro_sum += 1.0 / double(t.region_size[payload]);
    }
  }
  if (pending) close_group();
  if (pro_defined) {
    if (collecting) {  // the whole curve was collected: end it at (1, 1)
      fprs.push_back(1.0);
      pros.push_back(1.0);
    }
    if (std::isfinite(fpr_limit)) w.aupro = trapezoid_area(fprs, pros, fpr_limit) / fpr_limit;
  }
  if (auroc_defined) w.auroc = double(area2 / (2.0L * (long double)w.n_anomalous * (long double)n_ok));
  return w;
}

}  // namespace

// ---- image level --------------------------------------------------------------------------------

double auroc(const std::vector<float>& scores, const std::vector<uint8_t>& labels, std::string* why) {
  check_scores(scores, labels);
  int64_t pos = 0;
  for (uint8_t l : labels) pos += l ? 1 : 0;
  const int64_t neg = int64_t(labels.size()) - pos;
  if (pos == 0 || neg == 0) {
    set_why(why, std::string("AUROC undefined: no ") + (pos == 0 ? "positive (anomalous)" : "negative (normal)") + " sample");
    return kNaN;
  }
  const ClfCurve c = binary_clf_curve(scores, labels);
  // Twice the trapezoid area in integer counts, divided once at the end: no rounding per step.
  long double area2 = 0;
  int64_t tp_prev = 0, fp_prev = 0;
  for (size_t k = 0; k < c.tps.size(); ++k) {
    area2 += (long double)(c.fps[k] - fp_prev) * (long double)(c.tps[k] + tp_prev);
    tp_prev = c.tps[k];
    fp_prev = c.fps[k];
  }
  set_why(why, "");
  return double(area2 / (2.0L * (long double)pos * (long double)neg));
}

RocCurve roc_curve(const std::vector<float>& scores, const std::vector<uint8_t>& labels, bool drop_intermediate) {
  check_scores(scores, labels);
  RocCurve r;
  const ClfCurve c = binary_clf_curve(scores, labels);
  if (c.tps.empty() || c.tps.back() == 0 || c.fps.back() == 0) return r;
  std::vector<size_t> keep;
  const size_t n = c.tps.size();
  for (size_t k = 0; k < n; ++k) {
    if (drop_intermediate && n > 2 && k > 0 && k + 1 < n) {
      // sklearn: keep where the second difference of fps or tps is nonzero
      const int64_t d2f = c.fps[k + 1] - 2 * c.fps[k] + c.fps[k - 1];
      const int64_t d2t = c.tps[k + 1] - 2 * c.tps[k] + c.tps[k - 1];
      if (d2f == 0 && d2t == 0) continue;
    }
    keep.push_back(k);
  }
  const double P = double(c.tps.back()), N = double(c.fps.back());
  r.fpr.push_back(0.0);
  r.tpr.push_back(0.0);
  r.thresholds.push_back(double(c.thresholds[0] + 1.0f));  // float32 arithmetic, as sklearn on float32 scores
  for (size_t k : keep) {
    r.fpr.push_back(double(c.fps[k]) / N);
    r.tpr.push_back(double(c.tps[k]) / P);
    r.thresholds.push_back(double(c.thresholds[k]));
  }
  return r;
}

PrCurve precision_recall_curve(const std::vector<float>& scores, const std::vector<uint8_t>& labels) {
  check_scores(scores, labels);
  PrCurve r;
  const ClfCurve c = binary_clf_curve(scores, labels);
  if (c.tps.empty()) return r;
  const int64_t P = c.tps.back();
  for (size_t j = c.tps.size(); j-- > 0;) {
    const int64_t ps = c.tps[j] + c.fps[j];
    r.precision.push_back(ps ? double(c.tps[j]) / double(ps) : 0.0);
    r.recall.push_back(P ? double(c.tps[j]) / double(P) : 1.0);
    r.thresholds.push_back(double(c.thresholds[j]));
  }
  r.precision.push_back(1.0);  // sklearn ends the curve at (recall 0, precision 1)
  r.recall.push_back(0.0);
  return r;
}

F1Max f1_max(const std::vector<float>& scores, const std::vector<uint8_t>& labels, std::string* why) {
  const PrCurve pr = precision_recall_curve(scores, labels);
  F1Max best;
  if (pr.thresholds.empty()) {
    set_why(why, "F1-max undefined: no sample");
    return best;
  }
  if (std::none_of(labels.begin(), labels.end(), [](uint8_t l) { return l != 0; })) {
    set_why(why, "F1-max undefined: no positive (anomalous) sample");
    return best;
  }
  double f1_best = -1.0;
  for (size_t k = 0; k < pr.thresholds.size(); ++k) {
    const double p = pr.precision[k], r = pr.recall[k];
    const double f1 = (p + r > 0) ? 2 * p * r / (p + r) : 0.0;
    if (f1 > f1_best) {  // strict: on a tie the higher threshold (earlier in the list) is kept
      f1_best = f1;
      best = {f1, pr.thresholds[k], p, r};
    }
  }
  set_why(why, "");
  return best;
}

// ---- pixel level --------------------------------------------------------------------------------

double trapezoid_area(const std::vector<double>& x_in, const std::vector<double>& y_in, double x_max) {
  if (x_in.size() != y_in.size())
    throw MetricsError("trapezoid_area: " + std::to_string(x_in.size()) + " x values but " + std::to_string(y_in.size()) +
                       " y values");
  std::vector<double> x, y;
  x.reserve(x_in.size());
  y.reserve(y_in.size());
  for (size_t i = 0; i < x_in.size(); ++i)
    if (std::isfinite(x_in[i]) && std::isfinite(y_in[i])) {
      x.push_back(x_in[i]);
      y.push_back(y_in[i]);
    }
  // The MVTec AD evaluation's trapezoid with x_max (the AUPRO integration bound): the curve is cut at x_max and
  // the piece from the last point below it to x_max is added by linear interpolation.
  double correction = 0.0;
  size_t end = x.size();
  if (!std::isnan(x_max)) {
    if (std::find(x.begin(), x.end(), x_max) == x.end()) {
      const size_t ins = size_t(std::upper_bound(x.begin(), x.end(), x_max) - x.begin());  // bisect_right
      if (ins > 0 && ins < x.size()) {
        const double y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1]);
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1]);
      }
    }
    end = size_t(std::upper_bound(x.begin(), x.end(), x_max) - x.begin());  // x is sorted: mask x <= x_max
  }
  double area = 0.0;
  for (size_t i = 1; i < end; ++i) area += 0.5 * (y[i] + y[i - 1]) * (x[i] - x[i - 1]);
  return area + correction;
}

PixelMetrics pixel_metrics(const std::vector<cv::Mat>& maps, const std::vector<cv::Mat>& masks, double fpr_limit,
                           const std::vector<std::string>& names) {
  if (!(fpr_limit > 0.0 && fpr_limit <= 1.0))
    throw MetricsError("pixel metrics: fpr_limit must be in (0, 1], got " + fmt_value(fpr_limit));
  const PixelTable t = build_pixel_table(maps, masks, names);
  PixelWalk w = walk_pixels(t, {}, fpr_limit, fpr_limit);
  PixelMetrics m;
  m.auroc = w.auroc;
  m.aupro = w.aupro;
  m.fpr_limit = fpr_limit;
  m.n_pixels = w.n_pixels;
  m.n_anomalous_pixels = w.n_anomalous;
  m.n_regions = w.n_regions;
  m.notes = std::move(w.notes);
  return m;
}

double pixel_auroc(const std::vector<cv::Mat>& maps, const std::vector<cv::Mat>& masks, const std::vector<std::string>& names,
                   std::string* why) {
  const PixelMetrics m = pixel_metrics(maps, masks, 0.3, names);
  set_why(why, std::isnan(m.auroc) && !m.notes.empty() ? m.notes.front() : "");
  return m.auroc;
}

double aupro(const std::vector<cv::Mat>& maps, const std::vector<cv::Mat>& masks, double fpr_limit,
             const std::vector<std::string>& names, std::string* why) {
  const PixelMetrics m = pixel_metrics(maps, masks, fpr_limit, names);
  set_why(why, std::isnan(m.aupro) && !m.notes.empty() ? m.notes.front() : "");
  return m.aupro;
}

ProCurve pro_curve(const std::vector<cv::Mat>& maps, const std::vector<cv::Mat>& masks, const std::vector<std::string>& names) {
  const PixelTable t = build_pixel_table(maps, masks, names);
  return walk_pixels(t, {}, kNaN, kNaN).curve;
}

// ---- whole test set -----------------------------------------------------------------------------

namespace {

void image_group_metrics(const std::vector<EvalSample>& samples, const std::vector<uint8_t>& include, GroupMetrics& g) {
  std::vector<float> scores;
  std::vector<uint8_t> labels;
  for (size_t i = 0; i < samples.size(); ++i)
    if (include[i]) {
      scores.push_back(samples[i].score);
      labels.push_back(samples[i].anomalous ? 1 : 0);
      ++g.n_images;
      (samples[i].anomalous ? g.n_anomalous : g.n_normal)++;
    }
  std::string why;
  g.image_auroc = auroc(scores, labels, &why);
  if (!why.empty()) g.notes.push_back("image " + why);
  g.roc = roc_curve(scores, labels, false);
  why.clear();
  const F1Max f = f1_max(scores, labels, &why);
  if (!why.empty()) g.notes.push_back(why);
  g.f1_max = f.f1;
  g.f1_threshold = f.threshold;
  g.f1_precision = f.precision;
  g.f1_recall = f.recall;
}

}  // namespace

EvalResult evaluate(const std::vector<EvalSample>& samples, const EvalOptions& options) {
  if (samples.empty()) throw MetricsError("evaluate: no test sample");
  if (!(options.fpr_limit > 0.0 && options.fpr_limit <= 1.0))
    throw MetricsError("evaluate: fpr_limit must be in (0, 1], got " + fmt_value(options.fpr_limit));
  std::vector<std::string> names;
  names.reserve(samples.size());
  for (const EvalSample& s : samples) names.push_back(s.name);
  size_t with_map = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    const EvalSample& s = samples[i];
    if (!std::isfinite(s.score))
      throw MetricsError("evaluate: score of sample " + item_label(i, names) + " is " + fmt_value(s.score) +
                         " (scores must be finite)");
    if (!s.anomaly_map.empty()) ++with_map;
  }
  const bool pixels = options.pixel_metrics && with_map > 0;
  if (pixels) {
    for (size_t i = 0; i < samples.size(); ++i) {
      const EvalSample& s = samples[i];
      if (s.anomaly_map.empty())
        throw MetricsError("evaluate: sample " + item_label(i, names) + " has no anomaly map while " + std::to_string(with_map) +
                           " other samples have one (give all or none)");
      if (s.anomalous && s.gt_mask.empty())
        throw MetricsError("evaluate: anomalous sample " + item_label(i, names) +
                           " has no ground-truth mask (needed for the pixel metrics)");
      if (!s.anomalous && !s.gt_mask.empty() && s.gt_mask.type() == CV_8UC1 && cv::countNonZero(s.gt_mask) > 0)
        throw MetricsError("evaluate: sample " + item_label(i, names) + " is labelled normal but its mask has " +
                           std::to_string(cv::countNonZero(s.gt_mask)) + " anomalous pixels");
    }
  }

  auto type_of = [](const EvalSample& s) { return s.defect_type.empty() ? std::string("defect") : s.defect_type; };
  std::map<std::string, int> types;  // sorted by name
  for (const EvalSample& s : samples)
    if (s.anomalous) types.emplace(type_of(s), 0);

  EvalResult r;
  r.fpr_limit = options.fpr_limit;
  r.has_pixel_metrics = pixels;

  PixelTable table;
  if (pixels) {
    std::vector<cv::Mat> maps, masks;
    maps.reserve(samples.size());
    masks.reserve(samples.size());
    for (const EvalSample& s : samples) {
      maps.push_back(s.anomaly_map);
      masks.push_back(s.gt_mask);
    }
    // Sorted once for the whole set; each defect type is a filtered walk over the same table.
    table = build_pixel_table(maps, masks, names);
  }

  auto fill = [&](GroupMetrics& g, const std::vector<uint8_t>& include) {
    image_group_metrics(samples, include, g);
    if (pixels) {
      PixelWalk w = walk_pixels(table, include, options.fpr_limit, options.fpr_limit);
      g.pixel_auroc = w.auroc;
      g.aupro = w.aupro;
      g.n_pixels = w.n_pixels;
      g.n_anomalous_pixels = w.n_anomalous;
      g.n_regions = w.n_regions;
      for (std::string& n : w.notes) g.notes.push_back(std::move(n));
    }
  };

  r.all.defect_type = "all";
  fill(r.all, std::vector<uint8_t>(samples.size(), 1));
  for (const auto& kv : types) {
    GroupMetrics g;
    g.defect_type = kv.first;
    std::vector<uint8_t> include(samples.size(), 0);
    for (size_t i = 0; i < samples.size(); ++i) include[i] = !samples[i].anomalous || type_of(samples[i]) == kv.first;
    fill(g, include);
    r.per_type.push_back(std::move(g));
  }
  return r;
}

}  // namespace fmam::eval
