#include "framework/node_invoker.h"

#include <c10/core/GradMode.h>

#include <algorithm>
#include <optional>

#include "framework/flop_counter.h"
#include "framework/output_cache.h"

namespace fmam {

using Clock = std::chrono::steady_clock;

NodeInvoker::NodeInvoker(const ValidatedGraph& g, std::vector<std::unique_ptr<Node>>& nodes, const RunOptions& options,
                         RunStats& stats, bool record_intervals, const std::vector<bool>& cached)
    : graph_(g),
      nodes_(nodes),
      options_(options),
      stats_(stats),
      record_intervals_(record_intervals),
      cached_(cached),
      stat_mutex_(g.nodes.size()),
      done_msgs_(new std::atomic<long long>[g.nodes.size()]),
      total_msgs_(new std::atomic<long long>[g.nodes.size()]) {
  const size_t n = g.nodes.size();
  stats_.nodes.resize(n);
  stats_.intervals.resize(n);
  for (size_t i = 0; i < n; ++i) {
    stats_.nodes[i].id = g.nodes[i].config.id;
    stats_.nodes[i].type = g.nodes[i].config.type;
    done_msgs_[i] = 0;
    total_msgs_[i] = -1;
  }
  without_autograd_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const auto& ids = options_.without_autograd;
    without_autograd_[i] = std::find(ids.begin(), ids.end(), g.nodes[i].config.id) != ids.end();
  }
}

Packet NodeInvoker::stack_batch(int s, const std::vector<Msg>& frames) const {
  const DataTypeInfo* dt = DataTypes::global().find(graph_.streams[s].type);
  std::vector<Packet> parts;
  for (const auto& m : frames) parts.push_back(m->frame.slot(s));
  try {
    return dt->concat(parts);
  } catch (const std::exception& e) {
    size_t bad = 1;  // the first frame that does not stack with the first
    for (; bad < parts.size(); ++bad) {
      try {
        dt->concat({parts[0], parts[bad]});
      } catch (const std::exception&) {
        break;
      }
    }
    if (bad == parts.size()) bad = parts.size() - 1;
    const int prod = graph_.streams[s].producer;
    const std::string who =
        prod >= 0
            ? node_prefix(graph_.config.file, graph_.nodes[size_t(prod)].config.id, graph_.nodes[size_t(prod)].config.type) + ": "
            : graph_.config.file + ": ";
    auto frame_name = [&](size_t k) {
      return "frame " + std::to_string(frames[k]->frame.id()) +
             (frames[k]->frame.source.empty() ? std::string() : " (" + frames[k]->frame.source + ")");
    };
    const std::string w = e.what();
    throw Error(who + "stream \"" + graph_.streams[s].name + "\": cannot stack a batch: " + frame_name(0) + " and " +
                frame_name(bad) + " differ in shape (" + w.substr(0, w.find('\n')) +
                "); frames batched together must have one shape: use input images of one size, or a batch size of 1");
  }
}

NodeError NodeInvoker::error(size_t i, const FrameState& f, const std::string& what) const {
  const auto& vn = graph_.nodes[i];
  std::string where = f.eos ? std::string("finish()") : "process() at frame " + std::to_string(f.frame.id());
  if (!f.frame.source.empty() && !f.eos) where += " (" + f.frame.source + ")";
  return NodeError(node_prefix(graph_.config.file, vn.config.id, vn.config.type) + ": " + where + " failed: " + what,
                   vn.config.id, vn.config.type, f.frame.id(), f.frame.source);
}

void NodeInvoker::record(size_t i, Clock::time_point start, Clock::time_point end, double flops) {
  std::lock_guard<std::mutex> lock(stat_mutex_[i]);
  const double ms = std::chrono::duration<double, std::milli>(end - start).count();
  stats_.nodes[i].flops += flops;
  stats_.nodes[i].calls++;
  stats_.nodes[i].total_ms += ms;
  stats_.nodes[i].call_ms.push_back(ms);
  if (record_intervals_)
    stats_.intervals[i].emplace_back(std::chrono::duration<double, std::milli>(start - t0_).count(),
                                     std::chrono::duration<double, std::milli>(end - t0_).count());
}

// A node that drops a call drops every frame in it; the first reason a frame gets is kept.
void NodeInvoker::mark_dropped(size_t i, const std::vector<Msg>& frames, const std::string& reason) {
  const auto& vn = graph_.nodes[i];
  for (const auto& m : frames) {
    std::lock_guard<std::mutex> lock(m->drop_mutex);
    if (!m->dropped.exchange(true))
      m->frame.drop_reason = node_prefix(graph_.config.file, vn.config.id, vn.config.type) + ": " + reason;
  }
}

