// fmam train: the training driver. It runs a training graph (graphs/*_train.json) stage by stage:
// the data half (decode, anomaly synthesis, resize, frozen teacher) pipelines on the TBB graph;
// the learning half (students, feature mappings, losses) runs in order on whole batches in the
// executor's serial tail, where this file adds backward() and the optimizer step. A model file
// (a resumable checkpoint) is written atomically after every epoch and on Ctrl-C / SIGTERM.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "apps/cli.h"
#include "framework/cpu_allocator.h"
#include "framework/executor.h"
#include "framework/graph.h"
#include "framework/io.h"
#include "framework/model_file.h"
#include "framework/registry.h"
#include "framework/stateful.h"
#include "training/adam.h"

namespace fmam {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::atomic<int> g_interrupted{0};
extern "C" void on_signal(int sig) { g_interrupted = sig; }

struct Stage {
  std::string name;
  int epochs = 1;
  double lr = 1e-3, weight_decay = 0, l1 = 0;
  double beta1 = 0.9, beta2 = 0.999;                // Adam's betas (RD4AD uses 0.5, 0.999)
  std::vector<std::string> train;                   // node ids whose weights this stage updates
  std::vector<std::pair<std::string, double>> losses;  // loss stream -> weight
  // Loss stream -> the only nodes it updates (default: every node in `train`). The paper trains
  // the feature mappings with AML alone (Eq. 7), the student with KD and AML:
  // "updates": {"loss_kd_fm": ["student"]}.
  std::map<std::string, std::vector<std::string>> updates;
};

struct TrainConfig {
  std::string inference_graph;
  int batch_size = 16;
  int image_width = 256, image_height = 256;  // train.image_size: N (N x N) or "WxH" ("512x128")
  int seed = 0;
  std::string precision = "auto";  // auto | fp32 | bf16-mixed (see resolve_precision)
  // Whether an epoch ends with the last partial batch (false: it is trained on, as PyTorch's
  // DataLoader does by default and RD4AD's official loop does; with 54 images and batch 16 that
  // is 4 steps an epoch, not 3).
  bool drop_last = false;
  std::vector<Stage> stages;
};

// Whether this CPU multiplies bfloat16 natively (AVX512-BF16: Zen 4, Cooper Lake, Sapphire
// Rapids and later). Elsewhere oneDNN emulates bfloat16 and it is slower than float32.
bool cpu_has_native_bf16() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16");
}

// train.precision -> what the trainable nodes run. "auto" is bf16-mixed where the CPU has native
// bfloat16 and fp32 elsewhere.
Precision resolve_precision(const std::string& p) {
  if (p == "fp32") return Precision::kFloat32;
  if (p == "bf16-mixed") return Precision::kBFloat16Mixed;
  return cpu_has_native_bf16() ? Precision::kBFloat16Mixed : Precision::kFloat32;
}
const char* precision_name(Precision p) { return p == Precision::kBFloat16Mixed ? "bf16-mixed" : "fp32"; }

// "256" for a square size, "512x128" (width x height) otherwise.
std::string image_size_text(const TrainConfig& c) {
  return c.image_width == c.image_height ? std::to_string(c.image_width)
                                         : std::to_string(c.image_width) + "x" + std::to_string(c.image_height);
}

// train.image_size: an integer N (N x N), or a string "WxH" for long parts (4:1 is common).
void parse_image_size(const json& v, const std::string& where, TrainConfig& c) {
  if (v.is_number_integer()) {
    c.image_width = c.image_height = v.get<int>();
    return;
  }
  const std::string bad = where + ": expected an integer (256) or \"WxH\" (\"512x128\"), got " + v.dump();
  if (!v.is_string()) throw Error(bad);
  const std::string s = v.get<std::string>();
  const size_t x = s.find('x');
  auto digits = [](const std::string& t) { return !t.empty() && t.size() < 6 && t.find_first_not_of("0123456789") == std::string::npos; };
  if (x == std::string::npos || !digits(s.substr(0, x)) || !digits(s.substr(x + 1))) throw Error(bad);
  c.image_width = std::stoi(s.substr(0, x));
  c.image_height = std::stoi(s.substr(x + 1));
}

