// Runs a validated graph over a stream of frames on a oneTBB flow graph: real pipelining (the
// next image decodes while the network works on this one), node concurrency as declared, a
// bounded number of frames in flight, results delivered in input order, and failures rethrown
// as NodeError with the node id, type, frame and source attached. TBB stays inside executor.cpp.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "framework/graph.h"

namespace fmam {

struct ExecutionPlan;
class OutputCache;

// One frame's packets, one slot per stream of the graph.
class Frame {
 public:
  Frame(const ValidatedGraph* g, long long id) : graph_(g), id_(id), streams_(g->streams.size()) {}
  long long id() const { return id_; }
  std::string source;  // file path, or "" for in-memory frames
  bool dropped = false;
  std::string drop_reason;  // why (an unreadable file: names the file and the node)

  // Graph inputs are set by the source callback; everything else by nodes.
  void set(const std::string& stream, Packet p);
  bool has(const std::string& stream) const;
  const Packet& packet(const std::string& stream) const;
  template <class T>
  const T& get(const std::string& stream) const {
    return packet(stream).get<T>();
  }
  Packet& slot(int stream) { return streams_[stream]; }
  const Packet& slot(int stream) const { return streams_[stream]; }
  const ValidatedGraph& graph() const { return *graph_; }

 private:
  const ValidatedGraph* graph_;
  long long id_;
  std::vector<Packet> streams_;
};

struct RunOptions {
  int max_in_flight = 8;  // frames between source and sink at once (memory bound)
  int batch = 1;          // frames stacked per call of a batchable node
  Device device = Device::kCpu;
  Precision precision = Precision::kFloat32;  // the networks' arithmetic (NodeEnv::precision)
  int threads = 0;                            // TBB worker threads; 0 = one per core
  long long first_frame_id = 0;               // ids are first_frame_id, +1, ... (epochs of training differ)
  // Training: these nodes and everything downstream of them run in input order on whole
  // batches of `batch` frames inside the serial sink, after which the batch sink runs
  // (backward + optimizer step). Weights change between batches, so batch k+1 must not enter
  // them before batch k has stepped; decoding, synthesis and the frozen teacher still pipeline.
  std::vector<std::string> tail_from;
  bool tail_trainable = false;  // also start the tail at every Trainable node
  // A training run: nodes are built for training (NodeEnv::training) and Trainable nodes run
  // one frame at a time (ExecutionPlan::serial).
  bool training() const { return tail_trainable || !tail_from.empty(); }
  // Training: where the outputs of frozen nodes fed only by deterministic nodes from the image
  // file are kept across runs (epochs, stages); null: none. See output_cache.h.
  std::shared_ptr<OutputCache> output_cache;
  // Training: nodes that run with autograd off, because no loss they feed trains their weights
  // or anything upstream (the trainer decides: training/gradient_flow.h). Their outputs carry no
  // graph; gradients elsewhere are unchanged.
  std::vector<std::string> without_autograd;
};

struct NodeStats {
  std::string id, type;
  long long calls = 0;
  double total_ms = 0;          // time inside process()
  std::vector<double> call_ms;  // per call, for medians
  double flops = 0;             // of its convolutions and matrix products, while a FlopCounting is alive
};

struct RunStats {
  long long frames = 0, dropped = 0;
  double wall_ms = 0;
  int peak_in_flight = 0;
  std::vector<NodeStats> nodes;  // graph order
  // [start, end) of every process() call per node, ms since run start (for overlap tests).
  std::vector<std::vector<std::pair<double, double>>> intervals;
};

class Executor {
 public:
  // Builds every node (weights load here, once, not per frame).
  Executor(const ValidatedGraph& g, RunOptions options = {});
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Called serially until it returns false; fills the frame's source and graph inputs.
  using Source = std::function<bool(Frame&)>;
  // Called serially, in input order, once per frame (dropped frames too: check frame.dropped).
  using Sink = std::function<void(const Frame&)>;

  // Called with the tail's batch frame (streams hold whole batches) and the frames in it.
  using BatchSink = std::function<void(Frame& batch, const std::vector<const Frame*>& frames)>;

  // Streams frames from source through the graph into sink. Throws NodeError on failure.
  RunStats run(const Source& source, const Sink& sink, bool record_intervals = false, const BatchSink& batch_sink = {});
  // Nodes that run in the serial tail (RunOptions::tail_from and their descendants).
  const std::vector<bool>& in_tail() const;
  // Ids of the nodes whose outputs RunOptions::output_cache serves (execution_plan.h).
  std::vector<std::string> cached_node_ids() const;

  const ValidatedGraph& graph() const { return graph_; }
  Node& node(const std::string& id);
  const RunOptions& options() const { return options_; }
  // Ids of the next run start here (training gives every epoch distinct ids, which seed the
  // per-frame randomness of anomaly synthesis).
  void set_first_frame_id(long long id) { options_.first_frame_id = id; }
  // RunOptions::without_autograd, from the next run on. Throws Error naming an id not in the graph.
  void set_without_autograd(const std::vector<std::string>& ids);

 private:
  void build_nodes();

  ValidatedGraph graph_;
  RunOptions options_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::unique_ptr<ExecutionPlan> plan_;                  // compiled once (execution_plan.h)
  std::map<std::string, std::shared_ptr<void>> shared_;  // NodeEnv::shared objects
};

}  // namespace fmam
