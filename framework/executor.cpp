// The executor: builds the nodes and compiles the plan once (execution_plan.h), then runs frames
// on a oneTBB flow graph (FlowRun below), invoking nodes through NodeInvoker (node_invoker.h)
// and training's ordered learning half through SerialTail (serial_tail.h). TBB stays in this file.
#include "framework/executor.h"

#include "framework/execution_plan.h"
#include "framework/frame_state.h"
#include "framework/node_invoker.h"
#include "framework/serial_tail.h"

#include <tbb/flow_graph.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <mutex>
#include <set>

namespace fmam {

namespace flow = tbb::flow;

Node& Executor::node(const std::string& id) {
  for (size_t i = 0; i < graph_.nodes.size(); ++i)
    if (graph_.nodes[i].config.id == id) return *nodes_[i];
  throw Error("no node \"" + id + "\" in graph " + graph_.config.file);
}

Executor::Executor(const ValidatedGraph& g, RunOptions options) : graph_(g), options_(options) {
  if (options_.max_in_flight < 1) options_.max_in_flight = 1;
  if (options_.batch < 1) options_.batch = 1;
  ExecutionPlan::check_batching(graph_, options_);
  build_nodes();
  plan_ = std::make_unique<ExecutionPlan>(ExecutionPlan::compile(graph_, nodes_, options_));
}

// Built in file order, not topological order: a node that shares another's weights (param
// "share") is declared after it, and so finds it built. Weights load here, once, not per frame.
void Executor::build_nodes() {
  std::vector<size_t> by_file(graph_.nodes.size());
  for (size_t i = 0; i < by_file.size(); ++i) by_file[i] = i;
  std::sort(by_file.begin(), by_file.end(),
            [&](size_t a, size_t b) { return graph_.nodes[a].config.index < graph_.nodes[b].config.index; });
  nodes_.resize(graph_.nodes.size());
  for (size_t i : by_file) {
    const auto& vn = graph_.nodes[i];
    try {
      NodeEnv env(vn.config.id, options_.device, &shared_, options_.precision, options_.training());
      nodes_[i] = vn.type->make(vn.params.get(), env);
    } catch (const std::exception& e) {
      throw Error(node_prefix(graph_.config.file, vn.config.id, vn.config.type) + ": " + e.what());
    }
  }
}

const std::vector<bool>& Executor::in_tail() const { return plan_->in_tail; }

std::vector<std::string> Executor::cached_node_ids() const {
  std::vector<std::string> ids;
  for (size_t i = 0; i < graph_.nodes.size(); ++i)
    if (plan_->cached[i]) ids.push_back(graph_.nodes[i].config.id);
  return ids;
}

Executor::~Executor() = default;

void Executor::set_without_autograd(const std::vector<std::string>& ids) {
  for (const auto& id : ids) {
    bool found = false;
    for (const auto& vn : graph_.nodes) found = found || vn.config.id == id;
    if (!found) throw Error(graph_.config.file + ": no node \"" + id + "\" to run without autograd");
  }
  options_.without_autograd = ids;
}

namespace {

// One run's flow graph:
//
//   input_node (mints frames) -> limiter_node (frames in flight) -> serial fill (user source)
//   -> per node:
//     [gate: waits for all its producer nodes] -> [sequencer: input order, for serial and
//     batching nodes] -> [batcher] -> function_node(process) -> [splitter]
//   -> sink gate -> sequencer -> serial sink (user callback; the training tail) -> limiter decrement.
//
// The plan (who feeds whom, the tail, the tokens) is the Executor's, compiled once; the TBB
// objects are made per run because sequencers, batchers and the source carry per-run state
// (the next expected frame id, half-filled batches, the end of stream), and making them costs
// microseconds against the milliseconds of one frame.
class FlowRun {
 public:
  FlowRun(const ValidatedGraph& g, const ExecutionPlan& plan, const RunOptions& o, NodeInvoker& invoker, SerialTail& tail,
          const Executor::Source& source, const Executor::Sink& sink, RunStats& stats)
      : graph_(g),
        plan_(plan),
        options_(o),
        invoker_(invoker),
        tail_(tail),
        source_(source),
        sink_(sink),
        stats_(stats),
        n_(g.nodes.size()),
        entry_(n_ + 1),
        exit_(n_) {}

