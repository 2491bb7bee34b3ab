// Writes each frame's map as <dir>/<key>_<name>.png (a colour heatmap scaled by the FIXED range
// [lo, hi], never per image, so equal values look equal across images; nodes/heatmap.h) and,
// with raw=true, the exact float32 values as <dir>/<key>_<name>.tiff. <key> is
// "<parent>_<stem>" of the source file.
// Files are written to a temporary name and renamed.
#pragma once

#include "framework/node.h"
#include "framework/types.h"

namespace fmam {

class MapWriterNode final : public Node {
 public:
  struct Params {
    std::string dir = "out";
    std::string name = "anomaly_map";
    float lo = 0.0f;
    float hi = 1.0f;
    bool png = true;
    bool raw = true;
  };
  static constexpr In<Map2D> kIn{"map"};
  static Contract contract() {
    return Contract("MapWriter")
        .doc("writes maps as heatmap PNG (fixed colour range) and raw float32 TIFF")
        .in(kIn, "map, HxW float32")
        .param(&Params::dir, "dir", "output folder (created if missing)")
        .param(&Params::name, "name", "file name suffix: <key>_<name>.png")
        .param(&Params::lo, "lo", "map value drawn as the coldest colour")
        .from_model("map_lo")
        .param(&Params::hi, "hi", "map value drawn as the hottest colour")
        .from_model("map_hi")
        .param(&Params::png, "png", "write the heatmap PNG")
        .param(&Params::raw, "raw", "write the exact float32 map as TIFF")
        .concurrency(Concurrency::kUnlimited);  // one file per frame
  }
  explicit MapWriterNode(const Params& p);
  void process(Context& ctx) override;

 private:
  Params params_;
};

}  // namespace fmam