// A stage's "updates": {"<loss>": ["<node>", ...]}: each loss one of the stage's, each node one
// it trains.
void parse_updates(const json& u, const std::string& where, Stage& s) {
  if (!u.is_object()) throw Error(where + ": expected {\"<loss>\": [\"<node>\", ...]}, got " + u.dump());
  for (const auto& [loss, nodes] : u.items()) {
    bool known = false;
    for (const auto& [l, w] : s.losses) known |= l == loss;
    if (!known) throw Error(where + ": \"" + loss + "\" is not one of the stage's losses");
    if (!nodes.is_array() || nodes.empty()) throw Error(where + ": \"" + loss + "\": expected a non-empty list of node ids");
    for (const auto& n : nodes) {
      if (!n.is_string() || std::find(s.train.begin(), s.train.end(), n.get<std::string>()) == s.train.end())
        throw Error(where + ": \"" + loss + "\": " + n.dump() + " is not a node the stage trains");
      s.updates[loss].push_back(n.get<std::string>());
    }
  }
}

// Reads the "train" section, then applies --set overrides aimed at it ("train.batch_size=8",
// "stage2.epochs=10"). Errors name the graph file and the field.
TrainConfig parse_train(const std::string& file, const std::string& text, const std::vector<ParamOverride>& sets) {
  if (text.empty()) throw Error(file + ": not a training graph (no \"train\" section); training graphs are graphs/*_train.json");
  json j = json::parse(text);
  for (const auto& o : sets) {
    json v = json::parse(o.value.str());
    if (o.node_id == "train") {
      const bool known = o.param == "batch_size" || o.param == "image_size" || o.param == "seed" || o.param == "precision" ||
                         o.param == "drop_last";
      if (!known || j[o.param].is_object() || j[o.param].is_array())
        throw Error(file + ": --set train." + o.param +
                    ": no such train setting; known: batch_size, image_size, seed, precision, drop_last");
      j[o.param] = v;
      continue;
    }
    bool found = false;
    for (auto& st : j["stages"])
      if (st.value("name", "") == o.node_id) {
        if (!st.contains(o.param) && o.param != "weight_decay" && o.param != "l1" && o.param != "betas")
          throw Error(file + ": --set " + o.node_id + "." + o.param + ": stage \"" + o.node_id +
                      "\" has no setting \"" + o.param + "\"; known: epochs, lr, betas, weight_decay, l1");
        st[o.param] = v;
        found = true;
      }
    if (!found) throw Error(file + ": --set " + o.node_id + "." + o.param + ": no node or stage \"" + o.node_id + "\"");
  }
  TrainConfig c;
  auto where = [&](const std::string& f) { return file + ": train." + f; };
  try {
    c.inference_graph = j.at("inference_graph").get<std::string>();
    c.batch_size = j.value("batch_size", 16);
    if (j.contains("image_size")) parse_image_size(j["image_size"], where("image_size"), c);
    c.seed = j.value("seed", 0);
    if (j.contains("precision") && !j["precision"].is_string())
      throw Error(where("precision") + ": expected \"auto\", \"fp32\" or \"bf16-mixed\"");
    c.precision = j.value("precision", std::string("auto"));
    if (j.contains("drop_last") && !j["drop_last"].is_boolean())
      throw Error(where("drop_last") + ": expected true or false");
    c.drop_last = j.value("drop_last", false);
    for (const auto& st : j.at("stages")) {
      Stage s;
      s.name = st.at("name").get<std::string>();
      s.epochs = st.at("epochs").get<int>();
      s.lr = st.at("lr").get<double>();
      s.weight_decay = st.value("weight_decay", 0.0);
      s.l1 = st.value("l1", 0.0);
      if (st.contains("betas")) {
        const json& b = st["betas"];
        if (!b.is_array() || b.size() != 2 || !b[0].is_number() || !b[1].is_number() ||
            !(b[0].get<double>() >= 0 && b[0].get<double>() < 1) || !(b[1].get<double>() >= 0 && b[1].get<double>() < 1))
          throw Error(where("stages") + " \"" + s.name + "\": betas must be [beta1, beta2], each in [0, 1), got " + b.dump());
        s.beta1 = b[0].get<double>();
        s.beta2 = b[1].get<double>();
      }
      s.train = st.at("train").get<std::vector<std::string>>();
      for (const auto& [k, v] : st.at("losses").items()) s.losses.emplace_back(k, v.get<double>());
      if (st.contains("updates")) parse_updates(st["updates"], where("stages") + " \"" + s.name + "\": updates", s);
      if (s.epochs < 0) throw Error(where("stages") + " \"" + s.name + "\": epochs must be >= 0");
      if (!(s.lr > 0)) throw Error(where("stages") + " \"" + s.name + "\": lr must be > 0");
      if (s.losses.empty()) throw Error(where("stages") + " \"" + s.name + "\": losses is empty");
      c.stages.push_back(s);
    }
  } catch (const json::exception& e) {
    throw Error(file + ": train section: " + e.what());
  }
  if (c.batch_size < 1 || c.batch_size > 1024) throw Error(where("batch_size") + ": must be in [1, 1024]");
  for (int side : {c.image_width, c.image_height})
    if (side < 32 || side > 2048)
      throw Error(where("image_size") + ": each side must be in [32, 2048], got " + image_size_text(c));
  if (c.precision != "auto" && c.precision != "fp32" && c.precision != "bf16-mixed")
    throw Error(where("precision") + ": \"" + c.precision + "\" is not one of auto, fp32, bf16-mixed");
  return c;
}

