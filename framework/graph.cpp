// Graph JSON parsing, validation (all problems at once) and Graphviz output.
#include "framework/graph.h"

#include <algorithm>
#include <fstream>
#include <functional>
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
                     std::vector<std::pair<std::string, std::string>>& out,
                     std::vector<std::string>& errors) {
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

const std::regex kSnake("^[a-z][a-z0-9_]*$");

}  // namespace

GraphConfig parse_graph(const std::string& text, const std::string& file) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw GraphError({file + ":" + line_col(text, e.byte > 0 ? e.byte - 1 : 0) +
                      ": not valid JSON: " + e.what()});
  } catch (const json::exception& e) {  // e.g. a number too large for a double (found by fuzzing)
    throw GraphError({file + ": not valid JSON: " + e.what()});
  }
  std::vector<std::string> errors;
  GraphConfig g;
  g.file = file;
  if (!j.is_object()) throw GraphError({file + ": a graph must be a JSON object"});
  static const std::set<std::string> kTop = {"schema", "name", "doc", "inputs", "outputs", "nodes", "train"};
  for (const auto& [k, v] : j.items())
    if (!kTop.count(k))
      errors.push_back(file + ": unknown field \"" + k + "\"; known: " + join({kTop.begin(), kTop.end()}));
  if (j.contains("schema") && j["schema"] != 1)
    errors.push_back(file + ": field \"schema\": this fmam reads schema 1, got " + j["schema"].dump());
  for (const char* f : {"name", "doc"}) {
    if (!j.contains(f)) continue;
    if (!j[f].is_string()) errors.push_back(file + ": field \"" + f + "\" must be a string, got " + j[f].dump());
    else (std::string(f) == "name" ? g.name : g.doc) = j[f].get<std::string>();
  }
  if (j.contains("train")) {
    if (!j["train"].is_object()) errors.push_back(file + ": field \"train\" must be an object");
    else g.train_json = j["train"].dump();
  }
  read_string_map(j, file, "inputs", g.inputs, errors);
  read_string_map(j, file, "outputs", g.outputs, errors);
  if (!j.contains("nodes") || !j["nodes"].is_array()) {
    errors.push_back(file + ": field \"nodes\" must be a list of nodes");
  } else {
    static const std::set<std::string> kNode = {"id", "type", "doc", "in", "out", "params"};
    int i = 0;
    for (const auto& n : j["nodes"]) {
      NodeConfig c;
      c.index = i;
      std::string where = file + ": nodes[" + std::to_string(i) + "]";
      ++i;
      if (!n.is_object()) {
        errors.push_back(where + ": a node must be an object");
        continue;
      }
      if (n.contains("id") && n["id"].is_string()) c.id = n["id"];
      if (n.contains("type") && n["type"].is_string()) c.type = n["type"];
      if (!c.id.empty()) where += " \"" + c.id + "\"";
      if (n.contains("doc")) {
        if (n["doc"].is_string()) c.doc = n["doc"];
        else errors.push_back(where + ": field \"doc\" must be a string, got " + n["doc"].dump());
      }
      for (const auto& [k, v] : n.items())
        if (!kNode.count(k))
          errors.push_back(where + ": unknown field \"" + k + "\"; known: " + join({kNode.begin(), kNode.end()}));
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
      g.nodes.push_back(std::move(c));
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
      errors.push_back(g.file + ": --set " + o.node_id + "." + o.param + ": no node \"" + o.node_id +
                       "\"; nodes: " + join(ids));
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

ValidatedGraph validate(const GraphConfig& g, const Registry& registry) {
  std::vector<std::string> errors = g.problems;
  const std::string& file = g.file;
  ValidatedGraph vg;
  vg.config = g;

  // Streams: graph inputs first.
  auto add_stream = [&](const std::string& name, const std::string& type, int producer) {
    vg.stream_index[name] = int(vg.streams.size());
    StreamInfo s;
    s.name = name;
    s.type = type;
    s.producer = producer;
    vg.streams.push_back(s);
  };
  for (const auto& [name, type] : g.inputs) {
    if (!DataTypes::global().find(type))
      errors.push_back(file + ": graph input \"" + name + "\": unknown data type \"" + type +
                       "\"; known: " + join(DataTypes::global().names()));
    if (vg.stream_index.count(name))
      errors.push_back(file + ": graph input \"" + name + "\" is declared twice");
    else
      add_stream(name, type, -1);
  }
  for (const auto& [name, type] : g.outputs)
    if (!DataTypes::global().find(type))
      errors.push_back(file + ": graph output \"" + name + "\": unknown data type \"" + type +
                       "\"; known: " + join(DataTypes::global().names()));

  // Nodes: type, params, ports.
  std::vector<ValidatedNode> nodes;
  std::set<std::string> ids;
  for (const auto& c : g.nodes) {
    ValidatedNode vn;
    vn.config = c;
    const std::string pre = node_prefix(file, c.id, c.type);
    if (!c.parsed) {  // already reported; keep its streams so readers are not reported too
      for (const auto& [port, stream] : c.out)
        if (!vg.stream_index.count(stream)) add_stream(stream, "", int(nodes.size()));
      nodes.push_back(std::move(vn));
      continue;
    }
    for (const auto& [port, stream] : c.in)
      if (!std::regex_match(stream, kSnake))
        errors.push_back(pre + ": input \"" + port + "\": stream name \"" + stream + "\" must be snake_case (a-z, 0-9, _)");
    for (const auto& [port, stream] : c.out)
      if (!std::regex_match(stream, kSnake))
        errors.push_back(pre + ": output \"" + port + "\": stream name \"" + stream + "\" must be snake_case (a-z, 0-9, _)");
    if (!std::regex_match(c.id, kSnake))
      errors.push_back(pre + ": field \"id\": must be snake_case (a-z, 0-9, _), got \"" + c.id + "\"");
    if (!ids.insert(c.id).second) errors.push_back(pre + ": field \"id\": \"" + c.id + "\" is used by another node");
    vn.type = registry.find(c.type);
    if (!vn.type) {
      auto near = registry.closest(c.type);
      std::string hint = near.empty() ? "; known types: " + join(registry.names())
                                      : "; did you mean \"" + join(near, "\" or \"") + "\"?";
      errors.push_back(file + ": nodes[" + std::to_string(c.index) + "]: unknown type \"" + c.type + "\"" + hint);
      // Its streams still exist (type unknown), so readers do not report them missing too.
      for (const auto& [port, stream] : c.out)
        if (!vg.stream_index.count(stream)) add_stream(stream, "", int(nodes.size()));
      nodes.push_back(std::move(vn));
      continue;
    }
    const Contract& k = vn.type->contract;
    vn.params = vn.type->make_params();
    for (const auto& [name, value] : c.params) {
      const ParamSpec* p = k.find_param(name);
      if (!p) {
        std::vector<std::string> known;
        for (const auto& s : k.params()) known.push_back(s.name);
        errors.push_back(pre + ": unknown param \"" + name + "\"; known: " +
                         (known.empty() ? std::string("(none)") : join(known)));
        continue;
      }
      try {
        p->set(vn.params.get(), value);
      } catch (const Error& e) {
        errors.push_back(pre + ": param \"" + name + "\": " + e.what());
      }
    }
    for (const auto& [port, stream] : c.in) {
      if (!k.find_input(port)) {
        std::vector<std::string> known;
        for (const auto& s : k.inputs()) known.push_back(s.name);
        errors.push_back(pre + ": unknown input \"" + port + "\"; known: " +
                         (known.empty() ? std::string("(none: a source node)") : join(known)));
      }
    }
    for (const auto& s : k.inputs()) {
      bool connected = std::any_of(c.in.begin(), c.in.end(), [&](auto& pr) { return pr.first == s.name; });
      if (!connected && !s.optional)
        errors.push_back(pre + ": input \"" + s.name + "\" is not connected; it takes a " + s.type +
                         " (" + s.description + ")");
    }
    for (const auto& [port, stream] : c.out) {
      const PortSpec* o = k.find_output(port);
      if (!o) {
        std::vector<std::string> known;
        for (const auto& s : k.outputs()) known.push_back(s.name);
        errors.push_back(pre + ": unknown output \"" + port + "\"; known: " + join(known));
        continue;
      }
      auto it = vg.stream_index.find(stream);
      if (it != vg.stream_index.end()) {
        const StreamInfo& s = vg.streams[it->second];
        std::string other = s.producer < 0 ? std::string("it is a graph input")
                                           : "node \"" + nodes[s.producer].config.id + "\" writes it too";
        errors.push_back(pre + ": output \"" + port + "\" writes stream \"" + stream +
                         "\", but " + other + "; a stream has one producer");
        continue;
      }
      add_stream(stream, o->type, int(nodes.size()));
    }
    nodes.push_back(std::move(vn));
  }

  // Consumers: every input stream must be produced, with the right type.
  std::vector<std::string> stream_names;
  for (const auto& s : vg.streams) stream_names.push_back(s.name);
  for (size_t i = 0; i < nodes.size(); ++i) {
    const auto& vn = nodes[i];
    if (!vn.type) continue;
    const std::string pre = node_prefix(file, vn.config.id, vn.config.type);
    for (const auto& [port, stream] : vn.config.in) {
      const PortSpec* p = vn.type->contract.find_input(port);
      if (!p) continue;
      auto it = vg.stream_index.find(stream);
      if (it == vg.stream_index.end()) {
        std::string hint;
        size_t best = 3;
        for (const auto& n : stream_names)
          if (levenshtein(n, stream) < best) {
            best = levenshtein(n, stream);
            hint = "; did you mean \"" + n + "\"?";
          }
        errors.push_back(pre + ": input \"" + port + "\" reads stream \"" + stream +
                         "\", which no node produces" + hint);
        continue;
      }
      StreamInfo& s = vg.streams[it->second];
      s.consumers.push_back(int(i));
      if (!s.type.empty() && s.type != p->type) {
        std::string from = s.producer < 0 ? "graph input" : "output of node \"" + nodes[s.producer].config.id + "\"";
        errors.push_back(pre + ": input \"" + port + "\" reads stream \"" + stream + "\" of type " + s.type +
                         " (" + from + "); expected " + p->type);
      }
    }
  }
  for (const auto& [name, type] : g.outputs) {
    auto it = vg.stream_index.find(name);
    if (it == vg.stream_index.end())
      errors.push_back(file + ": graph output \"" + name + "\": no node produces stream \"" + name + "\"");
    else if (!vg.streams[it->second].type.empty() && vg.streams[it->second].type != type)
      errors.push_back(file + ": graph output \"" + name + "\" is declared " + type + ", but the stream carries " +
                       vg.streams[it->second].type);
  }

  // Topological order (Kahn); what is left over sits on a cycle.
  const size_t n = nodes.size();
  std::vector<std::set<int>> preds(n);
  for (size_t i = 0; i < n; ++i)
    for (const auto& [port, stream] : nodes[i].config.in) {
      auto it = vg.stream_index.find(stream);
      if (it != vg.stream_index.end() && vg.streams[it->second].producer >= 0)
        preds[i].insert(vg.streams[it->second].producer);
    }
  std::vector<int> order, indeg(n);
  for (size_t i = 0; i < n; ++i) indeg[i] = int(preds[i].size());
  std::vector<int> ready;
  for (size_t i = 0; i < n; ++i)
    if (!indeg[i]) ready.push_back(int(i));
  while (!ready.empty()) {
    std::sort(ready.begin(), ready.end(), std::greater<int>());  // keep file order when free
    int u = ready.back();
    ready.pop_back();
    order.push_back(u);
    for (size_t v = 0; v < n; ++v)
      if (preds[v].count(u) && --indeg[v] == 0) ready.push_back(int(v));
  }
  if (order.size() < n) {
    // Walk back from one node left over until a node repeats: that is the cycle.
    std::set<int> left;
    for (size_t i = 0; i < n; ++i)
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
    for (auto it = path.end(); it != start;) cyc.push_back("\"" + nodes[*--it].config.id + "\"");
    cyc.push_back(cyc.front());
    // A long loop (a generated graph) is shown by its ends, so the message stays one readable line.
    const size_t loop = cyc.size() - 1;
    if (cyc.size() > 12)
      cyc.erase(cyc.begin() + 8, cyc.end() - 3), cyc.insert(cyc.begin() + 8, "... (" + std::to_string(loop) + " nodes in the loop) ...");
    errors.push_back(file + ": the graph has a cycle: " + join(cyc, " -> ") +
                     "; streams must flow one way (no node may read its own output, directly or not)");
  }

  if (!errors.empty()) throw GraphError(errors);

  // Shape inference in topological order.
  for (int i : order) {
    auto& vn = nodes[i];
    const std::string pre = node_prefix(file, vn.config.id, vn.config.type);
    for (const auto& [port, stream] : vn.config.in) vn.in_shapes.set(port, vg.streams[vg.stream(stream)].shape);
    if (!vn.type->infer) continue;
    try {
      vn.out_shapes = vn.type->infer(vn.params.get(), vn.in_shapes);
    } catch (const Error& e) {
      errors.push_back(pre + ": " + e.what());
      continue;
    }
    for (const auto& [port, stream] : vn.config.out)
      if (vn.out_shapes.has(port)) vg.streams[vg.stream(stream)].shape = vn.out_shapes.at(port);
  }
  if (!errors.empty()) throw GraphError(errors);

  // Renumber producers/consumers into topological order and resolve port -> stream indices.
  std::vector<int> pos(n);
  for (size_t k = 0; k < order.size(); ++k) pos[order[k]] = int(k);
  for (auto& s : vg.streams) {
    if (s.producer >= 0) s.producer = pos[s.producer];
    for (auto& c : s.consumers) c = pos[c];
  }
  for (int i : order) {
    auto& vn = nodes[i];
    for (const auto& p : vn.type->contract.inputs()) {
      int idx = -1;
      for (const auto& [port, stream] : vn.config.in)
        if (port == p.name) idx = vg.stream(stream);
      vn.in_streams.push_back(idx);
    }
    for (const auto& p : vn.type->contract.outputs()) {
      int idx = -1;
      for (const auto& [port, stream] : vn.config.out)
        if (port == p.name) idx = vg.stream(stream);
      vn.out_streams.push_back(idx);
    }
    vg.nodes.push_back(std::move(vn));
  }
  for (const auto& [name, type] : g.inputs) vg.input_streams.push_back(vg.stream(name));
  for (const auto& [name, type] : g.outputs) vg.output_streams.push_back(vg.stream(name));
  return vg;
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
    o << "  " << q("in:" + g.streams[s].name) << " [shape=ellipse, label=" << q(g.streams[s].name + "\\n" + g.streams[s].type) << "];\n";
  for (int s : g.output_streams)
    o << "  " << q("out:" + g.streams[s].name) << " [shape=ellipse, label=" << q(g.streams[s].name + "\\n" + g.streams[s].type) << "];\n";
  for (const auto& n : g.nodes)
    o << "  " << q(n.config.id) << " [label=" << q(n.config.id + "\\n" + n.config.type) << "];\n";
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
