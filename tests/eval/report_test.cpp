// eval/report: the HTML report, results.json and the SVG charts for a synthetic test set.
// Set FMAM_EVAL_REPORT_OUT=/some/dir to also keep a report bundle there (to look at it in a browser).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "eval/report.h"
#include "tests/support/helpers.h"

namespace fmam::eval {
namespace {
namespace fs = std::filesystem;

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + what.size())) ++n;
  return n;
}

std::vector<uchar> base64_decode(const std::string& s) {
  std::vector<uchar> out;
  uint32_t buf = 0;
  int bits = 0;
  for (char c : s) {
    int v;
    if (c >= 'A' && c <= 'Z')
      v = c - 'A';
    else if (c >= 'a' && c <= 'z')
      v = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      v = c - '0' + 52;
    else if (c == '+')
      v = 62;
    else if (c == '/')
      v = 63;
    else
      break;  // '=' padding
    buf = (buf << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(uchar((buf >> bits) & 0xFF));
    }
  }
  return out;
}

struct TempDir : fmam::test::TempDir {
  TempDir() : fmam::test::TempDir("fmam_report_test") {}
};

// A synthetic MVTec-like test set: 3 defect types + good images, 64x64 maps, overlays that look
// like the real ones (texture + heat map + ground-truth contour).
struct Synthetic {
  std::vector<EvalSample> samples;
  std::vector<ReportImage> images;
};

Synthetic synthetic() {
  Synthetic d;
  std::mt19937 rng(11);
  std::normal_distribution<float> noise(0.f, 1.f);
  const char* types[] = {"good", "scratch", "hole", "contamination"};
  const int counts[] = {14, 7, 6, 5};
  int idx = 0;
  for (int t = 0; t < 4; ++t) {
    for (int k = 0; k < counts[t]; ++k, ++idx) {
      EvalSample s;
      s.defect_type = types[t];
      s.anomalous = t != 0;
      s.name = std::string(types[t]) + "/" + (k < 10 ? "00" : "0") + std::to_string(k) + ".png";
      cv::Mat mask(64, 64, CV_8U, cv::Scalar(0));
      if (t == 1) cv::line(mask, {8 + k * 3, 10}, {50, 40 + k}, cv::Scalar(255), 3);
      if (t == 2) cv::circle(mask, {20 + k * 5, 32}, 4 + k, cv::Scalar(255), -1);
      if (t == 3) {
        cv::rectangle(mask, cv::Rect(5 + k * 4, 5, 8, 6), cv::Scalar(255), -1);
        cv::rectangle(mask, cv::Rect(40, 44 - k, 6, 10), cv::Scalar(255), -1);
      }
      cv::Mat map(64, 64, CV_32F);
      const float strength = t == 0 ? 0.f : 0.6f + 0.35f * float(k) + (t == 3 ? -0.4f : 0.f);
      for (int y = 0; y < 64; ++y)
        for (int x = 0; x < 64; ++x) map.at<float>(y, x) = 0.25f * noise(rng) + (mask.at<uint8_t>(y, x) ? strength : 0.f);
      cv::GaussianBlur(map, map, cv::Size(5, 5), 1.2);
      if (t == 0 && k == 3) map(cv::Rect(30, 30, 8, 8)) += 2.0f;  // a clear false positive
      if (t == 0 && k == 9) map(cv::Rect(10, 40, 6, 6)) += 1.2f;  // a milder one
      double mx;
      cv::minMaxLoc(map, nullptr, &mx);
      s.score = float(mx);
      s.anomaly_map = map;
      s.gt_mask = mask;
      d.samples.push_back(s);

      // overlay: gray texture, JET heat map blended, green ground-truth contour
      cv::Mat tex(64, 64, CV_8UC3);
      cv::randu(tex, cv::Scalar(90, 90, 90), cv::Scalar(140, 140, 140));
      cv::Mat heat8, heat;
      map.convertTo(heat8, CV_8U, 255.0 / 3.0, 60);
      cv::applyColorMap(heat8, heat, cv::COLORMAP_JET);
      cv::Mat overlay;
      cv::addWeighted(tex, 0.5, heat, 0.5, 0, overlay);
      std::vector<std::vector<cv::Point>> contours;
      cv::findContours(mask, contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_NONE);
      cv::drawContours(overlay, contours, -1, cv::Scalar(0, 255, 0), 1);
      cv::resize(overlay, overlay, cv::Size(256, 256), 0, 0, cv::INTER_NEAREST);
      d.images.push_back({s.name, s.defect_type, double(s.score), s.anomalous, overlay});
    }
  }
  return d;
}

