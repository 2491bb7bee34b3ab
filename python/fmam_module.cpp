// The Python module `fmam`: a face over the library API (include/fmam/), as the command line is.
//
//   import fmam
//   d = fmam.Detector("graphs/rkd.json", model="bottle.fmam")
//   heatmap, score, verdict = d.detect(fmam.read_image("part.png"))   # RGB uint8 HxWx3
//   fmam.train("graphs/rkd_train.json", "data/bottle", "bottle.fmam", progress=print)
//   fmam.evaluate("graphs/rkd.json", "bottle.fmam", "data/bottle")["image_auroc"]
//
// The GIL is released while a graph runs. Training runs on a worker thread while the calling
// thread waits: the progress callback is called on the calling thread, and Ctrl-C (or a callback
// that raises) cancels training, which saves a resumable checkpoint, then re-raises.
// Errors: a missing graph, model, plugin or data path -> FileNotFoundError naming it; fmam::Error
// (bad graph, override, array) -> ValueError with the library's message; a node that fails while
// running -> RuntimeError.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "fmam/evaluate.h"
#include "fmam/pipeline.h"
#include "fmam/trainer.h"
#include "framework/error.h"

namespace py = pybind11;

namespace {

// A path the caller gave that does not exist: FileNotFoundError(ENOENT, what, path).
struct MissingFile {
  std::string what, path;
};

// str or os.PathLike -> a path string.
std::string to_path(const py::handle& obj, const char* what) {
  if (py::isinstance<py::str>(obj)) return obj.cast<std::string>();
  try {
    return py::module_::import("os").attr("fspath")(obj).cast<std::string>();
  } catch (const py::error_already_set&) {
    throw py::value_error(std::string(what) + ": expected a path (str or os.PathLike), got " +
                          std::string(py::str(py::type::of(obj).attr("__name__"))));
  }
}

void require_exists(const std::string& path, const std::string& what) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw MissingFile{what, path};
}

// None, a dict {"node.param": value} or a list of "node.param=value" -> the library's strings.
// Dict values that are not strings are written as JSON (True -> true, [1, 2] -> [1,2]).
std::vector<std::string> to_overrides(const py::handle& obj) {
  std::vector<std::string> out;
  if (obj.is_none()) return out;
  if (py::isinstance<py::dict>(obj)) {
    auto dumps = py::module_::import("json").attr("dumps");
    for (auto item : py::reinterpret_borrow<py::dict>(obj)) {
      if (!py::isinstance<py::str>(item.first))
        throw py::value_error("overrides: keys must be \"node.param\" strings, got " + std::string(py::repr(item.first)));
      std::string value =
          py::isinstance<py::str>(item.second) ? item.second.cast<std::string>() : dumps(item.second).cast<std::string>();
      out.push_back(item.first.cast<std::string>() + "=" + value);
    }
    return out;
  }
  if (py::isinstance<py::str>(obj))
    throw py::value_error("overrides: expected a dict {\"node.param\": value} or a list of \"node.param=value\", got a str");
  try {
    for (auto item : py::iter(obj)) {
      if (!py::isinstance<py::str>(item))
        throw py::value_error("overrides: list items must be \"node.param=value\" strings, got " + std::string(py::repr(item)));
      out.push_back(item.cast<std::string>());
    }
  } catch (const py::error_already_set& e) {
    if (!e.matches(PyExc_TypeError)) throw;
    throw py::value_error("overrides: expected a dict {\"node.param\": value} or a list of \"node.param=value\"");
  }
  return out;
}

std::vector<std::string> to_paths(const py::handle& obj, const char* what) {
  std::vector<std::string> out;
  if (obj.is_none()) return out;
  py::object items = py::reinterpret_borrow<py::object>(obj);
  if (py::isinstance<py::str>(obj) || py::hasattr(obj, "__fspath__")) items = py::make_tuple(obj);
  for (auto item : py::iter(items)) {
    out.push_back(to_path(item, what));
    require_exists(out.back(), what);
  }
  return out;
}

