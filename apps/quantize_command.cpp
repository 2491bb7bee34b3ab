// fmam quantize: calibrates a trained model for --precision int8 (Pipeline::calibrate_int8).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "apps/cli.h"
#include "fmam/pipeline.h"
#include "framework/error.h"
#include "framework/io.h"

namespace fmam {

namespace fs = std::filesystem;

namespace {

// --data: a category (its train/good images, what the model was trained on) or any image spec
// fmam run takes (a folder, a glob, a list file).
std::vector<std::string> calibration_images(const std::string& data) {
  const fs::path good = fs::path(data) / "train" / "good";
  std::error_code ec;
  return list_images(fs::is_directory(good, ec) ? good.string() : data);
}

}  // namespace

int cmd_quantize(int argc, char** argv) {
  auto opts = cli::common_options();
  opts.insert(opts.begin(),
              {{"model", "FILE", "the trained model (fmam train); the ranges are written into it", false, "m"},
               {"data", "DIR", "defect-free images: a category (its train/good), a folder, a glob or a list file", false, "d"},
               {"images", "N", "calibrate on at most N images, spread over the set (default 64)", false, "n"},
               {"out", "FILE", "write the calibrated model here instead of over --model", false, "o"},
               {"set", "ID.PARAM=VALUE", "override a node param", true, ""},
               {"quiet", "", "no progress bar", false, "q"}});
  cli::Args a("quantize", "fmam quantize GRAPH --model MODEL --data DIR [--images N] [--out FILE]",
              "Calibrate a trained model for int8 inference (--precision int8 in run, eval, bench, the\n"
              "Python module and the GStreamer element). Runs defect-free images through GRAPH in\n"
              "float32 and records the range of every activation the int8 teacher quantises (static\n"
              "post-training quantization, as PyTorch's with the onednn engine); the ranges go into\n"
              "the model file. Only the frozen teacher runs in int8; the trained networks run as\n"
              "--precision auto runs them.",
              opts,
              "example:\n"
              "  fmam quantize graphs/fmam_rkd.json -m bottle.fmam -d ../shared/data/mvtec_ad/bottle\n"
              "  fmam eval graphs/fmam_rkd.json -m bottle.fmam -d ../shared/data/mvtec_ad/bottle -o report/ --precision int8\n"
              "eval then prints what int8 costs against fp32 on the test images; docs/PERFORMANCE.md has\n"
              "the measured speed and accuracy.\n"
              "\n"
              "exit status:\n"
              "  0  the model was calibrated (unreadable images, each named on stderr, were skipped)\n"
              "  1  an error (bad graph, model, data or option; no readable image)");
  if (!a.parse(argc, argv)) return 0;
  if (a.positionals().size() != 1) throw Error("fmam quantize: expected one GRAPH; see fmam quantize --help");
  for (const char* req : {"model", "data"})
    if (a.get(req).empty()) throw Error(std::string("fmam quantize: --") + req + " is required; see fmam quantize --help");
  cli::load_plugins(a);
  const std::vector<std::string> files = calibration_images(a.get("data"));
  const int max_images = a.get_int("images", 64);

  PipelineOptions po;
  po.model = a.get("model");
  po.overrides = a.all("set");
  po.threads = a.get_int("threads", 0);
  po.images = false;  // map and score only: the ranges come from the networks
  Pipeline pipeline(a.positionals()[0], po);
  std::unique_ptr<cli::Progress> bar;
  if (!a.flag("quiet"))
    bar = std::make_unique<cli::Progress>("quantize", (long long)std::min(files.size(), size_t(max_images)), 1, "images/s");
  long long done = 0;
  const Int8Calibration c = pipeline.calibrate_int8(
      files, a.get("out"),
      [&](const Detection& d) {
        if (d.skipped) cli::log("skipped " + d.source + ": " + d.error);
        if (bar) bar->update(++done);
      },
      max_images);
  if (bar) bar->finish();
  std::string nodes;
  for (const auto& n : c.nodes) nodes += (nodes.empty() ? "" : ", ") + n;
  char b[300];
  std::snprintf(b, sizeof b, "calibrated %s for int8: %zu activation ranges of %s from %lld image(s), %lld skipped",
                c.saved_to.c_str(), c.points, nodes.c_str(), c.images, c.skipped);
  cli::log(b);
  return 0;
}

}  // namespace fmam
