// The serial tail (internal to the executor): training's learning half. The tail nodes (students,
// mappings, losses and what follows them) run in input order on whole batches inside the
// executor's serial sink, then the batch sink (backward + optimizer step) runs: weights change
// between batches, so batch k+1 must not enter them before batch k has stepped, while decoding,
// synthesis and the frozen teacher still pipeline ahead on the flow graph.
#pragma once

#include <memory>
#include <vector>

#include "framework/execution_plan.h"
#include "framework/node_invoker.h"

namespace fmam {

class SerialTail {
 public:
  SerialTail(const ValidatedGraph& g, const ExecutionPlan& plan, NodeInvoker& invoker, int batch,
             const Executor::BatchSink& batch_sink);
  // A frame that came through the flow graph (not dropped); the tail runs once `batch` are held.
  void add(const Msg& m);
  // End of stream: the partial last batch, then finish() of every tail node.
  void end();

 private:
  void run();

  const ValidatedGraph& graph_;
  const ExecutionPlan& plan_;
  NodeInvoker& invoker_;
  const int batch_;
  const Executor::BatchSink& batch_sink_;
  std::vector<Msg> held_;
};

}  // namespace fmam
