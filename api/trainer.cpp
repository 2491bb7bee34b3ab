// Trainer: runs a training graph stage by stage. The data half (decode, anomaly synthesis,
// resize, frozen teacher) pipelines on the TBB graph; the learning half (students, feature
// mappings, losses) runs in order on whole batches in the executor's serial tail, where this file
// adds backward() and the optimizer step. A model file (a resumable checkpoint) is written
// atomically after every epoch and when cancelled.
#include "fmam/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "api/graph_io.h"
#include "api/plugins.h"
#include "api/train_config.h"
#include "fmam/pipeline.h"
#include "framework/cpu_allocator.h"
#include "framework/cpu_features.h"
#include "framework/executor.h"
#include "framework/flop_counter.h"
#include "framework/graph.h"
#include "framework/io.h"
#include "framework/model_binding.h"
#include "framework/model_file.h"
#include "framework/output_cache.h"
#include "framework/packet.h"
#include "framework/registry.h"
#include "framework/stateful.h"
#include "training/adam.h"
#include "training/gradient_flow.h"

namespace fmam {

using json = nlohmann::json;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

void log(const std::string& msg) { std::fprintf(stderr, "fmam: %s\n", msg.c_str()); }

// train.precision -> what the trainable nodes run. "auto" is bf16-mixed where the CPU has native
// bfloat16 and fp32 elsewhere.
Precision resolve_precision(const std::string& p) {
  if (p == "fp32") return Precision::kFloat32;
  if (p == "bf16-mixed") return Precision::kBFloat16Mixed;
  return cpu_has_native_bf16() ? Precision::kBFloat16Mixed : Precision::kFloat32;
}
const char* precision_name(Precision p) { return p == Precision::kBFloat16Mixed ? "bf16-mixed" : "fp32"; }

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

// The trained nodes a stage can run without autograd (training/gradient_flow.h): `params` are
// the stage's weights, `update_params` the routed losses' (every other loss updates all).
std::vector<std::string> nodes_without_autograd(Executor& ex, const Stage& st, const std::vector<at::Tensor>& params,
                                                const std::map<std::string, std::vector<at::Tensor>>& update_params) {
  WeightSet all;
  for (const auto& p : params) all.insert(p.unsafeGetTensorImpl());
  std::map<std::string, WeightSet> node_weights, loss_updates;
  for (const auto& vn : ex.graph().nodes)
    if (auto* t = dynamic_cast<Trainable*>(&ex.node(vn.config.id)))
      for (const auto& p : t->parameters())
        if (all.count(p.unsafeGetTensorImpl())) node_weights[vn.config.id].insert(p.unsafeGetTensorImpl());
  for (const auto& [loss, w] : st.losses) {
    auto it = update_params.find(loss);
    if (it == update_params.end()) {
      loss_updates[loss] = all;
      continue;
    }
    for (const auto& p : it->second) loss_updates[loss].insert(p.unsafeGetTensorImpl());
  }
  const auto ids = nodes_without_gradients(ex.graph(), node_weights, loss_updates);
  return {ids.begin(), ids.end()};
}

// One stage's executor and optimizer.
struct StageRun {
  std::unique_ptr<Executor> ex;
  std::unique_ptr<Adam> adam;
  std::map<std::string, std::vector<at::Tensor>> update_params;  // loss -> the only parameters it updates
};

// One epoch's counters, as it runs.
struct EpochRun {
  long long batches = 0, counted = 0, images = 0;  // batches: done in the epoch (a resumed one starts above 0)
  std::map<std::string, double> loss_sum;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  double flops_at_start = all_threads_flops();
  TrainProgress progress;
};

// Where training stands: stage, epoch, batches done in it, and the history of finished epochs.
json fresh_progress() { return {{"stage", 0}, {"epoch", 0}, {"batches", 0}, {"history", json::array()}}; }

}  // namespace

