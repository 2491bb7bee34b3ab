// The executor: maps a validated graph onto a oneTBB flow graph.
//
//   input_node (mints frames) -> limiter_node (frames in flight) -> serial fill (user source)
//   -> per node:
//     [gate: waits for all its producer nodes] -> [sequencer: input order, for serial and
//     batching nodes] -> [batcher] -> function_node(process) -> [splitter]
//   -> sink gate -> sequencer -> serial sink (user callback) -> limiter decrement.
//
// One message is a shared FrameState: every stream of the frame has its own slot, written by its
// single producer before any consumer runs (the flow graph's edges order them), so nodes on
// parallel branches write distinct slots without locks.
#include "framework/executor.h"

#include "framework/stateful.h"

#include <tbb/flow_graph.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <mutex>
#include <set>

namespace fmam {

namespace flow = tbb::flow;
using Clock = std::chrono::steady_clock;

namespace {

struct FrameState {
  FrameState(const ValidatedGraph* g, long long id, size_t counters) : frame(g, id), pending(new std::atomic<int>[counters]) {}
  Frame frame;
  bool eos = false;
  std::atomic<bool> dropped{false};
  std::mutex drop_mutex;
  std::unique_ptr<std::atomic<int>[]> pending;  // per node (+ sink): producers still to finish
};
using Msg = std::shared_ptr<FrameState>;
using BatchMsg = std::shared_ptr<std::vector<Msg>>;

}  // namespace

Node& Executor::node(const std::string& id) {
  for (size_t i = 0; i < graph_.nodes.size(); ++i)
    if (graph_.nodes[i].config.id == id) return *nodes_[i];
  throw Error("no node \"" + id + "\" in graph " + graph_.config.file);
}

Executor::Executor(const ValidatedGraph& g, RunOptions options) : graph_(g), options_(options) {
  if (options_.max_in_flight < 1) options_.max_in_flight = 1;
  if (options_.batch < 1) options_.batch = 1;
  for (const auto& vn : graph_.nodes) {
    const std::string pre = node_prefix(graph_.config.file, vn.config.id, vn.config.type);
    if (vn.type->contract.is_batchable() && options_.batch > 1) {
      for (const auto& p : vn.type->contract.inputs()) {
        const DataTypeInfo* t = DataTypes::global().find(p.type);
        if (!t || !t->concat) throw Error(pre + ": input \"" + p.name + "\" of type " + p.type + " cannot be batched");
      }
      for (const auto& p : vn.type->contract.outputs()) {
        const DataTypeInfo* t = DataTypes::global().find(p.type);
        if (!t || !t->split) throw Error(pre + ": output \"" + p.name + "\" of type " + p.type + " cannot be batched");
      }
    }
  }
  // Built in file order, not topological order: a node that shares another's weights (param
  // "share") is declared after it, and so finds it built.
  std::vector<size_t> by_file(graph_.nodes.size());
  for (size_t i = 0; i < by_file.size(); ++i) by_file[i] = i;
  std::sort(by_file.begin(), by_file.end(),
            [&](size_t a, size_t b) { return graph_.nodes[a].config.index < graph_.nodes[b].config.index; });
  nodes_.resize(graph_.nodes.size());
  for (size_t i : by_file) {
    const auto& vn = graph_.nodes[i];
    try {
      NodeEnv env(vn.config.id, options_.device, &shared_);
      nodes_[i] = vn.type->make(vn.params.get(), env);
    } catch (const std::exception& e) {
      throw Error(node_prefix(graph_.config.file, vn.config.id, vn.config.type) + ": " + e.what());
    }
  }
  // The serial tail: the named nodes and all their descendants (nodes are in topological order).
  in_tail_.assign(graph_.nodes.size(), false);
  for (const auto& id : options_.tail_from) {
    bool found = false;
    for (size_t i = 0; i < graph_.nodes.size(); ++i)
      if (graph_.nodes[i].config.id == id) in_tail_[i] = found = true;
    if (!found) throw Error(graph_.config.file + ": no node \"" + id + "\" to start the training tail at");
  }
  if (options_.tail_trainable)
    for (size_t i = 0; i < nodes_.size(); ++i)
      if (dynamic_cast<Trainable*>(nodes_[i].get())) in_tail_[i] = true;
  for (size_t i = 0; i < graph_.nodes.size(); ++i)
    for (int s : graph_.nodes[i].in_streams)
      if (s >= 0 && graph_.streams[s].producer >= 0 && in_tail_[graph_.streams[s].producer]) in_tail_[i] = true;
  // Streams entering the tail are stacked into batches: their types must allow it.
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    if (!in_tail_[i]) continue;
    for (int s : graph_.nodes[i].in_streams) {
      if (s < 0 || (graph_.streams[s].producer >= 0 && in_tail_[graph_.streams[s].producer])) continue;
      const DataTypeInfo* t = DataTypes::global().find(graph_.streams[s].type);
      if (!t || !t->concat)
        throw Error(node_prefix(graph_.config.file, graph_.nodes[i].config.id, graph_.nodes[i].config.type) +
                    ": stream \"" + graph_.streams[s].name + "\" (" + graph_.streams[s].type +
                    ") enters the training tail but cannot be batched");
    }
  }
}

