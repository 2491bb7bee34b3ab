#include "nodes/gaussian_blur_node.h"

#include "gaussian_blur_cpu.h"
#ifdef FMAM_HALIDE_CUDA
#include "gaussian_blur_cuda.h"
#endif
#include "nodes/halide_support.h"

namespace fmam {

Shapes GaussianBlurNode::infer(const Params&, const Shapes& in) {
  const Shape& s = in.at(kIn);
  if (s.known && s.dims.size() != 2) throw PortError("input", kIn.name, "expected a 2-D map [H, W], got " + s.str());
  return {{kOut, s}};
}

cv::Mat GaussianBlurNode::blur(const cv::Mat& map, float sigma, Device device) {
  if (map.empty()) throw PortError("input", kIn.name, "is empty");
  if (map.type() != CV_32FC1)
    throw PortError("input", kIn.name, "expected HxW float32 (CV_32FC1), got OpenCV type " + std::to_string(map.type()));
  cv::Mat out(map.rows, map.cols, CV_32FC1);
  auto cpu = [&](void* uc) {
    auto in = hl::view(map);
    auto o = hl::view(out);
    return gaussian_blur_cpu(uc, in, sigma, o);
  };
  hl::KernelCall cuda;
#ifdef FMAM_HALIDE_CUDA
  cuda = [&](void* uc) {
    auto in = hl::view(map);
    auto o = hl::view(out);
    in.set_host_dirty();  // a host-only view: the pipeline copies it to the GPU
    int s = gaussian_blur_cuda(uc, in, sigma, o);
    int f = hl::finish_cuda(uc, o, in);
    return s ? s : f;
  };
#endif
  hl::run("gaussian_blur", device, cpu, cuda);
  return out;
}

void GaussianBlurNode::process(Context& ctx) { kOut(ctx).send(Map2D{blur(kIn(ctx).get().mat, params_.sigma, ctx.device())}); }

FMAM_REGISTER_NODE(GaussianBlurNode);

}  // namespace fmam