struct Trainer::Impl {
  std::string graph_path;
  TrainOptions opt;
  GraphConfig graph;  // the training graph, overrides, image size and seed applied, files attached
  TrainConfig cfg;
  std::string inf_path;
  GraphConfig inf;
  std::set<std::string> inf_ids;
  std::string good;  // DATA/train/good
  std::vector<std::string> files;
  std::mutex skipped_mutex;
  std::set<std::string> skipped;  // files reported unreadable (each epoch reads them again)
  int batch = 1;
  long long full_batches = 0, batches_per_epoch = 0;
  Precision precision = Precision::kFloat32;
  std::atomic<bool> cancelled{false};
  std::shared_ptr<OutputCache> teacher_cache;  // null: train.teacher_cache_mb is 0
  bool cache_full_logged = false;

  Model model;
  json progress = fresh_progress();
  json config_json;

  void load();
  void resume_from_checkpoint();
  void save(bool finished);
  void calibrate_int8(TrainResult& r);
  // Runs one stage from where `progress` says; returns false if cancelled.
  bool run_stage(size_t si, const Trainer::ProgressCallback& report, long long& images_seen);
  std::unique_ptr<StageRun> start_stage(size_t si);
  EpochRun run_epoch(StageRun& r, size_t si, int epoch, const Trainer::ProgressCallback& report, long long& images_seen);
  bool end_epoch(StageRun& r, size_t si, int epoch, EpochRun& e, const Trainer::ProgressCallback& report);
  void step(StageRun& r, const Stage& st, Frame& fb, EpochRun& e);
  void log_cache(const Executor& ex, size_t si, int epoch);
  static void fill_progress(EpochRun& e);
  std::string stopped_at;  // set when cancelled mid-epoch
  std::vector<at::Tensor> stage_parameters(Executor& ex, const ValidatedGraph& vg, const Stage& st);
};

namespace {

// A stream that is batched (its type stacks) while its size follows the source image (a shape
// its producer leaves open, e.g. AnomalySynth's mask): frames of different sizes cannot share a
// batch of it. Empty if the stages that run have none.
std::string source_sized_batched_stream(const GraphConfig& graph, const TrainConfig& cfg) {
  std::vector<std::string> loss_streams;
  for (const auto& st : cfg.stages)
    if (st.epochs > 0)
      for (const auto& [s, w] : st.losses) loss_streams.push_back(s);
  const ValidatedGraph vg = validate(prune_to_streams(graph, loss_streams));
  for (const auto& s : vg.streams) {
    const DataTypeInfo* dt = DataTypes::global().find(s.type);
    if (!dt || !dt->concat || s.consumers.empty()) continue;
    const bool open = !s.shape.known || std::count(s.shape.dims.begin(), s.shape.dims.end(), -1) > 0;
    if (open && s.producer >= 0) return "stream \"" + s.name + "\" of node \"" + vg.nodes[size_t(s.producer)].config.id + "\"";
  }
  return {};
}

// Mixed image sizes fail when the first batch of such a stream is stacked, after every earlier
// stage has run (hours); the headers tell before any work, naming two files that differ.
void check_one_image_size(const std::vector<std::string>& files, int batch, const GraphConfig& graph, const TrainConfig& cfg,
                          const std::string& graph_path, const std::string& good) {
  if (batch < 2) return;
  const auto first = image_header_size(files[0]);
  for (const auto& f : files) {
    const auto size = image_header_size(f);
    if (size == first || size.first < 0 || first.first < 0) continue;  // unreadable: reported and skipped later
    const std::string stream = source_sized_batched_stream(graph, cfg);
    if (stream.empty()) return;  // every batched stream is resized: mixed sizes train
    auto text = [](std::pair<int, int> s) { return std::to_string(s.first) + "x" + std::to_string(s.second); };
    throw Error("fmam train: " + good + ": images of different sizes: " + files[0] + " is " + text(first) + ", " + f + " is " +
                text(size) + "; " + graph_path + ": " + stream + " keeps the source size and is batched (train.batch_size=" +
                std::to_string(batch) + "): use images of one size, or --set train.batch_size=1");
  }
}

}  // namespace

