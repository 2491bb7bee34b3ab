// Weight files: finding them, reading and writing state dicts, hashing them. No torch headers
// here (only the light at::Tensor), so nodes can include it freely.
//
// read_state_dict() reads what Python's torch.save writes (zip format, since torch 1.6): a plain
// dict and the OrderedDict of a model.state_dict() alike. torch::pickle_load in libtorch 1.13
// reads only the former (it turns an OrderedDict into None and cannot apply the _metadata BUILD),
// and torchvision's downloads (~/.cache/torch/hub/checkpoints/resnet18-f37072fd.pth, ...) are the
// latter, so the pickle is read by a small unpickler of our own over libtorch's zip reader.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace fmam {

using TensorMap = std::map<std::string, at::Tensor>;
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// name -> tensor of a torch.save'd dict of tensors (CPU; values as stored, any dtype). Throws
// fmam::Error naming the file (not found, legacy non-zip format, not a dict of tensors, ...).
TensorMap read_state_dict(const std::string& path);

// Writes a plain dict name -> tensor (in the given order) that torch.load and read_state_dict read.
void write_state_dict(const std::string& path, const NamedTensors& tensors);

// Lower-case hex SHA-256 of a file's bytes (what `sha256sum` prints).
std::string sha256_file(const std::string& path);

// Where find_weights() looked and what it found.
struct WeightsSearch {
  std::string path;                 // the file found, "" if none
  std::vector<std::string> places;  // every place looked, for the not-found message
  bool explicit_path = false;       // `requested` was a path: nothing else was searched
};

// Finds a weights file. `requested` is a param value: a path (used as given, relative to the
// current directory; an error if missing), a bare file name (searched like the defaults), or ""
// (search `default_names` in order). Search order for names:
//   $FMAM_WEIGHTS (a file: used as is; a folder: searched),
//   torchvision's cache: $TORCH_HOME/hub/checkpoints, else
//   ${XDG_CACHE_HOME:-~/.cache}/torch/hub/checkpoints,
//   ../shared/weights relative to the current directory,
//   <d>/shared/weights for the nearest ancestor d of the executable's folder that has one (the
//   repo's sibling). The places come from a ResourceLocator (framework/resource_locator.h).
WeightsSearch find_weights(const std::string& requested, const std::vector<std::string>& default_names);

// Collects missing / mis-shaped / unexpected tensor names for one error message.
class StateProblems {
 public:
  void missing(const std::string& name) { missing_.push_back(name); }
  void mis_shaped(const std::string& name, at::IntArrayRef got, at::IntArrayRef expected);
  void unexpected(const std::string& name) { unexpected_.push_back(name); }
  bool empty() const { return missing_.empty() && shaped_.empty() && unexpected_.empty(); }
  // "missing: a, b; mis-shaped: c [64] (expected [128]); unexpected: d" (10 names per kind at
  // most).
  std::string str() const;

 private:
  std::vector<std::string> missing_, shaped_, unexpected_;
};

// "[64, 3, 7, 7]".
std::string shape_str(at::IntArrayRef sizes);

}  // namespace fmam