Executor::~Executor() = default;

RunStats Executor::run(const Source& source, const Sink& sink, bool record_intervals, const BatchSink& batch_sink) {
  const size_t n = graph_.nodes.size();
  const int batch = options_.batch;
  // A batcher holds up to batch-1 frames waiting for more; enough tokens that every batcher can
  // fill while frames still flow.
  int batching_nodes = 0;
  for (const auto& vn : graph_.nodes) batching_nodes += (vn.type->contract.is_batchable() && batch > 1);
  const int tokens = std::max(options_.max_in_flight, batching_nodes * (batch - 1) + batch);

  RunStats stats;
  stats.nodes.resize(n);
  stats.intervals.resize(n);
  std::vector<std::mutex> stat_mutex(n);
  for (size_t i = 0; i < n; ++i) {
    stats.nodes[i].id = graph_.nodes[i].config.id;
    stats.nodes[i].type = graph_.nodes[i].config.type;
  }

  // Predecessor vertices: producer nodes of its inputs, or the source (-1).
  std::vector<std::set<int>> preds(n + 1);
  std::vector<bool> has_succ(n, false);
  for (size_t i = 0; i < n; ++i) {
    const auto& vn = graph_.nodes[i];
    if (in_tail_[i]) continue;  // runs inside the sink, not on the flow graph
    if (vn.in_streams.empty() || std::all_of(vn.in_streams.begin(), vn.in_streams.end(), [](int s) { return s < 0; }))
      preds[i].insert(-1);
    for (int s : vn.in_streams) {
      if (s < 0) continue;
      int p = graph_.streams[s].producer;
      preds[i].insert(p);
      if (p >= 0) has_succ[p] = true;
    }
  }
  for (size_t i = 0; i < n; ++i)
    if (!has_succ[i] && !in_tail_[i]) preds[n].insert(int(i));
  if (preds[n].empty()) preds[n].insert(-1);

  const auto t0 = Clock::now();
  auto ms_since = [t0](Clock::time_point t) { return std::chrono::duration<double, std::milli>(t - t0).count(); };
  std::atomic<int> in_flight{0};
  std::atomic<int> peak{0};
  long long next_id = 0;
  bool eos_sent = false;

  // Stacks stream s of frames into one batch packet. Frames of different shapes (images of
  // different sizes reaching a node before any Resize) cannot stack: the error names the stream,
  // its producer and the first two frames that differ, not only libtorch's "Sizes of tensors".
  auto stack_batch = [&](int s, const std::vector<Msg>& frames) -> Packet {
    const DataTypeInfo* dt = DataTypes::global().find(graph_.streams[s].type);
    std::vector<Packet> parts;
    for (const auto& m : frames) parts.push_back(m->frame.slot(s));
    try {
      return dt->concat(parts);
    } catch (const std::exception& e) {
      size_t bad = 1;
      for (; bad < parts.size(); ++bad) {
        try {
          dt->concat({parts[0], parts[bad]});
        } catch (const std::exception&) {
          break;
        }
      }
      if (bad == parts.size()) bad = parts.size() - 1;
      const int prod = graph_.streams[s].producer;
      const std::string who = prod >= 0 ? node_prefix(graph_.config.file, graph_.nodes[size_t(prod)].config.id,
                                                      graph_.nodes[size_t(prod)].config.type) + ": "
                                        : graph_.config.file + ": ";
      auto frame_name = [&](size_t k) {
        return "frame " + std::to_string(frames[k]->frame.id()) +
               (frames[k]->frame.source.empty() ? std::string() : " (" + frames[k]->frame.source + ")");
      };
      std::string w = e.what();
      throw Error(who + "stream \"" + graph_.streams[s].name + "\": cannot stack a batch: " + frame_name(0) + " and " +
                  frame_name(bad) + " differ in shape (" + w.substr(0, w.find('\n')) +
                  "); frames batched together must have one shape: use input images of one size, or a batch size of 1");
    }
  };

  auto make_error = [&](size_t i, const FrameState& f, const std::string& what) {
    const auto& vn = graph_.nodes[i];
    std::string where = f.eos ? std::string("finish()") : "process() at frame " + std::to_string(f.frame.id());
    if (!f.frame.source.empty() && !f.eos) where += " (" + f.frame.source + ")";
    return NodeError(node_prefix(graph_.config.file, vn.config.id, vn.config.type) + ": " + where + " failed: " + what,
                     vn.config.id, vn.config.type, f.frame.id(), f.frame.source);
  };

  // Runs node i on `frames` (one frame, or a batch); empty when all were dropped.
  auto invoke = [&](size_t i, const std::vector<Msg>& frames, int batch_size) {
    const auto& vn = graph_.nodes[i];
    const Contract& k = vn.type->contract;
    const FrameState& first = *frames.front();
    Context ctx(first.frame.id(), first.frame.source, batch_size, options_.device);
    for (const auto& m : frames) ctx.mutable_sources().push_back(m->frame.source);
    for (size_t p = 0; p < k.inputs().size(); ++p) {
      int s = vn.in_streams[p];
      Packet pk;
      if (s >= 0) {
        if (frames.size() == 1) {
          pk = first.frame.slot(s);
        } else {
          pk = stack_batch(s, frames);
        }
      }
      ctx.inputs().push_back({k.inputs()[p].name, pk});
    }
    for (const auto& o : k.outputs()) ctx.outputs().push_back({o.name, Packet()});
    const auto start = Clock::now();
    nodes_[i]->process(ctx);
    const auto end = Clock::now();
    {
      std::lock_guard<std::mutex> lock(stat_mutex[i]);
      double ms = std::chrono::duration<double, std::milli>(end - start).count();
      stats.nodes[i].calls++;
      stats.nodes[i].total_ms += ms;
      stats.nodes[i].call_ms.push_back(ms);
      if (record_intervals) stats.intervals[i].emplace_back(ms_since(start), ms_since(end));
    }
    if (ctx.dropped()) {
      for (const auto& m : frames) {
        std::lock_guard<std::mutex> lock(m->drop_mutex);
        if (!m->dropped.exchange(true))
          m->frame.drop_reason = node_prefix(graph_.config.file, vn.config.id, vn.config.type) + ": " + ctx.drop_reason();
      }
      return;
    }
    for (size_t p = 0; p < k.outputs().size(); ++p) {
      int s = vn.out_streams[p];
      if (s < 0) continue;
      const Packet& pk = ctx.outputs()[p].packet;
      if (pk.empty()) {
        if (k.outputs()[p].optional) continue;
        throw PortError("output", k.outputs()[p].name, "process() returned without sending it");
      }
      if (std::string(pk.type_name()) != k.outputs()[p].type)
        throw PortError("output", k.outputs()[p].name, std::string("sent a ") + pk.type_name() + ", declared " + k.outputs()[p].type);
      if (frames.size() == 1) {
        frames[0]->frame.slot(s) = pk;
      } else {
        auto parts = DataTypes::global().find(k.outputs()[p].type)->split(pk, frames.size());
        if (parts.size() != frames.size())
          throw PortError("output", k.outputs()[p].name, "batch of " + std::to_string(frames.size()) + " split into " + std::to_string(parts.size()));
        for (size_t b = 0; b < frames.size(); ++b) frames[b]->frame.slot(s) = parts[b];
      }
    }
  };

  // finish() runs once, after the node's LAST message, which for an unlimited node need not be
  // the end-of-stream marker: count the messages done and compare with the total the marker
  // announces (its own position + 1).
  std::unique_ptr<std::atomic<long long>[]> done_msgs(new std::atomic<long long>[n]);
  std::unique_ptr<std::atomic<long long>[]> total_msgs(new std::atomic<long long>[n]);
  for (size_t i = 0; i < n; ++i) {
    done_msgs[i] = 0;
    total_msgs[i] = -1;
  }
  auto body = [&](size_t i, const std::vector<Msg>& frames) {
    std::vector<Msg> live;
    const Msg* eos = nullptr;
    for (const auto& m : frames) {
      if (m->eos) eos = &m;
      else if (!m->dropped.load()) live.push_back(m);
    }
    try {
      if (!live.empty()) invoke(i, live, int(live.size()));
      if (eos) total_msgs[i] = (*eos)->frame.id() - options_.first_frame_id + 1;
      const long long done = (done_msgs[i] += (long long)frames.size());
      if (done == total_msgs[i].load()) nodes_[i]->finish();
    } catch (const NodeError&) {
      throw;
    } catch (const std::exception& e) {
      throw make_error(i, eos && live.empty() ? **eos : *live.front(), e.what());
    }
  };

  // The serial tail (training): batches of frames, run in order inside the sink.
  std::vector<Msg> tail_batch;
  std::vector<int> tail_inputs;  // streams entering the tail
  for (size_t i = 0; i < n; ++i)
    if (in_tail_[i])
      for (int s : graph_.nodes[i].in_streams)
        if (s >= 0 && (graph_.streams[s].producer < 0 || !in_tail_[graph_.streams[s].producer]) &&
            std::find(tail_inputs.begin(), tail_inputs.end(), s) == tail_inputs.end())
          tail_inputs.push_back(s);
  const bool has_tail = std::find(in_tail_.begin(), in_tail_.end(), true) != in_tail_.end();
  auto run_tail = [&]() {
    if (tail_batch.empty()) return;
    auto bm = std::make_shared<FrameState>(&graph_, tail_batch.front()->frame.id(), n + 1);
    bm->frame.source = tail_batch.front()->frame.source;
    for (int s : tail_inputs) {
      bm->frame.slot(s) = tail_batch.size() == 1 ? tail_batch[0]->frame.slot(s) : stack_batch(s, tail_batch);
    }
    for (size_t i = 0; i < n; ++i) {
      if (!in_tail_[i]) continue;
      try {
        invoke(i, {bm}, int(tail_batch.size()));
      } catch (const NodeError&) {
        throw;
      } catch (const std::exception& e) {
        throw make_error(i, *tail_batch.front(), e.what());
      }
      if (bm->dropped) break;
    }
    std::vector<const Frame*> members;
    for (const auto& m : tail_batch) members.push_back(&m->frame);
    if (batch_sink && !bm->dropped) batch_sink(bm->frame, members);
    tail_batch.clear();
  };

  tbb::task_arena arena(options_.threads > 0 ? options_.threads : tbb::task_arena::automatic);
  arena.execute([&] {
    flow::graph g;
    // The input_node only mints empty frames; the user's source fills them AFTER the limiter,
    // so no frame is read while max_in_flight frames are already in the pipeline.
    std::atomic<bool> source_done{false};
    flow::input_node<Msg> src(g, [&](tbb::flow_control& fc) -> Msg {
      if (source_done.load()) {
        fc.stop();
        return nullptr;
      }
      auto m = std::make_shared<FrameState>(&graph_, options_.first_frame_id + next_id, n + 1);
      ++next_id;
      for (size_t i = 0; i <= n; ++i) m->pending[i] = int(preds[i].size());
      return m;
    });
    // int, not continue_msg: a continue_msg decrementer waits for a message from EVERY
    // predecessor (continue_receiver), and the sink and the filler both give tokens back.
    flow::limiter_node<Msg, int> limiter(g, size_t(tokens));
    flow::make_edge(src, limiter);
    using Filler = flow::multifunction_node<Msg, std::tuple<Msg, int>>;
    Filler fill(g, flow::serial, [&](const Msg& m, Filler::output_ports_type& out) {
      if (eos_sent) {  // minted before the source ran dry: give its token back
        std::get<1>(out).try_put(1);
        return;
      }
      if (!source(m->frame)) {
        m->eos = true;
        eos_sent = true;
        source_done = true;
      }
      int now = ++in_flight;
      int p = peak.load();
      while (now > p && !peak.compare_exchange_weak(p, now)) {}
      std::get<0>(out).try_put(m);
    });
    flow::make_edge(limiter, fill);
    flow::make_edge(flow::output_port<1>(fill), limiter.decrementer());

    using Gate = flow::multifunction_node<Msg, std::tuple<Msg>>;
    using Seq = flow::sequencer_node<Msg>;
    using Fn = flow::function_node<Msg, Msg>;
    using Batcher = flow::multifunction_node<Msg, std::tuple<BatchMsg>>;
    using BatchFn = flow::function_node<BatchMsg, BatchMsg>;
    using Splitter = flow::multifunction_node<BatchMsg, std::tuple<Msg>>;
    std::vector<std::unique_ptr<flow::graph_node>> owned;
    std::vector<flow::receiver<Msg>*> entry(n + 1);
    std::vector<flow::sender<Msg>*> exit(n);
    const long long first_id = options_.first_frame_id;
    auto seq_key = [first_id](const Msg& m) -> size_t { return size_t(m->frame.id() - first_id); };

    // Builds [gate] -> [sequencer] chain ahead of vertex i; returns the chain's entry and
    // connects its exit to `next`.
    auto front = [&](size_t i, bool ordered, flow::receiver<Msg>& next) -> flow::receiver<Msg>* {
      flow::receiver<Msg>* head = &next;
      if (ordered) {
        auto seq = std::make_unique<Seq>(g, seq_key);
        flow::make_edge(*seq, next);
        head = seq.get();
        owned.push_back(std::move(seq));
      }
      if (preds[i].size() > 1) {
        auto gate = std::make_unique<Gate>(g, flow::unlimited, [i](const Msg& m, Gate::output_ports_type& out) {
          if (m->pending[i].fetch_sub(1) == 1) std::get<0>(out).try_put(m);
        });
        flow::make_edge(flow::output_port<0>(*gate), *head);
        head = gate.get();
        owned.push_back(std::move(gate));
      }
      return head;
    };

    for (size_t i = 0; i < n; ++i) {
      if (in_tail_[i]) continue;
      const Contract& k = graph_.nodes[i].type->contract;
      const auto conc = k.concurrency() == Concurrency::kSerial ? flow::serial : flow::unlimited;
      const bool batched = k.is_batchable() && batch > 1;
      if (!batched) {
        auto fn = std::make_unique<Fn>(g, conc, [&, i](const Msg& m) {
          body(i, {m});
          return m;
        });
        entry[i] = front(i, k.concurrency() == Concurrency::kSerial, *fn);
        exit[i] = fn.get();
        owned.push_back(std::move(fn));
      } else {
        // Batcher (serial, in order): collects `batch` frames; the end-of-stream marker flushes
        // a partial batch and then travels alone.
        auto pending = std::make_shared<std::vector<Msg>>();
        auto batcher = std::make_unique<Batcher>(g, flow::serial, [pending, batch](const Msg& m, Batcher::output_ports_type& out) {
          if (m->eos) {
            if (!pending->empty()) std::get<0>(out).try_put(std::make_shared<std::vector<Msg>>(std::move(*pending)));
            pending->clear();
            std::get<0>(out).try_put(std::make_shared<std::vector<Msg>>(1, m));
            return;
          }
          pending->push_back(m);
          if (int(pending->size()) >= batch) {
            std::get<0>(out).try_put(std::make_shared<std::vector<Msg>>(std::move(*pending)));
            pending->clear();
          }
        });
        auto fn = std::make_unique<BatchFn>(g, conc, [&, i](const BatchMsg& b) {
          body(i, *b);
          return b;
        });
        auto split = std::make_unique<Splitter>(g, flow::unlimited, [](const BatchMsg& b, Splitter::output_ports_type& out) {
          for (const auto& m : *b) std::get<0>(out).try_put(m);
        });
        flow::make_edge(flow::output_port<0>(*batcher), *fn);
        flow::make_edge(*fn, *split);
        entry[i] = front(i, true, *batcher);
        exit[i] = &flow::output_port<0>(*split);
        owned.push_back(std::move(batcher));
        owned.push_back(std::move(fn));
        owned.push_back(std::move(split));
      }
    }
    flow::function_node<Msg, int> sink_fn(g, flow::serial, [&](const Msg& m) {
      if (!m->eos) {
        m->frame.dropped = m->dropped.load();
        if (has_tail && !m->frame.dropped) {
          tail_batch.push_back(m);
          if (int(tail_batch.size()) >= batch) run_tail();
        }
        sink(m->frame);
        ++stats.frames;
        stats.dropped += m->frame.dropped;
      } else if (has_tail) {
        run_tail();  // the partial last batch
        for (size_t i = 0; i < n; ++i)
          if (in_tail_[i]) nodes_[i]->finish();
      }
      --in_flight;
      return 1;
    });
    entry[n] = front(n, true, sink_fn);
    flow::make_edge(sink_fn, limiter.decrementer());

    for (size_t i = 0; i <= n; ++i)
      for (int p : preds[i]) {
        if (i < n && in_tail_[i]) continue;
        if (p < 0) flow::make_edge(flow::output_port<0>(fill), *entry[i]);
        else flow::make_edge(*exit[p], *entry[i]);
      }
    src.activate();
    g.wait_for_all();
  });
  stats.wall_ms = ms_since(Clock::now());
  stats.peak_in_flight = peak.load();
  return stats;
}

}  // namespace fmam
