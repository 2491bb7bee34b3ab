// For the map ablations (graphs/ablations/): an RKD+FMAM model and an RKD model that share their
// teacher and student, and the fp32 map a graph gives for one image, so an ablation graph's map
// can be checked against the shipped graphs' maps on the same weights.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <opencv2/core.hpp>

#include "fmam/pipeline.h"
#include "tests/support/tiny_model.h"

namespace fmam::test {

// Saves dir/fmam_rkd.fmam (graphs/fmam_rkd.json, random mappings) and dir/rkd.fmam
// (graphs/rkd.json) with the same teacher and student weights, at `size` x `size`.
inline void save_fmam_rkd_and_rkd_twins(const std::filesystem::path& dir, int size = 64) {
  Model fmam = tiny_model("graphs/fmam_rkd.json", size);
  save_model((dir / "fmam_rkd.fmam").string(), fmam);
  Model rkd = tiny_model("graphs/rkd.json", size);
  for (auto& [name, t] : rkd.tensors) t = fmam.tensors.at(name);
  save_model((dir / "rkd.fmam").string(), rkd);
}

// The anomaly map `graph` (relative to the source folder) gives `image` in fp32.
inline cv::Mat fp32_map(const std::string& graph, const std::string& model, const cv::Mat& image,
                        std::vector<std::string> overrides = {}) {
  PipelineOptions o;
  o.model = model;
  o.precision = "fp32";
  o.overrides = std::move(overrides);
  return Pipeline(std::string(FMAM_SOURCE_DIR) + "/" + graph, o).detect(image).map;
}

}  // namespace fmam::test
