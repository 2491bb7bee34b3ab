#include "nodes/heatmap.h"

#include <opencv2/imgproc.hpp>

namespace fmam {

cv::Mat heatmap_bgr(const cv::Mat& map, float lo, float hi) {
  cv::Mat u8;
  // convertTo rounds and saturates, which is the clamp to [lo, hi].
  map.convertTo(u8, CV_8U, 255.0 / (hi - lo), -lo * 255.0 / (hi - lo));
  cv::Mat color;
  cv::applyColorMap(u8, color, cv::COLORMAP_JET);
  return color;
}

}  // namespace fmam
