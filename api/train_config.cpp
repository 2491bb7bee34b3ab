#include "api/train_config.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <set>

#include <nlohmann/json.hpp>

namespace fmam {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// One declared field: its name, what it accepts (for messages and help), whether it must be
// there, and a check that returns the problem with a value ("" when fine).
struct Field {
  std::string name, accepts, help;
  bool required = false;
  bool settable = false;  // may be changed with --set
  std::function<std::string(const json&)> check;
};

std::string got(const json& v) { return ", got " + v.dump(); }
std::string number_text(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", x);
  return b;
}

auto integer_in(long long lo, long long hi) {
  return [lo, hi](const json& v) -> std::string {
    if (!v.is_number_integer()) return "expected an integer" + got(v);
    const long long x = v.get<long long>();
    if (x < lo || x > hi) return "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]" + got(v);
    return "";
  };
}
auto number_at_least(double lo, bool strict) {
  return [lo, strict](const json& v) -> std::string {
    if (!v.is_number()) return "expected a number" + got(v);
    const double x = v.get<double>();
    if (!(strict ? x > lo : x >= lo)) return std::string("must be ") + (strict ? "> " : ">= ") + number_text(lo) + got(v);
    return "";
  };
}
std::string is_string(const json& v) { return v.is_string() ? "" : "expected a string" + got(v); }
std::string is_bool(const json& v) { return v.is_boolean() ? "" : "expected true or false" + got(v); }

// train.image_size: an integer N (N x N), or a string "WxH" for long parts (4:1 is common).
bool parse_size(const json& v, int& w, int& h) {
  if (v.is_number_integer()) {
    w = h = int(std::clamp<long long>(v.get<long long>(), -1, 1 << 20));
    return true;
  }
  if (!v.is_string()) return false;
  const std::string s = v.get<std::string>();
  const size_t x = s.find('x');
  auto digits = [](const std::string& t) {
    return !t.empty() && t.size() < 6 && t.find_first_not_of("0123456789") == std::string::npos;
  };
  if (x == std::string::npos || !digits(s.substr(0, x)) || !digits(s.substr(x + 1))) return false;
  w = std::stoi(s.substr(0, x));
  h = std::stoi(s.substr(x + 1));
  return true;
}
std::string check_size(const json& v) {
  int w = 0, h = 0;
  if (!parse_size(v, w, h)) return "expected an integer (256) or \"WxH\" (\"512x128\")" + got(v);
  if (std::min(w, h) < 32 || std::max(w, h) > 2048) return "each side must be in [32, 2048], got " + image_size_text(w, h);
  return "";
}
std::string check_betas(const json& b) {
  const bool ok = b.is_array() && b.size() == 2 && b[0].is_number() && b[1].is_number() && b[0].get<double>() >= 0 &&
                  b[0].get<double>() < 1 && b[1].get<double>() >= 0 && b[1].get<double>() < 1;
  return ok ? "" : "betas must be [beta1, beta2], each in [0, 1)" + got(b);
}
std::string check_names(const json& v) {
  if (!v.is_array() || v.empty()) return "expected a non-empty list of node ids" + got(v);
  for (const auto& n : v)
    if (!n.is_string()) return "expected a non-empty list of node ids" + got(v);
  return "";
}
std::string check_losses(const json& v) {
  if (!v.is_object() || v.empty()) return "expected {\"<loss stream>\": weight, ...}" + got(v);
  for (const auto& [k, w] : v.items())
    if (!w.is_number() || w.get<double>() < 0) return "\"" + k + "\": the weight must be a number >= 0" + got(w);
  return "";
}
std::string check_updates(const json& v) {
  if (!v.is_object()) return "expected {\"<loss>\": [\"<node>\", ...]}" + got(v);
  return "";
}

const std::vector<Field>& train_fields() {
  static const std::vector<Field> f = {
      {"inference_graph", "string", "the graph the model runs with, relative to this file", true, false, is_string},
      {"batch_size", "integer in [1, 1024]", "images per optimizer step (default 16)", false, true, integer_in(1, 1024)},
      {"image_size", "N or \"WxH\"", "the size images are resized to (default 256; \"512x128\" for long parts)", false, true,
       check_size},
      {"seed", "integer >= 0", "data order, and added to every node's seed (default 0)", false, true, integer_in(0, 1LL << 31)},
      {"precision", "auto | fp32 | bf16-mixed", "what trainable nodes compute in (auto: bf16-mixed on CPUs with AVX512-BF16)",
       false, true,
       [](const json& v) -> std::string {
         if (!v.is_string()) return "expected \"auto\", \"fp32\" or \"bf16-mixed\"" + got(v);
         const std::string p = v.get<std::string>();
         return p == "auto" || p == "fp32" || p == "bf16-mixed" ? "" : "\"" + p + "\" is not one of auto, fp32, bf16-mixed";
       }},
      {"drop_last", "bool", "end an epoch before its last partial batch (default false, as PyTorch)", false, true, is_bool},
      {"teacher_cache_mb", "integer in [0, 1048576]",
       "MiB for the frozen teacher's pyramids of the normal images, computed in epoch 1 and reused (bf16 under bf16-mixed; "
       "default 1024, 0: off; images past the bound are computed every epoch)",
       false, true, integer_in(0, 1LL << 20)},
      {"int8_calibration_images", "integer in [0, 100000]",
       "training images the finished model is calibrated on for --precision int8, spread over the set (default 64; 0: "
       "none; fmam quantize does it later)",
       false, true, integer_in(0, 100000)},
      {"stages", "list of stages", "trained one after the other", true, false,
       [](const json& v) -> std::string {
         return v.is_array() && !v.empty() ? "" : "expected a non-empty list of stages" + got(v);
       }},
      {"doc", "string", "a comment", false, false, is_string},
  };
  return f;
}

const std::vector<Field>& stage_fields() {
  static const std::vector<Field> f = {
      {"name", "string", "the stage's name, used by --set (stage1.epochs=10)", true, false, is_string},
      {"epochs", "integer >= 0", "passes over the training images", true, true, integer_in(0, 100000)},
      {"lr", "number > 0", "Adam's learning rate", true, true, number_at_least(0, true)},
      {"betas", "[beta1, beta2]", "Adam's betas, each in [0, 1) (default [0.9, 0.999])", false, true, check_betas},
      {"weight_decay", "number >= 0", "L2 weight decay (default 0)", false, true, number_at_least(0, false)},
      {"l1", "number >= 0", "L1 penalty on the trained weights (default 0)", false, true, number_at_least(0, false)},
      {"train", "list of node ids", "the nodes whose weights this stage updates", true, false, check_names},
      {"losses", "{stream: weight}", "the loss streams summed into the objective", true, false, check_losses},
      {"updates", "{loss: [node ids]}", "the only nodes a loss updates (default: every trained node)", false, false,
       check_updates},
      {"doc", "string", "a comment", false, false, is_string},
  };
  return f;
}

std::string known(const std::vector<Field>& fields, bool settable_only) {
  std::string s;
  for (const auto& f : fields)
    if (!settable_only || f.settable) s += (s.empty() ? "" : ", ") + f.name;
  return s;
}

// Checks an object against its fields; problems are prefixed with `where`.
void check_object(const json& o, const std::vector<Field>& fields, const std::string& where, std::vector<std::string>& problems) {
  for (const auto& [k, v] : o.items()) {
    auto it = std::find_if(fields.begin(), fields.end(), [&](const Field& f) { return f.name == k; });
    if (it == fields.end()) {
      problems.push_back(where + ": unknown field \"" + k + "\"; known: " + known(fields, false));
      continue;
    }
    const std::string p = it->check(v);
    if (!p.empty()) problems.push_back(where + "." + k + ": " + p);
  }
  for (const auto& f : fields)
    if (f.required && !o.contains(f.name)) problems.push_back(where + ": missing \"" + f.name + "\" (" + f.accepts + ")");
}

std::string stage_where(const std::string& file, const json& st, size_t i) {
  const json* n = st.is_object() && st.contains("name") && st["name"].is_string() ? &st["name"] : nullptr;
  return file + ": train.stages " + (n ? "\"" + n->get<std::string>() + "\"" : "[" + std::to_string(i) + "]");
}

// All problems of a train section (after --set), without the graph's side.
std::vector<std::string> section_problems(const std::string& file, const json& j) {
  std::vector<std::string> problems;
  if (!j.is_object()) return {file + ": train: expected an object" + got(j)};
  check_object(j, train_fields(), file + ": train", problems);
  if (!j.contains("stages") || !j["stages"].is_array()) return problems;
  std::set<std::string> names;
  for (size_t i = 0; i < j["stages"].size(); ++i) {
    const json& st = j["stages"][i];
    const std::string where = stage_where(file, st, i);
    if (!st.is_object()) {
      problems.push_back(where + ": expected an object" + got(st));
      continue;
    }
    std::vector<std::string> mine;
    check_object(st, stage_fields(), where, mine);
    // The messages say `train.stages "stage1": betas must be ...`, not `...".betas: betas must`.
    for (auto& p : mine) {
      const std::string dup = where + ".betas: ";
      if (p.rfind(dup, 0) == 0) p = where + ": " + p.substr(dup.size());
      const std::string dot = where + ".";
      if (p.rfind(dot, 0) == 0) p = where + ": " + p.substr(dot.size());
    }
    problems.insert(problems.end(), mine.begin(), mine.end());
    if (st.contains("name") && st["name"].is_string() && !names.insert(st["name"].get<std::string>()).second)
      problems.push_back(where + ": a second stage of this name");
    if (st.contains("updates") && st["updates"].is_object() && st.contains("losses") && st["losses"].is_object()) {
      const json train = st.value("train", json::array());
      for (const auto& [loss, nodes] : st["updates"].items()) {
        if (!st["losses"].contains(loss))
          problems.push_back(where + ": updates: \"" + loss + "\" is not one of the stage's losses");
        if (check_names(nodes) != "") {
          problems.push_back(where + ": updates: \"" + loss + "\": expected a non-empty list of node ids" + got(nodes));
          continue;
        }
        for (const auto& n : nodes)
          if (std::find(train.begin(), train.end(), n) == train.end())
            problems.push_back(where + ": updates: \"" + loss + "\": " + n.dump() + " is not a node the stage trains");
      }
    }
  }
  return problems;
}

// --set train.X / <stage>.X into the section. A key no declared field settable is an error.
void apply_train_sets(const std::string& file, json& j, const std::vector<ParamOverride>& sets) {
  for (const auto& o : sets) {
    json v = json::parse(o.value.str());
    const std::string what = "--set " + o.node_id + "." + o.param;
    if (o.node_id == "train") {
      auto it = std::find_if(train_fields().begin(), train_fields().end(), [&](const Field& f) { return f.name == o.param; });
      if (it == train_fields().end() || !it->settable)
        throw Error(file + ": " + what + ": no such train setting; known: " + known(train_fields(), true));
      j[o.param] = v;
      continue;
    }
    bool found = false;
    for (auto& st : j["stages"])
      if (st.is_object() && st.value("name", "") == o.node_id) {
        auto it = std::find_if(stage_fields().begin(), stage_fields().end(), [&](const Field& f) { return f.name == o.param; });
        if (it == stage_fields().end() || !it->settable)
          throw Error(file + ": " + what + ": stage \"" + o.node_id + "\" has no setting \"" + o.param +
                      "\"; known: " + known(stage_fields(), true));
        st[o.param] = v;
        found = true;
      }
    if (!found) throw Error(file + ": " + what + ": no node or stage \"" + o.node_id + "\"");
  }
}

TrainConfig to_config(const json& j) {
  TrainConfig c;
  c.inference_graph = j.at("inference_graph").get<std::string>();
  c.batch_size = j.value("batch_size", 16);
  if (j.contains("image_size")) parse_size(j["image_size"], c.image_width, c.image_height);
  c.seed = j.value("seed", 0);
  c.precision = j.value("precision", std::string("auto"));
  c.drop_last = j.value("drop_last", false);
  c.teacher_cache_mb = j.value("teacher_cache_mb", 1024LL);
  c.int8_calibration_images = j.value("int8_calibration_images", 64);
  for (const auto& st : j.at("stages")) {
    Stage s;
    s.name = st.at("name").get<std::string>();
    s.epochs = st.at("epochs").get<int>();
    s.lr = st.at("lr").get<double>();
    s.weight_decay = st.value("weight_decay", 0.0);
    s.l1 = st.value("l1", 0.0);
    if (st.contains("betas")) {
      s.beta1 = st["betas"][0].get<double>();
      s.beta2 = st["betas"][1].get<double>();
    }
    s.train = st.at("train").get<std::vector<std::string>>();
    for (const auto& [k, v] : st.at("losses").items()) s.losses.emplace_back(k, v.get<double>());
    if (st.contains("updates"))
      for (const auto& [loss, nodes] : st["updates"].items()) s.updates[loss] = nodes.get<std::vector<std::string>>();
    c.stages.push_back(s);
  }
  return c;
}

json section_of(const GraphConfig& g) {
  if (g.train_json.empty())
    throw Error(g.file + ": not a training graph (no \"train\" section); training graphs are graphs/*_train.json");
  return json::parse(g.train_json);
}

}  // namespace

