// Invoking one node of a running graph (internal to the executor): its inputs gathered from the
// frames' slots (stacked into one batch packet for several frames), process() timed, its outputs
// checked against the contract and split back into the frames; finish() after the node's last
// message; any failure rethrown as a NodeError naming the node, the frame and its source.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "framework/frame_state.h"

namespace fmam {

class NodeInvoker {
 public:
  // cached[i]: node i's outputs come from options.output_cache where it has them (execution_plan.h).
  NodeInvoker(const ValidatedGraph& g, std::vector<std::unique_ptr<Node>>& nodes, const RunOptions& options, RunStats& stats,
              bool record_intervals, const std::vector<bool>& cached);

  // A flow-graph message for node i: the live frames of `frames` (not dropped, not the
  // end-of-stream marker) go through process() together; finish() follows the node's last
  // message, which for an unlimited node need not be the end-of-stream marker itself.
  void body(size_t i, const std::vector<Msg>& frames);
  // process() of node i on `frames` as one call of `batch_size` frames.
  void invoke(size_t i, const std::vector<Msg>& frames, int batch_size);
  // Stream s of `frames` stacked into one batch packet. Frames of different shapes cannot stack:
  // the error names the stream, its producer and the first two frames that differ.
  Packet stack_batch(int s, const std::vector<Msg>& frames) const;
  NodeError error(size_t i, const FrameState& f, const std::string& what) const;
  // finish() of node i; a failure becomes a NodeError naming the node and finish().
  void finish(size_t i);

 private:
  void record(size_t i, std::chrono::steady_clock::time_point start, std::chrono::steady_clock::time_point end, double flops);
  void mark_dropped(size_t i, const std::vector<Msg>& frames, const std::string& reason);
  void store_outputs(size_t i, const std::vector<Msg>& frames, Context& ctx);
  // Fills node i's outputs of the frames the cache has; returns the others, with their keys.
  std::vector<Msg> serve_from_cache(size_t i, const std::vector<Msg>& frames, std::vector<std::string>& miss_keys);
  // process() of node i on the frames the cache lacked, then their outputs into the cache.
  void invoke_and_store(size_t i, const std::vector<Msg>& misses, const std::vector<std::string>& keys);

  const ValidatedGraph& graph_;
  std::vector<std::unique_ptr<Node>>& nodes_;
  const RunOptions& options_;
  RunStats& stats_;
  const bool record_intervals_;
  const std::vector<bool> cached_;
  std::vector<bool> without_autograd_;  // RunOptions::without_autograd, per node
  const std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
  std::vector<std::mutex> stat_mutex_;
  // Messages done and announced (by the end-of-stream marker's position) per node.
  std::unique_ptr<std::atomic<long long>[]> done_msgs_, total_msgs_;
};

}  // namespace fmam
