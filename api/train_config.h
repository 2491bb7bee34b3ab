// The "train" section of a training graph, declared field by field like a node's params: every
// key has a type, a range and a meaning; an unknown or mistyped key is an error naming the file
// and the field, and all of a file's mistakes are reported at once (fmam check, fmam train).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "framework/graph.h"

namespace fmam {

struct Stage {
  std::string name;
  int epochs = 1;
  double lr = 1e-3, weight_decay = 0, l1 = 0;
  double beta1 = 0.9, beta2 = 0.999;                   // Adam's betas (RD4AD uses 0.5, 0.999)
  std::vector<std::string> train;                      // node ids whose weights this stage updates
  std::vector<std::pair<std::string, double>> losses;  // loss stream -> weight
  // Loss stream -> the only nodes it updates (default: every node in `train`). The paper trains
  // the feature mappings with AML alone (Eq. 7), the student with KD and AML:
  // "updates": {"loss_kd_fm": ["student"]}.
  std::map<std::string, std::vector<std::string>> updates;
};

struct TrainConfig {
  std::string inference_graph;  // relative to the training graph's folder
  int batch_size = 16;
  int image_width = 256, image_height = 256;  // train.image_size: N (N x N) or "WxH" ("512x128")
  int seed = 0;
  std::string precision = "auto";  // auto | fp32 | bf16-mixed
  // Whether an epoch ends with the last partial batch (false: it is trained on, as PyTorch's
  // DataLoader does by default and RD4AD's official loop does; with 54 images and batch 16 that
  // is 4 steps an epoch, not 3).
  bool drop_last = false;
  // MiB for the teacher pyramids of the normal images, kept from the first epoch for all later
  // ones (framework/output_cache.h); 0: off. One pyramid of resnet18 to layer3 at 256² is
  // 458,752 values (0.875 MiB in bf16, 1.75 MiB in fp32): the default holds MVTec AD's largest
  // training set (hazelnut, 391 images) in bf16, and bottle's 209 in fp32 too.
  long long teacher_cache_mb = 1024;
  // Training images the finished model is calibrated on for int8 inference (Pipeline::
  // calibrate_int8, in float32 through the inference graph; a few seconds); 0: none.
  int int8_calibration_images = 64;
  std::vector<Stage> stages;
};

// Splits --set overrides into node params (ids of g's nodes) and train settings (train.*, <stage>.*).
void split_overrides(const GraphConfig& g, const std::vector<std::string>& sets, std::vector<ParamOverride>& node_sets,
                     std::vector<ParamOverride>& train_sets);

// The train section of `g` with `sets` applied. Throws GraphError listing every problem, each
// naming g.file and the field ("train.stages[1] \"stage2\".lr").
TrainConfig parse_train_config(const GraphConfig& g, const std::vector<ParamOverride>& sets = {});
// The same checks, returned (fmam check), plus the graph's side: each stage's nodes and losses
// exist, and the inference graph file is there.
std::vector<std::string> train_config_problems(const GraphConfig& g);

// The declared fields, one line each, for --help and fmam describe train.
std::string train_fields_help();
// "256" for a square size, "512x128" (width x height) otherwise.
std::string image_size_text(int width, int height);

}  // namespace fmam
