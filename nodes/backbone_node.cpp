#include "nodes/backbone_node.h"

#include <ATen/ops/empty.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include <ATen/ops/conv2d.h>
#include <ATen/ops/max_pool2d.h>
#include <c10/core/InferenceMode.h>

#include "framework/cpu_features.h"
#include "networks/weights.h"
#include "nodes/backbone_int8.h"
#include "nodes/backbone_net.h"

namespace fmam {

namespace {

// torchvision's IMAGENET1K_V1 file names per arch, then the truncated (to layer3, BN folded) file
// of ../shared/weights made the same way.
std::vector<std::string> default_weight_names(Arch a) {
  const std::string n = arch_name(a);
  const char* hash = a == Arch::kResNet18   ? "f37072fd"
                     : a == Arch::kResNet34 ? "b627a593"
                     : a == Arch::kResNet50 ? "0676ba61"
                                            : "95faca4d";
  return {n + "-" + hash + ".pth", n + "_imagenet1k_v1_to_layer3.pth"};
}

// Reads conv + BatchNorm pairs out of a torchvision state dict and folds them: eval-mode BN
// y = (x - mean) / sqrt(var + eps) * gamma + beta after a bias-free conv equals a conv with
// weight w * s and bias beta - mean * s, s = gamma / sqrt(var + eps). Folded in double.
class Folder {
 public:
  Folder(const TensorMap& sd, bool channels_last) : sd_(sd), channels_last_(channels_last) {}

