// Outputs of frozen, deterministic nodes kept for the length of one training run, so that work
// which gives the same result every epoch is done once. Training's normal images are not
// augmented and the teacher is frozen, so the teacher pyramid of an image is the same in every
// epoch of every stage: the first epoch computes and stores it, later ones read it back (about
// 45 ms of convolutions per 256² image saved each time).
//
// Which nodes may use it is decided from the graph (ExecutionPlan::cached): a node declared
// deterministic, not trained, whose every ancestor is deterministic back to the image source.
// Its outputs then depend on the file read and the input size alone, and that is the key: a
// stale entry cannot be found, because anything else that could change them (weights, params,
// precision) is fixed for the run that owns the cache. The synthetic branch (AnomalySynth draws
// new defects every epoch) is not deterministic, so its teacher keeps running.
//
// Only FeaturePyramid outputs are stored: the pyramid is the costly thing the frozen networks
// make, while a resized image is cheaper to recompute (~1 ms) than to keep. Entries are stored
// in bfloat16 under bf16-mixed training (the teacher computes in bfloat16 there, so nothing is
// lost) and in float32 under fp32 (bit-identical to recomputing). Once `bound_bytes` is reached
// further entries are not stored: those images are computed every epoch, as without a cache.
#pragma once

#include <ATen/core/Tensor.h>

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "framework/packet.h"

namespace fmam {

class OutputCache {
 public:
  struct Stats {
    long long entries = 0, bytes = 0;  // stored
    long long hits = 0, misses = 0;    // lookups that found / did not find an entry
    long long refused = 0;             // entries not stored because of the bound
  };

  OutputCache(long long bound_bytes, bool bfloat16) : bound_(bound_bytes), bfloat16_(bfloat16) {}
  OutputCache(const OutputCache&) = delete;
  OutputCache& operator=(const OutputCache&) = delete;

  // The key of `node`'s outputs for one frame: the node, the file the frame was read from, and
  // the sizes of the node's inputs (the training size may differ between runs of one process).
  static std::string key(const std::string& node, const std::string& source, const std::vector<Packet>& inputs);

  // Whether a packet of this type can be stored (FeaturePyramid).
  static bool stores(const std::string& type_name);

  // The stored outputs (fresh float32 copies a consumer may keep or modify), or false. Counts a
  // hit or a miss.
  bool lookup(const std::string& key, std::vector<Packet>& outputs);
  // Stores one frame's outputs unless the bound would be passed (then counts a refusal).
  void store(const std::string& key, const std::vector<Packet>& outputs);

  Stats stats() const;
  bool bfloat16() const { return bfloat16_; }
  long long bound_bytes() const { return bound_; }

 private:
  struct Entry {
    std::vector<std::vector<at::Tensor>> levels;  // per output, the pyramid's levels
  };
  const long long bound_;
  const bool bfloat16_;
  mutable std::mutex mutex_;  // nodes run on several TBB workers at once
  std::map<std::string, Entry> entries_;
  Stats stats_;
};

}  // namespace fmam