std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// A numpy image -> an 8-bit BGR, gray or BGRA cv::Mat that owns its pixels. RGB(A) unless `bgr`.
cv::Mat to_mat(const py::handle& obj, bool bgr, const std::string& what) {
  const std::string expected = "expected a numpy uint8 array HxW (gray) or HxWx3 (" + std::string(bgr ? "BGR" : "RGB") + ")";
  py::array a;
  if (py::isinstance<py::array>(obj)) {
    a = py::reinterpret_borrow<py::array>(obj);
  } else {
    try {
      a = py::module_::import("numpy").attr("asarray")(obj);  // a PIL image, nested lists...
    } catch (const py::error_already_set&) {
      throw py::value_error(what + ": " + expected + ", got " + std::string(py::str(py::type::of(obj).attr("__name__"))));
    }
  }
  if (a.dtype().kind() != 'u' || a.itemsize() != 1)
    throw py::value_error(what + ": " + expected + ", got dtype " + std::string(py::str(a.dtype())) + " of shape " + shape_of(a));
  const bool ok_shape = a.ndim() == 2 || (a.ndim() == 3 && (a.shape(2) == 1 || a.shape(2) == 3 || a.shape(2) == 4));
  if (!ok_shape) throw py::value_error(what + ": " + expected + " (or HxWx1, HxWx4), got shape " + shape_of(a));
  if (a.shape(0) == 0 || a.shape(1) == 0)
    throw py::value_error(what + ": " + expected + ", got an empty image of shape " + shape_of(a));
  // C-contiguous (a copy if it was a view with strides, e.g. img[:, ::-1] or img[..., ::-1]).
  auto c = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(a);
  if (!c) throw py::error_already_set();
  const int channels = a.ndim() == 2 ? 1 : int(a.shape(2));
  cv::Mat view(int(a.shape(0)), int(a.shape(1)), CV_8UC(channels), const_cast<uint8_t*>(c.data()));
  cv::Mat out;
  if (channels == 3 && !bgr)
    cv::cvtColor(view, out, cv::COLOR_RGB2BGR);
  else if (channels == 4 && !bgr)
    cv::cvtColor(view, out, cv::COLOR_RGBA2BGRA);
  else
    out = view.clone();
  return out;
}

py::object to_array(const cv::Mat& m) {
  if (m.empty()) return py::none();
  cv::Mat f = m;
  if (f.type() != CV_32FC1) m.convertTo(f, CV_32F);
  py::array_t<float> a({py::ssize_t(f.rows), py::ssize_t(f.cols)});
  float* dst = a.mutable_data();
  for (int y = 0; y < f.rows; ++y) std::memcpy(dst + size_t(y) * f.cols, f.ptr<float>(y), sizeof(float) * f.cols);
  return std::move(a);
}

py::object verdict_of(fmam::Verdict v) {
  if (v == fmam::Verdict::kNone) return py::none();
  return py::str(fmam::verdict_name(v));
}

