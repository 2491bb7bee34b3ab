// Writes each frame's image as <dir>/<key>_<name>.<format> (an overlay, a synthetic defect),
// through a temporary name and a rename.
#pragma once

#include "framework/node.h"
#include "framework/types.h"

namespace fmam {

class ImageWriterNode final : public Node {
 public:
  struct Params {
    std::string dir = "out";
    std::string name = "image";
    std::string format = "png";
  };
  static constexpr In<Image> kIn{"image"};
  static Contract contract() {
    return Contract("ImageWriter")
        .doc("writes images to files")
        .in(kIn, "image, 8-bit BGR or gray")
        .param(&Params::dir, "dir", "output folder (created if missing)")
        .param(&Params::name, "name", "file name suffix: <key>_<name>.<format>")
        .param(&Params::format, "format", "file format", Choices<std::string>{{"png", "png"}, {"jpg", "jpg"}, {"bmp", "bmp"}})
        .concurrency(Concurrency::kUnlimited);
  }
  explicit ImageWriterNode(const Params& p) : params_(p) {}
  void process(Context& ctx) override;

 private:
  Params params_;
};

}  // namespace fmam
