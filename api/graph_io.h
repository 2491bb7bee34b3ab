// Connecting a graph to files: its Image inputs to ImageSource nodes (decoding runs on the graph,
// pipelined), its outputs to writers by data type (MapWriter, ScoreWriter, ImageWriter).
#pragma once

#include <string>

#include "framework/graph.h"

namespace fmam {

// Feeds every Image input from files when `from_files` (a graph input of another type is an
// error: nothing could feed it); without, Image inputs stay graph inputs that the caller sets
// per frame. If out_dir is set, each output is written there by type.
void attach_io(GraphConfig& g, bool from_files, const std::string& out_dir);

}  // namespace fmam
