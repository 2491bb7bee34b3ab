// fmam's detection API: open an inspection graph with a trained model once, then score frames
// one by one (a camera), in batches, as a stream, or over files. The command line (fmam run,
// eval, bench), the GStreamer element and the Python module are thin faces over this class.
//
//   fmam::PipelineOptions o;
//   o.model = "bottle.fmam";
//   fmam::Pipeline p("graphs/fmam_rkd.json", o);
//   fmam::Detection d = p.detect(cv::imread("part.png"));   // d.map, d.score, d.verdict
//
// Errors throw std::runtime_error (fmam::Error) naming the file, node and field. No libtorch
// header is needed to use it.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core/mat.hpp>

namespace fmam {

struct PipelineOptions {
  std::string model;                   // a model file (fmam train); "" runs untrained weights (with a warning)
  std::vector<std::string> overrides;  // "node.param=value", as fmam run --set
  std::vector<std::string> plugins;    // extra node plugins (.so), loaded before the graph is read
  double threshold = -1;               // verdict threshold on the score; < 0: the model's calibrated one
  int batch = 4;                       // frames per network call (1: lowest latency)
  int threads = 0;                     // graph worker threads (0: one per core)
  // Threads inside one network op (libtorch's setting, process-wide). 1 by default: the graph
  // already runs several frames at once on every core; 0 leaves libtorch's setting alone.
  int intra_op_threads = 1;
  int max_in_flight = 8;       // frames in the pipeline at once (bounds memory)
  std::string device = "cpu";  // cpu | cuda
  // The networks' arithmetic: fp32, bf16 (bf16-mixed: convolutions in bfloat16, everything between
  // nodes float32; CPU only), int8 (the frozen teacher in int8 through onednn, the trained networks
  // as bf16/fp32 would run them; needs a model calibrated by fmam train or fmam quantize /
  // calibrate_int8()) or auto: int8 for a calibrated model on CPUs with int8 dot products
  // (AVX512-VNNI / AVX-VNNI) or AVX2 (7-bit activations there), else bf16 on CPUs that multiply bfloat16 natively (AVX512-BF16),
  // else fp32 (the networks run on the CPU with either device). docs/PERFORMANCE.md has their
  // speed and accuracy.
  std::string precision = "auto";
  bool images = true;      // compute the graph's Image outputs (overlays); false: map and score only
  std::string output_dir;  // if set, every output is written here as fmam run -o does
};

enum class Verdict { kNone, kPass, kFail };  // kNone: no threshold (an uncalibrated model)
const char* verdict_name(Verdict v);         // "none", "PASS", "FAIL"

// One frame's result.
struct Detection {
  long long index = 0;   // position in the stream (0, 1, ...)
  std::string source;    // the file, or the tag given with the frame
  bool skipped = false;  // the frame could not be scored (an unreadable file): `error` says why
  std::string error;
  cv::Mat map;       // CV_32FC1 anomaly map at the model's resolution (the graph's first Map2D output)
  double score = 0;  // the graph's first Scalar output
  Verdict verdict = Verdict::kNone;
  std::map<std::string, double> scalars;  // every Scalar output, by stream name
  std::map<std::string, cv::Mat> images;  // every Image output (e.g. "overlay", BGR at the frame's size)
  std::shared_ptr<void> user;             // what the caller pushed with the frame (stream mode)
};

// The anomaly map resized (bilinear) to `size`, e.g. the input frame's.
cv::Mat map_at(const Detection& d, cv::Size size);

struct NodeTiming {
  std::string id, type;
  long long calls = 0;
  double total_ms = 0, median_call_ms = 0;
  double flops = 0;  // convolutions and matrix products, counted only while a FlopCounting (framework/flop_counter.h) lives
};

struct RunSummary {
  long long frames = 0, skipped = 0, failed = 0;  // failed: frames with verdict FAIL
  double seconds = 0;
  std::vector<NodeTiming> nodes;  // graph order
};

// What Pipeline::calibrate_int8 did.
struct Int8Calibration {
  long long images = 0, skipped = 0;  // images recorded; unreadable ones, reported and skipped
  std::vector<std::string> nodes;     // the nodes calibrated (the teacher, "teacher")
  size_t points = 0;                  // activation ranges recorded over all of them
  std::string saved_to;               // the model file written
};

class Pipeline {
 public:
  // Loads the graph, applies overrides and the model (its image size, heatmap range, threshold and
  // weights), validates, and builds every node once.
  explicit Pipeline(const std::string& graph_file, PipelineOptions options = {});
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // One frame: 8-bit BGR (CV_8UC3), gray (CV_8UC1) or BGRA, any size. Thread-compatible: one call
  // at a time per Pipeline, and not while a stream is open.
  Detection detect(const cv::Mat& image, const std::string& tag = "");
  // Several frames through the pipeline together (batched and pipelined); results in input order.
  std::vector<Detection> detect_batch(const std::vector<cv::Mat>& images);

  using ResultCallback = std::function<void(const Detection&)>;
  // Decodes and scores files (pipelined); `on_result` runs once per file, in order, on one
  // thread at a time. Unreadable files are reported (skipped) and do not stop the run.
  RunSummary run_files(const std::vector<std::string>& files, const ResultCallback& on_result);

  // Calibrates the model for precision "int8" (fmam quantize; fmam train does it when it
  // finishes): runs `files` (defect-free images, e.g. the training set's; at most `max_images`
  // of them, spread evenly over the list, if > 0) through the graph in float32, records the range
  // of every activation the int8 teacher quantises, and writes them into the model file, or into
  // `save_as` (atomic writes). `on_result` sees each image as run_files' does. This Pipeline
  // then uses the new ranges.
  Int8Calibration calibrate_int8(const std::vector<std::string>& files, const std::string& save_as = "",
                                 const ResultCallback& on_result = {}, int max_images = 0);

  // Streaming (a camera, a GStreamer element): open a stream, push frames from one thread,
  // close it. Results arrive in order on `on_result`, called from a worker thread. push() blocks
  // while max_in_flight frames are in the pipeline; close() flushes a partial batch and returns
  // once every result was delivered. A frame's `user` travels to its Detection.
  void open_stream(ResultCallback on_result);
  void push(const cv::Mat& image, std::string tag = "", std::shared_ptr<void> user = nullptr);
  RunSummary close_stream();
  bool stream_open() const;

  // What the model bound, and what the graph offers.
  double threshold() const;       // < 0 if none
  std::string precision() const;  // what "auto" became: "int8", "bf16" or "fp32"
  int model_width() const;        // the size frames are resized to
  int model_height() const;
  // The model's calibrated heatmap range (fmam eval --calibrate): map values drawn coldest and
  // hottest. False for an uncalibrated model or none.
  bool map_range(double* lo, double* hi) const;
  std::string graph_name() const;
  std::string map_stream() const;    // "" if the graph has no Map2D output
  std::string score_stream() const;  // "" if it has no Scalar output
  std::vector<std::string> scalar_streams() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fmam