void Trainer::Impl::load() {
  ensure_plugins(opt.plugins);
  if (opt.data.empty()) throw Error("fmam train: the data folder (--data CATEGORY_DIR) is required");
  if (opt.out.empty()) throw Error("fmam train: the model file (--out MODEL) is required");
  graph = load_graph_file(graph_path);
  std::vector<ParamOverride> node_sets, train_sets;
  split_overrides(graph, opt.overrides, node_sets, train_sets);
  cfg = parse_train_config(graph, train_sets);
  int total_epochs = 0;
  for (const auto& st : cfg.stages) total_epochs += st.epochs;
  if (total_epochs == 0 && !opt.resume)
    throw Error(graph_path + ": every stage has 0 epochs: nothing to train (a model of untrained weights is no detector)");
  apply_overrides(graph, node_sets);
  bind_params(graph, image_size_bindings(cfg.image_width, cfg.image_height));
  apply_train_seed(graph, cfg.seed);
  attach_io(graph, true, "");
  std::vector<std::string> problems = train_config_problems(graph);
  if (!problems.empty()) throw GraphError(problems);
  validate(graph);  // the whole training graph, every stage's branch, before any work

  // The inference graph the model is for; validated now so a mistake shows before hours of work.
  inf_path = (fs::path(graph_path).parent_path() / cfg.inference_graph).string();
  inf = load_graph_file(inf_path);
  bind_params(inf, image_size_bindings(cfg.image_width, cfg.image_height));
  validate(inf);
  for (const auto& n : inf.nodes) inf_ids.insert(n.id);

  good = (fs::path(opt.data) / "train" / "good").string();
  if (!fs::is_directory(good))
    throw Error("fmam train: --data \"" + opt.data + "\": no train/good folder (MVTec AD layout expected)");
  files = list_images(good);
  if (opt.max_images > 0 && int(files.size()) > opt.max_images) files.resize(size_t(opt.max_images));
  batch = std::min<int>(cfg.batch_size, int(files.size()));
  if (batch < 1) throw Error("fmam train: " + good + " holds no image");
  full_batches = (long long)files.size() / batch;
  batches_per_epoch = cfg.drop_last ? full_batches : ((long long)files.size() + batch - 1) / batch;
  if (batches_per_epoch < 1) throw Error("fmam train: fewer images than one batch");
  check_one_image_size(files, batch, graph, cfg, graph_path, good);
  precision = resolve_precision(cfg.precision);
  if (cfg.precision == "bf16-mixed" && !cpu_has_native_bf16())
    log(std::string("train.precision bf16-mixed: this CPU has no native bfloat16 (AVX512-BF16), ") + bf16_emulation_cost() +
        "; \"auto\" would pick fp32 here");

  // One cache for the whole run, both stages: the teacher and its input are the same in each.
  if (cfg.teacher_cache_mb > 0)
    teacher_cache = std::make_shared<OutputCache>(cfg.teacher_cache_mb << 20, precision == Precision::kBFloat16Mixed);

  if (opt.resume) resume_from_checkpoint();
  model.graph_name = inf.name;
  model.graph_json = read_text(inf_path);
  model.image_width = cfg.image_width;
  model.image_height = cfg.image_height;
  config_json = json::parse(graph.train_json);
  config_json["batch_size"] = cfg.batch_size;
  config_json["image_size"] =
      cfg.image_width == cfg.image_height ? json(cfg.image_width) : json(image_size_text(cfg.image_width, cfg.image_height));
  config_json["seed"] = cfg.seed;
  config_json["drop_last"] = cfg.drop_last;
  config_json["precision"] = precision_name(precision);
  for (size_t s = 0; s < cfg.stages.size(); ++s) config_json["stages"][s]["epochs"] = cfg.stages[s].epochs;
  config_json["training_graph"] = graph.name;
  config_json["data"] = opt.data;
  config_json["images"] = files.size();
}

