// fmam bench: throughput of a graph end to end (decode to the graph's outputs, nothing written),
// and each node's share of the time, as medians over repeated runs. Also tracks resident memory,
// so a long --frames run shows whether it stays flat.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <optional>
#include <thread>

#include "apps/cli.h"
#include "framework/executor.h"
#include "framework/graph.h"
#include "framework/io.h"
#include "framework/model_file.h"

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
               {"batch", "N", "frames stacked per call of batchable nodes (default 4: the networks run ~25% faster\n                              than frame by frame; 1 for the lowest latency)", false, ""},
               {"max-in-flight", "N", "frames in the pipeline at once (default 8)", false, ""},
               {"rss-every", "N", "print resident memory every N frames (a memory-flatness check)", false, ""},
               {"all-outputs", "", "also compute Image outputs (overlays); default: decode to map and score", false, ""}});
  cli::Args a("bench", "fmam bench GRAPH --input PATH [--repeat N] [--frames N] [--batch N]",
              "Measure a graph: images/s end to end, decode to anomaly map and score (decoding included,\n"
              "overlays and file writing not), and, per\n"
              "node, the median time of one call and its share of all node time. Prints the median of\n"
              "--repeat runs, the machine's thread count and peak memory.",
              opts,
              "examples:\n"
              "  fmam bench graphs/fmam_rkd.json -i ../shared/data/mvtec_ad/bottle/test/good --repeat 5\n"
              "  fmam bench graphs/fmam_rkd.json -i ../shared/data/mvtec_ad/bottle/test/good --frames 10000 --rss-every 1000 --repeat 1");
  if (!a.parse(argc, argv)) return 0;
  cli::load_plugins(a);
  if (a.positionals().size() != 1) throw Error("fmam bench: expected one GRAPH; see fmam bench --help");
  GraphConfig g = load_graph_file(a.positionals()[0]);
  std::vector<ParamOverride> ov;
  for (const auto& s : a.all("set")) ov.push_back(parse_override(s));
  apply_overrides(g, ov);
  std::optional<Model> model;
  if (!a.get("model").empty()) {
    model = load_model(a.get("model"));
    cli::apply_model_settings(g, *model, -1, a.all("set"), a.get("model"));
  }
  // Decode to map: only what the Map2D and Scalar outputs need (no overlay drawing) unless
  // --all-outputs.
  if (!a.flag("all-outputs")) {
    std::vector<std::string> keep;
    for (const auto& [stream, type] : g.outputs)
      if (type == "Map2D" || type == "Scalar") keep.push_back(stream);
    if (!keep.empty()) g = prune_to_streams(g, keep);
  }
  cli::attach_io(g, true, "");
  ValidatedGraph vg = validate(g);
  if (a.get("input").empty()) throw Error("fmam bench: --input is required");
  std::vector<std::string> files = list_images(a.get("input"));
  RunOptions ro;
  ro.batch = a.get_int("batch", 4);
  ro.max_in_flight = a.get_int("max-in-flight", 8);
  ro.threads = a.get_int("threads", 0);
  Executor ex(vg, ro);
  if (model) apply_model(*model, ex, a.get("model"));
  const long long frames = a.get_int("frames", int(files.size()));
  const int repeat = std::max(1, a.get_int("repeat", 5));
  const int warmup = a.get_int("warmup", 8);
  const int rss_every = a.get_int("rss-every", 0);

  auto run_once = [&](long long n, bool report_rss) {
    long long next = 0, done = 0;
    return ex.run(
        [&](Frame& f) {
          if (next >= n) return false;
          f.source = files[size_t(next++ % (long long)files.size())];
          return true;
        },
        [&](const Frame& f) {
          ++done;
          if (f.dropped) cli::log("skipped: " + f.drop_reason);
          if (report_rss && rss_every > 0 && done % rss_every == 0) {
            char b[96];
            std::snprintf(b, sizeof b, "  %8lld frames  rss %.0f MiB", done, cli::rss_mib());
            std::cout << b << std::endl;
          }
        });
  };
  if (warmup > 0) run_once(std::min<long long>(warmup, frames), false);
  const double rss_start = cli::rss_mib();
  std::vector<double> ips;
  std::vector<std::vector<double>> node_ms(vg.nodes.size()), node_total(vg.nodes.size());
  for (int r = 0; r < repeat; ++r) {
    RunStats st = run_once(frames, r == 0);
    const double rate = st.wall_ms > 0 ? 1000.0 * double(st.frames - st.dropped) / st.wall_ms : 0;
    ips.push_back(rate);
    for (size_t i = 0; i < vg.nodes.size(); ++i) {
      node_ms[i].push_back(median(st.nodes[i].call_ms));
      node_total[i].push_back(st.nodes[i].total_ms / std::max<long long>(1, st.frames));
    }
    char b[128];
    std::snprintf(b, sizeof b, "run %d/%d: %lld frames in %.2f s = %.2f images/s", r + 1, repeat, st.frames,
                  st.wall_ms / 1000, rate);
    cli::log(b);
  }
  double all = 0;
  for (auto& v : node_total) all += median(v);
  std::printf("graph      %s (%zu nodes), %lld frames per run, batch %d, %d repeats, %d graph threads, %d torch threads per op\n",
              vg.config.file.c_str(), vg.nodes.size(), frames, ro.batch, repeat,
              ro.threads > 0 ? ro.threads : int(std::thread::hardware_concurrency()), at::get_num_threads());
  std::printf("throughput %.2f images/s (median; min %.2f, max %.2f)\n", median(ips),
              *std::min_element(ips.begin(), ips.end()), *std::max_element(ips.begin(), ips.end()));
  std::printf("%-16s %-18s %12s %14s %8s\n", "node", "type", "ms/call", "ms/image", "share");
  for (size_t i = 0; i < vg.nodes.size(); ++i) {
    double per_image = median(node_total[i]);
    std::printf("%-16s %-18s %12.3f %14.3f %7.1f%%\n", vg.nodes[i].config.id.c_str(), vg.nodes[i].config.type.c_str(),
                median(node_ms[i]), per_image, all > 0 ? 100.0 * per_image / all : 0.0);
  }
  std::printf("memory     rss %.0f MiB after warm-up, %.0f MiB now, peak %.0f MiB\n", rss_start, cli::rss_mib(),
              cli::peak_rss_mib());
  return 0;
}

}  // namespace fmam