// Runs `work` on a new thread while the calling thread waits with the GIL released. The worker
// hands Python calls to the calling thread with post(), which returns once they ran. Every
// 100 ms the calling thread checks for signals (Ctrl-C). A Python exception (from a posted call
// or a signal) calls `cancel` once; run() re-raises it after the work ended.
class CallerLoop {
 public:
  // From the worker: runs `call` on the calling thread (with the GIL) and waits for it. After a
  // Python exception, calls are dropped.
  void post(std::function<void()> call) {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return stopped_ || !pending_; });  // one call at a time, if several threads post
    if (stopped_) return;
    pending_ = std::move(call);
    changed_.notify_all();
    changed_.wait(lock, [&] { return !pending_; });
  }

  void run(const std::function<void()>& work, const std::function<void()>& cancel) {
    std::exception_ptr work_error;
    std::thread worker([&] {
      try {
        work();
      } catch (...) {
        work_error = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(mutex_);
      finished_ = true;
      changed_.notify_all();
    });
    std::optional<py::error_already_set> py_error;
    auto fail = [&](py::error_already_set e) {
      if (py_error) return;
      py_error.emplace(std::move(e));
      {
        std::lock_guard<std::mutex> lock(mutex_);
        stopped_ = true;
      }
      if (cancel) cancel();
    };
    for (;;) {
      std::function<void()> call;
      bool done = false;
      {
        py::gil_scoped_release nogil;
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait_for(lock, std::chrono::milliseconds(100), [&] { return finished_ || bool(pending_); });
        call = pending_;
        done = finished_ && !pending_;
      }
      if (call) {
        if (!py_error) {
          try {
            call();
          } catch (py::error_already_set& e) {
            fail(std::move(e));
          } catch (const std::exception& e) {  // a C++ exception from a conversion
            PyErr_SetString(PyExc_RuntimeError, e.what());
            fail(py::error_already_set());
          }
        }
        std::lock_guard<std::mutex> lock(mutex_);
        pending_ = nullptr;
        changed_.notify_all();
      }
      if (!py_error && PyErr_CheckSignals() != 0) fail(py::error_already_set());
      if (done) break;
    }
    {
      py::gil_scoped_release nogil;
      worker.join();
    }
    if (py_error) throw *py_error;
    if (work_error) std::rethrow_exception(work_error);
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::function<void()> pending_;
  bool finished_ = false, stopped_ = false;
};

// fmam.Detector: a Pipeline and a lock (one call at a time per Pipeline, GIL released).
class Detector {
 public:
  Detector(const py::object& graph, const py::object& model, const py::object& threshold, int batch, int threads,
           const py::object& overrides, const py::object& plugins, const std::string& device, const std::string& precision) {
    graph_ = to_path(graph, "graph");
    require_exists(graph_, "graph");
    fmam::PipelineOptions o;
    if (!model.is_none()) {
      o.model = to_path(model, "model");
      require_exists(o.model, "model");
    }
    if (!threshold.is_none()) {
      o.threshold = threshold.cast<double>();
      if (o.threshold < 0)
        throw py::value_error("threshold: must be >= 0 (None: the model's calibrated one), got " + std::to_string(o.threshold));
    }
    if (batch < 1) throw py::value_error("batch: must be >= 1, got " + std::to_string(batch));
    if (threads < 0) throw py::value_error("threads: must be >= 0 (0: one per core), got " + std::to_string(threads));
    o.batch = batch;
    o.threads = threads;
    o.overrides = to_overrides(overrides);
    o.plugins = to_paths(plugins, "plugin");
    o.device = device;
    o.precision = precision;
    o.images = false;  // map and score only: no overlay drawing
    py::gil_scoped_release nogil;
    pipeline_ = std::make_unique<fmam::Pipeline>(graph_, std::move(o));
  }

  std::string precision() const { return pipeline_->precision(); }

  py::tuple detect(const py::object& image, bool bgr) {
    cv::Mat m = to_mat(image, bgr, "detect: image");
    fmam::Detection d;
    cv::Mat map;
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(mutex_);
      d = pipeline_->detect(m);
      map = checked(d, 0).map.empty() ? cv::Mat() : fmam::map_at(d, m.size());
    }
    return py::make_tuple(to_array(map), d.score, verdict_of(d.verdict));
  }

  py::list detect_batch(const py::iterable& images, bool bgr) {
    std::vector<cv::Mat> mats;
    size_t i = 0;
    for (auto item : images) mats.push_back(to_mat(item, bgr, "detect_batch: images[" + std::to_string(i++) + "]"));
    std::vector<fmam::Detection> ds;
    std::vector<cv::Mat> maps;
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(mutex_);
      ds = pipeline_->detect_batch(mats);
      for (size_t k = 0; k < ds.size(); ++k)
        maps.push_back(checked(ds[k], k).map.empty() ? cv::Mat() : fmam::map_at(ds[k], mats[k].size()));
    }
    py::list out;
    for (size_t k = 0; k < ds.size(); ++k) out.append(py::make_tuple(to_array(maps[k]), ds[k].score, verdict_of(ds[k].verdict)));
    return out;
  }

  py::object threshold() const {
    double t = pipeline_->threshold();
    return t < 0 ? py::none() : py::object(py::float_(t));
  }
  py::object image_size() const {
    if (pipeline_->model_width() <= 0) return py::none();
    return py::make_tuple(pipeline_->model_width(), pipeline_->model_height());
  }
  std::string graph_name() const { return pipeline_->graph_name(); }
  const std::string& graph() const { return graph_; }

  py::dict calibrate_int8(const py::object& images, const py::object& save_as, int max_images) {
    if (max_images < 0) throw py::value_error("max_images: must be >= 0 (0: all), got " + std::to_string(max_images));
    const std::vector<std::string> files = to_paths(images, "images");
    const std::string out = save_as.is_none() ? std::string() : to_path(save_as, "save_as");
    fmam::Int8Calibration c;
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(mutex_);
      c = pipeline_->calibrate_int8(files, out, {}, max_images);
    }
    py::dict d;
    d["images"] = c.images;
    d["skipped"] = c.skipped;
    d["nodes"] = c.nodes;
    d["points"] = c.points;
    d["saved_to"] = c.saved_to;
    return d;
  }

 private:
  const fmam::Detection& checked(const fmam::Detection& d, size_t index) const {
    if (d.skipped) throw fmam::Error(graph_ + ": image " + std::to_string(index) + " could not be scored: " + d.error);
    return d;
  }

  std::string graph_;
  std::unique_ptr<fmam::Pipeline> pipeline_;
  std::mutex mutex_;
};

