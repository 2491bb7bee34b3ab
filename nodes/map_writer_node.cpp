#include "nodes/map_writer_node.h"

#include "framework/io.h"
#include "nodes/heatmap.h"

namespace fmam {

MapWriterNode::MapWriterNode(const Params& p) : params_(p) {
  FMAM_CHECK(params_.hi > params_.lo) << "param \"hi\" (" << params_.hi << ") must be greater than param \"lo\" (" << params_.lo
                                      << ")";
  FMAM_CHECK(!params_.dir.empty()) << "param \"dir\" is empty";
}

void MapWriterNode::process(Context& ctx) {
  const cv::Mat& m = kIn(ctx).get().mat;
  FMAM_CHECK(m.type() == CV_32FC1) << "input \"map\": expected float32 HxW, got OpenCV type " << m.type();
  const std::string base = params_.dir + "/" + output_key(ctx.source(), ctx.frame_id()) + "_" + params_.name;
  if (params_.png) atomic_write_image(base + ".png", heatmap_bgr(m, params_.lo, params_.hi));
  if (params_.raw) atomic_write_image(base + ".tiff", m);
}

FMAM_REGISTER_NODE(MapWriterNode);

}  // namespace fmam
