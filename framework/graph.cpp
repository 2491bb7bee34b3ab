// Graph JSON parsing, validation (all problems at once) and Graphviz output.
#include "framework/graph.h"

#include <algorithm>
#include <fstream>
#include <functional>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

namespace fmam {

// ordered_json: params and ports keep the file's order (in messages, describe, dot).
using json = nlohmann::ordered_json;

std::string node_prefix(const std::string& file, const std::string& id, const std::string& type) {
  return file + ": node \"" + id + "\" (" + type + ")";
}

namespace {

Value to_value(const json& j, const std::string& where) {
  if (j.is_null()) return Value();
  if (j.is_boolean()) return Value(j.get<bool>());
  if (j.is_number_integer()) return Value(j.get<int64_t>());
  if (j.is_number()) return Value(j.get<double>());
  if (j.is_string()) return Value(j.get<std::string>());
  if (j.is_array()) {
    Value::List l;
    for (const auto& x : j) l.push_back(to_value(x, where));
    return Value(l);
  }
  throw Error(where + ": objects are not supported as param values");
}

std::string join(const std::vector<std::string>& v, const std::string& sep = ", ") {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

// Line and column of a byte offset, for JSON syntax errors.
std::string line_col(const std::string& text, size_t offset) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return std::to_string(line) + ":" + std::to_string(col);
}

void read_string_map(const json& j, const std::string& where, const std::string& field,
                     std::vector<std::pair<std::string, std::string>>& out, std::vector<std::string>& errors) {
  if (!j.contains(field)) return;
  const json& m = j.at(field);
  if (!m.is_object()) {
    errors.push_back(where + ": \"" + field + "\" must be an object of name: string pairs");
    return;
  }
  for (const auto& [k, v] : m.items()) {
    if (!v.is_string())
      errors.push_back(where + ": " + field + " \"" + k + "\" must be a string, got " + v.dump());
    else
      out.emplace_back(k, v.get<std::string>());
  }
}

// nodes[index] of the graph `file`; nothing if it is not even an object. A node whose id, type or
// wiring is broken comes back with parsed = false, so validate() does not report it again.
std::optional<NodeConfig> parse_node(const json& n, const std::string& file, int index, std::vector<std::string>& errors) {
  static const std::set<std::string> kNode = {"id", "type", "doc", "in", "out", "params"};
  NodeConfig c;
  c.index = index;
  std::string where = file + ": nodes[" + std::to_string(index) + "]";
  if (!n.is_object()) {
    errors.push_back(where + ": a node must be an object");
    return std::nullopt;
  }
  if (n.contains("id") && n["id"].is_string()) c.id = n["id"];
  if (n.contains("type") && n["type"].is_string()) c.type = n["type"];
  if (!c.id.empty()) where += " \"" + c.id + "\"";
  if (n.contains("doc")) {
    if (n["doc"].is_string())
      c.doc = n["doc"];
    else
      errors.push_back(where + ": field \"doc\" must be a string, got " + n["doc"].dump());
  }
  for (const auto& [k, v] : n.items())
    if (!kNode.count(k)) errors.push_back(where + ": unknown field \"" + k + "\"; known: " + join({kNode.begin(), kNode.end()}));
  // From here on a problem leaves the node unusable for validation (its id, type or wiring).
  const size_t errors_before = errors.size();
  if (!n.contains("id") || !n["id"].is_string() || c.id.empty())
    errors.push_back(where + ": field \"id\" must be a non-empty string");
  if (!n.contains("type") || !n["type"].is_string() || c.type.empty())
    errors.push_back(where + ": field \"type\" must be a non-empty string");
  read_string_map(n, where, "in", c.in, errors);
  read_string_map(n, where, "out", c.out, errors);
  if (n.contains("params")) {
    if (!n["params"].is_object()) {
      errors.push_back(where + ": \"params\" must be an object");
    } else {
      for (const auto& [k, v] : n["params"].items()) {
        try {
          c.params.emplace_back(k, to_value(v, where + ": param \"" + k + "\""));
        } catch (const Error& e) {
          errors.push_back(e.what());
        }
      }
    }
  }
  c.parsed = errors.size() == errors_before;
  return c;
}

const std::regex kSnake("^[a-z][a-z0-9_]*$");

}  // namespace

GraphConfig parse_graph(const std::string& text, const std::string& file) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw GraphError({file + ":" + line_col(text, e.byte > 0 ? e.byte - 1 : 0) + ": not valid JSON: " + e.what()});
  } catch (const json::exception& e) {  // e.g. a number too large for a double (found by fuzzing)
    throw GraphError({file + ": not valid JSON: " + e.what()});
  }
  std::vector<std::string> errors;
  GraphConfig g;
  g.file = file;
  if (!j.is_object()) throw GraphError({file + ": a graph must be a JSON object"});
  static const std::set<std::string> kTop = {"schema", "name", "doc", "inputs", "outputs", "nodes", "train"};
  for (const auto& [k, v] : j.items())
    if (!kTop.count(k)) errors.push_back(file + ": unknown field \"" + k + "\"; known: " + join({kTop.begin(), kTop.end()}));
  if (j.contains("schema") && j["schema"] != 1)
    errors.push_back(file + ": field \"schema\": this fmam reads schema 1, got " + j["schema"].dump());
  for (const char* f : {"name", "doc"}) {
    if (!j.contains(f)) continue;
    if (!j[f].is_string())
      errors.push_back(file + ": field \"" + f + "\" must be a string, got " + j[f].dump());
    else
      (std::string(f) == "name" ? g.name : g.doc) = j[f].get<std::string>();
  }
  if (j.contains("train")) {
    if (!j["train"].is_object())
      errors.push_back(file + ": field \"train\" must be an object");
    else
      g.train_json = j["train"].dump();
  }
  read_string_map(j, file, "inputs", g.inputs, errors);
  read_string_map(j, file, "outputs", g.outputs, errors);
  if (!j.contains("nodes") || !j["nodes"].is_array()) {
    errors.push_back(file + ": field \"nodes\" must be a list of nodes");
  } else {
    int i = 0;
    for (const auto& n : j["nodes"]) {
      std::optional<NodeConfig> c = parse_node(n, file, i++, errors);
      if (c) g.nodes.push_back(std::move(*c));
    }
  }
  g.problems = std::move(errors);
  return g;
}

