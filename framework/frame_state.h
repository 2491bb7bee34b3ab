// One frame's state on its way through the flow graph (internal to the executor). A message is a
// shared FrameState: every stream of the frame has its own slot, written by its single producer
// before any consumer runs (the flow graph's edges order them), so nodes on parallel branches
// write distinct slots without locks.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "framework/executor.h"

namespace fmam {

struct FrameState {
  FrameState(const ValidatedGraph* g, long long id, size_t counters) : frame(g, id), pending(new std::atomic<int>[counters]) {}
  Frame frame;
  bool eos = false;  // the end-of-stream marker, not a frame
  std::atomic<bool> dropped{false};
  std::mutex drop_mutex;
  std::unique_ptr<std::atomic<int>[]> pending;  // per node (+ sink): producers still to finish
};
using Msg = std::shared_ptr<FrameState>;
using BatchMsg = std::shared_ptr<std::vector<Msg>>;

}  // namespace fmam
