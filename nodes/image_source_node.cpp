#include "nodes/image_source_node.h"

#include <filesystem>

#include <opencv2/imgcodecs.hpp>

namespace fmam {

void ImageSourceNode::process(Context& ctx) {
  const std::string& path = ctx.source();
  FMAM_CHECK(!path.empty()) << "frame " << ctx.frame_id()
                            << " has no source file; feed this node with `fmam run --input`";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return ctx.drop("\"" + path + "\": no such file");
  if (std::filesystem::file_size(path, ec) == 0) return ctx.drop("\"" + path + "\": the file is empty");
  cv::Mat m;
  try {
    m = cv::imread(path, params_.color == Color::kBgr ? cv::IMREAD_COLOR : cv::IMREAD_GRAYSCALE);
  } catch (const cv::Exception& e) {
    return ctx.drop("\"" + path + "\": cannot decode: " + e.what());
  }
  if (m.empty()) return ctx.drop("\"" + path + "\": cannot decode (not an image, or truncated)");
  kOut(ctx).send(Image{m});
}

FMAM_REGISTER_NODE(ImageSourceNode);

}  // namespace fmam
