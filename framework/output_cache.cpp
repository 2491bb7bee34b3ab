#include "framework/output_cache.h"

#include <c10/core/InferenceMode.h>

#include "framework/tensor_types.h"

namespace fmam {

std::string OutputCache::key(const std::string& node, const std::string& source, const std::vector<Packet>& inputs) {
  std::string k = node + "\n" + source;
  for (const auto& p : inputs) {
    k += "\n";
    if (p.holds<Tensor>())
      for (int64_t d : p.get<Tensor>().t.sizes()) k += std::to_string(d) + " ";
  }
  return k;
}

bool OutputCache::stores(const std::string& type_name) { return type_name == DataTypeName<FeaturePyramid>::value; }

bool OutputCache::lookup(const std::string& key, std::vector<Packet>& outputs) {
  std::vector<std::vector<at::Tensor>> levels;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = entries_.find(key);
    if (it == entries_.end()) {
      ++stats_.misses;
      return false;
    }
    ++stats_.hits;
    levels = it->second.levels;  // the tensors are shared, never modified: copied below
  }
  // Under InferenceMode, as the node's own outputs were made; a copy, so that no consumer can
  // change the stored values in place.
  c10::InferenceMode guard;
  outputs.clear();
  for (const auto& out : levels) {
    FeaturePyramid p;
    for (const auto& t : out) p.levels.push_back(bfloat16_ ? t.to(at::kFloat) : t.clone());
    outputs.push_back(Packet::make(std::move(p)));
  }
  return true;
}

void OutputCache::store(const std::string& key, const std::vector<Packet>& outputs) {
  Entry e;
  long long bytes = 0;
  {
    c10::InferenceMode guard;
    for (const auto& p : outputs) {
      std::vector<at::Tensor> levels;
      // A frame's levels are views into its batch's tensors: a contiguous copy keeps only them.
      for (const auto& t : p.get<FeaturePyramid>().levels) {
        levels.push_back(t.to(bfloat16_ ? at::kBFloat16 : at::kFloat, false, /*copy=*/true, at::MemoryFormat::Contiguous));
        bytes += (long long)levels.back().nbytes();
      }
      e.levels.push_back(std::move(levels));
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (entries_.count(key)) return;  // two frames of one file in flight at once: one copy is enough
  if (stats_.bytes + bytes > bound_) {
    ++stats_.refused;
    return;
  }
  entries_.emplace(key, std::move(e));
  stats_.bytes += bytes;
  ++stats_.entries;
}

OutputCache::Stats OutputCache::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

}  // namespace fmam
