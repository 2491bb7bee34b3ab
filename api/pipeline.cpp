// Pipeline: a graph, its model and its executors. Two executors are built on demand from one
// configured graph: one whose Image input decodes files on the graph (run_files: decoding
// pipelines with the network), one whose Image input is set per frame from memory (detect,
// streams). Both hold the same weights.
#include "fmam/pipeline.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <tbb/task_group.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include "api/graph_io.h"
#include "api/plugins.h"
#include "framework/cpu_features.h"
#include "framework/executor.h"
#include "framework/graph.h"
#include "framework/model_binding.h"
#include "framework/model_file.h"
#include "framework/stateful.h"
#include "framework/types.h"

namespace fmam {

const char* verdict_name(Verdict v) { return v == Verdict::kPass ? "PASS" : v == Verdict::kFail ? "FAIL" : "none"; }

cv::Mat map_at(const Detection& d, cv::Size size) {
  if (d.map.empty() || d.map.size() == size) return d.map;
  cv::Mat out;
  cv::resize(d.map, out, size, 0, 0, cv::INTER_LINEAR);
  return out;
}

namespace {

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

RunSummary summarize(const RunStats& st, long long failed) {
  RunSummary s;
  s.frames = st.frames;
  s.skipped = st.dropped;
  s.failed = failed;
  s.seconds = st.wall_ms / 1000.0;
  for (const auto& n : st.nodes) s.nodes.push_back({n.id, n.type, n.calls, n.total_ms, median_of(n.call_ms), n.flops});
  return s;
}

// A frame from memory as the graph's Image: BGR, gray or BGRA 8-bit, nothing else.
Image to_image(const cv::Mat& m, const std::string& graph_file) {
  if (m.empty()) throw Error(graph_file + ": detect: the image is empty");
  if (m.depth() != CV_8U || (m.channels() != 1 && m.channels() != 3 && m.channels() != 4))
    throw Error(graph_file + ": detect: images must be 8-bit gray, BGR or BGRA; got " + std::to_string(m.channels()) +
                " channel(s) of depth " + std::to_string(m.depth()) + " (CV_8U is 0)");
  return Image{m};
}

}  // namespace

struct Pipeline::Impl {
  std::string graph_file;
  PipelineOptions opt;
  std::optional<Model> model;
  double threshold = -1;
  GraphConfig graph;  // overrides and model bindings applied; no I/O attached yet
  std::string image_input, map_stream, score_stream;
  std::vector<std::string> scalar_streams, image_streams;
  std::unique_ptr<Executor> files_ex, memory_ex;

  // Stream state.
  struct Pending {
    cv::Mat image;
    std::string tag;
    std::shared_ptr<void> user;
  };
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<Pending> queue;
  std::map<long long, std::shared_ptr<void>> users;  // frame id -> what came with it
  bool open = false, closing = false, ended = false;
  std::thread runner;
  RunStats stream_stats;
  long long stream_failed = 0;
  std::exception_ptr stream_error;

  RunOptions run_options() const {
    RunOptions ro;
    ro.batch = opt.batch;
    ro.max_in_flight = opt.max_in_flight;
    ro.threads = opt.threads;
    if (opt.device != "cpu" && opt.device != "cuda")
      throw Error(graph_file + ": device must be cpu or cuda, got \"" + opt.device + "\"");
    ro.device = opt.device == "cuda" ? Device::kCuda : Device::kCpu;
    ro.precision = resolve_precision(opt.precision);
    return ro;
  }

  // The networks' arithmetic. They run on the CPU with either device (Debian's libtorch has no
  // CUDA; `device` places only the Halide post-processing kernels), so the CPU decides.
  // int8 quantises the frozen teacher only (Int8Quantizable nodes); the trained networks then
  // run as auto would run them.
  Precision resolve_precision(const std::string& p) const {
    if (p == "fp32") return Precision::kFloat32;
    if (p == "bf16") return Precision::kBFloat16Mixed;
    if (p == "auto" || p == "int8") return cpu_has_native_bf16() ? Precision::kBFloat16Mixed : Precision::kFloat32;
    throw Error(graph_file + ": precision must be auto, fp32, bf16 or int8, got \"" + p + "\"");
  }
  // auto picks int8 where it measured fastest at a measured cost within 0.5 point of fp32's AUROC
  // (docs/PERFORMANCE.md: 0.11 point on 11 models with int8 dot products, 0.16 on AVX2 without):
  // a calibrated model on a CPU with AVX2 or int8 dot products (cpu_has_fast_int8).
  bool int8() const {
    if (opt.precision == "int8") return true;
    return opt.precision == "auto" && model && !model->int8_ranges.empty() && cpu_has_fast_int8() && onednn_int8_available();
  }
  static bool onednn_int8_available() {
    const auto& engines = at::globalContext().supportedQEngines();
    return std::find(engines.begin(), engines.end(), at::QEngine::ONEDNN) != engines.end();
  }

