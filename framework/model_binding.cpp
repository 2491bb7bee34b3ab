#include "framework/model_binding.h"

#include "framework/model_file.h"

namespace fmam {

std::vector<ModelBinding> image_size_bindings(int width, int height) {
  return {{"image_width", Value(width), true}, {"image_height", Value(height), true}};
}

std::vector<ModelBinding> model_bindings(const Model& m, double threshold) {
  std::vector<ModelBinding> b = image_size_bindings(m.image_width, m.image_height);
  if (m.map_lo && m.map_hi) {
    b.push_back({"map_lo", Value(*m.map_lo), false});
    b.push_back({"map_hi", Value(*m.map_hi), false});
  }
  if (threshold >= 0)
    b.push_back({"threshold", Value(threshold), true});
  else if (m.threshold)
    b.push_back({"threshold", Value(*m.threshold), false});
  return b;
}

bool calibration_applies(const Model& m, const std::string& graph_name) {
  return m.graph_name.empty() || m.graph_name == graph_name;
}

std::string calibration_mismatch(const Model& m, const std::string& model_file, const std::string& graph_name) {
  return model_file + " was calibrated on graph \"" + m.graph_name + "\"; graph \"" + graph_name +
         "\" scores on its own scale, so the model's threshold and heatmap range do not apply to it (give a "
         "threshold, e.g. --threshold, or run graph \"" +
         m.graph_name + "\")";
}

namespace {

bool graph_sets(const NodeConfig& n, const std::string& param) {
  for (const auto& [k, v] : n.params)
    if (k == param) return true;
  return false;
}

// A --set of a forced param to another value than the binding's: it would be replaced unseen.
void refuse_conflicting_set(const GraphConfig& g, const std::vector<ModelBinding>& bindings, const std::string& set_text,
                            const std::string& source, const Registry& registry) {
  const ParamOverride u = parse_override(set_text);
  for (const auto& n : g.nodes) {
    if (n.id != u.node_id) continue;
    const NodeType* t = registry.find(n.type);
    const ParamSpec* p = t ? t->contract.find_param(u.param) : nullptr;
    if (!p || p->model_field.empty()) continue;
    for (const auto& b : bindings) {
      if (!b.force || b.field != p->model_field || u.value.str() == b.value.str()) continue;
      throw Error("--set " + set_text + ": node \"" + n.id + "\" (" + n.type + ") takes \"" + u.param + "\" from the model's " +
                  b.field + " (" + b.value.str() + (source.empty() ? "" : ", in " + source) +
                  "); drop the --set, or train a model with the value you want (fmam train --set train.image_size=...)");
    }
  }
}

}  // namespace

void bind_params(GraphConfig& g, const std::vector<ModelBinding>& bindings, const std::vector<std::string>& user_sets,
                 const std::string& source, const Registry& registry) {
  for (const auto& s : user_sets) refuse_conflicting_set(g, bindings, s, source, registry);
  std::vector<ParamOverride> o;
  for (const auto& n : g.nodes) {
    const NodeType* t = registry.find(n.type);
    if (!t) continue;  // validate() names the unknown type
    for (const auto& p : t->contract.params()) {
      if (p.model_field.empty()) continue;
      for (const auto& b : bindings)
        if (b.field == p.model_field && (b.force || !graph_sets(n, p.name))) o.push_back({n.id, p.name, b.value});
    }
  }
  apply_overrides(g, o);
}

}  // namespace fmam
