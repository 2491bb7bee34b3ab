// Which trained nodes of a training stage need no autograd graph: those whose outputs reach only
// losses that update none of their weights nor any trained weights upstream of them. In
// fmam_rkd_train.json's stage 2, "student_syn" (the student, shared, on the synthetic image)
// feeds only the angular margin loss, which updates the feature mappings alone ("updates"), so
// its forward pass need not record anything for backward: no activations kept, no graph built.
// Gradients stay what they were (the backward pass never entered that graph); the executor runs
// such nodes under NoGradGuard (RunOptions::without_autograd).
#pragma once

#include <map>
#include <set>
#include <string>

#include "framework/graph.h"

namespace fmam {

// Weights as identities (a shared module's tensors are the same objects in every node using it).
using WeightSet = std::set<const void*>;

// node_weights: node id -> the weights it trains in this stage (absent or empty: a frozen node).
// loss_updates: loss stream -> the weights it updates (every trained weight, unless the stage
// routes it with "updates"). Returns the ids of trained nodes none of whose downstream losses
// update a weight of theirs or of a trained node upstream.
std::set<std::string> nodes_without_gradients(const ValidatedGraph& g, const std::map<std::string, WeightSet>& node_weights,
                                              const std::map<std::string, WeightSet>& loss_updates);

}  // namespace fmam