py::array read_image(const py::object& path_obj, bool bgr, bool gray) {
  const std::string path = to_path(path_obj, "path");
  require_exists(path, "image");
  cv::Mat m;
  {
    py::gil_scoped_release nogil;
    m = cv::imread(path, gray ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR);
    if (!m.empty() && m.channels() == 3 && !bgr) cv::cvtColor(m, m, cv::COLOR_BGR2RGB);
  }
  if (m.empty()) throw py::value_error(path + ": cannot decode the image (OpenCV's imread failed)");
  std::vector<py::ssize_t> shape{m.rows, m.cols};
  if (m.channels() > 1) shape.push_back(m.channels());
  py::array_t<uint8_t> a(shape);
  const size_t row = size_t(m.cols) * m.channels();
  for (int y = 0; y < m.rows; ++y) std::memcpy(a.mutable_data() + y * row, m.ptr(y), row);
  return std::move(a);
}

py::dict progress_dict(const fmam::TrainProgress& p) {
  py::dict d;
  d["stage"] = p.stage;
  d["stage_index"] = p.stage_index;
  d["stages"] = p.stages;
  d["epoch"] = p.epoch;
  d["epochs"] = p.epochs;
  d["batch"] = p.batch;
  d["batches"] = p.batches;
  d["losses"] = p.losses;
  d["images_per_s"] = p.images_per_s;
  d["gflop"] = p.gflop;
  d["epoch_done"] = p.epoch_done;
  return d;
}

std::string train(const py::object& graph, const py::object& data, const py::object& out, const py::object& overrides,
                  const py::object& progress, bool resume, int max_images, const py::object& plugins, int threads) {
  const std::string graph_file = to_path(graph, "graph");
  require_exists(graph_file, "graph");
  fmam::TrainOptions o;
  o.data = to_path(data, "data");
  require_exists(o.data, "data");
  o.out = to_path(out, "out");
  if (resume) require_exists(o.out, "out (resume)");
  if (max_images < 0) throw py::value_error("max_images: must be >= 0 (0: all), got " + std::to_string(max_images));
  if (threads < 0) throw py::value_error("threads: must be >= 0 (0: one per core), got " + std::to_string(threads));
  o.overrides = to_overrides(overrides);
  o.plugins = to_paths(plugins, "plugin");
  o.resume = resume;
  o.max_images = max_images;
  o.threads = threads;
  if (!progress.is_none() && !PyCallable_Check(progress.ptr())) throw py::value_error("progress: expected a callable or None");
  std::unique_ptr<fmam::Trainer> trainer;
  {
    py::gil_scoped_release nogil;
    trainer = std::make_unique<fmam::Trainer>(graph_file, std::move(o));
  }
  CallerLoop loop;
  fmam::TrainResult result;
  fmam::Trainer::ProgressCallback cb;
  if (!progress.is_none()) cb = [&](const fmam::TrainProgress& p) { loop.post([&] { progress(progress_dict(p)); }); };
  loop.run([&] { result = trainer->train(cb); }, [&] { trainer->cancel(); });
  {
    py::gil_scoped_release nogil;
    trainer.reset();
  }
  return result.model;
}

py::dict group_dict(const fmam::EvalGroup& g) {
  py::dict d;
  d["images"] = g.images;
  d["image_auroc"] = g.image_auroc;
  d["pixel_auroc"] = g.pixel_auroc;
  d["aupro"] = g.aupro;
  d["f1_max"] = g.f1_max;
  d["threshold"] = g.threshold;
  return d;
}

