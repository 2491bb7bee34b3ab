// Decodes the image file named by the frame's source (the runner lists a folder, glob, list
// file or single file with --input). An unreadable file is reported and skipped: the frame is
// dropped with a message naming the file, and the stream goes on.
#pragma once

#include "framework/node.h"
#include "framework/types.h"

namespace fmam {

class ImageSourceNode final : public Node {
 public:
  enum class Color { kBgr, kGray };
  struct Params {
    Color color = Color::kBgr;
  };
  static constexpr Out<Image> kOut{"image"};
  static Contract contract() {
    return Contract("ImageSource")
        .doc("reads the image file of each frame (a source node: fmam run --input feeds it)")
        .out(kOut, "decoded image, original resolution")
        .param(&Params::color, "color", "decode as 3-channel BGR or 1-channel gray",
               Choices<Color>{{"bgr", Color::kBgr}, {"gray", Color::kGray}})
        .concurrency(Concurrency::kUnlimited);  // files decode in parallel
  }
  static Shapes infer(const Params& p, const Shapes&) {
    return {{kOut, Shape::of({-1, -1, p.color == Color::kBgr ? 3 : 1})}};
  }
  explicit ImageSourceNode(const Params& p) : params_(p) {}
  void process(Context& ctx) override;

 private:
  Params params_;
};

}  // namespace fmam
