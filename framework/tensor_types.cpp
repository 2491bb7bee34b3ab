// Registers Tensor and FeaturePyramid with the runtime, with the batch concat/split the
// executor uses for batchable nodes.
#include "framework/tensor_types.h"

#include <ATen/ops/cat.h>

namespace fmam {

namespace {

std::vector<Packet> split_tensor(const at::Tensor& t, size_t n) {
  std::vector<Packet> out;
  if (t.dim() == 0 || size_t(t.size(0)) != n) return out;  // the executor reports the mismatch
  for (size_t i = 0; i < n; ++i) out.push_back(Packet::make(Tensor{t.narrow(0, int64_t(i), 1)}));
  return out;
}

const bool registered = [] {
  DataTypes::global().add({"Tensor", "float32 tensor, [1, C, H, W] per frame (a batch stacks frames on dim 0)",
                           [](const std::vector<Packet>& parts) {
                             std::vector<at::Tensor> ts;
                             for (const auto& p : parts) ts.push_back(p.get<Tensor>().t);
                             return Packet::make(Tensor{at::cat(ts, 0)});
                           },
                           [](const Packet& p, size_t n) { return split_tensor(p.get<Tensor>().t, n); }});
  DataTypes::global().add({"FeaturePyramid", "list of feature maps, shallow to deep, each [1, C_j, H_j, W_j] per frame",
                           [](const std::vector<Packet>& parts) {
                             FeaturePyramid out;
                             const size_t levels = parts.front().get<FeaturePyramid>().levels.size();
                             for (size_t l = 0; l < levels; ++l) {
                               std::vector<at::Tensor> ts;
                               for (const auto& p : parts) ts.push_back(p.get<FeaturePyramid>().levels.at(l));
                               out.levels.push_back(at::cat(ts, 0));
                             }
                             return Packet::make(std::move(out));
                           },
                           [](const Packet& p, size_t n) {
                             const auto& fp = p.get<FeaturePyramid>();
                             std::vector<Packet> out;
                             for (size_t i = 0; i < n; ++i) {
                               FeaturePyramid one;
                               for (const auto& l : fp.levels) {
                                 if (l.dim() == 0 || size_t(l.size(0)) != n) return std::vector<Packet>{};
                                 one.levels.push_back(l.narrow(0, int64_t(i), 1));
                               }
                               out.push_back(Packet::make(std::move(one)));
                             }
                             return out;
                           }});
  return true;
}();

}  // namespace

// Referenced from the core so the linker keeps this file's registration.
bool tensor_types_registered() { return registered; }

}  // namespace fmam