void NodeInvoker::store_outputs(size_t i, const std::vector<Msg>& frames, Context& ctx) {
  const auto& vn = graph_.nodes[i];
  const Contract& k = vn.type->contract;
  for (size_t p = 0; p < k.outputs().size(); ++p) {
    const int s = vn.out_streams[p];
    if (s < 0) continue;
    const Packet& pk = ctx.outputs()[p].packet;
    if (pk.empty()) {
      if (k.outputs()[p].optional) continue;
      throw PortError("output", k.outputs()[p].name, "process() returned without sending it");
    }
    if (std::string(pk.type_name()) != k.outputs()[p].type)
      throw PortError("output", k.outputs()[p].name,
                      std::string("sent a ") + pk.type_name() + ", declared " + k.outputs()[p].type);
    if (frames.size() == 1) {
      frames[0]->frame.slot(s) = pk;
      continue;
    }
    auto parts = DataTypes::global().find(k.outputs()[p].type)->split(pk, frames.size());
    if (parts.size() != frames.size())
      throw PortError("output", k.outputs()[p].name,
                      "batch of " + std::to_string(frames.size()) + " split into " + std::to_string(parts.size()));
    for (size_t b = 0; b < frames.size(); ++b) frames[b]->frame.slot(s) = parts[b];
  }
}

void NodeInvoker::invoke(size_t i, const std::vector<Msg>& frames, int batch_size) {
  const auto& vn = graph_.nodes[i];
  const Contract& k = vn.type->contract;
  const FrameState& first = *frames.front();
  Context ctx(first.frame.id(), first.frame.source, batch_size, options_.device);
  for (const auto& m : frames) ctx.mutable_sources().push_back(m->frame.source);
  for (size_t p = 0; p < k.inputs().size(); ++p) {
    const int s = vn.in_streams[p];
    Packet pk;
    if (s >= 0) pk = frames.size() == 1 ? first.frame.slot(s) : stack_batch(s, frames);
    ctx.inputs().push_back({k.inputs()[p].name, pk});
  }
  for (const auto& o : k.outputs()) ctx.outputs().push_back({o.name, Packet()});
  const double flops_before = thread_flops();  // process() runs on this thread (its ops may fan out, not its calls)
  const auto start = Clock::now();
  {
    std::optional<c10::NoGradGuard> no_grad;  // grad mode is per thread: set where process() runs
    if (without_autograd_[i]) no_grad.emplace();
    nodes_[i]->process(ctx);
  }
  record(i, start, Clock::now(), thread_flops() - flops_before);
  if (ctx.dropped()) return mark_dropped(i, frames, ctx.drop_reason());
  store_outputs(i, frames, ctx);
}

std::vector<Msg> NodeInvoker::serve_from_cache(size_t i, const std::vector<Msg>& frames, std::vector<std::string>& miss_keys) {
  const auto& vn = graph_.nodes[i];
  std::vector<Msg> misses;
  for (const auto& m : frames) {
    std::vector<Packet> inputs, outputs;
    for (int s : vn.in_streams)
      if (s >= 0) inputs.push_back(m->frame.slot(s));
    const std::string key = OutputCache::key(vn.config.id, m->frame.source, inputs);
    if (!m->frame.source.empty() && options_.output_cache->lookup(key, outputs)) {
      for (size_t p = 0; p < outputs.size(); ++p)
        if (vn.out_streams[p] >= 0) m->frame.slot(vn.out_streams[p]) = outputs[p];
      continue;
    }
    misses.push_back(m);
    miss_keys.push_back(key);
  }
  return misses;
}

void NodeInvoker::invoke_and_store(size_t i, const std::vector<Msg>& misses, const std::vector<std::string>& keys) {
  invoke(i, misses, int(misses.size()));
  const auto& vn = graph_.nodes[i];
  for (size_t f = 0; f < misses.size(); ++f) {
    if (misses[f]->dropped.load() || misses[f]->frame.source.empty()) continue;
    std::vector<Packet> outputs;
    for (int s : vn.out_streams) outputs.push_back(s >= 0 ? misses[f]->frame.slot(s) : Packet());
    bool complete = true;  // an unconnected or unsent output: nothing to serve it from later
    for (const auto& p : outputs) complete = complete && !p.empty();
    if (complete) options_.output_cache->store(keys[f], outputs);
  }
}

void NodeInvoker::body(size_t i, const std::vector<Msg>& frames) {
  std::vector<Msg> live;
  const Msg* eos = nullptr;
  for (const auto& m : frames) {
    if (m->eos)
      eos = &m;
    else if (!m->dropped.load())
      live.push_back(m);
  }
  try {
    if (!live.empty() && cached_[i]) {
      // The frames the cache has skip process(); the rest run as one (smaller) batch.
      std::vector<std::string> keys;
      live = serve_from_cache(i, live, keys);
      if (!live.empty()) invoke_and_store(i, live, keys);
    } else if (!live.empty()) {
      invoke(i, live, int(live.size()));
    }
  } catch (const NodeError&) {
    throw;
  } catch (const std::exception& e) {
    throw error(i, *live.front(), e.what());
  }
  if (eos) total_msgs_[i] = (*eos)->frame.id() - options_.first_frame_id + 1;
  const long long done = (done_msgs_[i] += (long long)frames.size());
  // The node's last message, whichever thread runs it (an unlimited node may see the end of
  // stream before its last frame).
  if (done == total_msgs_[i].load()) finish(i);
}

// A failure here is finish()'s, named so even when the last message was a frame.
void NodeInvoker::finish(size_t i) {
  try {
    nodes_[i]->finish();
  } catch (const std::exception& e) {
    const auto& vn = graph_.nodes[i];
    throw NodeError(node_prefix(graph_.config.file, vn.config.id, vn.config.type) + ": finish() failed: " + e.what(),
                    vn.config.id, vn.config.type, -1, "");
  }
}

}  // namespace fmam
