#include "framework/execution_plan.h"

#include <algorithm>

#include "framework/output_cache.h"
#include "framework/stateful.h"

namespace fmam {

namespace {

std::string prefix(const ValidatedGraph& g, size_t i) {
  return node_prefix(g.config.file, g.nodes[i].config.id, g.nodes[i].config.type);
}

}  // namespace

// A batchable node run batched stacks every input and splits every output: their types must allow it.
void ExecutionPlan::check_batching(const ValidatedGraph& g, const RunOptions& o) {
  if (o.batch <= 1) return;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Contract& k = g.nodes[i].type->contract;
    if (!k.is_batchable()) continue;
    for (const auto& p : k.inputs()) {
      const DataTypeInfo* t = DataTypes::global().find(p.type);
      if (!t || !t->concat) throw Error(prefix(g, i) + ": input \"" + p.name + "\" of type " + p.type + " cannot be batched");
    }
    for (const auto& p : k.outputs()) {
      const DataTypeInfo* t = DataTypes::global().find(p.type);
      if (!t || !t->split) throw Error(prefix(g, i) + ": output \"" + p.name + "\" of type " + p.type + " cannot be batched");
    }
  }
}

namespace {

// The serial tail: the named nodes (and every Trainable one, if asked) and all their descendants
// (nodes are in topological order, so one forward sweep finds them).
std::vector<bool> tail_nodes(const ValidatedGraph& g, const std::vector<std::unique_ptr<Node>>& nodes, const RunOptions& o) {
  std::vector<bool> in_tail(g.nodes.size(), false);
  for (const auto& id : o.tail_from) {
    bool found = false;
    for (size_t i = 0; i < g.nodes.size(); ++i)
      if (g.nodes[i].config.id == id) in_tail[i] = found = true;
    if (!found) throw Error(g.config.file + ": no node \"" + id + "\" to start the training tail at");
  }
  if (o.tail_trainable)
    for (size_t i = 0; i < nodes.size(); ++i)
      if (dynamic_cast<Trainable*>(nodes[i].get())) in_tail[i] = true;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (int s : g.nodes[i].in_streams)
      if (s >= 0 && g.streams[s].producer >= 0 && in_tail[size_t(g.streams[s].producer)]) in_tail[i] = true;
  return in_tail;
}

bool from_outside_tail(const ValidatedGraph& g, const std::vector<bool>& in_tail, int s) {
  return g.streams[s].producer < 0 || !in_tail[size_t(g.streams[s].producer)];
}

// Streams entering the tail are stacked into batches: their types must allow it.
std::vector<int> tail_input_streams(const ValidatedGraph& g, const std::vector<bool>& in_tail) {
  std::vector<int> inputs;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (!in_tail[i]) continue;
    for (int s : g.nodes[i].in_streams) {
      if (s < 0 || !from_outside_tail(g, in_tail, s)) continue;
      const DataTypeInfo* t = DataTypes::global().find(g.streams[s].type);
      if (!t || !t->concat)
        throw Error(prefix(g, i) + ": stream \"" + g.streams[s].name + "\" (" + g.streams[s].type +
                    ") enters the training tail but cannot be batched");
      if (std::find(inputs.begin(), inputs.end(), s) == inputs.end()) inputs.push_back(s);
    }
  }
  return inputs;
}

// Predecessor vertices of every flow-graph node and of the sink (index n).
std::vector<std::set<int>> predecessors(const ValidatedGraph& g, const std::vector<bool>& in_tail) {
  const size_t n = g.nodes.size();
  std::vector<std::set<int>> preds(n + 1);
  std::vector<bool> has_succ(n, false);
  for (size_t i = 0; i < n; ++i) {
    if (in_tail[i]) continue;  // runs inside the sink, not on the flow graph
    const auto& ins = g.nodes[i].in_streams;
    if (std::all_of(ins.begin(), ins.end(), [](int s) { return s < 0; })) preds[i].insert(-1);
    for (int s : ins) {
      if (s < 0) continue;
      const int p = g.streams[s].producer;
      preds[i].insert(p);
      if (p >= 0) has_succ[size_t(p)] = true;
    }
  }
  for (size_t i = 0; i < n; ++i)
    if (!has_succ[i] && !in_tail[i]) preds[n].insert(int(i));
  if (preds[n].empty()) preds[n].insert(-1);
  return preds;
}

// The nodes whose outputs a training run may reuse across epochs: their outputs depend on the
// frame's file and nothing else. That holds for a deterministic node (Contract::deterministic)
// that is not trained, when every node upstream of it is deterministic and the chain starts at a
// node with no inputs (the image source, which reads the frame's file), not at a graph input set
// by the caller (an in-memory frame has no file to key on). Nodes in the serial tail are trained
// or fed by trained ones, so never qualify. Only nodes whose every output the cache can store
// are chosen (output_cache.h: pyramids).
std::vector<bool> cached_nodes(const ValidatedGraph& g, const std::vector<std::unique_ptr<Node>>& nodes,
                               const std::vector<bool>& in_tail) {
  const size_t n = g.nodes.size();
  std::vector<bool> from_file(n, false), cached(n, false);
  for (size_t i = 0; i < n; ++i) {  // topological order: producers first
    const ValidatedNode& vn = g.nodes[i];
    bool ok = vn.type->contract.is_deterministic() && !dynamic_cast<const Trainable*>(nodes[i].get());
    for (int s : vn.in_streams)
      if (s >= 0) ok = ok && g.streams[size_t(s)].producer >= 0 && from_file[size_t(g.streams[size_t(s)].producer)];
    from_file[i] = ok;
    bool storable = !vn.out_streams.empty();
    for (const auto& o : vn.type->contract.outputs()) storable = storable && OutputCache::stores(o.type);
    cached[i] = ok && storable && !in_tail[i] && !vn.in_streams.empty();
  }
  return cached;
}

std::vector<bool> serial_nodes(const ValidatedGraph& g, const std::vector<std::unique_ptr<Node>>& nodes, const RunOptions& o) {
  std::vector<bool> serial(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i)
    serial[i] = g.nodes[i].type->contract.concurrency() == Concurrency::kSerial ||
                (o.training() && dynamic_cast<const Trainable*>(nodes[i].get()));
  return serial;
}

}  // namespace

ExecutionPlan ExecutionPlan::compile(const ValidatedGraph& g, const std::vector<std::unique_ptr<Node>>& nodes,
                                     const RunOptions& options) {
  ExecutionPlan p;
  p.in_tail = tail_nodes(g, nodes, options);
  p.serial = serial_nodes(g, nodes, options);
  p.tail_inputs = tail_input_streams(g, p.in_tail);
  p.has_tail = std::find(p.in_tail.begin(), p.in_tail.end(), true) != p.in_tail.end();
  p.preds = predecessors(g, p.in_tail);
  p.cached = options.output_cache ? cached_nodes(g, nodes, p.in_tail) : std::vector<bool>(g.nodes.size(), false);
  for (const auto& vn : g.nodes) p.batching_nodes += (vn.type->contract.is_batchable() && options.batch > 1);
  // A batcher holds up to batch-1 frames waiting for more; enough tokens that every batcher can
  // fill while frames still flow.
  p.tokens = std::max(options.max_in_flight, p.batching_nodes * (options.batch - 1) + options.batch);
  return p;
}

}  // namespace fmam
