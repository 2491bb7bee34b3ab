// The fleet manifest: one product per row of a CSV file, trained by `fmam fleet`.
//
//   product,data,graph,overrides
//   bottle,../shared/data/mvtec_ad/bottle,graphs/fmam_rkd_train.json,stage1.epochs=10 stage2.epochs=10
//
// The header row names the columns (any order; "overrides" may be left out). Lines starting with
// '#' and blank lines are skipped; fields follow RFC 4180 (double quotes around a field that holds a
// comma, "" for a quote). Relative paths are relative to the manifest's folder. Overrides are
// fmam train's --set KEY=VALUE settings, separated by spaces.
#pragma once

#include <string>
#include <vector>

namespace fmam::fleet {

struct Product {
  std::string name;                    // folder name under the fleet's output: [A-Za-z0-9._-]
  std::string data;                    // category folder, MVTec AD layout (absolute after reading)
  std::string graph;                   // training graph (absolute after reading)
  std::string inference_graph;         // from the training graph's train.inference_graph
  std::vector<std::string> overrides;  // KEY=VALUE, passed to fmam train as --set
  int line = 0;                        // line in the manifest, for messages
};

// Reads and checks a manifest: every problem at once, each as "FILE:LINE: column "X": problem",
// in one Error. Checks that product names are unique folder names and overrides are KEY=VALUE;
// with `check_paths`, also that each data folder and training graph exist and that the graph
// names its inference graph. Array tasks read without it, so that one product's missing folder
// fails that product alone (recorded in its FAILED marker), not every task of the array.
std::vector<Product> read_manifest(const std::string& path, bool check_paths = true);

// The manifest written back with absolute paths, in the canonical column order (what array
// tasks read, so they do not depend on the submitting shell's working directory).
std::string manifest_csv(const std::vector<Product>& products);

// One CSV record split into fields (RFC 4180 quoting); throws std::invalid_argument on an
// unterminated quote.
std::vector<std::string> split_csv(const std::string& line);
// A field quoted if it needs to be.
std::string csv_field(const std::string& s);

}  // namespace fmam::fleet
