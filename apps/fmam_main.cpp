// fmam: the command-line runner. Loads the built-in node plugin (and any --plugin), then runs,
// describes, checks or draws graphs. Logs go to stderr; results to files and stdout.
#include <ATen/Parallel.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "api/train_config.h"
#include "apps/cli.h"
#include "fmam/pipeline.h"
#include "framework/cpu_allocator.h"
#include "framework/executor.h"
#include "framework/graph.h"
#include "framework/io.h"
#include "framework/registry.h"
#include "framework/types.h"

namespace fmam {
namespace {

// MiB of freed tensors run, eval and bench keep for the next frames (FMAM_CPU_CACHE_MB overrides):
// a 256² frame's biggest tensors are a few MiB each, a few dozen alive at a time per worker.
constexpr size_t kInferenceCpuCacheMb = 256;

using cli::Args;

const char* kTopHelp = R"(usage: fmam <command> [options]

fmam finds and localises defects in product images with teacher-student knowledge
distillation (FMAM: feature mappings + angular margin). Detection and training are graphs
of nodes (graphs/*.json) run on a oneTBB flow graph.

commands:
  run GRAPH       stream images (a folder, glob, list file or one file) through a graph
                  and write its outputs (heatmaps, raw maps, scores CSV)
  describe [TYPE] list node types, or print one type's ports and params
  check GRAPH     validate a graph (types, params, streams, shapes) without running it
  dot GRAPH       print the graph in Graphviz dot (fmam dot g.json | dot -Tpng > g.png)
  train GRAPH     train a detector on the defect-free images of a category (train/good)
  eval GRAPH      metrics (image/pixel AUROC, AUPRO, F1-max) and an HTML report on a test split
  analyze G:M ... distance statistics, normal vs defect pixels, per model (the paper's Fig. 5)
  bench GRAPH     measure images/s end to end and each node's share of the time
  quantize GRAPH  calibrate a trained model for --precision int8 on defect-free images
  fleet ...       a detector per product on a Slurm cluster: fleet submit MANIFEST --out DIR
                  (one array job), fleet gather DIR (one table of the fleet); see docs/SCALE.md

Every command takes --help. Global options (before or after the command):
  --plugin FILE   load another node plugin (.so); repeatable
  --threads N     worker threads (default: all cores)
)";

using cli::common_options;
using cli::load_plugins;

std::string pad(const std::string& s, size_t n) { return s.size() >= n ? s + " " : s + std::string(n - s.size(), ' '); }

// ---- describe ----------------------------------------------------------------------------

int cmd_describe(int argc, char** argv) {
  auto opts = common_options();
  Args a("describe", "fmam describe [TYPE] [--plugin FILE]",
         "Without TYPE: list every node type and data type. With TYPE: print its inputs, outputs and\n"
         "params (name, type, default, allowed values, meaning), as gst-inspect does.",
         opts, "example:\n  fmam describe GaussianBlur");
  if (!a.parse(argc, argv)) return 0;
  load_plugins(a);
  const Registry& r = Registry::global();
  if (a.positionals().empty()) {
    std::cout << "Node types:\n";
    for (const auto& n : r.names()) std::cout << "  " << pad(n, 20) << r.find(n)->contract.doc() << "\n";
    std::cout << "\nData types:\n";
    for (const auto& n : DataTypes::global().names())
      std::cout << "  " << pad(n, 20) << DataTypes::global().find(n)->description << "\n";
    std::cout << "\nfmam describe TYPE prints one type's ports and params.\n";
    return 0;
  }
  int rc = 0;
  for (const auto& type : a.positionals()) {
    const NodeType* t = r.find(type);
    if (!t) {
      auto near = r.closest(type);
      std::cerr << "fmam describe: unknown node type \"" << type << "\"";
      if (!near.empty()) std::cerr << "; did you mean \"" << near.front() << "\"?";
      std::cerr << " (fmam describe lists them all)\n";
      rc = 1;
      continue;
    }
    const Contract& k = t->contract;
    std::cout << k.type() << ": " << k.doc() << "\n\n";
    std::cout << "  plugin        " << t->plugin << "\n";
    std::cout << "  concurrency   "
              << (k.concurrency() == Concurrency::kSerial ? "serial (stateful: one frame at a time, in input order)"
                                                          : "unlimited (pure: frames run in parallel)")
              << "\n";
    std::cout << "  batchable     " << (k.is_batchable() ? "yes (fmam run --batch N stacks frames)" : "no") << "\n\n";
    std::cout << "Inputs:\n";
    if (k.inputs().empty()) std::cout << "  (none: a source node, fed by fmam run --input)\n";
    for (const auto& p : k.inputs())
      std::cout << "  " << pad(p.name, 14) << pad(p.type, 16) << p.description << (p.optional ? " (optional)" : "") << "\n";
    std::cout << "\nOutputs:\n";
    if (k.outputs().empty()) std::cout << "  (none: a sink)\n";
    for (const auto& p : k.outputs())
      std::cout << "  " << pad(p.name, 14) << pad(p.type, 16) << p.description << (p.optional ? " (optional)" : "") << "\n";
    std::cout << "\nParams:\n";
    if (k.params().empty()) std::cout << "  (none)\n";
    for (const auto& p : k.params()) {
      std::cout << "  " << pad(p.name, 14) << pad(p.type, 14) << "default " << pad(p.default_value.str(), 12)
                << (p.constraint.empty() ? "" : p.constraint + "  ") << "\n"
                << "  " << std::string(14, ' ') << p.description << "\n";
    }
    std::cout << "\n";
  }
  return rc;
}

// ---- graph loading shared by check / dot / run ----------------------------------------------

GraphConfig read_graph(const Args& a, const std::string& cmd) {
  if (a.positionals().size() != 1)
    throw std::runtime_error("fmam " + cmd + ": expected one GRAPH file; see fmam " + cmd + " --help");
  GraphConfig g = load_graph_file(a.positionals()[0]);
  std::vector<ParamOverride> ov;
  for (const auto& s : a.all("set")) ov.push_back(parse_override(s));
  apply_overrides(g, ov);
  return g;
}

int cmd_check(int argc, char** argv) {
  auto opts = common_options();
  opts.push_back({"set", "ID.PARAM=VALUE", "override a node param before checking", true, ""});
  Args a("check", "fmam check GRAPH [--set ID.PARAM=VALUE]...",
         "Validate a graph without running it: node types, params and their ranges, streams (one\n"
         "producer each, all produced, no cycle), port types and shapes, and a training graph's\n"
         "\"train\" section (fmam train --help lists its fields). Every problem is reported\n"
         "at once, each naming the file, the node and the field. Exit status 0 if valid, 1 if not.",
         opts, "example:\n  fmam check graphs/fmam_rkd.json --set blur.sigma=2");
  if (!a.parse(argc, argv)) return 0;
  load_plugins(a);
  const GraphConfig g = read_graph(a, "check");
  // A training graph's "train" section is checked with the nodes, every mistake in one report.
  const std::vector<std::string> train_problems = train_config_problems(g);
  ValidatedGraph vg;
  try {
    vg = validate(g);
  } catch (const GraphError& e) {
    std::vector<std::string> all = e.problems();
    all.insert(all.end(), train_problems.begin(), train_problems.end());
    throw GraphError(all);
  }
  if (!train_problems.empty()) throw GraphError(train_problems);
  std::cout << vg.config.file << ": OK (" << vg.config.name << ": " << vg.nodes.size() << " nodes, " << vg.streams.size()
            << " streams)\n";
  for (const auto& n : vg.nodes) {
    std::cout << "  " << pad(n.config.id, 14) << pad(n.config.type, 18);
    std::string outs;
    for (const auto& [port, stream] : n.config.out) {
      const auto& s = vg.streams[vg.stream(stream)];
      outs += (outs.empty() ? "" : ", ") + stream + ": " + s.type + " " + s.shape.str();
    }
    std::cout << "-> " << (outs.empty() ? "(sink)" : outs) << "\n";
  }
  return 0;
}

int cmd_dot(int argc, char** argv) {
  auto opts = common_options();
  opts.push_back({"set", "ID.PARAM=VALUE", "override a node param", true, ""});
  opts.push_back({"output", "FILE", "write to FILE instead of stdout", false, "o"});
  Args a("dot", "fmam dot GRAPH [-o FILE]",
         "Print the graph as Graphviz dot: nodes with their types, streams as labelled edges (with\n"
         "their data type and inferred shape).",
         opts, "example:\n  fmam dot graphs/fmam_rkd.json | dot -Tsvg > fmam_rkd.svg");
  if (!a.parse(argc, argv)) return 0;
  load_plugins(a);
  std::string dot = to_dot(validate(read_graph(a, "dot")));
  if (a.get("output").empty())
    std::cout << dot;
  else
    atomic_write_text(a.get("output"), dot);
  return 0;
}

// ---- run ---------------------------------------------------------------------------------

// Output files are named by output_key ("<parent>_<stem>"): two inputs with one key would write
// over each other's heatmaps and share a key in scores.csv. Refuse before any work.
void check_unique_output_keys(const std::vector<std::string>& files) {
  std::map<std::string, std::string> first;
  for (size_t i = 0; i < files.size(); ++i) {
    auto [it, fresh] = first.emplace(output_key(files[i], (long long)i), files[i]);
    if (!fresh)
      throw std::runtime_error(
          "fmam run: \"" + it->second + "\" and \"" + files[i] + "\" would both write outputs named \"" + it->first +
          "_*\" (outputs are named <folder>_<stem>); rename one, or run them into separate --output folders");
  }
}

int cmd_run(int argc, char** argv) {
  auto opts = common_options();
  opts.insert(opts.begin(),
              {{"input", "PATH", "images: a folder, a glob ('dir/*.png'), a .txt list or one file", false, "i"},
               {"output", "DIR", "write the graph's outputs here: <key>_<stream>.png/.tiff, scores.csv", false, "o"},
               {"set", "ID.PARAM=VALUE", "override a node param, e.g. --set blur.sigma=2", true, ""},
               {"recursive", "", "look for images in sub-folders of --input too", false, "r"},
               {"batch", "N",
                "frames stacked per call of batchable nodes (default 4: the networks run ~25% faster\n                           "
                "   than frame by frame; 1 for the lowest latency)",
                false, ""},
               {"max-in-flight", "N", "frames in the pipeline at once; bounds memory (default 8)", false, ""},
               {"device", "DEV",
                "cpu (default) or cuda: the Halide post-processing kernels on an NVIDIA GPU (falls back to\n"
                "                              cpu with a message if none); the networks stay on the CPU. Same maps, but\n"
                "                              slower than cpu at maps up to 2048^2 (copies per kernel; docs/PERFORMANCE.md)",
                false, ""},
               cli::precision_option(),
               {"model", "FILE", "a trained model (fmam train): learned weights, image size, calibration", false, "m"},
               {"threshold", "T", "score above which an image FAILs (default: the model's calibrated one)", false, ""},
               {"strict", "", "exit with status 3 if any image was skipped (unreadable); default 0", false, ""},
               {"quiet", "", "no progress bar", false, "q"}});
  Args a("run", "fmam run GRAPH --input PATH [--output DIR] [--set ID.PARAM=VALUE]...",
         "Stream images through a graph. The graph's Image input is fed from --input (unreadable files\n"
         "are reported and skipped); its outputs are written to --output by type: Map2D as a heatmap\n"
         "PNG plus raw float32 TIFF, Scalar as a CSV (also printed on stdout), Image as PNG.\n"
         "Frames are pipelined: images decode while the network works on earlier ones.",
         opts,
         std::string("examples:\n"
                     "  fmam run graphs/fmam_rkd.json -i ../shared/data/mvtec_ad/bottle/test/broken_large -o out/\n"
                     "  fmam run examples/graphs/sharpness_check.json -i 'photos/*.png' --plugin "
                     "build/examples/libfmam_example_plugin.so\n"
                     "\n") +
             kInferenceEnvironmentHelp +
             "\n"
             "exit status:\n"
             "  0  every image was scored, or some were skipped (each named on stderr) without --strict\n"
             "  1  an error (bad graph, model or option), or every image was skipped\n"
             "  3  with --strict: some images were skipped");
  if (!a.parse(argc, argv)) return 0;
  if (a.positionals().size() != 1) throw std::runtime_error("fmam run: expected one GRAPH file; see fmam run --help");
  PipelineOptions po;
  po.model = a.get("model");
  po.overrides = a.all("set");
  po.plugins = a.all("plugin");
  if (!a.get("threshold").empty()) {
    po.threshold = a.get_number("threshold", -1);
    if (po.threshold < 0) throw std::runtime_error("fmam run: --threshold must be >= 0 (scores are), got " + a.get("threshold"));
  }
  po.batch = a.get_int("batch", 4);
  po.max_in_flight = a.get_int("max-in-flight", 8);
  po.threads = a.get_int("threads", 0);
  po.intra_op_threads = 0;  // the runner set it (dispatch)
  po.device = a.get("device", "cpu");
  if (po.device != "cpu" && po.device != "cuda")
    throw std::runtime_error("fmam run: --device must be cpu or cuda, got " + po.device);
  po.precision = a.get("precision", "auto");
  po.output_dir = a.get("output");
  const std::string input = a.get("input");
  if (input.empty()) throw std::runtime_error("fmam run: --input is required (a folder, glob, list file or image)");
  Pipeline pipeline(a.positionals()[0], po);
  std::vector<std::string> files = list_images(input, a.flag("recursive"));
  if (!po.output_dir.empty()) check_unique_output_keys(files);
  const std::vector<std::string> scalar_streams = pipeline.scalar_streams();
  const bool verdict = pipeline.threshold() >= 0 && scalar_streams.size() == 1;
  cli::log("running " + a.positionals()[0] + " on " + std::to_string(files.size()) + " image(s)");
  const bool quiet = a.flag("quiet");
  cli::Progress progress("run", (long long)files.size(), 1, "images/s");
  if (!scalar_streams.empty()) {
    std::cout << "source";
    for (const auto& s : scalar_streams) std::cout << "," << s;
    std::cout << (verdict ? ",verdict" : "") << "\n";
  }
  long long done = 0;
  const RunSummary st = pipeline.run_files(files, [&](const Detection& d) {
    ++done;
    if (d.skipped) {
      if (!quiet) progress.finish();
      cli::log("skipped: " + d.error);
    } else if (!scalar_streams.empty()) {
      std::cout << d.source;
      for (const auto& s : scalar_streams) {
        char b[32];
        std::snprintf(b, sizeof b, ",%.6g", d.scalars.at(s));
        std::cout << b;
      }
      if (verdict) std::cout << "," << verdict_name(d.verdict);
      std::cout << "\n";
    }
    if (!quiet) progress.update(done);
  });
  if (!quiet) progress.finish();
  char summary[256];
  std::snprintf(summary, sizeof summary, "%lld image(s), %lld skipped, %.1f s, %.2f images/s", st.frames, st.skipped, st.seconds,
                st.seconds > 0 ? (st.frames - st.skipped) / st.seconds : 0.0);
  if (verdict) {
    char v[128];
    std::snprintf(v, sizeof v, "; %lld FAIL at threshold %.6g", st.failed, pipeline.threshold());
    std::strncat(summary, v, sizeof summary - std::strlen(summary) - 1);
  }
  cli::log(summary + (po.output_dir.empty() ? std::string() : "; outputs in " + po.output_dir));
  if (st.frames > 0 && st.skipped == st.frames) return 1;
  return a.flag("strict") && st.skipped > 0 ? 3 : 0;
}

int dispatch(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" || std::string(argv[1]) == "help") {
    std::cout << kTopHelp;
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  // Threads for libtorch (it starts with 1 here) before any network is built.
  // One pool's worth of threads, not two fighting over the cores: when frames run through the
  // TBB graph (run, bench, eval) the graph's workers already keep every core busy with different
  // frames, so each torch op runs on one thread; training's learning half runs one batch at a
  // time in order, so there each op takes every core. --intra-op-threads overrides.
  int threads = int(std::max(1u, std::thread::hardware_concurrency())), intra = -1;
  // Read strictly here too (the command's own parse comes later): "--threads -1" is an error, not 1.
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    for (const char* name : {"--threads", "--intra-op-threads"}) {
      std::string v;
      if (arg == name && i + 1 < argc)
        v = argv[i + 1];
      else if (arg.rfind(std::string(name) + "=", 0) == 0)
        v = arg.substr(std::strlen(name) + 1);
      else
        continue;
      char* end = nullptr;
      const long x = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || x < 1 || x > 4096)
        throw std::runtime_error("fmam " + cmd + ": " + name + " must be an integer in [1, 4096], got \"" + v + "\"");
      (std::strcmp(name, "--threads") == 0 ? threads : intra) = int(x);
    }
  }
  at::set_num_threads(intra > 0 ? intra : cmd == "train" ? threads : 1);
  // Frames allocate the same big tensors again and again: keep freed ones for the next frame
  // instead of letting glibc unmap them and the kernel fault them in again
  // (framework/cpu_allocator.h; docs/PERFORMANCE.md measures it). Training sets its own bound.
  if (cmd == "run" || cmd == "eval" || cmd == "bench") install_caching_cpu_allocator_from_env(kInferenceCpuCacheMb);
  if (cmd == "run") return cmd_run(argc - 2, argv + 2);
  if (cmd == "describe") return cmd_describe(argc - 2, argv + 2);
  if (cmd == "check") return cmd_check(argc - 2, argv + 2);
  if (cmd == "dot") return cmd_dot(argc - 2, argv + 2);
  if (cmd == "train") return cmd_train(argc - 2, argv + 2);
  if (cmd == "eval") return cmd_eval(argc - 2, argv + 2);
  if (cmd == "analyze") return cmd_analyze(argc - 2, argv + 2);
  if (cmd == "quantize") return cmd_quantize(argc - 2, argv + 2);
  if (cmd == "bench") return cmd_bench(argc - 2, argv + 2);
  if (cmd == "fleet") return cmd_fleet(argc - 2, argv + 2);
  std::cerr << "fmam: unknown command \"" << cmd << "\"\n\n" << kTopHelp;
  return 2;
}

}  // namespace
}  // namespace fmam

int main(int argc, char** argv) {
  // One malloc arena for the whole process. Tensors are allocated on one TBB worker and freed
  // on another; with glibc's default (an arena per thread, up to 8 per core) the freed blocks
  // pile up in arenas that no longer allocate, and a training run's resident memory kept
  // growing with every epoch (stage 2, 256², batch 16: 2.4 GB after 32 images, 3.9 GB after
  // 192). With one arena it stays flat. Set before any thread starts; MALLOC_ARENA_MAX wins.
  if (!std::getenv("MALLOC_ARENA_MAX")) mallopt(M_ARENA_MAX, 1);
  try {
    return fmam::dispatch(argc, argv);
  } catch (const fmam::GraphError& e) {
    std::cerr << e.what() << "\n";
    if (e.problems().size() > 1) std::cerr << "(" << e.problems().size() << " problems)\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
