#include "nodes/upsample_sum_node.h"

#include <ATen/core/Tensor.h>

#include <cmath>
#include <sstream>

#include "nodes/halide_support.h"
#include "upsample_add_cpu.h"
#ifdef FMAM_HALIDE_CUDA
#include "upsample_add_cuda.h"
#endif

namespace fmam {

namespace {

std::string level_problem(size_t j, const std::string& what) {
  return "level " + std::to_string(j) + " " + what + "; UpsampleSum needs one 1-channel map per level, [1, 1, h, w]";
}

// Checked where the graph is read: a weight is a finite factor >= 0 (a negative one would turn
// a level's discrepancy into normality).
void check_weights_param(const std::vector<float>& weights) {
  for (size_t j = 0; j < weights.size(); ++j)
    FMAM_CHECK(std::isfinite(weights[j]) && weights[j] >= 0.0f)
        << "param \"weights\": level " << j << "'s weight must be a finite number >= 0, got " << weights[j];
}

// Param "weights" must give one factor per level (or none at all).
void check_weight_count(const std::vector<float>& weights, size_t levels) {
  if (weights.empty() || weights.size() == levels) return;
  throw PortError("input", UpsampleSumNode::kIn.name,
                  "has " + std::to_string(levels) + (levels == 1 ? " level" : " levels") + " but param \"weights\" gives " +
                      std::to_string(weights.size()) + "; give one weight per level, or [] for 1 each");
}

}  // namespace

Shapes UpsampleSumNode::infer(const Params& p, const Shapes& in) {
  check_weights_param(p.weights);
  const Shape& s = in.at(kIn);
  if (s.known) {
    if (s.levels.empty()) throw PortError("input", kIn.name, "has no levels");
    check_weight_count(p.weights, s.levels.size());
    for (size_t j = 0; j < s.levels.size(); ++j) {
      const auto& l = s.levels[j];
      if (l.size() != 3) throw PortError("input", kIn.name, level_problem(j, "has " + std::to_string(l.size()) + " dims"));
      if (l[0] != -1 && l[0] != 1)
        throw PortError("input", kIn.name, level_problem(j, "has " + std::to_string(l[0]) + " channels"));
    }
  }
  return {{kOut, Shape::of({p.height, p.width})}};
}

cv::Mat UpsampleSumNode::upsample_sum(const std::vector<at::Tensor>& levels, const Params& p, Device device) {
  if (levels.empty()) throw PortError("input", kIn.name, "has no levels");
  check_weight_count(p.weights, levels.size());
  // Contiguous float32 host copies only where a level is not one already (no copy normally).
  std::vector<at::Tensor> maps;
  for (size_t j = 0; j < levels.size(); ++j) {
    const at::Tensor& t = levels[j];
    if (t.dim() != 4 || t.size(0) != 1 || t.size(1) != 1) {
      std::ostringstream shape;
      shape << t.sizes();
      throw PortError("input", kIn.name,
                      t.dim() == 4 && t.size(0) == 1 ? level_problem(j, "has " + std::to_string(t.size(1)) + " channels")
                                                     : level_problem(j, "has shape " + shape.str()));
    }
    if (t.size(2) < 1 || t.size(3) < 1) throw PortError("input", kIn.name, level_problem(j, "is empty"));
    at::Tensor map = t.to(at::kCPU, at::kFloat).contiguous();
    // Weighted levels are scaled copies; the input stays as it was (other nodes may read it).
    if (!p.weights.empty() && p.weights[j] != 1.0f) map = map.mul(double(p.weights[j]));
    maps.push_back(map);
  }
  const bool multiply = p.mode == Mode::kMultiply;
  // Two accumulators, ping-ponged: level j reads one and writes the other.
  cv::Mat acc[2] = {cv::Mat(p.height, p.width, CV_32FC1, cv::Scalar(multiply ? 1.0f : 0.0f)),
                    cv::Mat(p.height, p.width, CV_32FC1)};
  auto level_view = [&](size_t j) {
    const at::Tensor& t = maps[j];
    return hl::view(t.data_ptr<float>(), int(t.size(3)), int(t.size(2)), int(t.size(3)));
  };
  auto cpu = [&](void* uc) {
    for (size_t j = 0; j < maps.size(); ++j) {
      auto in = level_view(j);
      auto a = hl::view(acc[j % 2]);
      auto o = hl::view(acc[(j + 1) % 2]);
      int s = upsample_add_cpu(uc, in, a, p.align_corners, multiply, o);
      if (s) return s;
    }
    return 0;
  };
  hl::KernelCall cuda;
#ifdef FMAM_HALIDE_CUDA
  cuda = [&](void* uc) {
    // The accumulators stay on the GPU between levels; only the last one comes back.
    auto a0 = hl::view(acc[0]);
    auto a1 = hl::view(acc[1]);
    a0.set_host_dirty();
    int s = 0;
    for (size_t j = 0; j < maps.size() && s == 0; ++j) {
      auto in = level_view(j);
      in.set_host_dirty();
      s = j % 2 ? upsample_add_cuda(uc, in, a1, p.align_corners, multiply, a0)
                : upsample_add_cuda(uc, in, a0, p.align_corners, multiply, a1);
      int f = hl::finish_cuda(uc, in);
      if (s == 0) s = f;
    }
    int f = hl::finish_cuda(uc, a0, a1);
    return s ? s : f;
  };
#endif
  hl::run("upsample_add", device, cpu, cuda);
  return acc[maps.size() % 2];
}

UpsampleSumNode::UpsampleSumNode(const Params& p) : params_(p) { check_weights_param(params_.weights); }

void UpsampleSumNode::process(Context& ctx) { kOut(ctx).send(Map2D{upsample_sum(kIn(ctx).get().levels, params_, ctx.device())}); }

FMAM_REGISTER_NODE(UpsampleSumNode);

}  // namespace fmam