void Trainer::Impl::resume_from_checkpoint() {
  const std::string& out = opt.out;
  if (!fs::exists(out)) throw Error("fmam train --resume: " + out + " does not exist");
  model = load_model(out);
  // A checkpoint continues with its own image size and batch size: with others, the weights
  // would resume on different inputs while the model recorded the new size.
  const long long was_batch = json::parse(model.train_config).value("batch_size", (long long)cfg.batch_size);
  if (model.image_width != cfg.image_width || model.image_height != cfg.image_height || was_batch != cfg.batch_size)
    throw Error("fmam train --resume: " + out + " was trained with train.image_size=" + std::to_string(model.image_width) + "x" +
                std::to_string(model.image_height) + ", train.batch_size=" + std::to_string(was_batch) + "; this run asks for " +
                image_size_text(cfg.image_width, cfg.image_height) + ", " + std::to_string(cfg.batch_size) +
                ": resume with the checkpoint's settings, or train a new model with another --out");
  if (model.progress.empty()) {
    log(out +
        ": training already finished; raise the epochs with --set to train more (a finished model keeps no optimizer state: Adam "
        "starts afresh)");
    // A finished model resumes after its last stage: re-run from the stage whose epochs grew.
    // Count finished epochs per stage from the history, so added epochs continue the schedule.
    progress = fresh_progress();
    json hist = json::parse(model.train_config).value("history", json::array());
    std::map<std::string, int> done;
    for (const auto& h : hist)
      done[h["stage"].get<std::string>()] = std::max(done[h["stage"].get<std::string>()], h["epoch"].get<int>() + 1);
    size_t s = 0;
    while (s < cfg.stages.size() && done[cfg.stages[s].name] >= cfg.stages[s].epochs) ++s;
    progress["stage"] = s;
    progress["epoch"] = s < cfg.stages.size() ? done[cfg.stages[s].name] : 0;
    progress["history"] = hist;
  } else {
    progress = json::parse(model.progress);
  }
  log("resuming " + out + " at stage " + std::to_string(progress["stage"].get<int>() + 1) + ", epoch " +
      std::to_string(progress["epoch"].get<int>() + 1) + ", batch " + std::to_string(progress["batches"].get<long long>()));
}

void Trainer::Impl::save(bool finished) {
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
  save_model(opt.out, model);
}

// The finished model, calibrated for --precision int8 on training images through its inference
// graph (train.int8_calibration_images; what fmam quantize does). Without it the model is still
// whole: a failure is logged and costs only int8.
void Trainer::Impl::calibrate_int8(TrainResult& r) {
  if (cfg.int8_calibration_images <= 0) return;
  try {
    PipelineOptions po;
    po.model = opt.out;
    po.precision = "fp32";
    po.images = false;
    po.plugins = opt.plugins;
    po.threads = opt.threads;
    po.intra_op_threads = 0;  // leave the process's setting as training left it
    Pipeline pipeline(inf_path, po);
    r.int8_images = pipeline.calibrate_int8(files, "", {}, cfg.int8_calibration_images).images;
  } catch (const std::exception& e) {
    log("int8 calibration skipped (" + std::string(e.what()) + "); the model is saved; calibrate it with fmam quantize");
  }
}

// The weights a stage updates (a shared module counts once); sets every trainable node's
// training mode and precision.
std::vector<at::Tensor> Trainer::Impl::stage_parameters(Executor& ex, const ValidatedGraph& vg, const Stage& st) {
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
        log("node \"" + vn.config.id + "\" (" + vn.config.type + ") trains in fp32 (it has no bf16-mixed)");
      }
  if (params.empty()) throw Error(graph_path + ": stage \"" + st.name + "\" has nothing to train");
  return params;
}

