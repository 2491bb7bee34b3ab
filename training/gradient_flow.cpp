#include "training/gradient_flow.h"

#include <vector>

namespace fmam {

namespace {

bool intersects(const WeightSet& a, const WeightSet& b) {
  for (const void* w : a)
    if (b.count(w)) return true;
  return false;
}

// Per node (graph order): the trained weights at it or upstream of it.
std::vector<WeightSet> weights_upstream(const ValidatedGraph& g, const std::map<std::string, WeightSet>& node_weights) {
  std::vector<WeightSet> up(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {  // topological order: producers come first
    auto it = node_weights.find(g.nodes[i].config.id);
    if (it != node_weights.end()) up[i] = it->second;
    for (int s : g.nodes[i].in_streams) {
      const int p = s >= 0 ? g.streams[size_t(s)].producer : -1;
      if (p >= 0) up[i].insert(up[size_t(p)].begin(), up[size_t(p)].end());
    }
  }
  return up;
}

// Per node: the loss streams it reaches (its own outputs or any consumer's, transitively).
std::vector<std::set<std::string>> losses_downstream(const ValidatedGraph& g,
                                                     const std::map<std::string, WeightSet>& loss_updates) {
  std::vector<std::set<std::string>> down(g.nodes.size());
  for (size_t k = g.nodes.size(); k-- > 0;) {  // reverse topological order: consumers first
    for (int s : g.nodes[k].out_streams)
      if (s >= 0 && loss_updates.count(g.streams[size_t(s)].name)) down[k].insert(g.streams[size_t(s)].name);
    for (int s : g.nodes[k].in_streams) {  // hand what k reaches to whoever produces k's inputs
      const int p = s >= 0 ? g.streams[size_t(s)].producer : -1;
      if (p >= 0) down[size_t(p)].insert(down[k].begin(), down[k].end());
    }
  }
  return down;
}

}  // namespace

std::set<std::string> nodes_without_gradients(const ValidatedGraph& g, const std::map<std::string, WeightSet>& node_weights,
                                              const std::map<std::string, WeightSet>& loss_updates) {
  const auto up = weights_upstream(g, node_weights);
  const auto down = losses_downstream(g, loss_updates);
  std::set<std::string> out;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    auto own = node_weights.find(g.nodes[i].config.id);
    if (own == node_weights.end() || own->second.empty()) continue;  // frozen: runs without autograd anyway
    bool needed = false;
    for (const auto& loss : down[i]) needed = needed || intersects(loss_updates.at(loss), up[i]);
    if (!needed) out.insert(g.nodes[i].config.id);
  }
  return out;
}

}  // namespace fmam