std::string fmt3(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3f", v);
  return b;
}

TEST(ReportTest, WritesSelfContainedHtml) {
  const Synthetic d = synthetic();
  ReportInput in;
  in.title = "Synthetic <test> set";
  in.subtitle = "fmam eval report_test";
  in.metrics = evaluate(d.samples);
  in.images = d.images;
  TempDir tmp;
  const fs::path path = tmp.path / "report.html";
  write_html_report(path.string(), in);
  ASSERT_TRUE(fs::exists(path));
  const std::string html = read_file(path);
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("</html>"), std::string::npos);
  EXPECT_NE(html.find("Synthetic &lt;test&gt; set"), std::string::npos);  // escaped
  EXPECT_EQ(count(html, "<svg"), 2u);                                     // ROC + histogram
  EXPECT_EQ(count(html, "<svg"), count(html, "</svg>"));
  // the table shows every group's values
  for (const GroupMetrics* g : {&in.metrics.all, &in.metrics.per_type[0], &in.metrics.per_type[1], &in.metrics.per_type[2]}) {
    SCOPED_TRACE(g->defect_type);
    EXPECT_NE(html.find("<td>" + g->defect_type + "</td>"), std::string::npos);
    EXPECT_NE(html.find("<td>" + fmt3(g->image_auroc) + "</td>"), std::string::npos);
    EXPECT_NE(html.find("<td>" + fmt3(g->pixel_auroc) + "</td>"), std::string::npos);
    EXPECT_NE(html.find("<td>" + fmt3(g->aupro) + "</td>"), std::string::npos);
    EXPECT_NE(html.find("<td>" + fmt3(g->f1_max) + "</td>"), std::string::npos);
  }
  // one embedded PNG per image, nothing fetched from elsewhere
  EXPECT_EQ(count(html, "<img src=\"data:image/png;base64,"), d.images.size());
  EXPECT_EQ(count(html, "<img"), d.images.size());
  EXPECT_EQ(html.find("src=\"http"), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  // no temporary file left behind
  for (const auto& e : fs::directory_iterator(tmp.path)) EXPECT_EQ(e.path().filename(), "report.html");

  // the first thumbnail decodes to a PNG no larger than thumbnail_px
  const size_t b = html.find("base64,") + 7;
  const std::vector<uchar> png = base64_decode(html.substr(b, html.find('"', b) - b));
  const cv::Mat thumb = cv::imdecode(png, cv::IMREAD_UNCHANGED);
  ASSERT_FALSE(thumb.empty());
  EXPECT_EQ(std::max(thumb.cols, thumb.rows), in.thumbnail_px);

  // worst first: the first card is the normal image with the highest score (a false positive)
  const double thr = report_threshold(in);
  size_t worst_fp = SIZE_MAX;
  for (size_t i = 0; i < d.images.size(); ++i)
    if (!d.images[i].anomalous && d.images[i].score >= thr &&
        (worst_fp == SIZE_MAX || d.images[i].score > d.images[worst_fp].score))
      worst_fp = i;
  ASSERT_NE(worst_fp, SIZE_MAX) << "the synthetic set should have a false positive";
  EXPECT_EQ(d.images[worst_fp].name, "good/003.png");
  // (no std::regex: libstdc++'s recursion overflows the stack on the long base64 strings)
  const size_t card = html.find("<div class=\"card ");
  ASSERT_NE(card, std::string::npos);
  EXPECT_EQ(html.substr(card + 17, 3), "fp\"");
  const std::string name_tag = "<div class=\"name\" title=\"";
  const size_t name = html.find(name_tag, card) + name_tag.size();
  EXPECT_EQ(html.substr(name, html.find('"', name) - name), "good/003.png");

  if (const char* keep = std::getenv("FMAM_EVAL_REPORT_OUT")) write_report_bundle(keep, in);
}

TEST(ReportTest, WorstFirstOrder) {
  std::vector<ReportImage> im = {{"tn_far", "good", 0.1, false, {}},    {"fp_small", "good", 0.6, false, {}},
                                 {"fn_close", "hole", 0.45, true, {}},  {"tp_far", "hole", 0.95, true, {}},
                                 {"fp_big", "good", 0.9, false, {}},    {"fn_far", "crack", 0.05, true, {}},
                                 {"tn_close", "good", 0.49, false, {}}, {"tp_close", "crack", 0.5, true, {}}};
  const std::vector<size_t> order = worst_first_order(im, 0.5);
  std::vector<std::string> names;
  for (size_t i : order) names.push_back(im[i].name);
  EXPECT_EQ(names,
            (std::vector<std::string>{"fp_big", "fp_small", "fn_far", "fn_close", "tp_close", "tn_close", "tn_far", "tp_far"}));
  EXPECT_EQ(verdict_of(im[7], 0.5), Verdict::kTruePositive);  // score == threshold is anomalous
  EXPECT_STREQ(verdict_name(Verdict::kFalseNegative), "false negative");
}

