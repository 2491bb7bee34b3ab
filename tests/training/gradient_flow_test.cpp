// nodes_without_gradients on the recipes' own graphs, with weights as stand-in identities: which
// trained nodes a stage may run without autograd follows from who feeds which loss and which
// weights each loss updates, and a trained node upstream keeps autograd on downstream of it.
#include <gtest/gtest.h>

#include "api/graph_io.h"
#include "api/plugins.h"
#include "framework/graph.h"
#include "framework/model_binding.h"
#include "training/gradient_flow.h"

namespace fmam {
namespace {

const std::string kSrc = FMAM_SOURCE_DIR;

// A training graph as a stage runs it: cut to the nodes its losses need.
ValidatedGraph stage_graph(const std::string& file, const std::vector<std::string>& losses) {
  ensure_plugins();
  GraphConfig g = load_graph_file(kSrc + "/graphs/" + file);
  bind_params(g, image_size_bindings(64, 64));
  attach_io(g, true, "");
  return validate(prune_to_streams(g, losses));
}

using Ids = std::set<std::string>;
const int kWeights[3] = {};  // stand-ins: their addresses are the weights' identities
const void* const kStudent = &kWeights[0];
const void* const kMappings = &kWeights[1];
const void* const kTeacher = &kWeights[2];
const WeightSet kS{kStudent}, kF{kMappings}, kBoth{kStudent, kMappings};

// "student_syn" shares the student's weights, "fm_syn" the mappings'.
std::map<std::string, WeightSet> rkd_weights() { return {{"student", kS}, {"student_syn", kS}, {"fm", kF}, {"fm_syn", kF}}; }

TEST(GradientFlowTest, TheRecipesStudentOnTheSyntheticImageNeedsNoAutograd) {
  // fmam_rkd_train.json's stage 2: KD trains everything, AML only the mappings ("updates").
  const ValidatedGraph g = stage_graph("fmam_rkd_train.json", {"loss_kd", "loss_aml"});
  EXPECT_EQ(nodes_without_gradients(g, rkd_weights(), {{"loss_kd", kBoth}, {"loss_aml", kF}}), Ids{"student_syn"});
}

TEST(GradientFlowTest, AnAngularMarginLossThatTrainsTheStudentKeepsItsAutograd) {
  // The previous recipe: AML reaches the student through I' too.
  const ValidatedGraph g = stage_graph("fmam_rkd_train.json", {"loss_kd", "loss_aml"});
  EXPECT_EQ(nodes_without_gradients(g, rkd_weights(), {{"loss_kd", kBoth}, {"loss_aml", kBoth}}), Ids{});
}

TEST(GradientFlowTest, StageOneTrainsItsOnlyStudentWithAutograd) {
  const ValidatedGraph g = stage_graph("fmam_rkd_train.json", {"loss_kd"});
  EXPECT_EQ(nodes_without_gradients(g, {{"student", kS}}, {{"loss_kd", kS}}), Ids{});
}

TEST(GradientFlowTest, FrozenNodesAreNotListed) {
  // Only the mappings train: the students are frozen (they run in inference mode anyway).
  const ValidatedGraph g = stage_graph("fmam_rkd_train.json", {"loss_kd", "loss_aml"});
  EXPECT_EQ(nodes_without_gradients(g, {{"fm", kF}, {"fm_syn", kF}}, {{"loss_kd", kF}, {"loss_aml", kF}}), Ids{});
}

TEST(GradientFlowTest, ATrainedNodeUpstreamKeepsAutogradOnDownstream) {
  // Were the teacher on I' trained by AML, the student after it must carry the gradient back to
  // it, though AML does not update the student's own weights.
  const ValidatedGraph g = stage_graph("fmam_rkd_train.json", {"loss_kd", "loss_aml"});
  auto weights = rkd_weights();
  weights["teacher_syn"] = {kTeacher};
  EXPECT_EQ(nodes_without_gradients(g, weights, {{"loss_kd", kBoth}, {"loss_aml", {kMappings, kTeacher}}}), Ids{});
  // AML still not updating the teacher: it and the student on I' need none.
  EXPECT_EQ(nodes_without_gradients(g, weights, {{"loss_kd", kBoth}, {"loss_aml", kF}}), (Ids{"student_syn", "teacher_syn"}));
}

TEST(GradientFlowTest, TheSymmetricStudentFollowsTheSameRule) {
  const ValidatedGraph g = stage_graph("fmam_nkd_train.json", {"loss_kd", "loss_aml"});
  EXPECT_EQ(nodes_without_gradients(g, rkd_weights(), {{"loss_kd", kBoth}, {"loss_aml", kF}}), Ids{"student_syn"});
}

}  // namespace
}  // namespace fmam
