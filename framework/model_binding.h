// Model-bound params: values a trained model decides, reaching every node whose contract binds
// them (Contract::from_model) — the image size every Resize and UpsampleSum runs at, the heatmap
// colour range and the verdict threshold of every Overlay and MapWriter — without code that
// names node types. A plugin's node binds a param the same way.
#pragma once

#include <string>
#include <vector>

#include "framework/graph.h"

namespace fmam {

struct Model;

// One value for the params bound to `field`.
struct ModelBinding {
  std::string field;  // "image_width", "image_height", "map_lo", "map_hi", "threshold"
  Value value;
  // true: the value is the model's (image size) or the caller's explicit choice, and replaces
  // what the graph says; false: a default (calibration), used where the graph sets nothing.
  bool force = false;
};

// What a model binds: its image size (forced), calibrated range and threshold (defaults).
// `threshold` >= 0 (a caller's explicit one) replaces the model's, forced.
std::vector<ModelBinding> model_bindings(const Model& m, double threshold = -1);
// Whether a model's calibration (threshold, heatmap range) holds for `graph_name`: it was made on
// the model's own inference graph, and another graph (an ablation on the same weights, say)
// scores on another scale. A model without a graph name (none was recorded) is taken as calibrated.
bool calibration_applies(const Model& m, const std::string& graph_name);
// Why it does not, for a warning or an error: names the model file, both graphs and the way out.
std::string calibration_mismatch(const Model& m, const std::string& model_file, const std::string& graph_name);
// The image size alone (training: train.image_size), forced.
std::vector<ModelBinding> image_size_bindings(int width, int height);

// Applies bindings to every node param bound to their field. A user --set ("node.param=value",
// from `user_sets`) that a forced binding would silently replace with another value is an error
// naming the --set, the node and `source` (the model file).
void bind_params(GraphConfig& g, const std::vector<ModelBinding>& bindings, const std::vector<std::string>& user_sets = {},
                 const std::string& source = "", const Registry& registry = Registry::global());

}  // namespace fmam