GraphConfig load_graph_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw GraphError({path + ": cannot open graph file"});
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_graph(ss.str(), path);
}

ParamOverride parse_override(const std::string& text) {
  auto eq = text.find('=');
  auto dot = text.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot > eq || dot == 0 || dot + 1 == eq)
    throw Error("--set \"" + text + "\": expected NODE_ID.PARAM=VALUE, e.g. blur.sigma=2");
  ParamOverride o;
  o.node_id = text.substr(0, dot);
  o.param = text.substr(dot + 1, eq - dot - 1);
  std::string v = text.substr(eq + 1);
  try {
    o.value = to_value(json::parse(v), "--set " + text);
  } catch (const json::exception&) {
    o.value = Value(v);  // a bare word: take it as a string
  }
  return o;
}

void apply_overrides(GraphConfig& g, const std::vector<ParamOverride>& overrides) {
  std::vector<std::string> errors;
  for (const auto& o : overrides) {
    auto it = std::find_if(g.nodes.begin(), g.nodes.end(), [&](const NodeConfig& n) { return n.id == o.node_id; });
    if (it == g.nodes.end()) {
      std::vector<std::string> ids;
      for (const auto& n : g.nodes) ids.push_back(n.id);
      errors.push_back(g.file + ": --set " + o.node_id + "." + o.param + ": no node \"" + o.node_id + "\"; nodes: " + join(ids));
      continue;
    }
    bool found = false;
    for (auto& [k, v] : it->params)
      if (k == o.param) {
        v = o.value;
        found = true;
      }
    if (!found) it->params.emplace_back(o.param, o.value);
  }
  if (!errors.empty()) throw GraphError(errors);
}

