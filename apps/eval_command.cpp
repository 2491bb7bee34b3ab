// fmam eval: flag parsing over fmam::evaluate (include/fmam/evaluate.h): the metrics of a model
// on an MVTec-layout category's test split (image AUROC, pixel AUROC, AUPRO to FPR 0.3, F1-max,
// per defect type), results.json and a self-contained HTML report; --calibrate writes the
// threshold and heatmap range back into the model so `fmam run` prints PASS/FAIL and colours
// heatmaps consistently.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include "apps/cli.h"
#include "fmam/evaluate.h"
#include "framework/error.h"

namespace fmam {

namespace fs = std::filesystem;

namespace {
// What ran, and with bf16 or int8 what it cost against fp32, in points (hundredths) of each metric.
void print_precision(const EvalResult& r) {
  if (!r.has_fp32) {
    cli::log("precision " + r.precision);
    return;
  }
  char b[320];
  std::snprintf(b, sizeof b,
                "precision %s; fp32 on the same images: image AUROC %.4f, pixel AUROC %.4f, AUPRO %.4f "
                "(%s - fp32: %+.2f, %+.2f, %+.2f points)",
                r.precision.c_str(), r.fp32.image_auroc, r.fp32.pixel_auroc, r.fp32.aupro, r.precision.c_str(),
                100 * (r.all.image_auroc - r.fp32.image_auroc), 100 * (r.all.pixel_auroc - r.fp32.pixel_auroc),
                100 * (r.all.aupro - r.fp32.aupro));
  cli::log(b);
}
}  // namespace

int cmd_eval(int argc, char** argv) {
  auto opts = cli::common_options();
  opts.insert(
      opts.begin(),
      {{"model", "FILE", "the trained model (fmam train)", false, "m"},
       {"data", "DIR", "a category in MVTec AD layout: DIR/test/<type>/, DIR/ground_truth/<type>/", false, "d"},
       {"out", "DIR", "report folder: report.html, results.json, roc.svg, score_histogram.svg", false, "o"},
       {"calibrate", "", "write the F1-max threshold and the heatmap colour range into the model", false, ""},
       {"set", "ID.PARAM=VALUE", "override a node param", true, ""},
       {"batch", "N",
        "frames stacked per call of batchable nodes (default 4: the networks run ~25% faster\n                              than "
        "frame by frame; 1 for the lowest latency)",
        false, ""},
       cli::precision_option(),
       {"no-fp32-delta", "", "with precision bf16 or int8: skip the second, fp32 evaluation that measures what it costs", false,
        ""},
       {"strict", "", "exit with status 3 if any test image was skipped (unreadable); default 0", false, ""},
       {"quiet", "", "no progress bar", false, "q"}});
  cli::Args a(
      "eval", "fmam eval GRAPH --model MODEL --data CATEGORY_DIR --out REPORT_DIR [--calibrate]",
      "Evaluate a detector on a category's test split: image AUROC, pixel AUROC, AUPRO (to FPR\n"
      "0.3, normalised, as MVTec AD's evaluation code), image F1-max and its threshold, for all\n"
      "images and per defect type. Writes results.json and a self-contained HTML report (ROC\n"
      "curves, score histograms, overlays with the worst mistakes first).",
      opts,
      std::string("example:\n"
                  "  fmam eval graphs/fmam_rkd.json -m bottle.fmam -d ../shared/data/mvtec_ad/bottle -o report/ --calibrate\n"
                  "then open report/report.html; with --calibrate, fmam run prints PASS/FAIL per image.\n"
                  "\n") +
          kInferenceEnvironmentHelp +
          "\n"
          "exit status:\n"
          "  0  the report was written (unreadable images, each named on stderr, were skipped)\n"
          "  1  an error (bad graph, model, data or option)\n"
          "  3  with --strict: the report was written, but some images were skipped");
  if (!a.parse(argc, argv)) return 0;
  if (a.positionals().size() != 1) throw Error("fmam eval: expected one GRAPH; see fmam eval --help");
  for (const char* req : {"model", "data", "out"})
    if (a.get(req).empty()) throw Error(std::string("fmam eval: --") + req + " is required; see fmam eval --help");
  EvalOptions o;
  o.model = a.get("model");
  o.data = a.get("data");
  o.report_dir = a.get("out");
  o.calibrate = a.flag("calibrate");
  o.overrides = a.all("set");
  o.plugins = a.all("plugin");
  o.batch = a.get_int("batch", 4);
  o.threads = a.get_int("threads", 0);
  o.precision = a.get("precision", "auto");
  o.fp32_delta = !a.flag("no-fp32-delta");
  std::unique_ptr<cli::Progress> bar;
  if (!a.flag("quiet"))
    o.progress = [&](long long done, long long total) {
      if (!bar) bar = std::make_unique<cli::Progress>("eval", total, 1, "images/s");
      bar->update(done);
    };
  const EvalResult r = evaluate(a.positionals()[0], o);
  if (bar) bar->finish();
  std::printf("%-16s %6s %12s %12s %8s %8s %10s\n", "defect type", "images", "image AUROC", "pixel AUROC", "AUPRO", "F1-max",
              "threshold");
  auto row = [](const EvalGroup& m) {
    std::printf("%-16s %6d %12.4f %12.4f %8.4f %8.4f %10.5g\n", m.defect_type.c_str(), m.images, m.image_auroc, m.pixel_auroc,
                m.aupro, m.f1_max, m.threshold);
  };
  for (const auto& m : r.per_type) row(m);
  row(r.all);
  for (const auto& n : r.notes) cli::log("note: " + n);
  print_precision(r);
  if (o.calibrate) {
    char b[200];
    std::snprintf(b, sizeof b, "calibrated %s: threshold %.6g (F1-max), heatmap range [%.6g, %.6g]", o.model.c_str(),
                  r.all.threshold, r.map_lo, r.map_hi);
    cli::log(b);
  }
  char b[160];
  std::snprintf(b, sizeof b, "%lld test image(s), %lld skipped, in %.1f s", (long long)r.all.images + r.skipped, r.skipped,
                r.seconds);
  cli::log(b);
  std::cout << "report: " << (fs::path(o.report_dir) / "report.html").string() << "\n";
  return a.flag("strict") && r.skipped > 0 ? 3 : 0;
}

}  // namespace fmam
