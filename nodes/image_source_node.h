// Decodes the image file named by the frame's source (the runner lists a folder, glob, list
// file or single file with --input). An unreadable file is reported and skipped: the frame is
// dropped with a message naming the file, and the stream goes on. A truncated PNG or JPEG, a
// folder or broken link named like an image, and an image whose header claims more than
// max_pixels are unreadable too (framework/io.h read_image), so none is scored half-grey.
#pragma once

#include "framework/io.h"
#include "framework/node.h"
#include "framework/types.h"

namespace fmam {

class ImageSourceNode final : public Node {
 public:
  enum class Color { kBgr, kGray };
  struct Params {
    Color color = Color::kBgr;
    int max_pixels = int(kMaxImagePixels);
  };
  static constexpr Out<Image> kOut{"image"};
  static Contract contract() {
    return Contract("ImageSource")
        .doc("reads the image file of each frame (a source node: fmam run --input feeds it)")
        .out(kOut, "decoded image, original resolution")
        .param(&Params::color, "color", "decode as 3-channel BGR or 1-channel gray",
               Choices<Color>{{"bgr", Color::kBgr}, {"gray", Color::kGray}})
        .param(&Params::max_pixels, "max_pixels",
               "an image whose header claims more pixels is skipped before decoding (64 MP: ~200 MB)", Range{1, 1 << 30})
        .concurrency(Concurrency::kUnlimited)  // files decode in parallel
        .deterministic();                      // the frame's file, read; training files do not change while it runs
  }
  static Shapes infer(const Params& p, const Shapes&) { return {{kOut, Shape::of({-1, -1, p.color == Color::kBgr ? 3 : 1})}}; }
  explicit ImageSourceNode(const Params& p) : params_(p) {}
  void process(Context& ctx) override;

 private:
  Params params_;
};

}  // namespace fmam