GraphConfig prune_to_streams(const GraphConfig& g, const std::vector<std::string>& streams) {
  std::map<std::string, const NodeConfig*> producer;
  for (const auto& n : g.nodes)
    for (const auto& [port, stream] : n.out) producer[stream] = &n;
  std::set<std::string> needed(streams.begin(), streams.end()), keep;
  std::vector<std::string> todo(streams.begin(), streams.end());
  while (!todo.empty()) {
    std::string s = todo.back();
    todo.pop_back();
    auto it = producer.find(s);
    if (it == producer.end() || !keep.insert(it->second->id).second) continue;
    for (const auto& [port, in] : it->second->in)
      if (needed.insert(in).second) todo.push_back(in);
  }
  GraphConfig out = g;
  out.nodes.clear();
  for (const auto& n : g.nodes)
    if (keep.count(n.id)) out.nodes.push_back(n);
  out.inputs.clear();
  for (const auto& [name, type] : g.inputs)
    if (needed.count(name)) out.inputs.emplace_back(name, type);
  out.outputs.clear();
  std::vector<std::string> missing;
  for (const auto& s : streams) {
    auto it = producer.find(s);
    if (it == producer.end()) {
      missing.push_back(s);
      continue;
    }
    const NodeType* t = Registry::global().find(it->second->type);
    std::string type;
    if (t)
      for (const auto& [port, stream] : it->second->out)
        if (stream == s && t->contract.find_output(port)) type = t->contract.find_output(port)->type;
    out.outputs.emplace_back(s, type.empty() ? "Tensor" : type);
  }
  if (!missing.empty()) {
    std::vector<std::string> errs;
    for (const auto& m : missing) errs.push_back(g.file + ": no node produces stream \"" + m + "\"");
    throw GraphError(errs);
  }
  return out;
}

// ---- validate(): a sequence of passes over one Validation ------------------------------------
// Each pass appends to the one problem list, so a user sees every config error at once. The passes
// run in the order a reader checks a graph: streams, then per node its names, type, params and ports,
// then the wiring between nodes, the order (cycles) and last the shapes, which need a valid order.

namespace {

// The state the passes share: the graph being built and the problems found so far.
struct Validation {
  Validation(const GraphConfig& graph, const Registry& reg) : g(graph), registry(reg), errors(graph.problems) {
    vg.config = graph;
  }
  const GraphConfig& g;
  const Registry& registry;
  std::vector<std::string> errors;
  ValidatedGraph vg;
  std::vector<ValidatedNode> nodes;  // file order until finish() puts them in topological order
  std::vector<int> order;            // topological order, indices into nodes