  void execute() {
    build_source();
    for (size_t i = 0; i < n_; ++i)
      if (!plan_.in_tail[i]) build_node(i);
    build_sink();
    connect();
    src_->activate();
    g_.wait_for_all();
  }
  int peak_in_flight() const { return peak_.load(); }

 private:
  using Gate = flow::multifunction_node<Msg, std::tuple<Msg>>;
  using Seq = flow::sequencer_node<Msg>;
  using Fn = flow::function_node<Msg, Msg>;
  using Batcher = flow::multifunction_node<Msg, std::tuple<BatchMsg>>;
  using BatchFn = flow::function_node<BatchMsg, BatchMsg>;
  using Splitter = flow::multifunction_node<BatchMsg, std::tuple<Msg>>;
  using Filler = flow::multifunction_node<Msg, std::tuple<Msg, int>>;

  template <class T>
  T* own(std::unique_ptr<T> node) {
    T* p = node.get();
    owned_.push_back(std::move(node));
    return p;
  }

  // The input_node only mints empty frames; the user's source fills them AFTER the limiter, so no
  // frame is read while `tokens` frames are already in the pipeline.
  void build_source() {
    src_ = own(std::make_unique<flow::input_node<Msg>>(g_, [this](tbb::flow_control& fc) -> Msg {
      if (source_done_.load()) {
        fc.stop();
        return nullptr;
      }
      auto m = std::make_shared<FrameState>(&graph_, options_.first_frame_id + next_id_++, n_ + 1);
      for (size_t i = 0; i <= n_; ++i) m->pending[i] = int(plan_.preds[i].size());
      return m;
    }));
    // int, not continue_msg: a continue_msg decrementer waits for a message from EVERY
    // predecessor (continue_receiver), and the sink and the filler both give tokens back.
    limiter_ = own(std::make_unique<flow::limiter_node<Msg, int>>(g_, size_t(plan_.tokens)));
    fill_ =
        own(std::make_unique<Filler>(g_, flow::serial, [this](const Msg& m, Filler::output_ports_type& out) { fill(m, out); }));
    flow::make_edge(*src_, *limiter_);
    flow::make_edge(*limiter_, *fill_);
    flow::make_edge(flow::output_port<1>(*fill_), limiter_->decrementer());
  }

  void fill(const Msg& m, Filler::output_ports_type& out) {
    if (eos_sent_) {  // minted before the source ran dry: give its token back
      std::get<1>(out).try_put(1);
      return;
    }
    if (!source_(m->frame)) {
      m->eos = true;
      eos_sent_ = true;
      source_done_ = true;
    }
    const int now = ++in_flight_;
    int p = peak_.load();
    while (now > p && !peak_.compare_exchange_weak(p, now)) {
    }
    std::get<0>(out).try_put(m);
  }

  // [gate] -> [sequencer] ahead of vertex i; returns the chain's entry, its exit feeds `next`.
  flow::receiver<Msg>* front(size_t i, bool ordered, flow::receiver<Msg>& next) {
    flow::receiver<Msg>* head = &next;
    if (ordered) {
      const long long first_id = options_.first_frame_id;
      Seq* seq = own(std::make_unique<Seq>(g_, [first_id](const Msg& m) -> size_t { return size_t(m->frame.id() - first_id); }));
      flow::make_edge(*seq, next);
      head = seq;
    }
    if (plan_.preds[i].size() > 1) {
      Gate* gate = own(std::make_unique<Gate>(g_, flow::unlimited, [i](const Msg& m, Gate::output_ports_type& out) {
        if (m->pending[i].fetch_sub(1) == 1) std::get<0>(out).try_put(m);
      }));
      flow::make_edge(flow::output_port<0>(*gate), *head);
      head = gate;
    }
    return head;
  }