TEST(ReportTest, ResultsJsonAndBundle) {
  const Synthetic d = synthetic();
  ReportInput in;
  in.metrics = evaluate(d.samples);
  in.images = d.images;
  TempDir tmp;
  write_report_bundle((tmp.path / "out").string(), in);
  for (const char* f : {"report.html", "results.json", "roc.svg", "score_histogram.svg"})
    EXPECT_TRUE(fs::exists(tmp.path / "out" / f)) << f;
  size_t n_files = 0;
  for (const auto& e : fs::directory_iterator(tmp.path / "out")) {
    ++n_files;
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos);
  }
  EXPECT_EQ(n_files, 4u);
  const nlohmann::json j = nlohmann::json::parse(read_file(tmp.path / "out" / "results.json"));
  EXPECT_DOUBLE_EQ(j["all"]["image_auroc"].get<double>(), in.metrics.all.image_auroc);
  EXPECT_DOUBLE_EQ(j["all"]["aupro"].get<double>(), in.metrics.all.aupro);
  EXPECT_DOUBLE_EQ(j["per_type"]["hole"]["pixel_auroc"].get<double>(), in.metrics.per_type[1].pixel_auroc);
  EXPECT_DOUBLE_EQ(j["threshold"].get<double>(), in.metrics.all.f1_threshold);
  EXPECT_EQ(j["images"].size(), d.images.size());
  const auto& c = j["confusion"];
  EXPECT_EQ(c["tp"].get<int>() + c["fp"].get<int>() + c["tn"].get<int>() + c["fn"].get<int>(), int(d.images.size()));
  const std::string roc = read_file(tmp.path / "out" / "roc.svg");
  EXPECT_EQ(roc.rfind("<?xml", 0), 0u);
  EXPECT_NE(roc.find("False positive rate"), std::string::npos);
  EXPECT_EQ(count(roc, "<polyline"), 4u);  // 3 types + all
  EXPECT_NE(read_file(tmp.path / "out" / "score_histogram.svg").find("threshold"), std::string::npos);
}

TEST(ReportTest, UndefinedMetricsShowAsDashAndNull) {
  // only normal images and no maps: AUROC/F1 undefined
  std::vector<EvalSample> s(2);
  s[0].name = "a";
  s[0].score = 0.1f;
  s[1].name = "b";
  s[1].score = 0.2f;
  ReportInput in;
  in.metrics = evaluate(s);
  in.images = {{"a", "good", 0.1, false, {}}, {"b", "good", 0.2, false, {}}};
  const std::string html = render_html_report(in);
  EXPECT_NE(html.find("class=\"na\""), std::string::npos);
  EXPECT_NE(html.find("no positive"), std::string::npos);  // the reason is shown
  EXPECT_EQ(count(html, "no overlay"), 2u);
  const nlohmann::json j = nlohmann::json::parse(results_json(in));
  EXPECT_TRUE(j["all"]["image_auroc"].is_null());
  EXPECT_TRUE(j["threshold"].is_null());
}

TEST(ReportTest, AtomicWriteReplacesAndCleansUp) {
  TempDir tmp;
  const fs::path p = tmp.path / "x.txt";
  write_file_atomic(p.string(), "one");
  write_file_atomic(p.string(), "two");
  EXPECT_EQ(read_file(p), "two");
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(tmp.path)) n += e.is_regular_file();
  EXPECT_EQ(n, 1u);
  EXPECT_THROW(write_file_atomic((tmp.path / "missing" / "x.txt").string(), "z"), std::runtime_error);
  // a folder in the way: the rename fails, the temporary file is removed
  fs::create_directories(tmp.path / "dir.html" / "inside");
  EXPECT_THROW(write_file_atomic((tmp.path / "dir.html").string(), "z"), std::runtime_error);
  n = 0;
  for (const auto& e : fs::directory_iterator(tmp.path)) n += e.is_regular_file();
  EXPECT_EQ(n, 1u);
}

}  // namespace
}  // namespace fmam::eval