  void add_stream(const std::string& name, const std::string& type, int producer) {
    vg.stream_index[name] = int(vg.streams.size());
    StreamInfo s;
    s.name = name;
    s.type = type;
    s.producer = producer;
    vg.streams.push_back(s);
  }
  // A node that cannot be checked further still declares its streams, so that its readers are not
  // reported as reading a missing stream too.
  void keep_streams_of(const NodeConfig& c) {
    for (const auto& [port, stream] : c.out)
      if (!vg.stream_index.count(stream)) add_stream(stream, "", int(nodes.size()));
  }
  void throw_if_errors() const {
    if (!errors.empty()) throw GraphError(errors);
  }
};

std::string unknown_data_type(const std::string& type) {
  return "unknown data type \"" + type + "\"; known: " + join(DataTypes::global().names());
}

// "a, b, c", or `none` when the list is empty.
std::string known_names(const std::vector<std::string>& names, const std::string& none) {
  return names.empty() ? none : join(names);
}

// Pass 1, streams: the graph inputs are the first streams; inputs and outputs name known data types.
void declare_graph_streams(Validation& v) {
  const std::string& file = v.g.file;
  for (const auto& [name, type] : v.g.inputs) {
    if (!DataTypes::global().find(type)) v.errors.push_back(file + ": graph input \"" + name + "\": " + unknown_data_type(type));
    if (v.vg.stream_index.count(name))
      v.errors.push_back(file + ": graph input \"" + name + "\" is declared twice");
    else
      v.add_stream(name, type, -1);
  }
  for (const auto& [name, type] : v.g.outputs)
    if (!DataTypes::global().find(type)) v.errors.push_back(file + ": graph output \"" + name + "\": " + unknown_data_type(type));
}

// Per node: stream names and the id are snake_case; ids are unique.
void check_names(Validation& v, const NodeConfig& c, const std::string& pre, std::set<std::string>& ids) {
  const std::string rule = " must be snake_case (a-z, 0-9, _)";
  for (const auto& [port, stream] : c.in)
    if (!std::regex_match(stream, kSnake))
      v.errors.push_back(pre + ": input \"" + port + "\": stream name \"" + stream + "\"" + rule);
  for (const auto& [port, stream] : c.out)
    if (!std::regex_match(stream, kSnake))
      v.errors.push_back(pre + ": output \"" + port + "\": stream name \"" + stream + "\"" + rule);
  if (!std::regex_match(c.id, kSnake)) v.errors.push_back(pre + ": field \"id\":" + rule + ", got \"" + c.id + "\"");
  if (!ids.insert(c.id).second) v.errors.push_back(pre + ": field \"id\": \"" + c.id + "\" is used by another node");
}

// Per node: the type is registered; else the message suggests the closest names.
const NodeType* resolve_type(Validation& v, const NodeConfig& c) {
  const NodeType* t = v.registry.find(c.type);
  if (t) return t;
  auto near = v.registry.closest(c.type);
  std::string hint =
      near.empty() ? "; known types: " + join(v.registry.names()) : "; did you mean \"" + join(near, "\" or \"") + "\"?";
  v.errors.push_back(v.g.file + ": nodes[" + std::to_string(c.index) + "]: unknown type \"" + c.type + "\"" + hint);
  return nullptr;
}

// Pass 2, params: each param is declared by the contract and passes its own range/type check.
void bind_params(Validation& v, ValidatedNode& vn, const std::string& pre) {
  const Contract& k = vn.type->contract;
  vn.params = vn.type->make_params();
  for (const auto& [name, value] : vn.config.params) {
    const ParamSpec* p = k.find_param(name);
    if (!p) {
      std::vector<std::string> known;
      for (const auto& s : k.params()) known.push_back(s.name);
      v.errors.push_back(pre + ": unknown param \"" + name + "\"; known: " + known_names(known, "(none)"));
      continue;
    }
    try {
      p->set(vn.params.get(), value);
    } catch (const Error& e) {
      v.errors.push_back(pre + ": param \"" + name + "\": " + e.what());
    }
  }
}

// Pass 3a, ports: every wired input is declared, every required input is wired.
void check_input_ports(Validation& v, const ValidatedNode& vn, const std::string& pre) {
  const Contract& k = vn.type->contract;
  const auto& in = vn.config.in;
  for (const auto& [port, stream] : in) {
    if (k.find_input(port)) continue;
    std::vector<std::string> known;
    for (const auto& s : k.inputs()) known.push_back(s.name);
    v.errors.push_back(pre + ": unknown input \"" + port + "\"; known: " + known_names(known, "(none: a source node)"));
  }
  for (const auto& s : k.inputs()) {
    bool connected = std::any_of(in.begin(), in.end(), [&](auto& pr) { return pr.first == s.name; });
    if (!connected && !s.optional)
      v.errors.push_back(pre + ": input \"" + s.name + "\" is not connected; it takes a " + s.type + " (" + s.description + ")");
  }
}

// Pass 3b, ports: every output is declared and creates its stream, which has no other producer.
void declare_outputs(Validation& v, const ValidatedNode& vn, const std::string& pre) {
  const Contract& k = vn.type->contract;
  for (const auto& [port, stream] : vn.config.out) {
    const PortSpec* o = k.find_output(port);
    if (!o) {
      std::vector<std::string> known;
      for (const auto& s : k.outputs()) known.push_back(s.name);
      v.errors.push_back(pre + ": unknown output \"" + port + "\"; known: " + join(known));
      continue;
    }
    auto it = v.vg.stream_index.find(stream);
    if (it != v.vg.stream_index.end()) {
      const StreamInfo& s = v.vg.streams[it->second];
      // producer == nodes.size(): this node, through another of its ports.
      const std::string& id = size_t(s.producer) < v.nodes.size() ? v.nodes[s.producer].config.id : vn.config.id;
      std::string other = s.producer < 0 ? std::string("it is a graph input") : "node \"" + id + "\" writes it too";
      v.errors.push_back(pre + ": output \"" + port + "\" writes stream \"" + stream + "\", but " + other +
                         "; a stream has one producer");
      continue;
    }
    v.add_stream(stream, o->type, int(v.nodes.size()));
  }
}

// Passes 2 and 3 for one node, in file order, so its problems read together.
void declare_node(Validation& v, const NodeConfig& c, std::set<std::string>& ids) {
  ValidatedNode vn;
  vn.config = c;
  const std::string pre = node_prefix(v.g.file, c.id, c.type);
  if (c.parsed) {  // else parse_graph reported it already
    check_names(v, c, pre, ids);
    vn.type = resolve_type(v, c);
  }
  if (!vn.type) {
    v.keep_streams_of(c);
  } else {
    bind_params(v, vn, pre);
    check_input_ports(v, vn, pre);
    declare_outputs(v, vn, pre);
  }
  v.nodes.push_back(std::move(vn));
}

// "; did you mean "<name>"?" for a stream within edit distance 2 of `stream`, else "".
std::string stream_hint(const Validation& v, const std::string& stream) {
  std::string hint;
  size_t best = 3;
  for (const auto& s : v.vg.streams)
    if (levenshtein(s.name, stream) < best) {
      best = levenshtein(s.name, stream);
      hint = "; did you mean \"" + s.name + "\"?";
    }
  return hint;
}

// Pass 3c, ports: every input stream is produced, with the type the port takes.
void connect_inputs(Validation& v) {
  for (size_t i = 0; i < v.nodes.size(); ++i) {
    const auto& vn = v.nodes[i];
    if (!vn.type) continue;
    const std::string pre = node_prefix(v.g.file, vn.config.id, vn.config.type);
    for (const auto& [port, stream] : vn.config.in) {
      const PortSpec* p = vn.type->contract.find_input(port);
      if (!p) continue;
      auto it = v.vg.stream_index.find(stream);
      if (it == v.vg.stream_index.end()) {
        v.errors.push_back(pre + ": input \"" + port + "\" reads stream \"" + stream + "\", which no node produces" +
                           stream_hint(v, stream));
        continue;
      }
      StreamInfo& s = v.vg.streams[it->second];
      s.consumers.push_back(int(i));
      if (s.type.empty() || s.type == p->type) continue;
      std::string from = s.producer < 0 ? "graph input" : "output of node \"" + v.nodes[s.producer].config.id + "\"";
      v.errors.push_back(pre + ": input \"" + port + "\" reads stream \"" + stream + "\" of type " + s.type + " (" + from +
                         "); expected " + p->type);
    }
  }
}

// Pass 3d, ports: every graph output is produced, with its declared type.
void check_graph_outputs(Validation& v) {
  const std::string& file = v.g.file;
  for (const auto& [name, type] : v.g.outputs) {
    auto it = v.vg.stream_index.find(name);
    if (it == v.vg.stream_index.end())
      v.errors.push_back(file + ": graph output \"" + name + "\": no node produces stream \"" + name + "\"");
    else if (!v.vg.streams[it->second].type.empty() && v.vg.streams[it->second].type != type)
      v.errors.push_back(file + ": graph output \"" + name + "\" is declared " + type + ", but the stream carries " +
                         v.vg.streams[it->second].type);
  }
}

// The nodes each node reads from (producers of its input streams; graph inputs have none).
std::vector<std::set<int>> predecessors(const Validation& v) {
  std::vector<std::set<int>> preds(v.nodes.size());
  for (size_t i = 0; i < v.nodes.size(); ++i)
    for (const auto& [port, stream] : v.nodes[i].config.in) {
      auto it = v.vg.stream_index.find(stream);
      if (it != v.vg.stream_index.end() && v.vg.streams[it->second].producer >= 0)
        preds[i].insert(v.vg.streams[it->second].producer);
    }
  return preds;
}

// The problem line for nodes left over by Kahn's algorithm (indeg > 0): one loop among them.
std::string describe_cycle(const Validation& v, const std::vector<std::set<int>>& preds, const std::vector<int>& indeg) {
  // Walk back from one node left over until a node repeats: that is the cycle.
  std::set<int> left;
  for (size_t i = 0; i < indeg.size(); ++i)
    if (indeg[i] > 0) left.insert(int(i));
  std::vector<int> path;
  int u = *left.begin();
  while (std::find(path.begin(), path.end(), u) == path.end()) {
    path.push_back(u);
    for (int p : preds[u])
      if (left.count(p)) {
        u = p;
        break;
      }
  }
  // path[k+1] feeds path[k]; read the loop backwards to follow the data.
  auto start = std::find(path.begin(), path.end(), u);
  std::vector<std::string> cyc;
  for (auto it = path.end(); it != start;) cyc.push_back("\"" + v.nodes[*--it].config.id + "\"");
  cyc.push_back(cyc.front());
  // A long loop (a generated graph) is shown by its ends, so the message stays one readable line.
  const size_t loop = cyc.size() - 1;
  if (cyc.size() > 12) {
    cyc.erase(cyc.begin() + 8, cyc.end() - 3);
    cyc.insert(cyc.begin() + 8, "... (" + std::to_string(loop) + " nodes in the loop) ...");
  }
  return v.g.file + ": the graph has a cycle: " + join(cyc, " -> ") +
         "; streams must flow one way (no node may read its own output, directly or not)";
}

// Pass 4, order: topological order (Kahn, file order among the free nodes); what is left sits on a cycle.
void order_nodes(Validation& v) {
  const size_t n = v.nodes.size();
  const std::vector<std::set<int>> preds = predecessors(v);
  std::vector<int> indeg(n);
  for (size_t i = 0; i < n; ++i) indeg[i] = int(preds[i].size());
  std::vector<int> ready;
  for (size_t i = 0; i < n; ++i)
    if (!indeg[i]) ready.push_back(int(i));
  while (!ready.empty()) {
    std::sort(ready.begin(), ready.end(), std::greater<int>());  // keep file order when free
    int u = ready.back();
    ready.pop_back();
    v.order.push_back(u);
    for (size_t w = 0; w < n; ++w)
      if (preds[w].count(u) && --indeg[w] == 0) ready.push_back(int(w));
  }
  if (v.order.size() < n) v.errors.push_back(describe_cycle(v, preds, indeg));
}

// Pass 5, shapes: each node's infer() in topological order, from the shapes of its input streams.
void infer_shapes(Validation& v) {
  for (int i : v.order) {
    auto& vn = v.nodes[i];
    auto& streams = v.vg.streams;
    for (const auto& [port, stream] : vn.config.in) vn.in_shapes.set(port, streams[v.vg.stream(stream)].shape);
    if (!vn.type->infer) continue;
    try {
      vn.out_shapes = vn.type->infer(vn.params.get(), vn.in_shapes);
    } catch (const Error& e) {
      v.errors.push_back(node_prefix(v.g.file, vn.config.id, vn.config.type) + ": " + e.what());
      continue;
    }
    for (const auto& [port, stream] : vn.config.out)
      if (vn.out_shapes.has(port)) streams[v.vg.stream(stream)].shape = vn.out_shapes.at(port);
  }
}

// Stream index per contract port (-1 = not connected), in contract order.
std::vector<int> port_streams(const ValidatedGraph& vg, const std::vector<PortSpec>& ports,
                              const std::vector<std::pair<std::string, std::string>>& wired) {
  std::vector<int> out;
  for (const auto& p : ports) {
    int idx = -1;
    for (const auto& [port, stream] : wired)
      if (port == p.name) idx = vg.stream(stream);
    out.push_back(idx);
  }
  return out;
}

// Renumbers producers/consumers into topological order and resolves port -> stream indices.
ValidatedGraph finish(Validation& v) {
  ValidatedGraph& vg = v.vg;
  std::vector<int> pos(v.nodes.size());
  for (size_t k = 0; k < v.order.size(); ++k) pos[v.order[k]] = int(k);
  for (auto& s : vg.streams) {
    if (s.producer >= 0) s.producer = pos[s.producer];
    for (auto& c : s.consumers) c = pos[c];
  }
  for (int i : v.order) {
    auto& vn = v.nodes[i];
    vn.in_streams = port_streams(vg, vn.type->contract.inputs(), vn.config.in);
    vn.out_streams = port_streams(vg, vn.type->contract.outputs(), vn.config.out);
    vg.nodes.push_back(std::move(vn));
  }
  for (const auto& [name, type] : v.g.inputs) vg.input_streams.push_back(vg.stream(name));
  for (const auto& [name, type] : v.g.outputs) vg.output_streams.push_back(vg.stream(name));
  return std::move(vg);
}

}  // namespace