  std::unique_ptr<Executor> build(bool from_files) {
    GraphConfig g = graph;
    attach_io(g, from_files, opt.output_dir);
    ValidatedGraph vg = validate(g);
    auto ex = std::make_unique<Executor>(vg, run_options());
    if (model) apply_model(*model, *ex, opt.model);
    if (int8()) apply_int8(*model, *ex, opt.model);
    return ex;
  }
  // Calibration's executor: files in, nothing written, every network in float32 (the ranges int8
  // must cover are float32's), the model's trained weights applied.
  std::unique_ptr<Executor> build_float32_from_files() {
    GraphConfig g = graph;
    attach_io(g, true, "");
    ValidatedGraph vg = validate(g);
    RunOptions ro = run_options();
    ro.precision = Precision::kFloat32;
    auto ex = std::make_unique<Executor>(vg, ro);
    apply_model(*model, *ex, opt.model);
    return ex;
  }
  Executor& files() {
    if (!files_ex) files_ex = build(true);
    return *files_ex;
  }
  Executor& memory() {
    if (image_input.empty())
      throw Error(graph_file + ": frames from memory need a graph with one Image input (\"inputs\": {\"image\": \"Image\"})");
    if (!memory_ex) memory_ex = build(false);
    return *memory_ex;
  }

  // Feeds `files` through `ex` in order; `on_result` sees each one's Detection, in order.
  RunStats run_file_list(Executor& ex, const std::vector<std::string>& files, const ResultCallback& on_result) {
    size_t next = 0;
    return ex.run(
        [&](Frame& f) {
          if (next >= files.size()) return false;
          f.source = files[next++];
          return true;
        },
        [&](const Frame& f) { on_result(to_detection(f)); });
  }

  Detection to_detection(const Frame& f) const {
    Detection d;
    d.index = f.id();
    d.source = f.source;
    if (f.dropped) {
      d.skipped = true;
      d.error = f.drop_reason;
      return d;
    }
    if (!map_stream.empty()) d.map = f.get<Map2D>(map_stream).mat;
    for (const auto& s : scalar_streams) d.scalars[s] = f.get<Scalar>(s).value;
    for (const auto& s : image_streams) d.images[s] = f.get<Image>(s).mat;
    if (!score_stream.empty()) {
      d.score = d.scalars[score_stream];
      if (threshold >= 0) d.verdict = d.score >= threshold ? Verdict::kFail : Verdict::kPass;  // as eval's F1 threshold
    }
    return d;
  }

  std::vector<Detection> run_memory(const std::vector<cv::Mat>& images, const std::vector<std::string>& tags) {
    if (open) throw Error(graph_file + ": detect while a stream is open; close_stream() first");
    std::vector<Image> frames;
    for (const auto& m : images) frames.push_back(to_image(m, graph_file));
    std::vector<Detection> out;
    size_t next = 0;
    memory().run(
        [&](Frame& f) {
          if (next >= frames.size()) return false;
          f.source = next < tags.size() ? tags[next] : "";
          f.set(image_input, Packet::make(frames[next++]));
          return true;
        },
        [&](const Frame& f) { out.push_back(to_detection(f)); });
    return out;
  }

