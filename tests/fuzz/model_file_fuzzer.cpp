// libFuzzer target: the model-file loader (framework/model_file.h parse_model: unpickling,
// every field's type, the tensors' checksum, NaN checks). Any outcome but a Model or an
// fmam::Error naming the file is a finding. libtorch's unpickler itself is not instrumented
// (Debian's build), so the coverage that guides the fuzzer is model_file.cpp's; crashes inside
// libtorch are still caught by the signal handler and AddressSanitizer's interceptors.
// Build and run: tests/fuzz/run_fuzzers.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include <ATen/ATen.h>

#include "framework/error.h"
#include "framework/model_file.h"

// With FMAM_FUZZ_SEED_OUT=FILE, writes a small but complete model there first (every field, two
// tiny tensors, a checkpoint's progress and optimizer state): the seed of the corpus, small
// enough for the fuzzer to mutate quickly (a trained model is tens of MB).
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* out = std::getenv("FMAM_FUZZ_SEED_OUT")) {
    fmam::Model m;
    m.graph_name = "rkd";
    m.graph_json = R"({"schema": 1, "name": "rkd", "nodes": []})";
    m.fingerprints["teacher"] = "resnet18 layers 1 2 3 probe 0.25";
    m.image_width = 64;
    m.image_height = 48;
    m.train_config = R"({"batch_size": 2, "history": []})";
    m.threshold = 0.5;
    m.map_lo = 0.1;
    m.map_hi = 0.9;
    m.tensors["student/w"] = at::arange(12, at::kFloat).reshape({4, 3});
    m.tensors["fm/b"] = at::zeros({3});
    m.progress = R"({"batches": 0, "epoch": 1, "history": [], "stage": 0})";
    m.optimizer_state["student/w.exp_avg"] = at::ones({4, 3});
    fmam::save_model(out, m);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    fmam::parse_model(std::vector<char>(data, data + size), "fuzz.fmam");
  } catch (const fmam::Error&) {
  }
  return 0;
}