  void build_node(size_t i) {
    const Contract& k = graph_.nodes[i].type->contract;
    const auto conc = plan_.serial[i] ? flow::serial : flow::unlimited;
    if (!(k.is_batchable() && options_.batch > 1)) {
      Fn* fn = own(std::make_unique<Fn>(g_, conc, [this, i](const Msg& m) {
        invoker_.body(i, {m});
        return m;
      }));
      entry_[i] = front(i, plan_.serial[i], *fn);
      exit_[i] = fn;
      return;
    }
    // Batcher (serial, in order): collects `batch` frames; the end-of-stream marker flushes a
    // partial batch and then travels alone.
    auto pending = std::make_shared<std::vector<Msg>>();
    const int batch = options_.batch;
    Batcher* batcher =
        own(std::make_unique<Batcher>(g_, flow::serial, [pending, batch](const Msg& m, Batcher::output_ports_type& out) {
          auto send = [&](std::vector<Msg> v) { std::get<0>(out).try_put(std::make_shared<std::vector<Msg>>(std::move(v))); };
          if (m->eos) {
            if (!pending->empty()) send(std::move(*pending));
            pending->clear();
            send({m});
            return;
          }
          pending->push_back(m);
          if (int(pending->size()) >= batch) {
            send(std::move(*pending));
            pending->clear();
          }
        }));
    BatchFn* fn = own(std::make_unique<BatchFn>(g_, conc, [this, i](const BatchMsg& b) {
      invoker_.body(i, *b);
      return b;
    }));
    Splitter* split =
        own(std::make_unique<Splitter>(g_, flow::unlimited, [](const BatchMsg& b, Splitter::output_ports_type& out) {
          for (const auto& m : *b) std::get<0>(out).try_put(m);
        }));
    flow::make_edge(flow::output_port<0>(*batcher), *fn);
    flow::make_edge(*fn, *split);
    entry_[i] = front(i, true, *batcher);
    exit_[i] = &flow::output_port<0>(*split);
  }

  void build_sink() {
    sink_fn_ = own(std::make_unique<flow::function_node<Msg, int>>(g_, flow::serial, [this](const Msg& m) {
      if (!m->eos) {
        m->frame.dropped = m->dropped.load();
        if (plan_.has_tail && !m->frame.dropped) tail_.add(m);
        sink_(m->frame);
        ++stats_.frames;
        stats_.dropped += m->frame.dropped;
      } else if (plan_.has_tail) {
        tail_.end();
      }
      --in_flight_;
      return 1;
    }));
    entry_[n_] = front(n_, true, *sink_fn_);
    flow::make_edge(*sink_fn_, limiter_->decrementer());
  }

  void connect() {
    for (size_t i = 0; i <= n_; ++i) {
      if (i < n_ && plan_.in_tail[i]) continue;
      for (int p : plan_.preds[i]) {
        if (p < 0)
          flow::make_edge(flow::output_port<0>(*fill_), *entry_[i]);
        else
          flow::make_edge(*exit_[size_t(p)], *entry_[i]);
      }
    }
  }

  const ValidatedGraph& graph_;
  const ExecutionPlan& plan_;
  const RunOptions& options_;
  NodeInvoker& invoker_;
  SerialTail& tail_;
  const Executor::Source& source_;
  const Executor::Sink& sink_;
  RunStats& stats_;
  const size_t n_;
  flow::graph g_;
  std::vector<std::unique_ptr<flow::graph_node>> owned_;
  std::vector<flow::receiver<Msg>*> entry_;
  std::vector<flow::sender<Msg>*> exit_;
  flow::input_node<Msg>* src_ = nullptr;
  flow::limiter_node<Msg, int>* limiter_ = nullptr;
  Filler* fill_ = nullptr;
  flow::function_node<Msg, int>* sink_fn_ = nullptr;
  std::atomic<bool> source_done_{false};
  bool eos_sent_ = false;
  long long next_id_ = 0;
  std::atomic<int> in_flight_{0}, peak_{0};
};

}  // namespace

RunStats Executor::run(const Source& source, const Sink& sink, bool record_intervals, const BatchSink& batch_sink) {
  RunStats stats;
  const auto t0 = std::chrono::steady_clock::now();
  NodeInvoker invoker(graph_, nodes_, options_, stats, record_intervals, plan_->cached);
  SerialTail tail(graph_, *plan_, invoker, options_.batch, batch_sink);
  int peak = 0;
  tbb::task_arena arena(options_.threads > 0 ? options_.threads : tbb::task_arena::automatic);
  arena.execute([&] {
    FlowRun flow(graph_, *plan_, options_, invoker, tail, source, sink, stats);
    flow.execute();
    peak = flow.peak_in_flight();
  });
  stats.wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  stats.peak_in_flight = peak;
  return stats;
}

}  // namespace fmam
