#include "nodes/feature_map_node.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <map>
#include <memory>
#include <string>

#include "networks/pyramid_check.h"

namespace fmam {

namespace {

std::vector<std::vector<int64_t>> param_levels(const FeatureMapNode::Params& p) {
  std::vector<std::vector<int64_t>> out;
  for (int c : p.channels) out.push_back({c, -1, -1});
  return out;
}

void check_channels_param(const FeatureMapNode::Params& p) {
  FMAM_CHECK(!p.channels.empty()) << "param \"channels\": needs at least one level";
  for (int c : p.channels) FMAM_CHECK(c >= 1) << "param \"channels\": must be positive, got " << c;
  FMAM_CHECK(p.init != FeatureMapNode::Init::kIdentity || p.hidden_ratio >= 1.0f)
      << "param \"init\": \"identity\" needs hidden_ratio >= 1 (the hidden layer must hold every channel), got "
      << p.hidden_ratio;
}

// fc1 = fc2 = I (zero-padded when the hidden layer is wider), biases 0.
void set_identity(const Network& net) {
  std::map<std::string, at::Tensor> state;
  for (const auto& [name, t] : net.named_state()) {
    at::Tensor v = at::zeros_like(t);
    if (t.dim() == 4) {
      const int64_t n = std::min(t.size(0), t.size(1));
      for (int64_t i = 0; i < n; ++i) v[i][i].fill_(1.0);
    }
    state[name] = v;
  }
  net.load_state(state);
}

}  // namespace

std::vector<int64_t> FeatureMapNode::hidden_widths(const Params& p) {
  std::vector<int64_t> h;
  for (int c : p.channels) h.push_back(std::max<int64_t>(1, std::llround(double(p.hidden_ratio) * c)));
  return h;
}

Shapes FeatureMapNode::infer(const Params& p, const Shapes& in) {
  check_channels_param(p);
  const Shape& t = in.at(kInTeacher);
  const Shape& s = in.at(kInStudent);
  // Teacher vs student first (the usual wiring mistake), then both against param "channels".
  if (t.known && s.known) check_levels_match(t.levels, "input \"teacher\"", s.levels, kInStudent.name, false);
  if (t.known) check_levels_match(param_levels(p), "param \"channels\"", t.levels, kInTeacher.name, false);
  if (s.known) check_levels_match(param_levels(p), "param \"channels\"", s.levels, kInStudent.name, false);
  return Shapes{{kOutTeacher, t.known ? t : Shape::pyramid(param_levels(p))},
                {kOutStudent, s.known ? s : Shape::pyramid(param_levels(p))}};
}

namespace {

Network build_network(const FeatureMapNode::Params& p) {
  check_channels_param(p);
  Network net = make_feature_map(std::vector<int64_t>(p.channels.begin(), p.channels.end()), FeatureMapNode::hidden_widths(p),
                                 uint64_t(p.seed));
  if (p.init == FeatureMapNode::Init::kIdentity) set_identity(net);
  net.train(false);
  return net;
}

// What a sharing FeatureMap must agree on with the one it shares (as for Student's "share").
struct SharedFeatureMap {
  FeatureMapNode::Params params;
  Network net;
};

Network shared_network(const FeatureMapNode::Params& p, NodeEnv& env) {
  if (p.share.empty())
    return env
        .shared<SharedFeatureMap>(env.node_id(),
                                  [&] {
                                    return std::make_shared<SharedFeatureMap>(SharedFeatureMap{p, build_network(p)});
                                  })
        ->net;
  auto other = env.find<SharedFeatureMap>(p.share);
  FMAM_CHECK(other) << "param \"share\": no FeatureMap \"" << p.share
                    << "\" is declared before this node (declare the shared one first)";
  // Its hidden width, seed and init are the shared node's; the channels are checked against the
  // inputs, so they must agree.
  FMAM_CHECK(other->params.channels == p.channels)
      << "param \"share\": FeatureMap \"" << p.share << "\" has other channels than this node";
  return other->net;
}

}  // namespace

FeatureMapNode::FeatureMapNode(const Params& p) : params_(p), net_(build_network(p)) {
  FMAM_CHECK(p.share.empty()) << "param \"share\" needs a graph (the node is built alone here)";
}

FeatureMapNode::FeatureMapNode(const Params& p, NodeEnv& env) : params_(p), net_(shared_network(p, env)) {
  // The shared node's owner chose the precision; a sharing twin only trains.
  if (p.share.empty() && !env.training() && env.precision() == Precision::kBFloat16Mixed)
    net_.set_inference_precision(Precision::kBFloat16Mixed);
}

std::vector<at::Tensor> FeatureMapNode::forward(std::vector<at::Tensor> levels) const {
  if (!net_.is_training()) {
    c10::InferenceMode guard;  // per thread: set on whichever worker runs this frame
    return net_.forward(levels);
  }
  // Inference tensors (the frozen teacher's features) cannot be saved for backward: use copies.
  for (auto& t : levels)
    if (t.is_inference()) t = t.clone();
  return net_.forward(levels);
}

void FeatureMapNode::process(Context& ctx) {
  const auto& t = kInTeacher(ctx).get().levels;
  const auto& s = kInStudent(ctx).get().levels;
  check_levels_match(level_dims(t), "input \"teacher\"", level_dims(s), kInStudent.name, false);
  check_levels_match(param_levels(params_), "param \"channels\"", level_dims(t), kInTeacher.name, false);
  kOutTeacher(ctx).send(FeaturePyramid{forward(t)});
  kOutStudent(ctx).send(FeaturePyramid{forward(s)});
}

FMAM_REGISTER_NODE(FeatureMapNode);

}  // namespace fmam
