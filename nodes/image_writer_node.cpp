#include "nodes/image_writer_node.h"

#include "framework/io.h"

namespace fmam {

void ImageWriterNode::process(Context& ctx) {
  const std::string path =
      params_.dir + "/" + output_key(ctx.source(), ctx.frame_id()) + "_" + params_.name + "." + params_.format;
  atomic_write_image(path, kIn(ctx).get().mat);
}

FMAM_REGISTER_NODE(ImageWriterNode);

}  // namespace fmam
