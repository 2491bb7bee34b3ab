// libFuzzer target: the graph loader and validator (framework/graph.h parse_graph + validate)
// with every built-in node type registered, as `fmam check` runs them. Any outcome but a
// validated graph or an fmam::Error (GraphError lists every problem) is a finding.
// Build and run: tests/fuzz/run_fuzzers.sh.
#include <cstddef>
#include <cstdint>
#include <string>

#include "framework/error.h"
#include "framework/graph.h"
#include "framework/registry.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fmam::load_builtin_plugin();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    fmam::validate(fmam::parse_graph(std::string(reinterpret_cast<const char*>(data), size), "fuzz.json"));
  } catch (const fmam::Error&) {
  }
  return 0;
}
