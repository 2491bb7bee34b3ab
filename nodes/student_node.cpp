#include "nodes/student_node.h"

#include <c10/core/InferenceMode.h>

#include "networks/pyramid_check.h"

namespace fmam {

namespace {

const char* kind_name(StudentNode::Kind k) { return k == StudentNode::Kind::kReverse ? "reverse" : "symmetric"; }

void check_reverse_layers(const std::vector<int>& layers) {
  FMAM_CHECK(layers == std::vector<int>({1, 2, 3}))
      << "param \"layers\": kind \"reverse\" (RD4AD) fuses exactly layer1, layer2, layer3";
}

// The teacher pyramid a reverse student of `arch` reads: layer1..3 channels (sizes are free).
void check_teacher_pyramid(const std::vector<std::vector<int64_t>>& levels, Arch arch) {
  const char* port = StudentNode::kFeatures.name;
  if (levels.size() != 3)
    throw PortError(
        "input", port,
        "has " + std::to_string(levels.size()) + " levels; a reverse student reads 3 (the teacher's layer1, layer2, layer3)");
  std::string got, want;
  auto channels = [&](int j) { return levels[j].empty() ? int64_t(-1) : levels[j][0]; };
  for (int j = 0; j < 3; ++j) {
    got += (j ? ", " : "") + std::to_string(channels(j));
    want += (j ? ", " : "") + std::to_string(layer_channels(arch, j + 1));
  }
  for (int j = 2; j >= 0; --j) {  // deepest first: it names the teacher's arch best
    const int64_t c = channels(j), e = layer_channels(arch, j + 1);
    if (c >= 0 && c != e)
      throw PortError("input", port,
                      "level " + std::to_string(j) + " has " + std::to_string(c) + " channels, a " + arch_name(arch) +
                          " student expects " + std::to_string(e) + " (channels per level: [" + got + "], expected [" + want +
                          "]; set param \"arch\" to the teacher's)");
  }
}

}  // namespace

Shapes StudentNode::infer(const Params& p, const Shapes& in) {
  const std::vector<int> layers = parse_layers(p.layers);
  const bool reverse = p.kind == Kind::kReverse;
  const char* reads = reverse ? kFeatures.name : kImage.name;
  const char* ignores = reverse ? kImage.name : kFeatures.name;
  if (!in.has(reads))
    throw PortError("input", reads, std::string("is not connected; kind \"") + kind_name(p.kind) + "\" reads it");
  if (in.has(ignores))
    throw PortError("input", ignores,
                    std::string("is connected, but kind \"") + kind_name(p.kind) + "\" reads input \"" + reads + "\" only");
  if (reverse) {
    check_reverse_layers(layers);
    const Shape& s = in.at(kFeatures);
    if (!s.known) return {{kOut, Shape::pyramid(pyramid_dims(p.arch, layers, -1, -1))}};
    check_teacher_pyramid(s.levels, p.arch);
    return {{kOut, Shape::pyramid(s.levels)}};
  }
  int64_t h = -1, w = -1;
  const Shape& s = in.at(kImage);
  if (s.known) {
    if (s.dims.size() != 3 || (s.dims[0] != -1 && s.dims[0] != 3))
      throw PortError("input", kImage.name, "expected [3, H, W], got " + s.str());
    h = s.dims[1];
    w = s.dims[2];
  }
  return {{kOut, Shape::pyramid(pyramid_dims(p.arch, layers, h, w))}};
}

namespace {
Network make_network(const StudentNode::Params& p) {
  return p.kind == StudentNode::Kind::kReverse ? make_reverse_student(p.arch, uint64_t(p.seed))
                                               : make_resnet(p.arch, parse_layers(p.layers), uint64_t(p.seed));
}

// What a sharing Student must agree on with the one it shares.
struct SharedStudent {
  StudentNode::Params params;
  Network net;
};

Network shared_network(const StudentNode::Params& p, NodeEnv& env) {
  if (p.share.empty()) {
    auto made = env.shared<SharedStudent>(env.node_id(), [&] {
      return std::make_shared<SharedStudent>(SharedStudent{p, make_network(p)});
    });
    return made->net;
  }
  auto other = env.find<SharedStudent>(p.share);
  FMAM_CHECK(other) << "param \"share\": no Student \"" << p.share
                    << "\" is declared before this node (declare the shared one first)";
  FMAM_CHECK(other->params.kind == p.kind && other->params.arch == p.arch && other->params.layers == p.layers)
      << "param \"share\": Student \"" << p.share << "\" has another kind, arch or layers than this node";
  return other->net;
}
}  // namespace

StudentNode::StudentNode(const Params& p, NodeEnv& env)
    : params_(p), layers_(parse_layers(p.layers)), net_(shared_network(p, env)) {
  if (p.kind == Kind::kReverse) check_reverse_layers(layers_);
  if (p.share.empty()) {
    net_.train(false);
    // Channels-last for inference, and for the symmetric student always. The reverse student
    // trains in NCHW (its training was measured there); for inference, NHWC is faster since its
    // transposed convs became products (ConvTranspose2x2): on the 2-core Zen 4, batch 4, one
    // thread, 111-124 vs 125-135 ms per batch in float32 and 57-73 vs 77-79 in bfloat16.
    if (p.kind == Kind::kSymmetric || !env.training()) {
      net_.to_channels_last();
      format_ = at::MemoryFormat::ChannelsLast;
    }
    // Inference only: BatchNorm folded into the convs (its running statistics are fixed here),
    // then, where chosen, in bfloat16.
    if (!env.training()) net_.set_batchnorm_folding(true);
    if (!env.training() && env.precision() == Precision::kBFloat16Mixed) net_.set_inference_precision(Precision::kBFloat16Mixed);
  }
}

StudentNode::StudentNode(const Params& p) : params_(p), layers_(parse_layers(p.layers)), net_(make_network(p)) {
  FMAM_CHECK(p.share.empty()) << "param \"share\" needs a graph (the node is built alone here)";
  if (p.kind == Kind::kReverse) check_reverse_layers(layers_);
  net_.train(false);
  // Memory format, measured on the project's 2-core Zen 4 (1 thread, batch 1, 256x256,
  // resnet18, CPU time per frame): symmetric NCHW 48 ms vs NHWC 40 ms. The reverse student stays
  // NCHW here, as it trains (the graph constructor above makes inference ones channels-last).
  if (p.kind == Kind::kSymmetric) {
    net_.to_channels_last();
    format_ = at::MemoryFormat::ChannelsLast;
  }
}

std::vector<at::Tensor> StudentNode::forward(std::vector<at::Tensor> in) {
  const bool reverse = params_.kind == Kind::kReverse;
  if (reverse) {
    check_teacher_pyramid(level_dims(in), params_.arch);
  } else if (in.size() != 1 || !in[0].defined() || in[0].dim() != 4 || in[0].size(1) != 3) {
    throw PortError("input", kImage.name, "expected one float32 [B, 3, H, W] tensor");
  }
  const auto format = format_;
  if (!net_.is_training()) {
    c10::InferenceMode guard;  // per thread: set on whichever worker runs this frame
    for (auto& t : in) t = t.contiguous(format);
    return net_.forward(in);
  }
  // Training: autograd on, BatchNorm updates running stats, so one frame at a time: a training
  // run's plan makes every Trainable node serial (ExecutionPlan::serial), and the trainer's
  // nodes run in its serial tail. Inference tensors (the teacher's output) cannot be saved for
  // backward: use copies.
  for (auto& t : in) t = t.is_inference() ? t.clone(format) : t.contiguous(format);
  return params_.update_bn_stats ? net_.forward(in) : net_.forward_with_running_stats(in);
}

void StudentNode::process(Context& ctx) {
  FeaturePyramid out;
  if (params_.kind == Kind::kReverse)
    out.levels = forward(kFeatures(ctx).get().levels);
  else
    out.levels = forward({kImage(ctx).get().t});
  kOut(ctx).send(std::move(out));
}

FMAM_REGISTER_NODE(StudentNode);

}  // namespace fmam
