#include "nodes/feature_map_node.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <map>

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
  for (int c : p.channels)
    h.push_back(std::max<int64_t>(1, std::llround(double(p.hidden_ratio) * c)));
  return h;
}

Shapes FeatureMapNode::infer(const Params& p, const Shapes& in) {
  check_channels_param(p);
  const Shape& t = in.at(kInTeacher);
  const Shape& s = in.at(kInStudent);
  // Teacher vs student first (the usual wiring mistake), then both against param "channels".
  if (t.known && s.known)
    check_levels_match(t.levels, "input \"teacher\"", s.levels, kInStudent.name, false);
  if (t.known)
    check_levels_match(param_levels(p), "param \"channels\"", t.levels, kInTeacher.name, false);
  if (s.known)
    check_levels_match(param_levels(p), "param \"channels\"", s.levels, kInStudent.name, false);
  Shapes out{{kOutTeacher, t.known ? t : Shape::pyramid(param_levels(p))},
             {kOutStudent, s.known ? s : Shape::pyramid(param_levels(p))}};
  // The synthetic pair: both or neither, each like its normal counterpart.
  if (in.has(kInTeacherSyn) != in.has(kInStudentSyn))
    throw PortError("input", in.has(kInTeacherSyn) ? kInStudentSyn.name : kInTeacherSyn.name,
                    "is not connected; the synthetic inputs come as a pair");
  if (in.has(kInTeacherSyn)) {
    const Shape& ts = in.at(kInTeacherSyn);
    const Shape& ss = in.at(kInStudentSyn);
    if (ts.known) check_levels_match(param_levels(p), "param \"channels\"", ts.levels, kInTeacherSyn.name, false);
    if (ss.known) check_levels_match(param_levels(p), "param \"channels\"", ss.levels, kInStudentSyn.name, false);
    out.set(kOutTeacherSyn, ts.known ? ts : Shape::pyramid(param_levels(p)));
    out.set(kOutStudentSyn, ss.known ? ss : Shape::pyramid(param_levels(p)));
  }
  return out;
}

FeatureMapNode::FeatureMapNode(const Params& p)
    : params_(p), net_([&] {
        check_channels_param(p);
        return make_feature_map(std::vector<int64_t>(p.channels.begin(), p.channels.end()),
                                hidden_widths(p), uint64_t(p.seed));
      }()) {
  if (p.init == Init::kIdentity) set_identity(net_);
  net_.train(false);
}

FeatureMapNode::FeatureMapNode(const Params& p, NodeEnv& env) : FeatureMapNode(p) {
  if (!env.training() && env.precision() == Precision::kBFloat16Mixed && env.device() == Device::kCpu)
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
  check_levels_match(param_levels(params_), "param \"channels\"", level_dims(t), kInTeacher.name,
                     false);
  kOutTeacher(ctx).send(FeaturePyramid{forward(t)});
  kOutStudent(ctx).send(FeaturePyramid{forward(s)});
  if (kInTeacherSyn(ctx).has() && kInStudentSyn(ctx).has()) {
    const auto& ts = kInTeacherSyn(ctx).get().levels;
    const auto& ss = kInStudentSyn(ctx).get().levels;
    check_levels_match(param_levels(params_), "param \"channels\"", level_dims(ts), kInTeacherSyn.name, false);
    check_levels_match(param_levels(params_), "param \"channels\"", level_dims(ss), kInStudentSyn.name, false);
    kOutTeacherSyn(ctx).send(FeaturePyramid{forward(ts)});
    kOutStudentSyn(ctx).send(FeaturePyramid{forward(ss)});
  }
}

FMAM_REGISTER_NODE(FeatureMapNode);

}  // namespace fmam