// Every Resize takes the configured size; UpsampleSum paints maps at it.
void apply_image_size(GraphConfig& g, const TrainConfig& c) {
  std::vector<ParamOverride> o;
  for (const auto& n : g.nodes)
    if (n.type == "Resize" || n.type == "UpsampleSum") {
      o.push_back({n.id, "width", Value(c.image_width)});
      o.push_back({n.id, "height", Value(c.image_height)});
    }
  apply_overrides(g, o);
}

// train.seed reseeds every node that has a "seed" param (student and feature-map init, anomaly
// synthesis) by adding itself to the node's seed, besides the data order. train.seed 0 leaves
// the graph's seeds as they are, so one setting gives a different run, as a seed should.
void apply_train_seed(GraphConfig& g, int seed) {
  if (seed == 0) return;
  std::vector<ParamOverride> o;
  for (const auto& n : g.nodes) {
    const NodeType* t = Registry::global().find(n.type);
    const ParamSpec* spec = t ? t->contract.find_param("seed") : nullptr;
    if (!spec) continue;
    Value base = spec->default_value;
    for (const auto& [k, v] : n.params)
      if (k == "seed") base = v;
    if (base.is_int()) o.push_back({n.id, "seed", Value(int(base.as_int() + seed))});
  }
  apply_overrides(g, o);
}

// Loads the tensors of `m` into the executor's Stateful nodes that have any (a partial load:
// nodes new in this stage keep their seeded initialisation).
void load_partial(Executor& ex, const std::map<std::string, at::Tensor>& tensors) {
  for (const auto& vn : ex.graph().nodes) {
    auto* s = dynamic_cast<Stateful*>(&ex.node(vn.config.id));
    if (!s) continue;
    std::map<std::string, at::Tensor> mine;
    const std::string prefix = vn.config.id + "/";
    for (const auto& [k, t] : tensors)
      if (k.rfind(prefix, 0) == 0) mine[k.substr(prefix.size())] = t;
    if (!mine.empty()) s->load_state(mine);
  }
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(path + ": cannot read");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Backward of a stage whose losses do not all update every trained node: each restricted loss
// accumulates gradients into its own nodes' parameters only, the others into all; the graph is
// kept until the last pass.
void backward_routed(Frame& batch, const Stage& st, const std::map<std::string, std::vector<at::Tensor>>& update_params) {
  std::vector<std::pair<at::Tensor, const std::vector<at::Tensor>*>> passes;
  at::Tensor rest;
  for (const auto& [s, w] : st.losses) {
    at::Tensor l = w * batch.get<Tensor>(s).t.mean();
    auto it = update_params.find(s);
    if (it != update_params.end())
      passes.emplace_back(l, &it->second);
    else
      rest = rest.defined() ? rest + l : l;
  }
  for (size_t k = 0; k < passes.size(); ++k)
    passes[k].first.backward({}, /*retain_graph=*/rest.defined() || k + 1 < passes.size(), false, *passes[k].second);
  if (rest.defined()) rest.backward();
}

}  // namespace

