// NodeRunner: runs one node from its JSON snippet, outside any graph file (MediaPipe's
// CalculatorRunner, Holoscan's OperatorRunner):
//   NodeRunner runner(R"({"id": "blur", "type": "GaussianBlur", "params": {"sigma": 2.0}})");
//   runner.push(GaussianBlurNode::kIn, map);   // one value per frame, per input port
//   runner.run();                              // through the real executor
//   Map2D out = runner.pop(GaussianBlurNode::kOut);
// Unconnected ports in the snippet are wired to streams named after the port.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "framework/executor.h"

namespace fmam {

class NodeRunner {
 public:
  explicit NodeRunner(const std::string& node_json, RunOptions options = {});

  template <class T>
  void push(const In<T>& port, T value) {
    push_packet(port.name, Packet::make<T>(std::move(value)));
  }
  void push_packet(const std::string& port, Packet p);
  // For source nodes (no inputs): one frame per source string (e.g. a file path).
  void push_source(std::string source);

  RunStats run();

  template <class T>
  T pop(const Out<T>& port) {
    return pop_packet(port.name).template get<T>();
  }
  Packet pop_packet(const std::string& port);
  size_t available(const std::string& port) const;
  // Drop reasons of frames the node skipped, in frame order.
  const std::vector<std::string>& dropped() const { return dropped_; }
  const ValidatedGraph& graph() const { return graph_; }
  Node& node() { return executor_->node(graph_.nodes.at(0).config.id); }

 private:
  ValidatedGraph graph_;
  RunOptions options_;
  std::unique_ptr<Executor> executor_;
  std::map<std::string, std::deque<Packet>> in_, out_;
  std::deque<std::string> sources_;
  std::vector<std::string> dropped_;
};

}  // namespace fmam
