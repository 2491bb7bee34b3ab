#include "eval/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "framework/atomic_file.h"

namespace fmam::eval {
namespace fs = std::filesystem;

namespace {

// ---- small helpers ------------------------------------------------------------------------------

std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string fmt(const char* f, double v) {
  char buf[256];
  const int n = std::snprintf(buf, sizeof buf, f, v);
  if (n < int(sizeof buf)) return buf;
  std::string out(size_t(n) + 1, '\0');
  std::snprintf(out.data(), out.size(), f, v);
  out.resize(size_t(n));
  return out;
}

// Metric values in the table and legends: 3 decimals, an em dash when undefined.
std::string metric_str(double v) { return std::isnan(v) ? "&#8212;" : fmt("%.3f", v); }
// Scores and thresholds: 4 significant digits.
std::string score_str(double v) { return std::isnan(v) ? "&#8212;" : fmt("%.4g", v); }

std::string base64(const std::vector<uchar>& data) {
  static const char* tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < data.size(); i += 3) {
    const uint32_t v = (uint32_t(data[i]) << 16) | (uint32_t(data[i + 1]) << 8) | data[i + 2];
    out += tbl[(v >> 18) & 63];
    out += tbl[(v >> 12) & 63];
    out += tbl[(v >> 6) & 63];
    out += tbl[v & 63];
  }
  if (i < data.size()) {
    uint32_t v = uint32_t(data[i]) << 16;
    if (i + 1 < data.size()) v |= uint32_t(data[i + 1]) << 8;
    out += tbl[(v >> 18) & 63];
    out += tbl[(v >> 12) & 63];
    out += (i + 1 < data.size()) ? tbl[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string png_data_uri(const cv::Mat& overlay, int max_side, const std::string& name) {
  cv::Mat img = overlay;
  if (img.depth() != CV_8U || (img.channels() != 1 && img.channels() != 3 && img.channels() != 4))
    throw std::runtime_error("report: overlay of '" + name + "' must be CV_8U with 1, 3 or 4 channels, got " +
                             cv::typeToString(img.type()));
  const int side = std::max(img.cols, img.rows);
  if (max_side > 0 && side > max_side) {
    const double s = double(max_side) / side;
    cv::resize(img, img, cv::Size(std::max(1, int(std::lround(img.cols * s))), std::max(1, int(std::lround(img.rows * s)))), 0, 0,
               cv::INTER_AREA);
  }
  std::vector<uchar> png;
  if (!cv::imencode(".png", img, png)) throw std::runtime_error("report: cannot PNG-encode the overlay of '" + name + "'");
  return "data:image/png;base64," + base64(png);
}

// "Nice" axis ticks (1, 2, 5 x 10^k) covering [lo, hi].
struct Ticks {
  std::vector<double> values;
  int decimals = 0;
};

Ticks nice_ticks(double lo, double hi, int target = 6) {
  Ticks t;
  if (!(hi > lo)) hi = lo + 1.0;
  const double raw = (hi - lo) / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  const double first = std::ceil(lo / step - 1e-9) * step;
  for (double v = first; v <= hi + step * 1e-9; v += step) t.values.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
  t.decimals = std::max(0, -int(std::floor(std::log10(step) + 1e-9)));
  if (std::abs(step / mag - 2.5) < 1e-9) t.decimals += 1;
  return t;
}

std::string tick_label(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// Categorical palette (Tableau 10 without the black-ish grey, used for "all").
const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                          "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};

const char* kSvgFont = "font-family=\"Helvetica, Arial, sans-serif\"";

struct Plot {           // plot area inside an SVG
  double x0, y0, w, h;  // pixels, y0 = top
  double xmin, xmax, ymin, ymax;
  double px(double x) const { return x0 + (x - xmin) / (xmax - xmin) * w; }
  double py(double y) const { return y0 + h - (y - ymin) / (ymax - ymin) * h; }
};

void axes(std::ostringstream& s, const Plot& p, const Ticks& xt, const Ticks& yt, const std::string& xlabel,
          const std::string& ylabel, bool grid) {
  s << "<g " << kSvgFont << " font-size=\"12\" fill=\"#333\">\n";
  for (double v : xt.values) {
    const double x = p.px(v);
    if (grid)
      s << fmt("<line x1=\"%.1f\"", x) << fmt(" y1=\"%.1f\"", p.y0) << fmt(" x2=\"%.1f\"", x)
        << fmt(" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n", p.y0 + p.h);
    s << fmt("<line x1=\"%.1f\"", x) << fmt(" y1=\"%.1f\"", p.y0 + p.h) << fmt(" x2=\"%.1f\"", x)
      << fmt(" y2=\"%.1f\" stroke=\"#333\"/>\n", p.y0 + p.h + 5);
    s << fmt("<text x=\"%.1f\"", x) << fmt(" y=\"%.1f\" text-anchor=\"middle\">", p.y0 + p.h + 19) << tick_label(v, xt.decimals)
      << "</text>\n";
  }
  for (double v : yt.values) {
    const double y = p.py(v);
    if (grid)
      s << fmt("<line x1=\"%.1f\"", p.x0) << fmt(" y1=\"%.1f\"", y) << fmt(" x2=\"%.1f\"", p.x0 + p.w)
        << fmt(" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n", y);
    s << fmt("<line x1=\"%.1f\"", p.x0 - 5) << fmt(" y1=\"%.1f\"", y) << fmt(" x2=\"%.1f\"", p.x0)
      << fmt(" y2=\"%.1f\" stroke=\"#333\"/>\n", y);
    s << fmt("<text x=\"%.1f\"", p.x0 - 8) << fmt(" y=\"%.1f\" text-anchor=\"end\">", y + 4) << tick_label(v, yt.decimals)
      << "</text>\n";
  }
  s << fmt("<rect x=\"%.1f\"", p.x0) << fmt(" y=\"%.1f\"", p.y0) << fmt(" width=\"%.1f\"", p.w)
    << fmt(" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", p.h);
  s << fmt("<text x=\"%.1f\"", p.x0 + p.w / 2) << fmt(" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\">", p.y0 + p.h + 40)
    << html_escape(xlabel) << "</text>\n";
  const double ly = p.y0 + p.h / 2, lx = p.x0 - 48;
  s << fmt("<text x=\"%.1f\"", lx) << fmt(" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\"", ly)
    << fmt(" transform=\"rotate(-90 %.1f", lx) << fmt(" %.1f)\">", ly) << html_escape(ylabel) << "</text>\n";
  s << "</g>\n";
}

void svg_title(std::ostringstream& s, double x, double y, const std::string& text) {
  s << "<text " << kSvgFont << fmt(" x=\"%.1f\"", x) << fmt(" y=\"%.1f\"", y)
    << " font-size=\"15\" font-weight=\"bold\" fill=\"#222\">" << html_escape(text) << "</text>\n";
}

std::string svg_open(int w, int h) {
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << w << "\" height=\"" << h << "\" viewBox=\"0 0 " << w << " " << h
    << "\" role=\"img\">\n<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n";
  return s.str();
}

std::string points_attr(const std::vector<double>& xs, const std::vector<double>& ys, const Plot& p) {
  std::ostringstream s;
  for (size_t i = 0; i < xs.size(); ++i) s << (i ? " " : "") << fmt("%.2f", p.px(xs[i])) << "," << fmt("%.2f", p.py(ys[i]));
  return s.str();
}

struct Confusion {
  int tp = 0, fp = 0, tn = 0, fn = 0;
};

Confusion confusion(const std::vector<ReportImage>& images, double thr) {
  Confusion c;
  for (const ReportImage& im : images) {
    switch (verdict_of(im, thr)) {
      case Verdict::kTruePositive: ++c.tp; break;
      case Verdict::kFalsePositive: ++c.fp; break;
      case Verdict::kTrueNegative: ++c.tn; break;
      case Verdict::kFalseNegative: ++c.fn; break;
    }
  }
  return c;
}

const char* verdict_class(Verdict v) {
  switch (v) {
    case Verdict::kTruePositive: return "tp";
    case Verdict::kFalsePositive: return "fp";
    case Verdict::kTrueNegative: return "tn";
    case Verdict::kFalseNegative: return "fn";
  }
  return "";
}

std::vector<const GroupMetrics*> table_groups(const EvalResult& m) {
  std::vector<const GroupMetrics*> g;
  for (const GroupMetrics& t : m.per_type) g.push_back(&t);
  g.push_back(&m.all);
  return g;
}

const char* kCss = R"CSS(
body{font-family:Helvetica,Arial,sans-serif;margin:20px 24px;color:#222;background:#fafafa}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 10px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin:0 0 16px}
table.summary{border-collapse:collapse;background:#fff;font-size:14px}
table.summary th,table.summary td{border:1px solid #ddd;padding:6px 12px;text-align:right}
table.summary th{background:#f0f0f0}
table.summary td:first-child,table.summary th:first-child{text-align:left}
table.summary tr.all td{font-weight:bold;background:#f7f7ff}
.na{color:#999;cursor:help}
.notes{color:#8a5a00;font-size:13px;margin:8px 0 0}
.conf{font-size:14px;margin:10px 0 0}
.conf span{display:inline-block;margin-right:16px}
.charts{display:flex;flex-wrap:wrap;gap:16px}
.charts svg{background:#fff;border:1px solid #ddd;max-width:100%;height:auto}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:4px;padding:6px;font-size:12px;overflow:hidden}
.card img{display:block;max-width:100%;margin:0 auto 4px;image-rendering:auto}
.card .noimg{height:60px;display:flex;align-items:center;justify-content:center;color:#aaa;background:#f3f3f3}
.card .name{font-weight:bold;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.card .meta{color:#555;margin-top:2px}
.badge{display:inline-block;border-radius:3px;padding:1px 6px;color:#fff;font-weight:bold;font-size:11px}
.card.fp{border:2px solid #d62728}.card.fn{border:2px solid #9467bd}
.badge.fp{background:#d62728}.badge.fn{background:#9467bd}.badge.tp{background:#2ca02c}.badge.tn{background:#7f7f7f}
.foot{color:#999;font-size:12px;margin-top:24px}
)CSS";

}  // namespace

// ---- verdicts and ordering ----------------------------------------------------------------------

double report_threshold(const ReportInput& input) {
  // No decision threshold given (none calibrated in the model, no --threshold): the F1-optimal one on
  // this test set, so verdicts and the histogram line still mean something (and say so).
  return std::isnan(input.threshold) ? input.metrics.all.f1_threshold : input.threshold;
}

Verdict verdict_of(const ReportImage& image, double threshold) {
  const bool predicted = !std::isnan(threshold) && image.score >= threshold;
  if (image.anomalous) return predicted ? Verdict::kTruePositive : Verdict::kFalseNegative;
  return predicted ? Verdict::kFalsePositive : Verdict::kTrueNegative;
}

const char* verdict_name(Verdict v) {
  switch (v) {
    case Verdict::kTruePositive: return "true positive";
    case Verdict::kFalsePositive: return "false positive";
    case Verdict::kTrueNegative: return "true negative";
    case Verdict::kFalseNegative: return "false negative";
  }
  return "";
}

std::vector<size_t> worst_first_order(const std::vector<ReportImage>& images, double threshold) {
  std::vector<size_t> order(images.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  auto rank = [&](size_t i) {
    switch (verdict_of(images[i], threshold)) {
      case Verdict::kFalsePositive: return 0;
      case Verdict::kFalseNegative: return 1;
      default: return 2;
    }
  };
  // The report is read top-down by someone fixing the detector: mistakes first, the most
  // confident mistakes first among them, then the correct images nearest the threshold.
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const int ra = rank(a), rb = rank(b);
    if (ra != rb) return ra < rb;
    const double sa = images[a].score, sb = images[b].score;
    if (ra == 0) return sa > sb;  // false positives: highest score first
    if (ra == 1) return sa < sb;  // false negatives: lowest score first
    if (std::isnan(threshold)) return false;
    return std::abs(sa - threshold) < std::abs(sb - threshold);  // the rest: borderline first
  });
  return order;
}

// ---- charts -------------------------------------------------------------------------------------

std::string roc_svg(const EvalResult& m) {
  const int W = 590, H = 430;
  Plot p{64, 40, 340, 340, 0, 1, 0, 1};
  std::ostringstream s;
  s << svg_open(W, H);
  svg_title(s, p.x0, 24, "Image-level ROC");
  Ticks t;
  for (int i = 0; i <= 5; ++i) t.values.push_back(i * 0.2);
  t.decimals = 1;
  axes(s, p, t, t, "False positive rate", "True positive rate", true);
  s << fmt("<line x1=\"%.1f\"", p.px(0)) << fmt(" y1=\"%.1f\"", p.py(0)) << fmt(" x2=\"%.1f\"", p.px(1))
    << fmt(" y2=\"%.1f\" stroke=\"#999\" stroke-dasharray=\"5,4\"/>\n", p.py(1));

  struct Entry {
    std::string label, color;
    double width;
    const GroupMetrics* g;
  };
  std::vector<Entry> entries;
  for (size_t i = 0; i < m.per_type.size(); ++i)
    entries.push_back({m.per_type[i].defect_type, kPalette[i % 10], 1.8, &m.per_type[i]});
  entries.push_back({"all", "#000", 2.6, &m.all});
  for (const Entry& e : entries)
    if (!e.g->roc.fpr.empty())
      s << "<polyline fill=\"none\" stroke=\"" << e.color << "\" stroke-width=\"" << e.width
        << "\" stroke-linejoin=\"round\" points=\"" << points_attr(e.g->roc.fpr, e.g->roc.tpr, p) << "\"/>\n";

  // Legend to the right of the plot, so it never covers a curve.
  const double lx = p.x0 + p.w + 20;
  double ly = p.y0 + 6;
  s << "<g " << kSvgFont << " font-size=\"12\" fill=\"#222\">\n";
  s << fmt("<text x=\"%.1f\"", lx) << fmt(" y=\"%.1f\" font-weight=\"bold\">defect type: AUROC</text>\n", ly + 4);
  ly += 22;
  for (const Entry& e : entries) {
    std::string label = e.label;
    if (label.size() > 16) label = label.substr(0, 15) + "\xE2\x80\xA6";
    s << fmt("<line x1=\"%.1f\"", lx) << fmt(" y1=\"%.1f\"", ly) << fmt(" x2=\"%.1f\"", lx + 22) << fmt(" y2=\"%.1f\"", ly)
      << " stroke=\"" << e.color << "\" stroke-width=\"" << e.width << "\""
      << (e.g->roc.fpr.empty() ? " stroke-dasharray=\"2,3\"" : "") << "/>\n";
    s << fmt("<text x=\"%.1f\"", lx + 28) << fmt(" y=\"%.1f\"", ly + 4) << (e.label == "all" ? " font-weight=\"bold\"" : "")
      << ">" << html_escape(label) << ": " << metric_str(e.g->image_auroc) << "<title>" << html_escape(e.label)
      << "</title></text>\n";
    ly += 20;
  }
  s << fmt("<line x1=\"%.1f\"", lx) << fmt(" y1=\"%.1f\"", ly) << fmt(" x2=\"%.1f\"", lx + 22) << fmt(" y2=\"%.1f\"", ly)
    << " stroke=\"#999\" stroke-dasharray=\"5,4\"/>\n";
  s << fmt("<text x=\"%.1f\"", lx + 28) << fmt(" y=\"%.1f\" fill=\"#666\">chance</text>\n", ly + 4);
  s << "</g>\n</svg>\n";
  return s.str();
}

std::string histogram_svg(const std::vector<ReportImage>& images, double threshold, int bins) {
  const int W = 520, H = 430;
  bins = std::max(1, bins);
  std::ostringstream s;
  s << svg_open(W, H);
  Plot p{64, 40, 430, 340, 0, 1, 0, 1};
  svg_title(s, p.x0, 24, "Score histogram");
  if (images.empty()) {
    s << "<text " << kSvgFont << fmt(" x=\"%.1f\"", p.x0 + p.w / 2) << fmt(" y=\"%.1f\"", p.y0 + p.h / 2)
      << " text-anchor=\"middle\" fill=\"#999\">no image scores</text>\n</svg>\n";
    return s.str();
  }
  double lo = images[0].score, hi = images[0].score;
  for (const ReportImage& im : images) {
    lo = std::min(lo, im.score);
    hi = std::max(hi, im.score);
  }
  if (std::isfinite(threshold)) {
    lo = std::min(lo, threshold);
    hi = std::max(hi, threshold);
  }
  if (!(hi > lo)) {  // every score equal: a zero-width axis would divide by zero below
    const double pad = std::max(0.5, std::abs(lo) * 0.05);
    lo -= pad;
    hi += pad;
  }
  // x axis: the data range widened to nice tick values; the bins split that axis evenly.
  {
    const Ticks t0 = nice_ticks(lo, hi, 6);
    const double step = t0.values.size() >= 2 ? t0.values[1] - t0.values[0] : (hi - lo);
    lo = std::floor(lo / step + 1e-9) * step;
    hi = std::ceil(hi / step - 1e-9) * step;
  }
  const Ticks xt = nice_ticks(lo, hi, 6);
  p.xmin = lo;
  p.xmax = hi;
  const double bw = (hi - lo) / bins;
  std::vector<int> normal(bins, 0), anomalous(bins, 0);
  for (const ReportImage& im : images) {
    int b = int((im.score - lo) / bw);
    b = std::clamp(b, 0, bins - 1);  // the maximum falls on the last bin's right edge: count it in
    (im.anomalous ? anomalous : normal)[b]++;
  }
  const int cmax =
      std::max(*std::max_element(normal.begin(), normal.end()), *std::max_element(anomalous.begin(), anomalous.end()));
  Ticks yt = nice_ticks(0, std::max(1, cmax), 6);
  if (yt.decimals > 0) {  // counts are integers: keep integer ticks only
    std::vector<double> v;
    for (double y : yt.values)
      if (std::abs(y - std::round(y)) < 1e-9) v.push_back(y);
    yt.values = v;
    yt.decimals = 0;
  }
  p.ymin = 0;
  p.ymax = std::max(double(cmax), yt.values.empty() ? 1.0 : yt.values.back()) * 1.08;  // headroom for the label
  axes(s, p, xt, yt, "Image anomaly score", "Number of images", true);
  auto bars = [&](const std::vector<int>& counts, const char* color) {
    for (int b = 0; b < bins; ++b) {
      if (!counts[b]) continue;
      const double x0 = p.px(lo + b * bw), x1 = p.px(lo + (b + 1) * bw);
      const double y = p.py(counts[b]);
      s << fmt("<rect x=\"%.2f\"", x0) << fmt(" y=\"%.2f\"", y) << fmt(" width=\"%.2f\"", std::max(0.5, x1 - x0 - 0.5))
        << fmt(" height=\"%.2f\"", p.py(0) - y) << " fill=\"" << color << "\" fill-opacity=\"0.55\" stroke=\"" << color
        << "\" stroke-width=\"0.6\"><title>" << counts[b] << "</title></rect>\n";
    }
  };
  // Overlaid, half transparent, rather than stacked: the overlap of the two classes is what the
  // chart is for.
  bars(normal, "#1f77b4");
  bars(anomalous, "#d62728");
  if (std::isfinite(threshold)) {
    const double x = p.px(threshold);
    s << fmt("<line x1=\"%.1f\"", x) << fmt(" y1=\"%.1f\"", p.y0) << fmt(" x2=\"%.1f\"", x)
      << fmt(" y2=\"%.1f\" stroke=\"#000\" stroke-width=\"1.5\" stroke-dasharray=\"6,4\"/>\n", p.y0 + p.h);
    const bool right_half = x > p.x0 + p.w * 0.6;
    s << "<text " << kSvgFont << fmt(" x=\"%.1f\"", right_half ? x - 6 : x + 6) << fmt(" y=\"%.1f\"", p.y0 + 16)
      << " font-size=\"12\" text-anchor=\"" << (right_half ? "end" : "start")
      << "\" fill=\"#000\" stroke=\"#fff\" stroke-width=\"3\" paint-order=\"stroke\">threshold " << score_str(threshold)
      << "</text>\n";
  }
  // Legend: top, just under the title line, right-aligned.
  int n_norm = 0, n_anom = 0;
  for (const ReportImage& im : images) (im.anomalous ? n_anom : n_norm)++;
  const double lx = p.x0 + p.w - 235, ly = 24;
  s << "<g " << kSvgFont << " font-size=\"12\" fill=\"#222\">\n";
  s << fmt("<rect x=\"%.1f\"", lx)
    << fmt(" y=\"%.1f\" width=\"14\" height=\"10\" fill=\"#1f77b4\" fill-opacity=\"0.55\" stroke=\"#1f77b4\"/>\n", ly - 9);
  s << fmt("<text x=\"%.1f\"", lx + 19) << fmt(" y=\"%.1f\">normal (", ly) << n_norm << ")</text>\n";
  s << fmt("<rect x=\"%.1f\"", lx + 115)
    << fmt(" y=\"%.1f\" width=\"14\" height=\"10\" fill=\"#d62728\" fill-opacity=\"0.55\" stroke=\"#d62728\"/>\n", ly - 9);
  s << fmt("<text x=\"%.1f\"", lx + 134) << fmt(" y=\"%.1f\">anomalous (", ly) << n_anom << ")</text>\n";
  s << "</g>\n</svg>\n";
  return s.str();
}

// ---- HTML ---------------------------------------------------------------------------------------

std::string render_html_report(const ReportInput& in) {
  const EvalResult& m = in.metrics;
  const double thr = report_threshold(in);
  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" << html_escape(in.title)
    << "</title>\n<style>" << kCss << "</style>\n</head>\n<body>\n";
  h << "<h1>" << html_escape(in.title) << "</h1>\n";
  if (!in.subtitle.empty()) h << "<p class=\"sub\">" << html_escape(in.subtitle) << "</p>\n";

  // Summary table.
  h << "<h2>Summary</h2>\n<table class=\"summary\">\n<thead><tr><th>Defect type</th><th>Images (normal / anomalous)</th>"
       "<th>Image AUROC</th><th>Pixel AUROC</th><th>AUPRO@"
    << fmt("%g", m.fpr_limit) << "</th><th>F1-max</th><th>F1 threshold</th></tr></thead>\n<tbody>\n";
  std::vector<std::string> notes;
  for (const GroupMetrics* g : table_groups(m)) {
    const std::string tip = [&] {
      std::string t;
      for (const std::string& n : g->notes) t += (t.empty() ? "" : "; ") + n;
      return html_escape(t);
    }();
    auto cell = [&](double v, bool score) {
      if (std::isnan(v)) return std::string("<td class=\"na\" title=\"") + (tip.empty() ? "undefined" : tip) + "\">&#8212;</td>";
      return "<td>" + (score ? score_str(v) : metric_str(v)) + "</td>";
    };
    const bool pix = m.has_pixel_metrics;
    h << "<tr" << (g == &m.all ? " class=\"all\"" : "") << "><td>" << html_escape(g->defect_type) << "</td><td>" << g->n_images
      << " (" << g->n_normal << " / " << g->n_anomalous << ")</td>" << cell(g->image_auroc, false)
      << (pix ? cell(g->pixel_auroc, false) : "<td class=\"na\" title=\"no anomaly maps\">&#8212;</td>")
      << (pix ? cell(g->aupro, false) : "<td class=\"na\" title=\"no anomaly maps\">&#8212;</td>") << cell(g->f1_max, false)
      << cell(g->f1_threshold, true) << "</tr>\n";
    for (const std::string& n : g->notes) notes.push_back(g->defect_type + ": " + n);
  }
  h << "</tbody>\n</table>\n";
  h << "<p class=\"notes\">Per-type rows: that type's anomalous images against all normal images. "
       "AUPRO: MVTec AD definition (8-connected regions, integrated to FPR "
    << fmt("%g", m.fpr_limit) << ", normalised).";
  if (!m.has_pixel_metrics) h << " No anomaly maps were given: no pixel metrics.";
  h << "</p>\n";
  for (const std::string& n : notes) h << "<p class=\"notes\">&#9888; " << html_escape(n) << "</p>\n";

  if (!in.images.empty()) {
    const Confusion c = confusion(in.images, thr);
    h << "<p class=\"conf\"><span><b>Decision threshold:</b> " << score_str(thr) << (std::isnan(in.threshold) ? " (F1-max)" : "")
      << "</span><span>true positives: " << c.tp << "</span><span>false negatives: " << c.fn
      << "</span><span>true negatives: " << c.tn << "</span><span>false positives: " << c.fp << "</span></p>\n";
  }

  h << "<h2>Charts</h2>\n<div class=\"charts\">\n" << roc_svg(m);
  if (!in.images.empty()) h << histogram_svg(in.images, thr, in.histogram_bins);
  h << "</div>\n";

  if (!in.images.empty()) {
    const std::vector<size_t> order = worst_first_order(in.images, thr);
    const size_t shown = in.max_thumbnails ? std::min(in.max_thumbnails, order.size()) : order.size();
    h << "<h2>Images, worst first</h2>\n<p class=\"sub\">False positives (highest score first), then false negatives "
         "(lowest score first), then the rest (closest to the threshold first)."
      << (shown < order.size() ? " Showing " + std::to_string(shown) + " of " + std::to_string(order.size()) + "." : "")
      << "</p>\n<div class=\"grid\">\n";
    for (size_t k = 0; k < shown; ++k) {
      const ReportImage& im = in.images[order[k]];
      const Verdict v = verdict_of(im, thr);
      h << "<div class=\"card " << verdict_class(v) << "\">";
      if (!im.overlay.empty())
        h << "<img src=\"" << png_data_uri(im.overlay, in.thumbnail_px, im.name) << "\" alt=\"" << html_escape(im.name) << "\">";
      else
        h << "<div class=\"noimg\">no overlay</div>";
      h << "<div class=\"name\" title=\"" << html_escape(im.name) << "\">" << html_escape(im.name) << "</div>"
        << "<div class=\"meta\">"
        << html_escape(im.defect_type.empty() ? (im.anomalous ? "anomalous" : "normal") : im.defect_type) << " &middot; score "
        << score_str(im.score) << "</div>"
        << "<div class=\"meta\"><span class=\"badge " << verdict_class(v) << "\">" << verdict_name(v) << "</span></div></div>\n";
    }
    h << "</div>\n";
  }
  h << "<p class=\"foot\">Generated by fmam eval. An image is predicted anomalous when its score &ge; the threshold.</p>\n";
  h << "</body>\n</html>\n";
  return h.str();
}

std::string results_json(const ReportInput& in) {
  using nlohmann::json;
  const EvalResult& m = in.metrics;
  const double thr = report_threshold(in);
  auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  auto group = [&](const GroupMetrics& g) {
    json j;
    j["n_images"] = g.n_images;
    j["n_normal"] = g.n_normal;
    j["n_anomalous"] = g.n_anomalous;
    j["image_auroc"] = num(g.image_auroc);
    j["pixel_auroc"] = num(g.pixel_auroc);
    j["aupro"] = num(g.aupro);
    j["f1_max"] = num(g.f1_max);
    j["f1_threshold"] = num(g.f1_threshold);
    j["f1_precision"] = num(g.f1_precision);
    j["f1_recall"] = num(g.f1_recall);
    if (m.has_pixel_metrics) {
      j["n_pixels"] = g.n_pixels;
      j["n_anomalous_pixels"] = g.n_anomalous_pixels;
      j["n_regions"] = g.n_regions;
    }
    j["notes"] = g.notes;
    return j;
  };
  json out;
  out["title"] = in.title;
  if (!in.subtitle.empty()) out["subtitle"] = in.subtitle;
  out["conventions"] = {{"per_type", "anomalous images of the type vs all normal images"},
                        {"aupro", "MVTec AD: 8-connected regions, integrated to fpr_limit, divided by fpr_limit"},
                        {"prediction", "anomalous when score >= threshold"}};
  out["fpr_limit"] = m.fpr_limit;
  out["has_pixel_metrics"] = m.has_pixel_metrics;
  out["threshold"] = num(thr);
  out["all"] = group(m.all);
  json per = json::object();
  for (const GroupMetrics& g : m.per_type) per[g.defect_type] = group(g);
  out["per_type"] = per;
  if (!in.images.empty()) {
    const Confusion c = confusion(in.images, thr);
    out["confusion"] = {{"tp", c.tp}, {"fp", c.fp}, {"tn", c.tn}, {"fn", c.fn}};
    json imgs = json::array();
    for (const ReportImage& im : in.images) {
      const Verdict v = verdict_of(im, thr);
      imgs.push_back({{"name", im.name},
                      {"defect_type", im.defect_type},
                      {"score", num(im.score)},
                      {"anomalous", im.anomalous},
                      {"predicted_anomalous", v == Verdict::kTruePositive || v == Verdict::kFalsePositive},
                      {"verdict", verdict_name(v)}});
    }
    out["images"] = imgs;
  }
  return out.dump(2) + "\n";
}

// ---- files --------------------------------------------------------------------------------------

void write_file_atomic(const std::string& path, const std::string& content) {
  // The report's callers make its folder (write_report_bundle): a missing one is a mistake, so it
  // is not made here, unlike atomic_write_text.
  const fs::path parent = fs::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty() && !fs::is_directory(parent, ec))
    throw std::runtime_error("cannot write '" + path + "': no folder '" + parent.string() + "'");
  atomic_write_text(path, content);
}

void write_html_report(const std::string& path, const ReportInput& input) { write_file_atomic(path, render_html_report(input)); }

void write_results_json(const std::string& path, const ReportInput& input) { write_file_atomic(path, results_json(input)); }

void write_roc_svg(const std::string& path, const EvalResult& metrics) {
  write_file_atomic(path, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" + roc_svg(metrics));
}

void write_histogram_svg(const std::string& path, const ReportInput& input) {
  write_file_atomic(path, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" +
                              histogram_svg(input.images, report_threshold(input), input.histogram_bins));
}

void write_report_bundle(const std::string& dir, const ReportInput& input) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot create the report folder '" + dir + "': " + ec.message());
  const fs::path d(dir);
  write_html_report((d / "report.html").string(), input);
  write_results_json((d / "results.json").string(), input);
  write_roc_svg((d / "roc.svg").string(), input.metrics);
  write_histogram_svg((d / "score_histogram.svg").string(), input);
}

}  // namespace fmam::eval
