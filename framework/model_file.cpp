#include "framework/model_file.h"

#include <torch/serialize.h>

#include <fstream>
#include <iterator>

#include "framework/io.h"
#include "framework/stateful.h"

namespace fmam {

Stateful::~Stateful() = default;
Fingerprinted::~Fingerprinted() = default;

namespace {

constexpr const char* kFormat = "fmam-model";

c10::Dict<std::string, std::string> to_dict(const std::map<std::string, std::string>& m) {
  c10::Dict<std::string, std::string> d;
  for (const auto& [k, v] : m) d.insert(k, v);
  return d;
}

}  // namespace

void save_model(const std::string& path, const Model& m) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("format", std::string(kFormat));
  d.insert("version", int64_t(Model::kVersion));
  d.insert("graph_name", m.graph_name);
  d.insert("graph_json", m.graph_json);
  d.insert("fingerprints", to_dict(m.fingerprints));
  d.insert("image_size", std::vector<int64_t>{m.image_height, m.image_width});
  d.insert("normalize", m.normalize);
  d.insert("train_config", m.train_config);
  d.insert("threshold", m.threshold ? c10::IValue(*m.threshold) : c10::IValue());
  d.insert("map_lo", m.map_lo ? c10::IValue(*m.map_lo) : c10::IValue());
  d.insert("map_hi", m.map_hi ? c10::IValue(*m.map_hi) : c10::IValue());
  c10::Dict<std::string, at::Tensor> t;
  for (const auto& [k, v] : m.tensors) t.insert(k, v.detach().contiguous().cpu());
  d.insert("tensors", t);
  d.insert("progress", m.progress);
  c10::Dict<std::string, at::Tensor> o;
  for (const auto& [k, v] : m.optimizer_state) o.insert(k, v.detach().contiguous().cpu());
  d.insert("optimizer_state", o);
  std::vector<char> bytes = torch::pickle_save(d);
  atomic_write_bytes(path, bytes.data(), bytes.size());
}

Model load_model(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open model file");
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  c10::IValue v;
  try {
    v = torch::pickle_load(bytes);
  } catch (const std::exception& e) {
    std::string w = e.what();
    throw Error(path + ": not a model file (cannot unpickle: " + w.substr(0, w.find('\n')) + ")");
  }
  if (!v.isGenericDict()) throw Error(path + ": not an fmam model file (no dict at the top)");
  auto d = v.toGenericDict();
  auto need = [&](const char* key) -> c10::IValue {
    if (!d.contains(key)) throw Error(path + ": model field \"" + key + "\" is missing");
    return d.at(key);
  };
  if (!d.contains("format") || !d.at("format").isString() || d.at("format").toStringRef() != kFormat)
    throw Error(path + ": not an fmam model file (field \"format\" is not \"" + kFormat + "\")");
  Model m;
  try {
    int64_t version = need("version").toInt();
    if (version != Model::kVersion)
      throw Error(path + ": model version " + std::to_string(version) + ", this fmam reads " + std::to_string(Model::kVersion));
    m.graph_name = need("graph_name").toStringRef();
    m.graph_json = need("graph_json").toStringRef();
    for (const auto& e : need("fingerprints").toGenericDict()) m.fingerprints[e.key().toStringRef()] = e.value().toStringRef();
    // A typed int list from C++, a generic list from Python's torch.save: both hold ints.
    std::vector<int64_t> size;
    const c10::IValue sz = need("image_size");
    if (sz.isIntList()) size = sz.toIntVector();
    else if (sz.isList())
      for (const auto& e : sz.toListRef()) size.push_back(e.isInt() ? e.toInt() : -1);
    if (size.size() != 2 || size[0] < 1 || size[1] < 1)
      throw Error(path + ": model field \"image_size\" must hold [height, width], two positive integers");
    m.image_height = int(size[0]);
    m.image_width = int(size[1]);
    m.normalize = need("normalize").toStringRef();
    m.train_config = need("train_config").toStringRef();
    if (!need("threshold").isNone()) m.threshold = need("threshold").toDouble();
    if (!need("map_lo").isNone()) m.map_lo = need("map_lo").toDouble();
    if (!need("map_hi").isNone()) m.map_hi = need("map_hi").toDouble();
    for (const auto& e : need("tensors").toGenericDict()) m.tensors[e.key().toStringRef()] = e.value().toTensor();
    if (d.contains("progress")) m.progress = d.at("progress").toStringRef();
    if (d.contains("optimizer_state"))
      for (const auto& e : d.at("optimizer_state").toGenericDict())
        m.optimizer_state[e.key().toStringRef()] = e.value().toTensor();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    std::string w = e.what();
    throw Error(path + ": malformed model file: " + w.substr(0, w.find('\n')));
  }
  return m;
}

void collect_model(Executor& ex, Model& m) {
  for (const auto& vn : ex.graph().nodes) {
    Node& n = ex.node(vn.config.id);
    if (auto* s = dynamic_cast<Stateful*>(&n))
      for (auto& [name, t] : s->named_state()) m.tensors[vn.config.id + "/" + name] = t.detach().clone();
    if (auto* f = dynamic_cast<Fingerprinted*>(&n)) m.fingerprints[vn.config.id] = f->fingerprint();
  }
}

void apply_model(const Model& m, Executor& ex, const std::string& path) {
  std::map<std::string, std::map<std::string, at::Tensor>> per_node;
  for (const auto& [key, t] : m.tensors) {
    auto slash = key.find('/');
    if (slash == std::string::npos) throw Error(path + ": tensor \"" + key + "\" has no \"<node_id>/\" prefix");
    per_node[key.substr(0, slash)][key.substr(slash + 1)] = t;
  }
  const std::string& file = ex.graph().config.file;
  for (const auto& [id, state] : per_node) {
    const ValidatedNode* vn = nullptr;
    for (const auto& n : ex.graph().nodes)
      if (n.config.id == id) vn = &n;
    if (!vn)
      throw Error(path + ": the model holds tensors for node \"" + id + "\", which " + file +
                  " does not have; was it trained for graph \"" + m.graph_name + "\"?");
    auto* s = dynamic_cast<Stateful*>(&ex.node(id));
    if (!s) throw Error(path + ": the model holds tensors for " + node_prefix(file, id, vn->config.type) + ", which has none");
    try {
      s->load_state(state);
    } catch (const std::exception& e) {
      throw Error(path + ": " + node_prefix(file, id, vn->config.type) + ": " + e.what());
    }
  }
  for (const auto& vn : ex.graph().nodes) {
    Node& n = ex.node(vn.config.id);
    if (dynamic_cast<Stateful*>(&n) && !per_node.count(vn.config.id))
      throw Error(path + ": the model has no tensors for " + node_prefix(file, vn.config.id, vn.config.type) +
                  "; it was trained for graph \"" + m.graph_name + "\"");
    if (auto* f = dynamic_cast<Fingerprinted*>(&n)) {
      auto it = m.fingerprints.find(vn.config.id);
      if (it != m.fingerprints.end() && !f->same_as(it->second))
        throw Error(path + ": " + node_prefix(file, vn.config.id, vn.config.type) + ": the model was trained against \"" +
                    it->second + "\", this graph loads \"" + f->fingerprint() + "\"");
    }
  }
}

}  // namespace fmam