// One stage's executor (the branches its losses need) and optimizer, from the model so far.
std::unique_ptr<StageRun> Trainer::Impl::start_stage(size_t si) {
  const Stage& st = cfg.stages[si];
  auto r = std::make_unique<StageRun>();
  std::vector<std::string> loss_streams;
  for (const auto& [s, w] : st.losses) loss_streams.push_back(s);
  const ValidatedGraph vg = validate(prune_to_streams(graph, loss_streams));
  RunOptions ro;
  ro.batch = batch;
  ro.max_in_flight = 2 * batch + 2;
  ro.threads = opt.threads;
  ro.tail_trainable = true;
  // The frozen teacher computes in the training precision too (as under torch.autocast); the
  // trained nodes keep float32 weights whatever it is (NodeEnv::training).
  ro.precision = precision;
  ro.output_cache = teacher_cache;
  r->ex = std::make_unique<Executor>(vg, ro);
  load_partial(*r->ex, model.tensors);
  AdamOptions ao;
  ao.lr = st.lr;
  ao.weight_decay = st.weight_decay;
  ao.l1 = st.l1;
  ao.beta1 = st.beta1;
  ao.beta2 = st.beta2;
  const std::vector<at::Tensor> params = stage_parameters(*r->ex, vg, st);
  r->adam = std::make_unique<Adam>(params, ao);
  // The parameters each restricted loss updates (see Stage::updates).
  for (const auto& [loss, ids] : st.updates)
    for (const auto& id : ids)
      if (auto* t = dynamic_cast<Trainable*>(&r->ex->node(id)))
        for (auto& p : t->parameters()) r->update_params[loss].push_back(p);
  const auto untracked = nodes_without_autograd(*r->ex, st, params, r->update_params);
  r->ex->set_without_autograd(untracked);
  for (const auto& id : untracked)
    log(st.name + ": node \"" + id + "\" runs without autograd (no loss it feeds updates its weights or any upstream)");
  if (!model.optimizer_state.empty() && progress["batches"].get<long long>() + progress["epoch"].get<int>() > 0)
    r->adam->load_state(model.optimizer_state);
  return r;
}

// One optimizer step on a batch the tail computed: the losses, backward (routed where a loss
// updates only some nodes), Adam.
void Trainer::Impl::step(StageRun& r, const Stage& st, Frame& fb, EpochRun& e) {
  at::Tensor total;
  for (const auto& [s, w] : st.losses) {
    at::Tensor l = fb.get<Tensor>(s).t.mean();
    FMAM_CHECK(std::isfinite(l.item<double>())) << "loss \"" << s << "\" is not finite at stage " << st.name << ", epoch "
                                                << e.progress.epoch + 1 << ", batch " << e.batches + 1;
    e.loss_sum[s] += l.item<double>();
    total = total.defined() ? total + w * l : w * l;
  }
  r.adam->zero_grad();
  if (r.update_params.empty())
    total.backward();
  else
    backward_routed(fb, st, r.update_params);
  r.adam->step();
}

void Trainer::Impl::fill_progress(EpochRun& e) {
  e.progress.batch = e.batches;
  e.progress.images = e.images;
  e.progress.seconds = std::chrono::duration<double>(Clock::now() - e.start).count();
  e.progress.images_per_s = e.progress.seconds > 0 ? e.images / e.progress.seconds : 0;
  e.progress.gflop = (all_threads_flops() - e.flops_at_start) / 1e9;
  for (const auto& [s, v] : e.loss_sum) e.progress.losses[s] = e.counted ? v / e.counted : 0.0;
}

// One epoch in a seeded order (resumed mid-epoch where the checkpoint stopped). Stops early,
// at a batch boundary, when cancelled.
EpochRun Trainer::Impl::run_epoch(StageRun& r, size_t si, int epoch, const Trainer::ProgressCallback& report,
                                  long long& images_seen) {
  const Stage& st = cfg.stages[si];
  std::vector<std::string> order = files;
  std::mt19937_64 rng(uint64_t(cfg.seed) * 1000003ULL + si * 1009ULL + uint64_t(epoch));
  std::shuffle(order.begin(), order.end(), rng);
  if (cfg.drop_last) order.resize(size_t(full_batches * batch));
  const long long skip = progress["batches"].get<long long>() * batch;  // resumed mid-epoch
  r.ex->set_first_frame_id(((long long)(si + 1) * 100000 + epoch) * 1000000 + skip);
  EpochRun e;
  e.batches = progress["batches"].get<long long>();
  e.progress.stage = st.name;
  e.progress.stage_index = int(si);
  e.progress.stages = int(cfg.stages.size());
  e.progress.epoch = epoch;
  e.progress.epochs = st.epochs;
  e.progress.batches = batches_per_epoch;
  e.progress.batch_size = batch;
  if (report) {  // the epoch starts (a progress bar starts its clock here)
    fill_progress(e);
    report(e.progress);
  }
  size_t next = size_t(skip);
  r.ex->run(
      [&](Frame& f) {
        if (cancelled && next % size_t(batch) == 0) return false;  // only at batch boundaries
        if (next >= order.size()) return false;
        f.source = order[next++];
        return true;
      },
      [this](const Frame& f) {
        if (!f.dropped) return;
        log("skipped: " + f.drop_reason);
        std::lock_guard<std::mutex> lock(skipped_mutex);
        skipped.insert(f.source);
      },
      false,
      [&](Frame& fb, const std::vector<const Frame*>& frames) {
        step(r, st, fb, e);
        ++e.batches;
        ++e.counted;
        images_seen += (long long)frames.size();
        e.images += (long long)frames.size();
        if (report) {
          fill_progress(e);
          report(e.progress);
        }
      });
  if (e.images == 0 && !cancelled)
    throw Error("fmam train: " + st.name + " epoch " + std::to_string(epoch + 1) + " trained on no image: all " +
                std::to_string(order.size() - size_t(skip)) + " image(s) of " + good +
                " were skipped (each named above); no model written");
  return e;
}

