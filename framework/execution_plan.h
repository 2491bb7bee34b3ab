// The executor's plan, compiled once per Executor from the validated graph and the run options:
// which vertices feed each node (a node waits for all of them), which nodes form the serial
// training tail and which streams enter it, and how many frames may be in flight. Every run
// reuses it; only the flow graph's per-run state (sequencers, the source) is made per run.
#pragma once

#include <memory>
#include <set>
#include <vector>

#include "framework/executor.h"

namespace fmam {

struct ExecutionPlan {
  // preds[i]: producer vertices of node i (-1 = the source); preds[n] are the sink's (the nodes
  // no other node consumes; the source if none).
  std::vector<std::set<int>> preds;
  std::vector<bool> in_tail;  // runs in the serial tail (training), not on the flow graph
  // serial[i]: node i takes one frame at a time, in input order: its contract says so, or it is
  // a Trainable node in a training run (autograd and BatchNorm's running statistics are not
  // for concurrent frames; a node's own lock would hide that from the plan). The tail is serial
  // anyway; this covers a Trainable node upstream of it.
  std::vector<bool> serial;
  std::vector<int> tail_inputs;  // streams entering the tail, stacked into batches
  bool has_tail = false;
  // Nodes whose outputs RunOptions::output_cache serves (all false without one): see
  // cached_nodes() in execution_plan.cpp.
  std::vector<bool> cached;
  int batching_nodes = 0;  // batchable nodes that run batched (batch > 1)
  int tokens = 0;          // frames in flight: max_in_flight, raised so every batcher can fill

  // Throws Error naming the node for a batchable node whose port types cannot be batched (run
  // before the nodes are built: no weights load for a graph that cannot run).
  static void check_batching(const ValidatedGraph& g, const RunOptions& options);
  // Throws Error naming the graph or node for a tail start that is no node, or a stream entering
  // the tail that cannot be stacked.
  static ExecutionPlan compile(const ValidatedGraph& g, const std::vector<std::unique_ptr<Node>>& nodes,
                               const RunOptions& options);
};

}  // namespace fmam
