#include "framework/serial_tail.h"

namespace fmam {

SerialTail::SerialTail(const ValidatedGraph& g, const ExecutionPlan& plan, NodeInvoker& invoker, int batch,
                       const Executor::BatchSink& batch_sink)
    : graph_(g), plan_(plan), invoker_(invoker), batch_(batch), batch_sink_(batch_sink) {}

void SerialTail::add(const Msg& m) {
  held_.push_back(m);
  if (int(held_.size()) >= batch_) run();
}

void SerialTail::end() {
  run();
  for (size_t i = 0; i < graph_.nodes.size(); ++i)
    if (plan_.in_tail[i]) invoker_.finish(i);
}

// One batch frame whose entering streams hold the stacked batch; the tail nodes run on it in
// topological order, as one call each.
void SerialTail::run() {
  if (held_.empty()) return;
  auto bm = std::make_shared<FrameState>(&graph_, held_.front()->frame.id(), graph_.nodes.size() + 1);
  bm->frame.source = held_.front()->frame.source;
  for (int s : plan_.tail_inputs)
    bm->frame.slot(s) = held_.size() == 1 ? held_[0]->frame.slot(s) : invoker_.stack_batch(s, held_);
  for (size_t i = 0; i < graph_.nodes.size() && !bm->dropped; ++i) {
    if (!plan_.in_tail[i]) continue;
    try {
      invoker_.invoke(i, {bm}, int(held_.size()));
    } catch (const NodeError&) {
      throw;
    } catch (const std::exception& e) {
      throw invoker_.error(i, *held_.front(), e.what());
    }
  }
  std::vector<const Frame*> members;
  for (const auto& m : held_) members.push_back(&m->frame);
  if (batch_sink_ && !bm->dropped) batch_sink_(bm->frame, members);
  held_.clear();
}

}  // namespace fmam