py::dict evaluate(const py::object& graph, const py::object& model, const py::object& data, const py::object& report_dir,
                  bool calibrate, const py::object& overrides, const py::object& plugins, int batch, int threads,
                  const py::object& progress) {
  const std::string graph_file = to_path(graph, "graph");
  require_exists(graph_file, "graph");
  fmam::EvalOptions o;
  o.model = to_path(model, "model");
  require_exists(o.model, "model");
  o.data = to_path(data, "data");
  require_exists(o.data, "data");
  if (!report_dir.is_none()) o.report_dir = to_path(report_dir, "report_dir");
  if (batch < 1) throw py::value_error("batch: must be >= 1, got " + std::to_string(batch));
  if (threads < 0) throw py::value_error("threads: must be >= 0 (0: one per core), got " + std::to_string(threads));
  o.calibrate = calibrate;
  o.overrides = to_overrides(overrides);
  o.plugins = to_paths(plugins, "plugin");
  o.batch = batch;
  o.threads = threads;
  if (!progress.is_none() && !PyCallable_Check(progress.ptr())) throw py::value_error("progress: expected a callable or None");
  CallerLoop loop;
  if (!progress.is_none()) o.progress = [&](long long done, long long total) { loop.post([&] { progress(done, total); }); };
  fmam::EvalResult r;
  loop.run([&] { r = fmam::evaluate(graph_file, o); }, {});  // no cancel: a raising callback stops being called
  py::dict d = group_dict(r.all);
  py::dict per_type;
  for (const auto& g : r.per_type) per_type[py::str(g.defect_type)] = group_dict(g);
  d["per_type"] = per_type;
  d["skipped"] = r.skipped;
  d["seconds"] = r.seconds;
  d["map_range"] = py::make_tuple(r.map_lo, r.map_hi);
  d["notes"] = r.notes;
  d["report_dir"] = o.report_dir.empty() ? py::object(py::none()) : py::object(py::str(o.report_dir));
  return d;
}

}  // namespace