int cmd_train(int argc, char** argv) {
  auto opts = cli::common_options();
  opts.insert(opts.begin(),
              {{"data", "DIR", "a category folder in MVTec AD layout: trains on DIR/train/good", false, "d"},
               {"out", "FILE", "the model file to write (and to --resume from)", false, "o"},
               {"set", "KEY=VALUE", "override a setting: train.batch_size=8, train.image_size=128 (or WxH:\n"
                                    "                              train.image_size=512x128 for long parts), train.seed=1,\n"
                                    "                              train.precision=fp32 (default auto: bf16-mixed on CPUs with\n"
                                    "                              AVX512-BF16, else fp32), train.drop_last=true (default false:\n"
                                    "                              the last partial batch is trained on), stage1.epochs=10,\n"
                                    "                              stage2.lr=1e-4, stage1.betas=[0.5,0.999] (Adam; default\n"
                                    "                              [0.9,0.999]), stage1.weight_decay=0,\n"
                                    "                              or a node param (synth.tau=0.4)", true, ""},
               {"resume", "", "continue from the checkpoint in --out (after Ctrl-C, or to add epochs)", false, ""},
               {"max-images", "N", "use only the first N training images (quick runs, tests)", false, ""},
               {"quiet", "", "no progress bar", false, "q"}});
  cli::Args a("train", "fmam train GRAPH --data CATEGORY_DIR --out MODEL [--set KEY=VALUE]... [--resume]",
              "Train a detector on defect-free images. GRAPH is a training graph (graphs/*_train.json):\n"
              "its \"train\" section sets the stages (e.g. stage 1: plain KD, Adam lr 1e-3, 50 epochs;\n"
              "stage 2: FMAM, lr 1e-4 with an L1 penalty, 50 epochs), the batch size, image size and seed.\n"
              "A model file is written atomically after every epoch; Ctrl-C saves a checkpoint that\n"
              "--resume continues bit-exactly. Use the model with the graph it names:\n"
              "  fmam run graphs/fmam_rkd.json --model MODEL -i IMAGES -o OUT",
              opts,
              "examples:\n"
              "  fmam train graphs/fmam_rkd_train.json -d ../shared/data/mvtec_ad/bottle -o bottle.fmam\n"
              "  fmam train graphs/fmam_rkd_train.json -d ../shared/data/mvtec_ad/bottle -o quick.fmam \\\n"
              "      --set stage1.epochs=2 --set stage2.epochs=2 --set train.image_size=128\n"
              "\n"
              "environment:\n"
              "  FMAM_CPU_CACHE_MB=N   bound of the cache that keeps freed tensors of 1 MiB+ for the next\n"
              "                        batch (default 2048, emptied every epoch; 0 turns it off)");
  if (!a.parse(argc, argv)) return 0;
  cli::load_plugins(a);
  if (a.positionals().size() != 1) throw Error("fmam train: expected one GRAPH; see fmam train --help");
  const std::string graph_path = a.positionals()[0];
  const std::string data = a.get("data"), out = a.get("out");
  if (data.empty()) throw Error("fmam train: --data CATEGORY_DIR is required");
  if (out.empty()) throw Error("fmam train: --out MODEL is required");

  GraphConfig g = load_graph_file(graph_path);
  std::vector<ParamOverride> node_sets, train_sets;
  std::set<std::string> node_ids;
  for (const auto& n : g.nodes) node_ids.insert(n.id);
  for (const auto& s : a.all("set")) {
    ParamOverride o = parse_override(s);
    (node_ids.count(o.node_id) ? node_sets : train_sets).push_back(o);
  }
  TrainConfig cfg = parse_train(graph_path, g.train_json, train_sets);
  int total_epochs = 0;
  for (const auto& st : cfg.stages) total_epochs += st.epochs;
  if (total_epochs == 0 && !a.flag("resume"))
    throw Error(graph_path + ": every stage has 0 epochs: nothing to train (a model of untrained weights is no detector)");
  apply_overrides(g, node_sets);
  apply_image_size(g, cfg);
  apply_train_seed(g, cfg.seed);
  cli::attach_io(g, true, "");
  validate(g);  // the whole training graph, every stage's branch, before any work

  // The inference graph the model is for; validated now so a mistake shows before hours of work.
  const std::string inf_path = (fs::path(graph_path).parent_path() / cfg.inference_graph).string();
  GraphConfig inf = load_graph_file(inf_path);
  apply_image_size(inf, cfg);
  const ValidatedGraph inf_valid = validate(inf);
  std::set<std::string> inf_ids;
  for (const auto& n : inf.nodes) inf_ids.insert(n.id);

  std::string good = (fs::path(data) / "train" / "good").string();
  if (!fs::is_directory(good)) throw Error("fmam train: --data \"" + data + "\": no train/good folder (MVTec AD layout expected)");
  std::vector<std::string> files = list_images(good);
  const int max_images = a.get_int("max-images", 0);
  if (max_images > 0 && int(files.size()) > max_images) files.resize(max_images);
  const int B = std::min<int>(cfg.batch_size, int(files.size()));
  const long long full_batches = (long long)files.size() / B;
  const long long batches_per_epoch = cfg.drop_last ? full_batches : ((long long)files.size() + B - 1) / B;
  if (batches_per_epoch < 1) throw Error("fmam train: fewer images than one batch");

  Model model;
  json progress = {{"stage", 0}, {"epoch", 0}, {"batches", 0}, {"history", json::array()}};
  if (a.flag("resume")) {
    if (!fs::exists(out)) throw Error("fmam train --resume: " + out + " does not exist");
    model = load_model(out);
    // A checkpoint continues with its own image size and batch size: with others, the weights
    // would resume on different inputs while the model recorded the new size.
    const long long was_batch = json::parse(model.train_config).value("batch_size", (long long)cfg.batch_size);
    if (model.image_width != cfg.image_width || model.image_height != cfg.image_height || was_batch != cfg.batch_size)
      throw Error("fmam train --resume: " + out + " was trained with train.image_size=" + std::to_string(model.image_width) + "x" +
                  std::to_string(model.image_height) + ", train.batch_size=" + std::to_string(was_batch) + "; this run asks for " +
                  image_size_text(cfg) + ", " + std::to_string(cfg.batch_size) +
                  ": resume with the checkpoint's settings, or train a new model with another --out");
    if (model.progress.empty()) {
      cli::log(out + ": training already finished; raise the epochs with --set to train more");
      // A finished model resumes after its last stage: re-run from the stage whose epochs grew.
    }
    progress = model.progress.empty() ? json::object() : json::parse(model.progress);
    if (progress.empty()) {
      progress = {{"stage", 0}, {"epoch", 0}, {"batches", 0}, {"history", json::array()}};
      json hist = json::parse(model.train_config).value("history", json::array());
      // Count finished epochs per stage from the history, so added epochs continue the schedule.
      std::map<std::string, int> done;
      for (const auto& h : hist) done[h["stage"].get<std::string>()] = std::max(done[h["stage"].get<std::string>()], h["epoch"].get<int>() + 1);
      size_t s = 0;
      while (s < cfg.stages.size() && done[cfg.stages[s].name] >= cfg.stages[s].epochs) ++s;
      progress["stage"] = s;
      progress["epoch"] = s < cfg.stages.size() ? done[cfg.stages[s].name] : 0;
      progress["history"] = hist;
    }
    cli::log("resuming " + out + " at stage " + std::to_string(progress["stage"].get<int>() + 1) + ", epoch " +
             std::to_string(progress["epoch"].get<int>() + 1) + ", batch " + std::to_string(progress["batches"].get<long long>()));
  }
  model.graph_name = inf.name;
  model.graph_json = read_text(inf_path);
  model.image_width = cfg.image_width;
  model.image_height = cfg.image_height;
  json config_json = json::parse(g.train_json);
  config_json["batch_size"] = cfg.batch_size;
  config_json["image_size"] = cfg.image_width == cfg.image_height ? json(cfg.image_width) : json(image_size_text(cfg));
  config_json["seed"] = cfg.seed;
  config_json["drop_last"] = cfg.drop_last;
  const Precision precision = resolve_precision(cfg.precision);
  config_json["precision"] = precision_name(precision);
  for (size_t s = 0; s < cfg.stages.size(); ++s) config_json["stages"][s]["epochs"] = cfg.stages[s].epochs;
  config_json["training_graph"] = g.name;
  config_json["data"] = data;
  config_json["images"] = files.size();

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);

  auto save = [&](bool finished) {
    // Only the inference graph's nodes go into the model (a shared training twin such as
    // "student_syn" holds the same tensors as "student").
    std::map<std::string, at::Tensor> keep;
    for (const auto& [k, t] : model.tensors)
      if (inf_ids.count(k.substr(0, k.find('/')))) keep[k] = t;
    model.tensors = keep;
    for (auto it = model.fingerprints.begin(); it != model.fingerprints.end();)
      it = inf_ids.count(it->first) ? std::next(it) : model.fingerprints.erase(it);
    config_json["history"] = progress["history"];
    model.train_config = config_json.dump();
    model.progress = finished ? std::string() : progress.dump();
    if (finished) model.optimizer_state.clear();
    save_model(out, model);
  };

  if (cfg.precision == "bf16-mixed" && !cpu_has_native_bf16())
    cli::log("train.precision bf16-mixed: this CPU has no native bfloat16 (AVX512-BF16), so it is emulated and "
             "slower than fp32; \"auto\" would pick fp32 here");
  if (!a.flag("quiet"))
    cli::log(std::string("precision ") + precision_name(precision) +
             (cfg.precision != "auto" ? "" : cpu_has_native_bf16() ? " (auto: this CPU has AVX512-BF16)" : " (auto: this CPU has no native bfloat16)"));
  // Training allocates the same big tensors every batch: keep them instead of mmap-ing and
  // faulting them in again (framework/cpu_allocator.h). FMAM_CPU_CACHE_MB bounds the cache (0: off).
  {
    const char* env = std::getenv("FMAM_CPU_CACHE_MB");
    const long long mb = env && *env ? std::atoll(env) : 2048;
    if (mb > 0) install_caching_cpu_allocator(size_t(mb) << 20);
  }
  const auto t_start = std::chrono::steady_clock::now();
  long long images_seen = 0;
  for (size_t si = progress["stage"].get<size_t>(); si < cfg.stages.size(); ++si) {
    const Stage& st = cfg.stages[si];
    if (progress["epoch"].get<int>() >= st.epochs) {
      progress["stage"] = si + 1;
      progress["epoch"] = 0;
      progress["batches"] = 0;
      continue;
    }
    std::vector<std::string> loss_streams;
    for (const auto& [s, w] : st.losses) loss_streams.push_back(s);
    ValidatedGraph vg = validate(prune_to_streams(g, loss_streams));
    RunOptions ro;
    ro.batch = B;
    ro.max_in_flight = 2 * B + 2;
    ro.threads = a.get_int("threads", 0);
    ro.tail_trainable = true;
    Executor ex(vg, ro);
    load_partial(ex, model.tensors);

    // The weights this stage updates (a shared module counts once).
    std::vector<at::Tensor> params;
    std::set<const void*> seen;
    std::set<std::string> trained(st.train.begin(), st.train.end());
    for (const auto& id : st.train) {
      bool present = false;
      for (const auto& vn : vg.nodes) present |= vn.config.id == id;
      if (!present) throw Error(graph_path + ": stage \"" + st.name + "\" trains node \"" + id + "\", which its losses do not use");
    }
    for (const auto& vn : vg.nodes) {
      auto* t = dynamic_cast<Trainable*>(&ex.node(vn.config.id));
      if (!t) continue;
      const bool on = trained.count(vn.config.id) > 0;
      t->set_training(on);
      if (!on) continue;
      for (auto& p : t->parameters())
        if (seen.insert(p.unsafeGetTensorImpl()).second) params.push_back(p);
    }
    for (const auto& vn : vg.nodes)  // a node sharing a trained module trains with it
      if (auto* t = dynamic_cast<Trainable*>(&ex.node(vn.config.id)))
        for (auto& p : t->parameters())
          if (seen.count(p.unsafeGetTensorImpl())) t->set_training(true);
    for (const auto& vn : vg.nodes)
      if (auto* t = dynamic_cast<Trainable*>(&ex.node(vn.config.id)))
        if (!t->set_precision(precision)) {
          if (cfg.precision == "bf16-mixed")
            throw Error(graph_path + ": train.precision \"bf16-mixed\": node \"" + vn.config.id + "\" (" + vn.config.type +
                        ") trains in fp32 only; use --set train.precision=fp32");
          cli::log("node \"" + vn.config.id + "\" (" + vn.config.type + ") trains in fp32 (it has no bf16-mixed)");
        }
    if (params.empty()) throw Error(graph_path + ": stage \"" + st.name + "\" has nothing to train");
    AdamOptions ao;
    ao.lr = st.lr;
    ao.weight_decay = st.weight_decay;
    ao.l1 = st.l1;
    ao.beta1 = st.beta1;
    ao.beta2 = st.beta2;
    Adam adam(params, ao);
    // The parameters each restricted loss updates (see Stage::updates).
    std::map<std::string, std::vector<at::Tensor>> update_params;
    for (const auto& [loss, ids] : st.updates)
      for (const auto& id : ids)
        if (auto* t = dynamic_cast<Trainable*>(&ex.node(id)))
          for (auto& p : t->parameters()) update_params[loss].push_back(p);
    if (!model.optimizer_state.empty() && progress["batches"].get<long long>() + progress["epoch"].get<int>() > 0)
      adam.load_state(model.optimizer_state);

    for (int epoch = progress["epoch"].get<int>(); epoch < st.epochs; ++epoch) {
      std::vector<std::string> order = files;
      std::mt19937_64 rng(uint64_t(cfg.seed) * 1000003ULL + si * 1009ULL + uint64_t(epoch));
      std::shuffle(order.begin(), order.end(), rng);
      if (cfg.drop_last) order.resize(size_t(full_batches * B));
      const long long skip = progress["batches"].get<long long>() * B;  // resumed mid-epoch
      ex.set_first_frame_id(((long long)(si + 1) * 100000 + epoch) * 1000000 + skip);
      size_t next = size_t(skip);
      std::map<std::string, double> loss_sum;
      long long batches = progress["batches"].get<long long>(), counted = 0, epoch_images = 0;
      cli::Progress bar(st.name + " epoch " + std::to_string(epoch + 1) + "/" + std::to_string(st.epochs),
                        batches_per_epoch, B, "images/s");
      const auto t_epoch = std::chrono::steady_clock::now();
      Executor::BatchSink step = [&](Frame& batch, const std::vector<const Frame*>& frames) {
        at::Tensor total;
        std::string terms;
        for (const auto& [s, w] : st.losses) {
          at::Tensor l = batch.get<Tensor>(s).t.mean();
          FMAM_CHECK(std::isfinite(l.item<double>())) << "loss \"" << s << "\" is not finite at stage " << st.name
                                                      << ", epoch " << epoch + 1 << ", batch " << batches + 1;
          loss_sum[s] += l.item<double>();
          total = total.defined() ? total + w * l : w * l;
          char b[64];
          std::snprintf(b, sizeof b, "%s %.4f", s.c_str(), loss_sum[s] / (counted + 1));
          terms += (terms.empty() ? "" : "  ") + std::string(b);
        }
        adam.zero_grad();
        if (update_params.empty()) {
          total.backward();
        } else {
          backward_routed(batch, st, update_params);
        }
        adam.step();
        ++batches;
        ++counted;
        images_seen += (long long)frames.size();
        epoch_images += (long long)frames.size();
        if (!a.flag("quiet")) bar.update(batches, terms);
      };
      // The executor changes first_frame_id per epoch, so each epoch is a fresh run.
      Executor::Source source = [&](Frame& f) {
        // Stop only at batch boundaries, so every batch that started is stepped.
        if (g_interrupted && next % size_t(B) == 0) return false;
        if (next >= order.size()) return false;
        f.source = order[next++];
        return true;
      };
      RunStats rs = ex.run(source, [](const Frame& f) {
        if (f.dropped) cli::log("skipped: " + f.drop_reason);
      }, false, step);
      if (!a.flag("quiet")) bar.finish();
      if (epoch_images == 0 && !g_interrupted)
        throw Error("fmam train: " + st.name + " epoch " + std::to_string(epoch + 1) + " trained on no image: all " +
                    std::to_string(order.size() - size_t(skip)) + " image(s) of " + good +
                    " were skipped (each named above); no model written");
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_epoch).count();
      const long long imgs = epoch_images;
      // The epoch's tensors are all free now: hand them back before the checkpoint's
      // serialisation needs a few hundred MB, so peak memory is the larger of the two, not the sum.
      release_cached_cpu_blocks();
      collect_model(ex, model);
      model.optimizer_state.clear();
      for (auto& [k, t] : adam.state()) model.optimizer_state[k] = t;
      if (g_interrupted && batches < batches_per_epoch) {
        progress["stage"] = si;
        progress["epoch"] = epoch;
        progress["batches"] = batches;
        save(false);
        cli::log(std::string("interrupted (") + (g_interrupted == SIGINT ? "SIGINT" : "SIGTERM") + "): checkpoint saved to " + out +
                 " after batch " + std::to_string(batches) + " of epoch " + std::to_string(epoch + 1) +
                 "; continue with --resume");
        return 130;
      }
      json h = {{"stage", st.name}, {"epoch", epoch}, {"images", imgs}, {"seconds", secs},
                {"images_per_s", secs > 0 ? imgs / secs : 0.0}};
      for (const auto& [s, v] : loss_sum) h[s] = counted ? v / counted : 0.0;
      progress["history"].push_back(h);
      progress["stage"] = si;
      progress["epoch"] = epoch + 1;
      progress["batches"] = 0;
      save(false);
      std::string terms;
      for (const auto& [s, v] : loss_sum) {
        char b[64];
        std::snprintf(b, sizeof b, "  %s %.4f", s.c_str(), counted ? v / counted : 0.0);
        terms += b;
      }
      char line[256];
      std::snprintf(line, sizeof line, "%s epoch %d/%d: %lld images in %.1f s (%.2f images/s)%s", st.name.c_str(), epoch + 1,
                    st.epochs, imgs, secs, secs > 0 ? imgs / secs : 0.0, terms.c_str());
      cli::log(line);
      (void)rs;
    }
    progress["stage"] = si + 1;
    progress["epoch"] = 0;
    progress["batches"] = 0;
    model.optimizer_state.clear();
  }
  save(true);
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  char line[256];
  std::snprintf(line, sizeof line, "trained in %.1f s (%lld images, %.2f images/s), peak memory %.0f MiB; model: %s", total,
                images_seen, total > 0 ? images_seen / total : 0.0, cli::peak_rss_mib(), out.c_str());
  cli::log(line);
  std::cout << out << "\n";
  return 0;
}

}  // namespace fmam
