// fmam train: flag parsing over fmam::Trainer (include/fmam/trainer.h), a progress bar, and
// Ctrl-C / SIGTERM turned into Trainer::cancel() (a checkpoint that --resume continues).
#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <memory>

#include "api/train_config.h"
#include "apps/cli.h"
#include "fmam/trainer.h"

namespace fmam {
namespace {

std::atomic<Trainer*> g_trainer{nullptr};
std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) {
  g_signal = sig;
  if (Trainer* t = g_trainer.load()) t->cancel();
}

std::string loss_terms(const TrainProgress& p) {
  std::string terms;
  for (const auto& [s, v] : p.losses) {
    char b[64];
    std::snprintf(b, sizeof b, "%s%s %.4f", terms.empty() ? "" : "  ", s.c_str(), v);
    terms += b;
  }
  return terms;
}

}  // namespace

int cmd_train(int argc, char** argv) {
  auto opts = cli::common_options();
  opts.insert(opts.begin(),
              {{"data", "DIR", "a category folder in MVTec AD layout: trains on DIR/train/good", false, "d"},
               {"out", "FILE", "the model file to write (and to --resume from)", false, "o"},
               {"set", "KEY=VALUE",
                "override a setting: train.batch_size=8, train.image_size=128 (or WxH:\n"
                "                              train.image_size=512x128 for long parts), train.seed=1,\n"
                "                              train.precision=fp32 (default auto: bf16-mixed on CPUs with\n"
                "                              AVX512-BF16, else fp32), train.drop_last=true (default false:\n"
                "                              the last partial batch is trained on), stage1.epochs=10,\n"
                "                              stage2.lr=1e-4, stage1.betas=[0.5,0.999] (Adam; default\n"
                "                              [0.9,0.999]), stage1.weight_decay=0, train.teacher_cache_mb=0\n"
                "                              (recompute the teacher every epoch; default 1024 MiB),\n"
                "                              or a node param (synth.tau=0.4)",
                true, ""},
               {"resume", "",
                "continue from the checkpoint in --out (after Ctrl-C: bit-exactly; or to add\n"
                "                              epochs to a finished model, which keeps no optimizer state:\n"
                "                              Adam starts afresh)",
                false, ""},
               {"max-images", "N", "use only the first N training images (quick runs, tests)", false, ""},
               {"strict", "", "exit with status 3 if any training image was skipped (unreadable); default 0", false, ""},
               {"quiet", "", "no progress bar", false, "q"}});
  cli::Args a("train", "fmam train GRAPH --data CATEGORY_DIR --out MODEL [--set KEY=VALUE]... [--resume]",
              "Train a detector on defect-free images. GRAPH is a training graph (graphs/*_train.json):\n"
              "its \"train\" section sets the stages (e.g. stage 1: plain KD, Adam lr 1e-3, 50 epochs;\n"
              "stage 2: the student continues KD while the feature mappings learn the angular margin\n"
              "loss on synthetic defects, lr 1e-4 with an L1 penalty, 50 epochs), the batch size, image\n"
              "size and seed.\n"
              "A model file is written atomically after every epoch; Ctrl-C saves a checkpoint that\n"
              "--resume continues bit-exactly. Use the model with the graph it names:\n"
              "  fmam run graphs/fmam_rkd.json --model MODEL -i IMAGES -o OUT",
              opts,
              "examples:\n"
              "  fmam train graphs/fmam_rkd_train.json -d ../shared/data/mvtec_ad/bottle -o bottle.fmam\n"
              "  fmam train graphs/fmam_rkd_train.json -d ../shared/data/mvtec_ad/bottle -o quick.fmam \\\n"
              "      --set stage1.epochs=2 --set stage2.epochs=2 --set train.image_size=128\n"
              "\n" +
                  train_fields_help() +
                  "\n"
                  "environment:\n"
                  "  FMAM_CPU_CACHE_MB=N   bound of the cache that keeps freed tensors of 1 MiB+ for the next\n"
                  "                        batch (default 2048, emptied after each stage; 0 turns it off)\n"
                  "\n"
                  "exit status:\n"
                  "  0  the model was written (unreadable images, each named on stderr, were skipped)\n"
                  "  1  an error (bad graph, data or option), or an epoch in which every image was skipped\n"
                  "  3  with --strict: the model was written, but some images were skipped\n"
                  "  130  interrupted (Ctrl-C, SIGTERM): a checkpoint to --resume");
  if (!a.parse(argc, argv)) return 0;
  if (a.positionals().size() != 1) throw Error("fmam train: expected one GRAPH; see fmam train --help");
  if (a.get("data").empty()) throw Error("fmam train: --data CATEGORY_DIR is required");
  if (a.get("out").empty()) throw Error("fmam train: --out MODEL is required");
  TrainOptions o;
  o.data = a.get("data");
  o.out = a.get("out");
  o.overrides = a.all("set");
  o.plugins = a.all("plugin");
  o.resume = a.flag("resume");
  o.max_images = a.get_int("max-images", 0);
  o.threads = a.get_int("threads", 0);
  o.intra_op_threads = -1;  // set by the runner before any network is built (fmam_main.cpp)
  Trainer trainer(a.positionals()[0], o);
  const bool quiet = a.flag("quiet");
  if (!quiet)
    cli::log("precision " + trainer.precision() +
             (trainer.requested_precision() != "auto" ? ""
              : trainer.precision() == "bf16-mixed"   ? " (auto: this CPU has AVX512-BF16)"
                                                      : " (auto: this CPU has no native bfloat16)"));
  std::unique_ptr<cli::Progress> bar;
  auto report = [&](const TrainProgress& p) {
    if (p.epoch_done) {  // a line per epoch, quiet or not: the log of a long run
      if (bar) bar->finish();
      bar.reset();
      // GFLOP per image and GFLOP/s: how much arithmetic an image costs and how near the
      // CPU's peak it runs (docs/PERFORMANCE.md, "Training's arithmetic").
      char line[320];
      std::snprintf(
          line, sizeof line, "%s epoch %d/%d: %lld images in %.1f s (%.2f images/s, %.1f GFLOP/image at %.0f GFLOP/s)  %s",
          p.stage.c_str(), p.epoch + 1, p.epochs, p.images, p.seconds, p.images_per_s,
          p.images > 0 ? p.gflop / double(p.images) : 0.0, p.seconds > 0 ? p.gflop / p.seconds : 0.0, loss_terms(p).c_str());
      cli::log(line);
      return;
    }
    if (quiet) return;
    if (!bar)
      bar = std::make_unique<cli::Progress>(p.stage + " epoch " + std::to_string(p.epoch + 1) + "/" + std::to_string(p.epochs),
                                            p.batches, double(p.batch_size), "images/s");
    bar->update(p.batch, loss_terms(p));
  };
  g_trainer = &trainer;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  TrainResult r = trainer.train(report);
  g_trainer = nullptr;
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  if (!r.finished) {
    cli::log(std::string("interrupted (") + (g_signal == SIGTERM ? "SIGTERM" : "SIGINT") + "): checkpoint saved to " + r.model +
             " after " + r.stopped_at + "; continue with --resume");
    return 130;
  }
  char line[256];
  std::snprintf(line, sizeof line, "trained in %.1f s (%lld images, %.2f images/s), peak memory %.0f MiB; model: %s", r.seconds,
                r.images, r.seconds > 0 ? r.images / r.seconds : 0.0, cli::peak_rss_mib(), r.model.c_str());
  cli::log(line);
  if (r.skipped > 0) cli::log(std::to_string(r.skipped) + " training image(s) skipped as unreadable (each named above)");
  if (r.int8_images > 0) cli::log("calibrated for --precision int8 on " + std::to_string(r.int8_images) + " training image(s)");
  std::cout << r.model << "\n";
  return a.flag("strict") && r.skipped > 0 ? 3 : 0;
}

}  // namespace fmam
