#include "framework/node_runner.h"

#include <nlohmann/json.hpp>

namespace fmam {

using json = nlohmann::json;

NodeRunner::NodeRunner(const std::string& node_json, RunOptions options) : options_(options) {
  json node;
  try {
    node = json::parse(node_json);
  } catch (const json::exception& e) {
    throw GraphError({std::string("NodeRunner: node snippet is not valid JSON: ") + e.what()});
  }
  const NodeType* t =
      node.contains("type") && node["type"].is_string() ? Registry::global().find(node["type"].get<std::string>()) : nullptr;
  json g = {{"schema", 1}, {"name", "node_runner"}, {"inputs", json::object()}, {"outputs", json::object()}};
  if (t && node.is_object()) {
    if (!node.contains("in")) {
      node["in"] = json::object();
      for (const auto& p : t->contract.inputs()) node["in"][p.name] = p.name;
    }
    if (!node.contains("out")) {
      node["out"] = json::object();
      for (const auto& p : t->contract.outputs()) node["out"][p.name] = "out_" + p.name;
    }
    if (!node["in"].is_object() || !node["out"].is_object()) t = nullptr;
  }
  if (t) {
    for (const auto& [port, stream] : node["in"].items()) {
      const PortSpec* p = t->contract.find_input(port);
      if (p && stream.is_string()) g["inputs"][stream.get<std::string>()] = p->type;
    }
    for (const auto& [port, stream] : node["out"].items()) {
      const PortSpec* p = t->contract.find_output(port);
      if (p && stream.is_string()) g["outputs"][stream.get<std::string>()] = p->type;
    }
  }
  g["nodes"] = json::array({node});
  graph_ = validate(parse_graph(g.dump(), "NodeRunner"));
  executor_ = std::make_unique<Executor>(graph_, options_);
}

void NodeRunner::push_packet(const std::string& port, Packet p) { in_[port].push_back(std::move(p)); }
void NodeRunner::push_source(std::string source) { sources_.push_back(std::move(source)); }

RunStats NodeRunner::run() {
  const auto& vn = graph_.nodes.at(0);
  size_t frames = sources_.size();
  for (const auto& [port, q] : in_) frames = std::max(frames, q.size());
  size_t k = 0;
  auto source = [&](Frame& f) {
    if (k >= frames) return false;
    if (!sources_.empty()) {
      f.source = sources_.front();
      sources_.pop_front();
    }
    for (const auto& [port, stream] : vn.config.in) {
      auto it = in_.find(port);
      if (it != in_.end() && !it->second.empty()) {
        f.set(stream, it->second.front());
        it->second.pop_front();
      }
    }
    ++k;
    return true;
  };
  auto sink = [&](const Frame& f) {
    if (f.dropped) {
      dropped_.push_back(f.drop_reason);
      return;
    }
    for (const auto& [port, stream] : vn.config.out)
      if (f.has(stream)) out_[port].push_back(f.packet(stream));
  };
  return executor_->run(source, sink);
}

Packet NodeRunner::pop_packet(const std::string& port) {
  auto it = out_.find(port);
  if (it == out_.end() || it->second.empty()) throw Error("NodeRunner: no more packets on output \"" + port + "\"");
  Packet p = it->second.front();
  it->second.pop_front();
  return p;
}

size_t NodeRunner::available(const std::string& port) const {
  auto it = out_.find(port);
  return it == out_.end() ? 0 : it->second.size();
}

}  // namespace fmam
