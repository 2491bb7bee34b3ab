#include "nodes/overlay_node.h"

#include <algorithm>
#include <cstdio>

#include <opencv2/imgproc.hpp>

#include "nodes/heatmap.h"

namespace fmam {

OverlayNode::OverlayNode(const Params& p) : params_(p) {
  FMAM_CHECK(params_.hi > params_.lo) << "param \"hi\" (" << params_.hi << ") must be greater than param \"lo\" (" << params_.lo
                                      << ")";
}

void OverlayNode::process(Context& ctx) {
  cv::Mat image = kImage(ctx).get().mat;
  const cv::Mat& map = kMap(ctx).get().mat;
  FMAM_CHECK(map.type() == CV_32FC1) << "input \"map\": expected float32 HxW, got OpenCV type " << map.type();
  if (image.channels() == 1) cv::cvtColor(image, image, cv::COLOR_GRAY2BGR);
  cv::Mat full;
  cv::resize(map, full, image.size(), 0, 0, cv::INTER_LINEAR);
  cv::Mat heat = heatmap_bgr(full, params_.lo, params_.hi);
  // Per-pixel opacity grows with the map value: at or below `lo` the product shows through
  // untouched, at `hi` the heatmap covers it with opacity `alpha`.
  cv::Mat out(image.size(), CV_8UC3);
  const float scale = 1.0f / (params_.hi - params_.lo);
  for (int y = 0; y < image.rows; ++y) {
    const cv::Vec3b* src = image.ptr<cv::Vec3b>(y);
    const cv::Vec3b* hot = heat.ptr<cv::Vec3b>(y);
    const float* v = full.ptr<float>(y);
    cv::Vec3b* dst = out.ptr<cv::Vec3b>(y);
    for (int x = 0; x < image.cols; ++x) {
      const float a = params_.alpha * std::min(1.0f, std::max(0.0f, (v[x] - params_.lo) * scale));
      for (int c = 0; c < 3; ++c) dst[x][c] = cv::saturate_cast<uchar>((1 - a) * src[x][c] + a * hot[x][c]);
    }
  }
  if (params_.show_score && kScore(ctx).has()) {
    const double s = kScore(ctx).get().value;
    char text[64];
    const bool verdict = params_.threshold >= 0;
    const bool fail = verdict && s >= params_.threshold;  // eval's convention: >= threshold fails
    std::snprintf(text, sizeof text, "score %.4f%s", s, verdict ? (fail ? "  FAIL" : "  PASS") : "");
    const double scale = std::max(0.4, image.cols / 700.0);
    const int thick = std::max(1, int(scale * 2));
    int base = 0;
    cv::Size ts = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, scale, thick, &base);
    const int pad = int(6 * scale);
    cv::rectangle(out, cv::Rect(0, 0, ts.width + 2 * pad, ts.height + base + 2 * pad), cv::Scalar(0, 0, 0), cv::FILLED);
    cv::Scalar color = !verdict ? cv::Scalar(255, 255, 255) : fail ? cv::Scalar(60, 60, 255) : cv::Scalar(80, 220, 80);
    cv::putText(out, text, cv::Point(pad, pad + ts.height), cv::FONT_HERSHEY_SIMPLEX, scale, color, thick, cv::LINE_AA);
  }
  kOut(ctx).send(Image{out});
}

FMAM_REGISTER_NODE(OverlayNode);

}  // namespace fmam