std::string image_size_text(int width, int height) {
  return width == height ? std::to_string(width) : std::to_string(width) + "x" + std::to_string(height);
}

void split_overrides(const GraphConfig& g, const std::vector<std::string>& sets, std::vector<ParamOverride>& node_sets,
                     std::vector<ParamOverride>& train_sets) {
  std::set<std::string> ids;
  for (const auto& n : g.nodes) ids.insert(n.id);
  for (const auto& s : sets) {
    ParamOverride o = parse_override(s);
    (ids.count(o.node_id) ? node_sets : train_sets).push_back(o);
  }
}

TrainConfig parse_train_config(const GraphConfig& g, const std::vector<ParamOverride>& sets) {
  json j = section_of(g);
  apply_train_sets(g.file, j, sets);
  std::vector<std::string> problems = section_problems(g.file, j);
  if (!problems.empty()) throw GraphError(problems);
  return to_config(j);
}

std::vector<std::string> train_config_problems(const GraphConfig& g) {
  if (g.train_json.empty()) return {};
  const json j = json::parse(g.train_json);
  std::vector<std::string> problems = section_problems(g.file, j);
  if (!problems.empty()) return problems;
  const TrainConfig c = to_config(j);
  std::set<std::string> ids, streams;
  for (const auto& n : g.nodes) {
    ids.insert(n.id);
    for (const auto& [port, s] : n.out) streams.insert(s);
  }
  for (const auto& st : c.stages) {
    const std::string where = g.file + ": train.stages \"" + st.name + "\"";
    for (const auto& id : st.train)
      if (!ids.count(id)) problems.push_back(where + ": train: no node \"" + id + "\" in the graph");
    for (const auto& [loss, w] : st.losses)
      if (!streams.count(loss)) problems.push_back(where + ": losses: no node produces stream \"" + loss + "\"");
  }
  const fs::path inf = fs::path(g.file).parent_path() / c.inference_graph;
  std::error_code ec;
  if (!fs::exists(inf, ec)) problems.push_back(g.file + ": train.inference_graph: " + inf.string() + " does not exist");
  return problems;
}

std::string train_fields_help() {
  std::string s = "train section (a training graph's \"train\": {...}):\n";
  auto lines = [&](const std::vector<Field>& fields, const std::string& indent) {
    for (const auto& f : fields) {
      std::string name = f.name + (f.required ? " (required)" : "");
      s += indent + name + std::string(name.size() < 26 ? 26 - name.size() : 1, ' ') + f.accepts + ": " + f.help +
           (f.settable ? "" : " [not --set]") + "\n";
    }
  };
  lines(train_fields(), "  ");
  s += "  each stage:\n";
  lines(stage_fields(), "    ");
  return s;
}

}  // namespace fmam
