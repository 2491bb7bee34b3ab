// Interfaces a node implements when a model file concerns it (torch types: include only from
// files that already use libtorch).
//  - Stateful: learned tensors (Student, FeatureMap) saved into and loaded from model files;
//    Trainable: those the trainer updates.
//  - Int8Quantizable: frozen networks that can run in int8 once calibrated; their activation
//    ranges are saved into model files too (fmam quantize).
//  - Fingerprinted: fixed inputs a model depends on (the teacher's weights file), recorded in the
//    model so it is never applied to features it was not trained against.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "framework/node.h"  // Precision
#include "framework/tensor_types.h"

namespace fmam {

class Stateful {
 public:
  virtual ~Stateful();  // out of line: one typeinfo, in libfmam_core, for every plugin
  // Parameters and buffers under stable names ("ocbe.conv1.weight").
  virtual std::vector<std::pair<std::string, at::Tensor>> named_state() const = 0;
  // Copies `state` in; throws Error naming every missing or mis-shaped tensor.
  virtual void load_state(const std::map<std::string, at::Tensor>& state) = 0;
};

// A Stateful node that training updates.
class Trainable : public Stateful {
 public:
  // The tensors an optimizer updates (requires_grad).
  virtual std::vector<at::Tensor> parameters() const = 0;
  // true: process() builds autograd graphs and BatchNorm uses batch statistics.
  virtual void set_training(bool on) = 0;
  // Asks for `p` in the training forward pass (inference: NodeEnv::precision). Returns false
  // when the node cannot, and keeps float32; the default supports float32 only.
  virtual bool set_precision(Precision p) { return p == Precision::kFloat32; }
};

// A frozen node that can run in int8 (--precision int8). Static quantization needs the range of
// every activation the int8 network quantises before the first frame: they are recorded on
// defect-free images in float32 (fmam quantize) and kept in the model file.
class Int8Quantizable {
 public:
  virtual ~Int8Quantizable();
  // While on, every frame the node processes in float32 also widens the recorded ranges.
  virtual void observe_activation_ranges(bool on) = 0;
  // What was recorded: activation point -> float32 [min, max].
  virtual std::map<std::string, at::Tensor> activation_ranges() const = 0;
  // Runs in int8 from these ranges from now on. Throws Error naming a missing or invalid point.
  virtual void use_int8(const std::map<std::string, at::Tensor>& ranges) = 0;
};

class Fingerprinted {
 public:
  virtual ~Fingerprinted();
  // What the node computes, as text (e.g. the architecture and a summary of its outputs on a
  // fixed probe input), recorded in model files.
  virtual std::string fingerprint() const = 0;
  // Whether a recorded fingerprint means the same behaviour (default: equal text).
  virtual bool same_as(const std::string& recorded) const { return recorded == fingerprint(); }
};

}  // namespace fmam
