// A model file made in-process, without training: the graph's nodes as initialised, collected
// as `fmam train` collects them, at a small image size so that the CLI runs it in a moment.
// Tests corrupt it (bit flips, truncation, NaN weights, wrong fields) instead of committing
// binaries of tens of MB.
#pragma once

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "framework/executor.h"
#include "framework/graph.h"
#include "framework/model_file.h"

namespace fmam::test {

// `graph` relative to the source folder, e.g. "graphs/rkd.json".
inline Model tiny_model(const std::string& graph, int size = 64) {
  GraphConfig g = load_graph_file(std::string(FMAM_SOURCE_DIR) + "/" + graph);
  std::vector<ParamOverride> o;
  for (const auto& n : g.nodes)
    if (n.type == "Resize" || n.type == "UpsampleSum") {
      o.push_back({n.id, "width", Value(size)});
      o.push_back({n.id, "height", Value(size)});
    }
  apply_overrides(g, o);
  Executor ex(validate(g), RunOptions{});
  Model m;
  m.graph_name = g.name;
  std::ifstream f(std::string(FMAM_SOURCE_DIR) + "/" + graph);
  std::stringstream ss;
  ss << f.rdbuf();
  m.graph_json = ss.str();
  m.image_width = m.image_height = size;
  m.train_config = "{}";
  collect_model(ex, m);
  return m;
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline void write_bytes(const std::string& path, const std::string& b) { std::ofstream(path, std::ios::binary) << b; }

}  // namespace fmam::test
