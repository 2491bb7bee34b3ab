// fmam's training API: a training graph (graphs/*_train.json) and a category's defect-free images
// in, a model file out. `fmam train` and the Python module's train() are faces over it.
//
//   fmam::TrainOptions o;
//   o.data = "../shared/data/mvtec_ad/bottle";   // trains on DIR/train/good
//   o.out = "bottle.fmam";
//   o.overrides = {"stage1.epochs=2", "train.image_size=128"};
//   fmam::Trainer t("graphs/fmam_rkd_train.json", o);   // every mistake reported here
//   fmam::TrainResult r = t.train([](const fmam::TrainProgress& p) { ... });
//
// A model file is written atomically after every epoch; cancel() stops at the next batch and
// saves a checkpoint that `resume` continues bit-exactly.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace fmam {

struct TrainOptions {
  std::string data;                    // a category folder in MVTec AD layout (DIR/train/good)
  std::string out;                     // the model file to write (and to resume from)
  std::vector<std::string> overrides;  // "train.batch_size=8", "stage1.epochs=10", "synth.tau=0.4"
  std::vector<std::string> plugins;    // extra node plugins (.so)
  bool resume = false;                 // continue from the checkpoint in `out`
  int max_images = 0;                  // use only the first N training images (0: all)
  int threads = 0;                     // graph worker threads (0: one per core)
  // Threads inside one network op (libtorch, process-wide): training runs one batch at a time,
  // so by default each op takes every core (threads, or all cores); -1 leaves libtorch alone.
  int intra_op_threads = 0;
};

// Reported after every batch and at the end of every epoch.
struct TrainProgress {
  std::string stage;                 // "stage1"
  int stage_index = 0, stages = 0;   // 0-based
  int epoch = 0, epochs = 0;         // 0-based epoch of the stage
  long long batch = 0, batches = 0;  // batches done in this epoch, of
  int batch_size = 0;                // images per batch
  long long images = 0;              // images trained on in this epoch so far
  double seconds = 0;                // time in this epoch so far
  double images_per_s = 0;
  // Arithmetic done in this epoch so far, all threads: the convolutions' forward and backward and
  // the matrix products (a multiply-add counts 2; framework/flop_counter.h), in GFLOP.
  double gflop = 0;
  std::map<std::string, double> losses;  // mean of each loss over the epoch so far
  bool epoch_done = false;               // true once per epoch, after its checkpoint was written
};

struct TrainResult {
  std::string model;       // the model file
  bool finished = false;   // false: cancelled; `model` is a checkpoint to resume
  std::string stopped_at;  // when cancelled: "batch 2 of epoch 3 of stage1"
  long long images = 0;    // images trained on (all epochs)
  long long skipped = 0;   // training files skipped as unreadable (each named on stderr), counted once
  double seconds = 0;
  // The teacher cache (train.teacher_cache_mb): pyramids stored and their bytes, lookups it
  // served and missed, and pyramids not stored because the bound was reached.
  long long cache_entries = 0, cache_bytes = 0, cache_hits = 0, cache_misses = 0, cache_refused = 0;
  // Images the finished model was calibrated on for --precision int8 (train.int8_calibration_images);
  // 0: not calibrated (turned off, or it failed, which was logged).
  long long int8_images = 0;
};

class Trainer {
 public:
  // Loads and validates the training graph, its "train" section (unknown or mistyped keys are
  // errors naming the file and field), the overrides, the inference graph it names and the data.
  Trainer(const std::string& training_graph, TrainOptions options);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  using ProgressCallback = std::function<void(const TrainProgress&)>;
  TrainResult train(const ProgressCallback& progress = {});
  // Safe from any thread and from a signal handler: stops at the next batch boundary, writes a
  // resumable checkpoint, and train() returns with finished = false.
  void cancel();

  std::string inference_graph() const;  // the graph the model runs with (a path)
  int image_width() const;
  int image_height() const;
  long long images() const;                 // training images found
  std::string precision() const;            // what trainable nodes run: "fp32" or "bf16-mixed"
  std::string requested_precision() const;  // train.precision as set: "auto", "fp32", "bf16-mixed"

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fmam