ValidatedGraph validate(const GraphConfig& g, const Registry& registry) {
  Validation v(g, registry);
  declare_graph_streams(v);
  std::set<std::string> ids;
  for (const auto& c : g.nodes) declare_node(v, c, ids);
  connect_inputs(v);
  check_graph_outputs(v);
  order_nodes(v);
  v.throw_if_errors();  // shapes need every node typed and a valid order
  infer_shapes(v);
  v.throw_if_errors();
  return finish(v);
}

std::string to_dot(const ValidatedGraph& g) {
  std::ostringstream o;
  auto q = [](const std::string& s) {
    std::string r = "\"";
    for (char c : s) r += (c == '"') ? std::string("\\\"") : std::string(1, c);
    return r + "\"";
  };
  o << "digraph " << q(g.config.name.empty() ? "graph" : g.config.name) << " {\n";
  o << "  rankdir=TB;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n";
  if (!g.config.doc.empty()) o << "  label=" << q(g.config.doc) << "; labelloc=t;\n";
  for (int s : g.input_streams)
    o << "  " << q("in:" + g.streams[s].name) << " [shape=ellipse, label=" << q(g.streams[s].name + "\\n" + g.streams[s].type)
      << "];\n";
  for (int s : g.output_streams)
    o << "  " << q("out:" + g.streams[s].name) << " [shape=ellipse, label=" << q(g.streams[s].name + "\\n" + g.streams[s].type)
      << "];\n";
  for (const auto& n : g.nodes) o << "  " << q(n.config.id) << " [label=" << q(n.config.id + "\\n" + n.config.type) << "];\n";
  for (const auto& s : g.streams) {
    std::string from = s.producer < 0 ? "in:" + s.name : g.nodes[s.producer].config.id;
    std::string label = s.name + " : " + s.type + (s.shape.known ? " " + s.shape.str() : "");
    for (int c : s.consumers) o << "  " << q(from) << " -> " << q(g.nodes[c].config.id) << " [label=" << q(label) << "];\n";
    for (int out : g.output_streams)
      if (g.streams[out].name == s.name) o << "  " << q(from) << " -> " << q("out:" + s.name) << ";\n";
  }
  o << "}\n";
  return o.str();
}

}  // namespace fmam