  // The stream's source: waits for a pushed frame, or for close (end of stream). It also gives
  // up when the graph is cancelled (a node failed), so the run can end and report it.
  bool next_pushed(Frame& f) {
    std::unique_lock<std::mutex> lock(mutex);
    while (queue.empty() && !closing) {
      if (tbb::is_current_task_group_canceling()) return false;
      changed.wait_for(lock, std::chrono::milliseconds(50));
    }
    if (queue.empty()) return false;
    Pending p = std::move(queue.front());
    queue.pop_front();
    changed.notify_all();
    f.source = p.tag;
    f.set(image_input, Packet::make(Image{p.image}));
    if (p.user) users[f.id()] = std::move(p.user);
    return true;
  }
};

Pipeline::Pipeline(const std::string& graph_file, PipelineOptions options) : impl_(new Impl) {
  Impl& m = *impl_;
  m.graph_file = graph_file;
  m.opt = std::move(options);
  if (m.opt.batch < 1 || m.opt.max_in_flight < 1 || m.opt.threads < 0)
    throw Error(graph_file + ": batch and max_in_flight must be >= 1 and threads >= 0");
  (void)m.run_options();  // a bad device or precision is an error now, not at the first frame
  if (m.opt.precision == "bf16" && !cpu_has_native_bf16())
    std::fprintf(stderr,
                 "fmam: warning: precision bf16: this CPU has no native bfloat16 (AVX512-BF16), %s "
                 "(docs/PERFORMANCE.md); \"auto\" would pick %s here\n",
                 bf16_emulation_cost(), cpu_has_fast_int8() ? "int8 for a calibrated model, else fp32" : "fp32");
  if (m.int8() && m.opt.model.empty())
    throw Error(graph_file + ": precision int8 needs a model calibrated for it (fmam quantize); none was given");
  ensure_plugins(m.opt.plugins);
  if (m.opt.intra_op_threads > 0) at::set_num_threads(m.opt.intra_op_threads);
  m.graph = load_graph_file(graph_file);
  std::vector<ParamOverride> ov;
  for (const auto& s : m.opt.overrides) ov.push_back(parse_override(s));
  apply_overrides(m.graph, ov);
  m.threshold = m.opt.threshold;
  if (!m.opt.model.empty()) {
    m.model = load_model(m.opt.model);
    if (m.int8() && m.model->int8_ranges.empty())
      throw Error(m.opt.model + ": " + not_calibrated_for_int8(graph_file, m.opt.model));
    if (!calibration_applies(*m.model, m.graph.name) && (m.model->threshold || m.model->map_lo)) {
      std::fprintf(stderr, "fmam: warning: %s\n", calibration_mismatch(*m.model, m.opt.model, m.graph.name).c_str());
      m.model->threshold.reset();
      m.model->map_lo.reset();
      m.model->map_hi.reset();
    }
    if (m.threshold < 0 && m.model->threshold) m.threshold = *m.model->threshold;
    bind_params(m.graph, model_bindings(*m.model, m.opt.threshold), m.opt.overrides, m.opt.model);
  } else {
    for (const auto& n : m.graph.nodes)
      if (n.type == "Student" || n.type == "FeatureMap")
        std::fprintf(stderr,
                     "fmam: warning: no model: node \"%s\" (%s) runs with untrained, randomly initialised weights; "
                     "train one with fmam train\n",
                     n.id.c_str(), n.type.c_str());
  }
  if (!m.opt.images) {  // map and score only: no overlay drawing
    std::vector<std::string> keep;
    for (const auto& [stream, type] : m.graph.outputs)
      if (type == "Map2D" || type == "Scalar") keep.push_back(stream);
    if (!keep.empty()) m.graph = prune_to_streams(m.graph, keep);
  }
  for (const auto& [stream, type] : m.graph.inputs)
    if (type == "Image" && m.image_input.empty()) m.image_input = stream;
  for (const auto& [stream, type] : m.graph.outputs) {
    if (type == "Map2D" && m.map_stream.empty()) m.map_stream = stream;
    if (type == "Scalar") m.scalar_streams.push_back(stream);
    if (type == "Image") m.image_streams.push_back(stream);
  }
  if (!m.scalar_streams.empty()) m.score_stream = m.scalar_streams.front();
  validate(m.graph);  // every mistake now, not at the first frame
}

Pipeline::~Pipeline() {
  if (impl_ && impl_->open) {
    try {
      close_stream();
    } catch (...) {  // a destructor does not throw; the error was the caller's to collect
    }
  }
}

Detection Pipeline::detect(const cv::Mat& image, const std::string& tag) { return impl_->run_memory({image}, {tag}).front(); }

std::vector<Detection> Pipeline::detect_batch(const std::vector<cv::Mat>& images) {
  if (images.empty()) return {};
  return impl_->run_memory(images, {});
}

RunSummary Pipeline::run_files(const std::vector<std::string>& files, const ResultCallback& on_result) {
  Impl& m = *impl_;
  if (m.open) throw Error(m.graph_file + ": run_files while a stream is open; close_stream() first");
  long long failed = 0;
  RunStats st = m.run_file_list(m.files(), files, [&](const Detection& d) {
    failed += d.verdict == Verdict::kFail;
    if (on_result) on_result(d);
  });
  return summarize(st, failed);
}

Int8Calibration Pipeline::calibrate_int8(const std::vector<std::string>& all_files, const std::string& save_as,
                                         const ResultCallback& on_result, int max_images) {
  Impl& m = *impl_;
  // Spread over the whole list rather than its first files (names often follow capture order).
  std::vector<std::string> files = all_files;
  if (max_images > 0 && files.size() > size_t(max_images)) {
    files.clear();
    for (size_t i = 0; i < size_t(max_images); ++i) files.push_back(all_files[i * all_files.size() / size_t(max_images)]);
  }
  if (m.open) throw Error(m.graph_file + ": calibrate_int8 while a stream is open; close_stream() first");
  if (!m.model) throw Error(m.graph_file + ": int8 calibration needs a trained model (PipelineOptions::model)");
  if (files.empty()) throw Error(m.graph_file + ": int8 calibration needs images (defect-free ones, such as train/good)");
  std::unique_ptr<Executor> ex = m.build_float32_from_files();
  Int8Calibration c;
  for (const auto& vn : ex->graph().nodes)
    if (auto* q = dynamic_cast<Int8Quantizable*>(&ex->node(vn.config.id))) {
      q->observe_activation_ranges(true);
      c.nodes.push_back(vn.config.id);
    }
  if (c.nodes.empty()) throw Error(m.graph_file + ": no node of this graph can run in int8 (Backbone can)");
  m.run_file_list(*ex, files, [&](const Detection& d) {
    (d.skipped ? c.skipped : c.images) += 1;
    if (on_result) on_result(d);
  });
  if (c.images == 0)
    throw Error(m.graph_file + ": int8 calibration: none of the " + std::to_string(files.size()) + " images could be read");
  Model& model = *m.model;
  collect_int8_ranges(*ex, model);
  c.points = model.int8_ranges.size();
  nlohmann::json info = {{"images", c.images}, {"skipped", c.skipped}, {"first_image", files.front()}};
  model.int8_calibration = info.dump();
  c.saved_to = save_as.empty() ? m.opt.model : save_as;
  save_model(c.saved_to, model);
  m.files_ex.reset();  // the next run builds with the new ranges
  m.memory_ex.reset();
  return c;
}

void Pipeline::open_stream(ResultCallback on_result) {
  Impl& m = *impl_;
  if (m.open) throw Error(m.graph_file + ": a stream is already open");
  Executor& ex = m.memory();
  m.open = true;
  m.closing = m.ended = false;
  m.queue.clear();
  m.users.clear();
  m.stream_failed = 0;
  m.stream_error = nullptr;
  m.runner = std::thread([this, &ex, on_result = std::move(on_result)] {
    Impl& m = *impl_;
    try {
      m.stream_stats = ex.run([&](Frame& f) { return m.next_pushed(f); },
                              [&](const Frame& f) {
                                Detection d = m.to_detection(f);
                                {
                                  std::lock_guard<std::mutex> lock(m.mutex);
                                  auto it = m.users.find(f.id());
                                  if (it != m.users.end()) {
                                    d.user = std::move(it->second);
                                    m.users.erase(it);
                                  }
                                }
                                m.stream_failed += d.verdict == Verdict::kFail;
                                if (on_result) on_result(d);
                              });
    } catch (...) {
      m.stream_error = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(m.mutex);
    m.ended = true;
    m.changed.notify_all();
  });
}

void Pipeline::push(const cv::Mat& image, std::string tag, std::shared_ptr<void> user) {
  Impl& m = *impl_;
  if (!m.open) throw Error(m.graph_file + ": push without an open stream; call open_stream() first");
  Image img = to_image(image, m.graph_file);
  std::unique_lock<std::mutex> lock(m.mutex);
  m.changed.wait(lock, [&] { return m.ended || int(m.queue.size()) < m.opt.max_in_flight; });
  if (m.ended) {
    lock.unlock();
    close_stream();  // rethrows what ended it
    throw Error(m.graph_file + ": the stream ended");
  }
  m.queue.push_back({img.mat, std::move(tag), std::move(user)});
  m.changed.notify_all();
}

RunSummary Pipeline::close_stream() {
  Impl& m = *impl_;
  if (!m.open) throw Error(m.graph_file + ": close_stream without an open stream");
  {
    std::lock_guard<std::mutex> lock(m.mutex);
    m.closing = true;
    m.changed.notify_all();
  }
  m.runner.join();
  m.open = false;
  m.queue.clear();
  m.users.clear();
  if (m.stream_error) std::rethrow_exception(std::exchange(m.stream_error, nullptr));
  return summarize(m.stream_stats, m.stream_failed);
}

bool Pipeline::stream_open() const { return impl_->open; }
double Pipeline::threshold() const { return impl_->threshold; }
std::string Pipeline::precision() const {
  if (impl_->int8()) return "int8";
  return impl_->run_options().precision == Precision::kBFloat16Mixed ? "bf16" : "fp32";
}
int Pipeline::model_width() const { return impl_->model ? impl_->model->image_width : -1; }
int Pipeline::model_height() const { return impl_->model ? impl_->model->image_height : -1; }
bool Pipeline::map_range(double* lo, double* hi) const {
  const auto& m = impl_->model;
  if (!m || !m->map_lo || !m->map_hi) return false;
  *lo = *m->map_lo;
  *hi = *m->map_hi;
  return true;
}
std::string Pipeline::graph_name() const { return impl_->graph.name; }
std::string Pipeline::map_stream() const { return impl_->map_stream; }
std::string Pipeline::score_stream() const { return impl_->score_stream; }
std::vector<std::string> Pipeline::scalar_streams() const { return impl_->scalar_streams; }

}  // namespace fmam