  FoldedConv fold(const std::string& conv, const std::string& bn, int64_t out, int64_t in, int64_t k, int64_t stride) {
    at::Tensor w = get(conv + ".weight", {out, in, k, k});
    at::Tensor gamma = get(bn + ".weight", {out}), beta = get(bn + ".bias", {out});
    at::Tensor mean = get(bn + ".running_mean", {out}), var = get(bn + ".running_var", {out});
    FoldedConv c;
    c.stride = stride;
    c.pad = k / 2;
    if (!w.defined() || !gamma.defined() || !beta.defined() || !mean.defined() || !var.defined()) return c;
    const at::Tensor s = gamma.to(at::kDouble).div(var.to(at::kDouble).add(1e-5).sqrt());
    c.w = w.to(at::kDouble).mul(s.view({out, 1, 1, 1})).to(at::kFloat);
    c.w = c.w.contiguous(channels_last_ ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
    c.b = beta.to(at::kDouble).sub(mean.to(at::kDouble).mul(s)).to(at::kFloat).contiguous();
    return c;
  }
  const StateProblems& problems() const { return problems_; }

 private:
  at::Tensor get(const std::string& name, std::vector<int64_t> shape) {
    auto it = sd_.find(name);
    if (it == sd_.end()) {
      problems_.missing(name);
      return {};
    }
    if (it->second.sizes() != at::IntArrayRef(shape) || !it->second.is_floating_point()) {
      problems_.mis_shaped(name, it->second.sizes(), shape);
      return {};
    }
    return it->second;
  }

  const TensorMap& sd_;
  bool channels_last_;
  StateProblems problems_;
};

}  // namespace

Shapes BackboneNode::infer(const Params& p, const Shapes& in) {
  const std::vector<int> layers = parse_layers(p.layers);
  int64_t h = -1, w = -1;
  const Shape& s = in.at(kIn);
  if (s.known) {
    if (s.dims.size() != 3 || (s.dims[0] != -1 && s.dims[0] != 3))
      throw PortError("input", kIn.name, "expected [3, H, W], got " + s.str());
    h = s.dims[1];
    w = s.dims[2];
  }
  return {{kOut, Shape::pyramid(pyramid_dims(p.arch, layers, h, w))}};
}

BackboneNode::BackboneNode(const Params& p, NodeEnv& env) : BackboneNode(p) {
  // oneDNN's bfloat16 convolutions (AVX512-BF16). The networks run on the CPU whatever the
  // device: `device` only places the Halide post-processing kernels.
  if (env.precision() == Precision::kBFloat16Mixed) fast_net_ = net_->cast(at::kBFloat16);
  // Inference graphs run the student, the feature maps and the cosine channels-last too: hand
  // the pyramid on in the format it was computed in. Training graphs keep NCHW, as they were
  // measured (the reverse student trains in NCHW).
  if (!env.training() && p.channels_last) out_format_ = at::MemoryFormat::ChannelsLast;
}

BackboneNode::BackboneNode(const Params& p) : layers_(parse_layers(p.layers)), arch_(p.arch) {
  const WeightsSearch found = find_weights(p.weights, default_weight_names(p.arch));
  if (found.path.empty()) {
    if (found.explicit_path) throw Error("param \"weights\": " + p.weights + ": no such file");
    std::string names, places;
    for (const auto& n : p.weights.empty() ? default_weight_names(p.arch) : std::vector<std::string>{p.weights})
      names += (names.empty() ? "" : ", ") + n;
    for (const auto& pl : found.places) places += "\n  " + pl;
    throw Error("param \"weights\": no " + std::string(arch_name(p.arch)) + " weights found; looked for " + names +
                " in:" + places +
                "\nset param \"weights\" to a torchvision state dict, or $FMAM_WEIGHTS to it or "
                "its folder");
  }
  weights_path_ = found.path;
  TensorMap sd;
  try {
    sd = read_state_dict(weights_path_);
  } catch (const Error& e) {
    throw Error(std::string("param \"weights\": ") + e.what());
  }

  // torchvision's ResNet, layer by layer, up to the deepest layer asked for.
  const ArchSpec& spec = arch_spec(p.arch);
  Folder f(sd, p.channels_last);
  auto net = std::make_shared<Net>();
  net->channels_last = p.channels_last;
  net->stem = f.fold("conv1", "bn1", 64, 3, 7, 2);
  int64_t in = 64;
  for (int l = 1; l <= layers_.back(); ++l) {
    const int64_t planes = int64_t(64) << (l - 1), out = layer_channels(p.arch, l);
    const int64_t width = planes * spec.width_per_group / 64;
    std::vector<FoldedBlock> blocks;
    for (int b = 0; b < spec.blocks[l - 1]; ++b) {
      const std::string pre = "layer" + std::to_string(l) + "." + std::to_string(b) + ".";
      const int64_t stride = (b == 0 && l > 1) ? 2 : 1, bin = b == 0 ? in : out;
      FoldedBlock blk;
      blk.bottleneck = spec.bottleneck;
      if (spec.bottleneck) {
        blk.c1 = f.fold(pre + "conv1", pre + "bn1", width, bin, 1, 1);
        blk.c2 = f.fold(pre + "conv2", pre + "bn2", width, width, 3, stride);
        blk.c3 = f.fold(pre + "conv3", pre + "bn3", out, width, 1, 1);
      } else {
        blk.c1 = f.fold(pre + "conv1", pre + "bn1", planes, bin, 3, stride);
        blk.c2 = f.fold(pre + "conv2", pre + "bn2", planes, planes, 3, 1);
      }
      blk.has_down = stride != 1 || bin != out;
      if (blk.has_down) blk.down = f.fold(pre + "downsample.0", pre + "downsample.1", out, bin, 1, stride);
      blocks.push_back(std::move(blk));
    }
    net->layers.push_back(std::move(blocks));
    in = out;
  }
  FMAM_CHECK(f.problems().empty()) << "param \"weights\": " << weights_path_ << " does not fit " << arch_name(p.arch)
                                   << " up to layer" << layers_.back() << ": " << f.problems().str();
  net_ = net;
  fast_net_ = net_;
}

const std::string& BackboneNode::weights_sha256() const {
  std::call_once(sha_once_, [this] { sha256_ = sha256_file(weights_path_); });
  return sha256_;
}

namespace {

void check_image(const at::Tensor& image) {
  if (!image.defined() || image.dim() != 4 || image.size(1) != 3 || image.scalar_type() != at::kFloat)
    throw PortError("input", BackboneNode::kIn.name,
                    "expected float32 [B, 3, H, W], got " +
                        (image.defined() ? std::string(c10::toString(image.scalar_type())) + " " + shape_str(image.sizes())
                                         : std::string("an empty tensor")));
}

}  // namespace

std::vector<at::Tensor> BackboneNode::forward(const at::Tensor& image) const {
  if (int8_) {
    c10::InferenceMode guard;
    check_image(image);
    return (*int8_)(image, layers_, out_format_);
  }
  if (observing_) {
    c10::InferenceMode guard;
    check_image(image);
    ActivationRanges seen;
    observe_ranges(*net_, image, layers_.back(), seen);
    std::lock_guard<std::mutex> lock(ranges_mutex_);
    merge(observed_, seen);
  }
  return run(*fast_net_, image);
}

void BackboneNode::observe_activation_ranges(bool on) { observing_ = on; }

std::map<std::string, at::Tensor> BackboneNode::activation_ranges() const {
  std::lock_guard<std::mutex> lock(ranges_mutex_);
  return ranges_to_tensors(observed_);
}

void BackboneNode::use_int8(const std::map<std::string, at::Tensor>& ranges) {
  use_int8(ranges, int8_activation_max(cpu_has_int8_dot()));
}

void BackboneNode::use_int8(const std::map<std::string, at::Tensor>& ranges, int activation_max) {
  const ActivationRanges r = ranges_from_tensors(ranges);
  for (const auto& point : activation_points(*net_, layers_.back()))
    if (!r.count(point)) throw Error("int8 calibration: no range for activation \"" + point + "\"; rerun fmam quantize");
  int8_ = std::make_shared<const Int8Backbone>(*net_, layers_.back(), r, activation_max);
}

std::vector<at::Tensor> BackboneNode::run(const Net& net, const at::Tensor& image) const {
  // InferenceMode is per thread: set here, on whichever TBB worker runs this frame.
  c10::InferenceMode guard;
  check_image(image);
  at::Tensor x = image.to(at::TensorOptions().dtype(net.dtype).memory_format(net.channels_last ? at::MemoryFormat::ChannelsLast
                                                                                               : at::MemoryFormat::Contiguous));
  x = at::max_pool2d(net.stem(x).relu_(), {3, 3}, {2, 2}, {1, 1});
  std::vector<at::Tensor> out;
  size_t next = 0;
  for (size_t l = 0; l < net.layers.size(); ++l) {
    for (const auto& blk : net.layers[l]) x = blk(x);
    if (layers_[next] == int(l) + 1) {
      // Float32 out whatever the compute type, in out_format_ (one copy where the format or the
      // type changes, ~0.5 ms per frame).
      out.push_back(x.to(at::TensorOptions().dtype(at::kFloat).memory_format(out_format_)));
      ++next;
    }
  }
  return out;
}

std::string BackboneNode::fingerprint() const {
  std::call_once(fingerprint_once_, [this] {
    // A fixed, smooth synthetic image (no RNG: identical on every machine).
    at::Tensor probe = at::empty({1, 3, 64, 64}, at::kFloat);
    float* d = probe.data_ptr<float>();
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 64; ++y)
        for (int x = 0; x < 64; ++x) d[(c * 64 + y) * 64 + x] = std::sin(0.3f * x + 0.7f * c) * std::cos(0.2f * y - c);
    std::vector<at::Tensor> levels = run(*net_, probe);  // float32 whatever the inference precision
    std::string s = std::string(arch_name(arch_)) + " layers";
    for (int l : layers_) s += " " + std::to_string(l);
    s += " probe";
    char b[64];
    for (const auto& t : levels) {
      std::snprintf(b, sizeof b, " %.7g %.7g", t.mean().item<double>(), t.std().item<double>());
      s += b;
    }
    fingerprint_ = s + " file " + std::filesystem::path(weights_path_).filename().string();
  });
  return fingerprint_;
}

bool BackboneNode::same_as(const std::string& recorded) const {
  // Everything before " probe" must match exactly; the probe numbers within 1e-3 relative.
  auto split = [](const std::string& f, std::string& head, std::vector<double>& nums) {
    auto p = f.find(" probe ");
    auto e = f.find(" file ");
    if (p == std::string::npos) return false;
    head = f.substr(0, p);
    std::istringstream is(f.substr(p + 7, e == std::string::npos ? std::string::npos : e - p - 7));
    double v;
    while (is >> v) nums.push_back(v);
    return true;
  };
  std::string h1, h2;
  std::vector<double> n1, n2;
  if (!split(recorded, h1, n1) || !split(fingerprint(), h2, n2) || h1 != h2 || n1.size() != n2.size()) return false;
  for (size_t i = 0; i < n1.size(); ++i)
    if (std::fabs(n1[i] - n2[i]) > 1e-3 * std::max(std::fabs(n1[i]), std::fabs(n2[i])) + 1e-6) return false;
  return true;
}

void BackboneNode::process(Context& ctx) {
  FeaturePyramid out;
  out.levels = forward(kIn(ctx).get().t);
  kOut(ctx).send(std::move(out));
}

FMAM_REGISTER_NODE(BackboneNode);

}  // namespace fmam
