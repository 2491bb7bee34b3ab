// Model files: one file per trained model. A torch zip archive (torch::pickle_save of a dict,
// readable by Python's torch.load) holding the learned tensors of every Stateful node (keyed
// "<node_id>/<tensor>"), the graph it belongs to, the fingerprints of fixed inputs (the teacher's
// weights), image size and normalisation, the training config, and, once calibrated, the score
// threshold and the colour range of heatmaps. Writes are atomic.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "framework/executor.h"
#include "framework/tensor_types.h"

namespace fmam {

struct Model {
  static constexpr int kVersion = 1;
  std::string graph_name;                           // e.g. "fmam_rkd"
  std::string graph_json;                           // the inference graph the tensors belong to
  std::map<std::string, std::string> fingerprints;  // node id -> Fingerprinted::fingerprint()
  int image_width = 256, image_height = 256;
  std::string normalize = "imagenet";
  std::string train_config;                   // JSON text: schedule, losses, seed, data, epochs done
  std::optional<double> threshold;            // image score above which an image fails
  std::optional<double> map_lo, map_hi;       // anomaly-map values drawn coldest / hottest
  std::map<std::string, at::Tensor> tensors;  // "<node_id>/<name>"
  // int8 inference (fmam quantize): "<node_id>/<activation point>" -> float32 [min, max] seen on
  // defect-free images, and how they were recorded (JSON text). Empty: not calibrated for int8.
  std::map<std::string, at::Tensor> int8_ranges;
  std::string int8_calibration;
  // Training checkpoint (empty in a finished model): where training stopped, as JSON text, and
  // the optimizer's state, so `fmam train --resume` continues bit-exactly.
  std::string progress;
  std::map<std::string, at::Tensor> optimizer_state;
};

// Throws Error naming the file on any problem.
void save_model(const std::string& path, const Model& m);
Model load_model(const std::string& path);
// The same for a file's bytes already in memory (`path` is named in errors; the fuzz target's entry).
Model parse_model(const std::vector<char>& bytes, const std::string& path);

// Gathers the tensors and fingerprints of an executor's nodes into `m`.
void collect_model(Executor& ex, Model& m);
// Loads `m` into an executor's nodes. Errors name the model file, the node and the tensor:
// a tensor for a node the graph lacks, a Stateful node the model lacks, a shape mismatch,
// a different fingerprint.
void apply_model(const Model& m, Executor& ex, const std::string& model_path);

// The activation ranges an executor's Int8Quantizable nodes recorded, into m.int8_ranges
// (replacing what it held).
void collect_int8_ranges(Executor& ex, Model& m);
// Switches the executor's Int8Quantizable nodes to int8 with the model's ranges. A model without
// them is an error naming the file and saying how to calibrate it.
void apply_int8(const Model& m, Executor& ex, const std::string& model_path);
// "the model is not calibrated for int8; run fmam quantize ..." for that graph and model.
std::string not_calibrated_for_int8(const std::string& graph_file, const std::string& model_path);

}  // namespace fmam
