#include "framework/model_file.h"

#include <openssl/evp.h>
#include <nlohmann/json.hpp>
#include <torch/serialize.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "framework/io.h"
#include "framework/stateful.h"

namespace fmam {

Stateful::~Stateful() = default;
Fingerprinted::~Fingerprinted() = default;

namespace {

constexpr const char* kFormat = "fmam-model";
// SHA-256 of the learned tensors, verified at load. Absent in files of older fmam versions.
constexpr const char* kChecksumField = "tensors_sha256";

// SHA-256 over every tensor in key order: its key, dtype, shape and bytes (contiguous, CPU), so
// that a flipped byte, a renamed or a reshaped tensor all change it.
std::string tensors_sha256(const std::map<std::string, at::Tensor>& tensors) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) throw Error("model file: OpenSSL SHA-256 is unavailable");
  auto add = [&](const void* p, size_t n) { EVP_DigestUpdate(ctx, p, n); };
  for (const auto& [key, t0] : tensors) {
    const at::Tensor t = t0.detach().contiguous().cpu();
    const std::string head = key + '\0' + std::string(c10::toString(t.scalar_type())) + '\0';
    add(head.data(), head.size());
    for (int64_t d : t.sizes()) add(&d, sizeof d);
    add(t.data_ptr(), t.numel() * t.element_size());
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  std::string hex;
  char b[3];
  for (unsigned i = 0; i < len; ++i) {
    std::snprintf(b, sizeof b, "%02x", md[i]);
    hex += b;
  }
  return hex;
}

// Whether the zip archive was written by fmam (torch::pickle_save names its records
// "archive/..."; Python's torch.save names them after the file). Tools that rewrite a model in
// Python (scripts/rd4ad_official.py export) replace tensors and keep the other fields, a stale
// checksum among them, so only fmam's own files have theirs verified.
bool written_by_fmam(const std::vector<char>& b) {
  static const char kName[] = "archive/";
  if (b.size() < 30 + 8 || b[0] != 'P' || b[1] != 'K' || b[2] != 3 || b[3] != 4) return false;
  const size_t name_len = size_t((unsigned char)b[26]) | size_t((unsigned char)b[27]) << 8;
  return name_len >= 8 && b.size() >= 30 + name_len && std::equal(kName, kName + 8, b.begin() + 30);
}

c10::Dict<std::string, std::string> to_dict(const std::map<std::string, std::string>& m) {
  c10::Dict<std::string, std::string> d;
  for (const auto& [k, v] : m) d.insert(k, v);
  return d;
}

// "stopped in stage 1 after 3 epoch(s)" from a checkpoint's progress JSON.
std::string checkpoint_position(const std::string& progress) {
  try {
    const auto j = nlohmann::json::parse(progress);
    return "stopped in stage " + std::to_string(j.value("stage", 0) + 1) + " after " + std::to_string(j.value("epoch", 0)) +
           " epoch(s)";
  } catch (const std::exception&) {
    return "progress unreadable";
  }
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
  d.insert(kChecksumField, tensors_sha256(m.tensors));
  d.insert("progress", m.progress);
  c10::Dict<std::string, at::Tensor> o;
  for (const auto& [k, v] : m.optimizer_state) o.insert(k, v.detach().contiguous().cpu());
  d.insert("optimizer_state", o);
  std::vector<char> bytes = torch::pickle_save(d);
  atomic_write_bytes(path, bytes.data(), bytes.size());
}

Model load_model(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(path + ": a folder, not a model file");
  if (!std::filesystem::exists(path, ec)) throw Error(path + ": cannot open model file (no such file)");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open model file");
  std::vector<char> bytes;
  try {
    bytes.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  } catch (const std::exception& e) {
    throw Error(path + ": cannot read model file: " + e.what());
  }
  return parse_model(bytes, path);
}

Model parse_model(const std::vector<char>& bytes, const std::string& path) {
  if (bytes.empty()) throw Error(path + ": the model file is empty");
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
  // Each field checked for its type before use: c10's own accessors fail with an INTERNAL ASSERT.
  auto bad_type = [&](const char* key, const char* want) {
    return Error(path + ": model field \"" + key + "\" must be " + want + ", got " + need(key).tagKind());
  };
  auto need_string = [&](const char* key) -> std::string {
    if (!need(key).isString()) throw bad_type(key, "a string");
    return need(key).toStringRef();
  };
  auto optional_number = [&](const char* key) -> std::optional<double> {
    const c10::IValue v = need(key);
    if (v.isNone()) return std::nullopt;
    if (!v.isDouble() && !v.isInt()) throw bad_type(key, "a number or None");
    const double x = v.isDouble() ? v.toDouble() : double(v.toInt());
    if (!std::isfinite(x)) throw Error(path + ": model field \"" + key + "\" is not finite (" + std::to_string(x) + ")");
    return x;
  };
  auto tensor_dict = [&](const char* key, std::map<std::string, at::Tensor>& out) {
    const c10::IValue v = need(key);
    if (!v.isGenericDict()) throw bad_type(key, "a dict of tensors");
    for (const auto& e : v.toGenericDict()) {
      if (!e.key().isString() || !e.value().isTensor()) throw bad_type(key, "a dict of name -> tensor");
      out[e.key().toStringRef()] = e.value().toTensor();
    }
  };
  if (!d.contains("format") || !d.at("format").isString() || d.at("format").toStringRef() != kFormat)
    throw Error(path + ": not an fmam model file (field \"format\" is not \"" + kFormat + "\")");
  Model m;
  try {
    if (!need("version").isInt()) throw bad_type("version", "an integer");
    int64_t version = need("version").toInt();
    if (version != Model::kVersion)
      throw Error(path + ": model version " + std::to_string(version) + ", this fmam reads " + std::to_string(Model::kVersion));
    m.graph_name = need_string("graph_name");
    m.graph_json = need_string("graph_json");
    if (!need("fingerprints").isGenericDict()) throw bad_type("fingerprints", "a dict of strings");
    for (const auto& e : need("fingerprints").toGenericDict()) {
      if (!e.key().isString() || !e.value().isString()) throw bad_type("fingerprints", "a dict of strings");
      m.fingerprints[e.key().toStringRef()] = e.value().toStringRef();
    }
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
    m.normalize = need_string("normalize");
    m.train_config = need_string("train_config");
    m.threshold = optional_number("threshold");
    m.map_lo = optional_number("map_lo");
    m.map_hi = optional_number("map_hi");
    tensor_dict("tensors", m.tensors);
    if (d.contains("progress")) m.progress = need_string("progress");
    if (d.contains("optimizer_state")) tensor_dict("optimizer_state", m.optimizer_state);
    if (d.contains(kChecksumField) && written_by_fmam(bytes)) {
      const std::string stored = need_string(kChecksumField), actual = tensors_sha256(m.tensors);
      if (stored != actual)
        throw Error(path + ": the model's tensors do not match their checksum (field \"" + kChecksumField + "\": stored " +
                    stored.substr(0, 16) + "..., computed " + actual.substr(0, 16) +
                    "...): the file is corrupt (a damaged copy or disk); use another copy or train again");
    }
    for (const auto& [k, t] : m.tensors)
      if (t.is_floating_point() && !at::isfinite(t).all().item<bool>())
        throw Error(path + ": tensor \"" + k + "\" holds NaN or infinite values; the model is unusable (did training diverge?)");
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
    if (dynamic_cast<Stateful*>(&n) && !per_node.count(vn.config.id)) {
      // A checkpoint stopped in an early stage lacks the nodes later stages add (stage 1 of
      // fmam_rkd trains no feature mapping): say so, not that the graph is the wrong one.
      if (!m.progress.empty())
        throw Error(path + ": an unfinished training checkpoint (" + checkpoint_position(m.progress) +
                    "), not a finished model: it has no tensors for " + node_prefix(file, vn.config.id, vn.config.type) +
                    " yet; finish it with fmam train --resume");
      throw Error(path + ": the model has no tensors for " + node_prefix(file, vn.config.id, vn.config.type) +
                  "; it was trained for graph \"" + m.graph_name + "\"");
    }
    if (auto* f = dynamic_cast<Fingerprinted*>(&n)) {
      auto it = m.fingerprints.find(vn.config.id);
      if (it != m.fingerprints.end() && !f->same_as(it->second))
        throw Error(path + ": " + node_prefix(file, vn.config.id, vn.config.type) + ": the model was trained against \"" +
                    it->second + "\", this graph loads \"" + f->fingerprint() + "\"");
    }
  }
}

}  // namespace fmam
