#include "nodes/map_writer_node.h"

#include <opencv2/imgproc.hpp>

#include "framework/io.h"

namespace fmam {

MapWriterNode::MapWriterNode(const Params& p) : params_(p) {
  FMAM_CHECK(params_.hi > params_.lo) << "param \"hi\" (" << params_.hi << ") must be greater than param \"lo\" ("
                                      << params_.lo << ")";
  FMAM_CHECK(!params_.dir.empty()) << "param \"dir\" is empty";
}

cv::Mat MapWriterNode::colorize(const cv::Mat& map, float lo, float hi) {
  cv::Mat u8;
  map.convertTo(u8, CV_8U, 255.0 / (hi - lo), -lo * 255.0 / (hi - lo));  // saturates outside [lo, hi]
  cv::Mat color;
  cv::applyColorMap(u8, color, cv::COLORMAP_JET);
  return color;
}

void MapWriterNode::process(Context& ctx) {
  const cv::Mat& m = kIn(ctx).get().mat;
  FMAM_CHECK(m.type() == CV_32FC1) << "input \"map\": expected float32 HxW, got OpenCV type " << m.type();
  const std::string base = params_.dir + "/" + output_key(ctx.source(), ctx.frame_id()) + "_" + params_.name;
  if (params_.png) atomic_write_image(base + ".png", colorize(m, params_.lo, params_.hi));
  if (params_.raw) atomic_write_image(base + ".tiff", m);
}

FMAM_REGISTER_NODE(MapWriterNode);

}  // namespace fmam
