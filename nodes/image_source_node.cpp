#include "nodes/image_source_node.h"

#include <opencv2/imgcodecs.hpp>

#include "framework/io.h"

namespace fmam {

void ImageSourceNode::process(Context& ctx) {
  const std::string& path = ctx.source();
  FMAM_CHECK(!path.empty()) << "frame " << ctx.frame_id() << " has no source file; feed this node with `fmam run --input`";
  cv::Mat m;
  try {
    m = read_image(path, params_.color == Color::kBgr ? cv::IMREAD_COLOR : cv::IMREAD_GRAYSCALE, params_.max_pixels);
  } catch (const Error& e) {
    return ctx.drop(e.what());
  }
  kOut(ctx).send(Image{m});
}

FMAM_REGISTER_NODE(ImageSourceNode);

}  // namespace fmam
