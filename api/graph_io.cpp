#include "api/graph_io.h"

#include <cstdio>
#include <set>

namespace fmam {

// Connects graph inputs to file sources and graph outputs to writers, by data type.
void attach_io(GraphConfig& g, bool from_files, const std::string& out_dir) {
  std::set<std::string> ids;
  for (const auto& n : g.nodes) ids.insert(n.id);
  auto fresh_id = [&](std::string base) {
    std::string id = base;
    for (int k = 2; ids.count(id); ++k) id = base + "_" + std::to_string(k);
    ids.insert(id);
    return id;
  };
  std::vector<std::pair<std::string, std::string>> kept_inputs;
  for (const auto& [stream, type] : g.inputs) {
    if (type == "Image" && from_files) {
      NodeConfig n;
      n.index = int(g.nodes.size());
      n.id = fresh_id("read_" + stream);
      n.type = "ImageSource";
      n.out = {{"image", stream}};
      g.nodes.push_back(n);
    } else {
      kept_inputs.emplace_back(stream, type);
    }
  }
  if (from_files) {
    if (!kept_inputs.empty())
      throw GraphError({g.file + ": graph input \"" + kept_inputs[0].first + "\" (" + kept_inputs[0].second +
                        ") cannot be fed from image files"});
    g.inputs.clear();
  }
  if (out_dir.empty()) return;
  int scalars = 0;
  for (const auto& [stream, type] : g.outputs) scalars += type == "Scalar";
  for (const auto& [stream, type] : g.outputs) {
    NodeConfig n;
    n.index = int(g.nodes.size());
    n.in = {{type == "Map2D" ? "map" : type == "Scalar" ? "score" : "image", stream}};
    n.params.emplace_back("dir", Value(out_dir));
    if (type == "Map2D") {
      n.type = "MapWriter";
      n.params.emplace_back("name", Value(stream));
    } else if (type == "Scalar") {
      n.type = "ScoreWriter";
      n.params.emplace_back("file", Value(scalars == 1 ? std::string("scores.csv") : stream + ".csv"));
      n.params.emplace_back("column", Value(stream));
    } else if (type == "Image") {
      n.type = "ImageWriter";
      n.params.emplace_back("name", Value(stream));
    } else {
      std::fprintf(
          stderr, "fmam: %s\n",
          ("graph output \"" + stream + "\" (" + type + ") is not written to files (no writer for " + type + ")").c_str());
      continue;
    }
    n.id = fresh_id("write_" + stream);
    g.nodes.push_back(n);
  }
}

}  // namespace fmam
