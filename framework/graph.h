// Graph JSON: parsing and validation. validate() checks everything before anything runs and
// reports ALL problems in one GraphError, each naming the file, node id, type and field.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "framework/node.h"
#include "framework/registry.h"

namespace fmam {

struct NodeConfig {
  int index = 0;       // position in "nodes"
  bool parsed = true;  // false: its JSON was malformed (the problem is in GraphConfig::problems)
  std::string id, type, doc;
  std::vector<std::pair<std::string, std::string>> in, out;  // port -> stream, in file order
  std::vector<std::pair<std::string, Value>> params;         // in file order
};

struct GraphConfig {
  std::string file;  // shown in messages
  std::string name, doc;
  std::vector<std::pair<std::string, std::string>> inputs, outputs;  // stream -> data type
  std::vector<NodeConfig> nodes;
  std::string train_json;  // the "train" section of a training graph (read by fmam train), or ""
  // Problems found while parsing (unknown fields, wrong field types). validate() reports them
  // together with its own, so a user sees every mistake of a file at once.
  std::vector<std::string> problems;
};

// Parses graph JSON. Syntax errors throw GraphError naming the file, line and column; other
// problems are kept in GraphConfig::problems for validate() to report with the rest.
GraphConfig parse_graph(const std::string& json_text, const std::string& file);
GraphConfig load_graph_file(const std::string& path);

// "node_id.param=value" (value in JSON, or a bare string): applied before validation.
struct ParamOverride {
  std::string node_id, param;
  Value value;
};
ParamOverride parse_override(const std::string& text);  // throws Error on bad syntax
void apply_overrides(GraphConfig& g, const std::vector<ParamOverride>& overrides);

// Keeps only the nodes needed to produce `streams` (their ancestors); the graph's outputs become
// those streams. A training stage runs just the branches its losses need.
GraphConfig prune_to_streams(const GraphConfig& g, const std::vector<std::string>& streams);

struct StreamInfo {
  std::string name;
  std::string type;
  Shape shape = Shape::unknown();
  int producer = -1;  // index into ValidatedGraph::nodes, -1 = graph input
  std::vector<int> consumers;
};

struct ValidatedNode {
  NodeConfig config;
  const NodeType* type = nullptr;
  std::shared_ptr<void> params;  // the node's Params struct, filled and range-checked
  Shapes in_shapes, out_shapes;
  // Stream index per declared input/output port (-1 = not connected), contract order.
  std::vector<int> in_streams, out_streams;
};

struct ValidatedGraph {
  GraphConfig config;
  std::vector<ValidatedNode> nodes;  // topological order
  std::vector<StreamInfo> streams;
  std::map<std::string, int> stream_index;
  std::vector<int> input_streams, output_streams;
  int stream(const std::string& name) const {
    auto it = stream_index.find(name);
    return it == stream_index.end() ? -1 : it->second;
  }
};

ValidatedGraph validate(const GraphConfig& g, const Registry& registry = Registry::global());

// "<file>: node "<id>" (<Type>)" — the prefix every message about a node starts with.
std::string node_prefix(const std::string& file, const std::string& id, const std::string& type);

// Graphviz text of a graph (streams as edge labels, graph inputs/outputs as boxes).
std::string to_dot(const ValidatedGraph& g);

}  // namespace fmam