// After an epoch: the weights and optimizer state into the model, the history, a checkpoint.
// Returns false if the epoch was cut short by cancel() (the checkpoint then resumes mid-epoch).
bool Trainer::Impl::end_epoch(StageRun& r, size_t si, int epoch, EpochRun& e, const Trainer::ProgressCallback& report) {
  const Stage& st = cfg.stages[si];
  const double secs = std::chrono::duration<double>(Clock::now() - e.start).count();
  // The batches' arithmetic, read before the checkpoint (which may run the teacher's fingerprint probe).
  const double gflop = (all_threads_flops() - e.flops_at_start) / 1e9;
  collect_model(*r.ex, model);
  model.optimizer_state.clear();
  for (auto& [k, t] : r.adam->state()) model.optimizer_state[k] = t;
  if (cancelled && e.batches < batches_per_epoch) {
    progress["stage"] = si;
    progress["epoch"] = epoch;
    progress["batches"] = e.batches;
    save(false);
    stopped_at = "batch " + std::to_string(e.batches) + " of epoch " + std::to_string(epoch + 1) + " of " + st.name;
    return false;
  }
  json h = {{"stage", st.name},
            {"epoch", epoch},
            {"images", e.images},
            {"seconds", secs},
            {"images_per_s", secs > 0 ? e.images / secs : 0.0},
            {"gflop", gflop}};
  for (const auto& [s, v] : e.loss_sum) h[s] = e.counted ? v / e.counted : 0.0;
  progress["history"].push_back(h);
  progress["stage"] = si;
  progress["epoch"] = epoch + 1;
  progress["batches"] = 0;
  save(false);
  if (report) {
    fill_progress(e);
    e.progress.seconds = secs;
    e.progress.images_per_s = secs > 0 ? e.images / secs : 0;
    e.progress.gflop = gflop;
    e.progress.epoch_done = true;
    report(e.progress);
  }
  return true;
}

// What the teacher cache did: which nodes it serves (at a stage's start), its contents after a
// stage's first epoch and at its end, and, once, that the bound was reached.
void Trainer::Impl::log_cache(const Executor& ex, size_t si, int epoch) {
  if (!teacher_cache) return;
  const Stage& st = cfg.stages[si];
  if (epoch < 0) {
    const std::vector<std::string> ids = ex.cached_node_ids();
    std::string names;
    for (const auto& id : ids) names += (names.empty() ? "\"" : ", \"") + id + "\"";
    log(st.name + ": teacher cache: " +
        (ids.empty() ? "no node here qualifies (none is frozen and fed only by the image file)"
                     : "reusing the outputs of node " + names + " for each image"));
    return;
  }
  const OutputCache::Stats c = teacher_cache->stats();
  char mib[32];
  std::snprintf(mib, sizeof mib, "%.1f", double(c.bytes) / (1 << 20));
  if (epoch == 0 || epoch + 1 == st.epochs)
    log(st.name + " epoch " + std::to_string(epoch + 1) + ": teacher cache: " + std::to_string(c.entries) + " pyramids, " +
        std::string(mib) + " MiB (" + (teacher_cache->bfloat16() ? "bf16" : "fp32") + "); " + std::to_string(c.hits) + " hits, " +
        std::to_string(c.misses) + " misses so far");
  if (c.refused > 0 && !cache_full_logged) {
    cache_full_logged = true;
    log("teacher cache full at " + std::string(mib) + " MiB (train.teacher_cache_mb=" + std::to_string(cfg.teacher_cache_mb) +
        "): the images that do not fit run the teacher every epoch; raise it to cache them all");
  }
}