PYBIND11_MODULE(fmam, m) {
  m.doc() =
      "fmam: teacher-student defect detection (graphs of nodes, libtorch networks). "
      "Detector scores images, train() makes a model, evaluate() measures one.";
  m.attr("__version__") = FMAM_VERSION;

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const MissingFile& e) {
      py::tuple args = py::make_tuple(ENOENT, "No such file or directory (" + e.what + ")", e.path);
      PyErr_SetObject(PyExc_FileNotFoundError, args.ptr());
    } catch (const fmam::NodeError& e) {  // a node failed while running: not the caller's input
      PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (const fmam::Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  py::class_<Detector>(m, "Detector", R"doc(
An inspection graph with a trained model, built once; detect() scores images.

Detector(graph, model=None, threshold=None, batch=4, threads=0, overrides=None, plugins=None, device="cpu",
         precision="auto")
  graph      an inference graph (graphs/rkd.json)
  model      a model file from fmam train / fmam.train (None: untrained weights, with a warning)
  threshold  the verdict threshold on the score (None: the model's calibrated one, if any)
  batch      frames per network call in detect_batch
  threads    graph worker threads (0: one per core)
  overrides  {"node.param": value} or ["node.param=value", ...], as fmam run --set
  plugins    extra node plugins (.so paths)
  device     "cpu" or "cuda" (the Halide post-processing kernels on a GPU; the networks stay on
             the CPU; slower than "cpu" at usual map sizes, see docs/PERFORMANCE.md)
  precision  the networks' arithmetic: "auto" (int8 for a model calibrated for it on CPUs with AVX2 or VNNI,
             else bf16 on CPUs with AVX512-BF16, else fp32), "fp32", "bf16" (convolutions in bfloat16,
             about 2x faster) or "int8" (the teacher in int8; the model must be calibrated: fmam train
             does it, or fmam quantize); .precision says what runs
)doc")
      .def(py::init<const py::object&, const py::object&, const py::object&, int, int, const py::object&, const py::object&,
                    const std::string&, const std::string&>(),
           py::arg("graph"), py::arg("model") = py::none(), py::arg("threshold") = py::none(), py::arg("batch") = 4,
           py::arg("threads") = 0, py::arg("overrides") = py::none(), py::arg("plugins") = py::none(), py::arg("device") = "cpu",
           py::arg("precision") = "auto")
      .def_property_readonly("precision", &Detector::precision, "what precision=\"auto\" became: \"int8\", \"bf16\" or \"fp32\"")
      .def("detect", &Detector::detect, py::arg("image"), py::arg("bgr") = false,
           "detect(image, bgr=False) -> (map, score, verdict)\n\n"
           "image: numpy uint8 HxW (gray) or HxWx3 (RGB; BGR with bgr=True, as OpenCV gives).\n"
           "map: float32 HxW anomaly map at the image's size; score: float; verdict: \"PASS\", \"FAIL\",\n"
           "or None when there is no threshold.")
      .def("detect_batch", &Detector::detect_batch, py::arg("images"), py::arg("bgr") = false,
           "detect_batch(images, bgr=False) -> [(map, score, verdict), ...], in order; the images run "
           "through the pipeline together (batched)")
      .def("calibrate_int8", &Detector::calibrate_int8, py::arg("images"), py::arg("save_as") = py::none(),
           py::arg("max_images") = 0,
           "calibrate_int8(images, save_as=None, max_images=0) -> dict(images, skipped, nodes, points, saved_to)\n\n"
           "Calibrates the model for precision=\"int8\", as fmam quantize does (fmam.train does it when it\n"
           "finishes): runs the defect-free `images` (paths; at most max_images of them, spread over the\n"
           "list, if > 0) in float32, records the range of every activation the int8 teacher quantises and\n"
           "writes them into the model file (or save_as). Unreadable images are skipped and counted. This\n"
           "Detector then uses them (precision=\"auto\" becomes int8 on CPUs with AVX2 or VNNI).")
      .def_property_readonly("threshold", &Detector::threshold, "the verdict threshold, or None")
      .def_property_readonly("image_size", &Detector::image_size, "(width, height) the model runs at, or None without a model")
      .def_property_readonly("graph_name", &Detector::graph_name)
      .def("__repr__", [](const Detector& d) { return "<fmam.Detector " + d.graph_name() + " (" + d.graph() + ")>"; });

  m.def("read_image", &read_image, py::arg("path"), py::arg("bgr") = false, py::arg("gray") = false,
        "read_image(path, bgr=False, gray=False) -> numpy uint8 HxWx3 RGB (BGR with bgr=True; HxW with gray=True), "
        "decoded with OpenCV");

  m.def(
      "train", &train, py::arg("graph"), py::arg("data"), py::arg("out"), py::arg("overrides") = py::none(),
      py::arg("progress") = py::none(), py::arg("resume") = false, py::arg("max_images") = 0, py::arg("plugins") = py::none(),
      py::arg("threads") = 0,
      R"doc(train(graph, data, out, overrides=None, progress=None, resume=False, max_images=0, plugins=None, threads=0) -> model path

Trains on data/train/good (MVTec AD layout) with a training graph (graphs/rkd_train.json) and
writes the model to `out` (atomically, after every epoch). progress(dict) is called on this
thread after every batch with stage, stage_index, stages, epoch, epochs, batch, batches, losses,
images_per_s, gflop (the epoch's convolutions and products so far) and epoch_done. If it
raises, or on Ctrl-C, training is cancelled (a resumable checkpoint is saved to `out`;
resume=True continues it) and the exception is re-raised.)doc");
  m.def(
      "evaluate", &evaluate, py::arg("graph"), py::arg("model"), py::arg("data"), py::arg("report_dir") = py::none(),
      py::arg("calibrate") = false, py::arg("overrides") = py::none(), py::arg("plugins") = py::none(), py::arg("batch") = 4,
      py::arg("threads") = 0, py::arg("progress") = py::none(),
      R"doc(evaluate(graph, model, data, report_dir=None, calibrate=False, overrides=None, plugins=None, batch=4, threads=0, progress=None) -> dict

Scores data/test/<type>/ against data/ground_truth/<type>/: image_auroc, pixel_auroc, aupro,
f1_max, threshold, images (the whole split), per_type {type: {the same}}, skipped, seconds,
map_range, notes. report_dir: write report.html there; calibrate: write the F1-max threshold and
heatmap range into the model. progress(done, total) is called per image.)doc");
}
