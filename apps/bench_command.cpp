// fmam bench: throughput of a graph end to end (decode to the graph's outputs, nothing written),
// and each node's share of the time, as medians over repeated runs. Also tracks resident memory,
// so a long --frames run shows whether it stays flat.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <thread>

#include "apps/cli.h"
#include "fmam/pipeline.h"
#include "framework/error.h"
#include "framework/flop_counter.h"
#include "framework/io.h"

namespace fmam {

namespace {
double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
}  // namespace

int cmd_bench(int argc, char** argv) {
  auto opts = cli::common_options();
  opts.insert(opts.begin(),
              {{"input", "PATH", "images: a folder, a glob, a .txt list or one file", false, "i"},
               {"model", "FILE", "a trained model (its weights and image size)", false, "m"},
               {"set", "ID.PARAM=VALUE", "override a node param", true, ""},
               {"repeat", "N", "timed runs; medians are reported (default 5)", false, ""},
               {"frames", "N", "frames per run, cycling over the inputs (default: each input once)", false, ""},
               {"warmup", "N", "untimed frames first (default 8)", false, ""},
               {"batch", "N",
                "frames stacked per call of batchable nodes (default 4: the networks run ~25% faster\n                           "
                "   than frame by frame; 1 for the lowest latency)",
                false, ""},
               {"max-in-flight", "N", "frames in the pipeline at once (default 8)", false, ""},
               {"rss-every", "N", "print resident memory every N frames (a memory-flatness check)", false, ""},
               {"all-outputs", "", "also compute Image outputs (overlays); default: decode to map and score", false, ""},
               cli::precision_option()});
  cli::Args a(
      "bench", "fmam bench GRAPH --input PATH [--repeat N] [--frames N] [--batch N]",
      "Measure a graph: images/s end to end, decode to anomaly map and score (decoding included,\n"
      "overlays and file writing not), and, per\n"
      "node, the median time of one call and its share of all node time. Prints the median of\n"
      "--repeat runs, the machine's thread count and peak memory.",
      opts,
      std::string("examples:\n"
                  "  fmam bench graphs/fmam_rkd.json -i ../shared/data/mvtec_ad/bottle/test/good --repeat 5\n"
                  "  fmam bench graphs/fmam_rkd.json -i ../shared/data/mvtec_ad/bottle/test/good --frames 10000 --rss-every "
                  "1000 --repeat 1\n"
                  "\n") +
          kInferenceEnvironmentHelp);
  if (!a.parse(argc, argv)) return 0;
  if (a.positionals().size() != 1) throw Error("fmam bench: expected one GRAPH; see fmam bench --help");
  if (a.get("input").empty()) throw Error("fmam bench: --input is required");
  PipelineOptions po;
  po.model = a.get("model");
  po.overrides = a.all("set");
  po.plugins = a.all("plugin");
  po.batch = a.get_int("batch", 4);
  po.max_in_flight = a.get_int("max-in-flight", 8);
  po.threads = a.get_int("threads", 0);
  po.intra_op_threads = 0;            // the runner set it (dispatch)
  po.images = a.flag("all-outputs");  // default: decode to map and score, no overlay drawing
  po.precision = a.get("precision", "auto");
  Pipeline pipeline(a.positionals()[0], po);
  const std::vector<std::string> inputs = list_images(a.get("input"));
  const long long frames = a.get_int("frames", int(inputs.size()));
  const int repeat = std::max(1, a.get_int("repeat", 5));
  const int warmup = a.get_int("warmup", 8);
  const int rss_every = a.get_int("rss-every", 0);
  auto cycle = [&](long long n) {  // n frames, cycling over the inputs
    std::vector<std::string> f;
    for (long long i = 0; i < n; ++i) f.push_back(inputs[size_t(i % (long long)inputs.size())]);
    return f;
  };
  auto run_once = [&](long long n, bool report_rss) {
    long long done = 0;
    return pipeline.run_files(cycle(n), [&](const Detection& d) {
      ++done;
      if (d.skipped) cli::log("skipped: " + d.error);
      if (report_rss && rss_every > 0 && done % rss_every == 0) {
        char b[96];
        std::snprintf(b, sizeof b, "  %8lld frames  rss %.0f MiB", done, cli::rss_mib());
        std::cout << b << std::endl;
      }
    });
  };
  // FLOPs per frame of each node, counted in the warm-up (the op observer costs a little per op;
  // the timed runs go without it).
  std::vector<double> flops_per_frame;
  if (warmup > 0) {
    FlopCounting counting;
    const RunSummary w = run_once(std::min<long long>(warmup, frames), false);
    for (const auto& n : w.nodes) flops_per_frame.push_back(w.frames > 0 ? n.flops / double(w.frames) : 0);
  }
  const double rss_start = cli::rss_mib();
  std::vector<double> ips;
  std::vector<NodeTiming> nodes;
  std::vector<std::vector<double>> node_ms, node_total;
  for (int r = 0; r < repeat; ++r) {
    const RunSummary st = run_once(frames, r == 0);
    const double rate = st.seconds > 0 ? double(st.frames - st.skipped) / st.seconds : 0;
    ips.push_back(rate);
    nodes = st.nodes;
    node_ms.resize(nodes.size());
    node_total.resize(nodes.size());
    for (size_t i = 0; i < nodes.size(); ++i) {
      node_ms[i].push_back(st.nodes[i].median_call_ms);
      node_total[i].push_back(st.nodes[i].total_ms / double(std::max<long long>(1, st.frames)));
    }
    char b[128];
    std::snprintf(b, sizeof b, "run %d/%d: %lld frames in %.2f s = %.2f images/s", r + 1, repeat, st.frames, st.seconds, rate);
    cli::log(b);
  }
  double all = 0;
  for (auto& v : node_total) all += median(v);
  std::printf(
      "graph      %s (%zu nodes), %lld frames per run, batch %d, precision %s, %d repeats, %d graph threads, %d torch threads "
      "per op\n",
      a.positionals()[0].c_str(), nodes.size(), frames, po.batch, pipeline.precision().c_str(), repeat,
      po.threads > 0 ? po.threads : int(std::thread::hardware_concurrency()), at::get_num_threads());
  std::printf("throughput %.2f images/s (median; min %.2f, max %.2f)\n", median(ips), *std::min_element(ips.begin(), ips.end()),
              *std::max_element(ips.begin(), ips.end()));
  std::printf("%-16s %-18s %12s %14s %8s %10s %9s\n", "node", "type", "ms/call", "ms/image", "share", "GFLOP/img", "GFLOP/s");
  for (size_t i = 0; i < nodes.size(); ++i) {
    const double per_image = median(node_total[i]);
    const double gflop = i < flops_per_frame.size() ? flops_per_frame[i] / 1e9 : 0;
    // GFLOP/s of the node's own time: a thread's, as each call runs on one (see --intra-op-threads).
    char rate[32] = "-", work[32] = "-";
    if (gflop > 0) {
      std::snprintf(work, sizeof work, "%.3f", gflop);
      std::snprintf(rate, sizeof rate, "%.1f", per_image > 0 ? gflop / (per_image / 1e3) : 0.0);
    }
    std::printf("%-16s %-18s %12.3f %14.3f %7.1f%% %10s %9s\n", nodes[i].id.c_str(), nodes[i].type.c_str(), median(node_ms[i]),
                per_image, all > 0 ? 100.0 * per_image / all : 0.0, work, rate);
  }
  std::printf("memory     rss %.0f MiB after warm-up, %.0f MiB now, peak %.0f MiB\n", rss_start, cli::rss_mib(),
              cli::peak_rss_mib());
  return 0;
}

}  // namespace fmam