bool Trainer::Impl::run_stage(size_t si, const Trainer::ProgressCallback& report, long long& images_seen) {
  std::unique_ptr<StageRun> r = start_stage(si);
  log_cache(*r->ex, si, -1);
  for (int epoch = progress["epoch"].get<int>(); epoch < cfg.stages[si].epochs; ++epoch) {
    EpochRun e = run_epoch(*r, si, epoch, report, images_seen);
    if (!end_epoch(*r, si, epoch, e, report)) return false;
    log_cache(*r->ex, si, epoch);
  }
  progress["stage"] = si + 1;
  progress["epoch"] = 0;
  progress["batches"] = 0;
  model.optimizer_state.clear();
  return true;
}

Trainer::Trainer(const std::string& training_graph, TrainOptions options) : impl_(new Impl) {
  impl_->graph_path = training_graph;
  impl_->opt = std::move(options);
  impl_->load();
}

Trainer::~Trainer() = default;

void Trainer::cancel() { impl_->cancelled = true; }

namespace {

void add_cache_stats(const OutputCache* cache, TrainResult& r) {
  if (!cache) return;
  const OutputCache::Stats c = cache->stats();
  r.cache_entries = c.entries;
  r.cache_bytes = c.bytes;
  r.cache_hits = c.hits;
  r.cache_misses = c.misses;
  r.cache_refused = c.refused;
}

}  // namespace

TrainResult Trainer::train(const ProgressCallback& progress) {
  Impl& m = *impl_;
  const int threads = m.opt.threads > 0 ? m.opt.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  if (m.opt.intra_op_threads >= 0) at::set_num_threads(m.opt.intra_op_threads > 0 ? m.opt.intra_op_threads : threads);
  // Training allocates the same big tensors every batch: keep them instead of mmap-ing and
  // faulting them in again (framework/cpu_allocator.h). FMAM_CPU_CACHE_MB bounds the cache (0: off).
  install_caching_cpu_allocator_from_env(2048);
  // Each epoch reports its arithmetic (GFLOP per image and GFLOP/s: how close to the CPU's peak).
  const FlopCounting counting;
  const auto t_start = Clock::now();
  TrainResult r;
  r.model = m.opt.out;
  for (size_t si = m.progress["stage"].get<size_t>(); si < m.cfg.stages.size(); ++si) {
    if (m.progress["epoch"].get<int>() >= m.cfg.stages[si].epochs) {
      m.progress["stage"] = si + 1;
      m.progress["epoch"] = 0;
      m.progress["batches"] = 0;
      continue;
    }
    if (!m.run_stage(si, progress, r.images)) {
      r.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
      r.stopped_at = m.stopped_at;
      r.skipped = (long long)m.skipped.size();
      add_cache_stats(m.teacher_cache.get(), r);
      return r;  // cancelled: a checkpoint
    }
    // The next stage (or the calibration) allocates other sizes: give this stage's cached blocks
    // back. Not after every epoch: the next epoch needs the same blocks, and faulting them in
    // again cost about 5 % of a short run's time (and checkpoints stream to disk, needing no memory of
    // their own; framework/pickle_archive.h).
    release_cached_cpu_blocks();
  }
  m.save(true);
  r.finished = true;
  r.skipped = (long long)m.skipped.size();
  add_cache_stats(m.teacher_cache.get(), r);
  r.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
  release_cached_cpu_blocks();
  m.calibrate_int8(r);  // after the training time: a few seconds of inference, not training
  return r;
}

std::string Trainer::inference_graph() const { return impl_->inf_path; }
int Trainer::image_width() const { return impl_->cfg.image_width; }
int Trainer::image_height() const { return impl_->cfg.image_height; }
long long Trainer::images() const { return (long long)impl_->files.size(); }
std::string Trainer::precision() const { return precision_name(impl_->precision); }
std::string Trainer::requested_precision() const { return impl_->cfg.precision; }

}  // namespace fmam
