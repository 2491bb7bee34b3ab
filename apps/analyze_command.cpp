// fmam analyze: the paper's Fig. 5 — how far apart the teacher-student distances are in normal
// and in anomalous regions, for one or more models (e.g. RKD without and with FM). For each
// GRAPH:MODEL it runs the test split, takes a per-pixel distance map (default: the stream
// "raw_map", the summed per-level 1 - cos before smoothing), and compares its values on the
// pixels of good images with those inside the ground-truth defect masks: mean, std, quartiles,
// the separation (mean_anomalous - mean_normal) / std_normal, and density histograms.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "api/graph_io.h"
#include "apps/cli.h"
#include "eval/report.h"
#include "framework/executor.h"
#include "framework/graph.h"
#include "framework/io.h"
#include "framework/model_binding.h"
#include "framework/model_file.h"
#include "framework/types.h"

namespace fmam {

namespace fs = std::filesystem;

namespace {

struct Stats {
  double mean = 0, std = 0, min = 0, p25 = 0, median = 0, p75 = 0, max = 0;
  size_t n = 0;
};

Stats stats_of(std::vector<float> v) {
  Stats s;
  s.n = v.size();
  if (v.empty()) return s;
  double sum = 0, sq = 0;
  for (float x : v) sum += x;
  s.mean = sum / v.size();
  for (float x : v) sq += (x - s.mean) * (x - s.mean);
  s.std = std::sqrt(sq / v.size());
  std::sort(v.begin(), v.end());
  auto q = [&](double f) { return double(v[std::min(v.size() - 1, size_t(f * (v.size() - 1) + 0.5))]); };
  s.min = v.front();
  s.max = v.back();
  s.p25 = q(0.25);
  s.median = q(0.5);
  s.p75 = q(0.75);
  return s;
}

nlohmann::json to_json(const Stats& s) {
  return {{"n", s.n},     {"mean", s.mean},     {"std", s.std}, {"min", s.min},
          {"p25", s.p25}, {"median", s.median}, {"p75", s.p75}, {"max", s.max}};
}

// Normal and anomalous densities on one axis, as a small self-contained SVG.
std::string density_svg(const std::string& title, const std::vector<float>& normal, const std::vector<float>& anomalous,
                        int bins = 50) {
  // Only finite values have a bin (the caller rejects maps with others; this keeps the drawing
  // safe on its own: a NaN cast to a bin index is undefined behaviour, and crashed here once).
  float lo = 1e30f, hi = -1e30f;
  for (const auto* v : {&normal, &anomalous})
    for (float x : *v)
      if (std::isfinite(x)) lo = std::min(lo, x), hi = std::max(hi, x);
  if (!(hi > lo)) hi = lo + 1;
  auto hist = [&](const std::vector<float>& v) {
    std::vector<double> h(bins, 0);
    for (float x : v)
      if (std::isfinite(x)) h[std::clamp(int(double(x - lo) / double(hi - lo) * bins), 0, bins - 1)] += 1;
    for (auto& c : h) c = v.empty() ? 0 : c / v.size();
    return h;
  };
  auto hn = hist(normal), ha = hist(anomalous);
  double top = 1e-9;
  for (int i = 0; i < bins; ++i) top = std::max({top, hn[i], ha[i]});
  const int W = 520, H = 260, L = 50, R = 10, T = 30, B = 40;
  std::ostringstream o;
  o << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H
    << "' font-family='sans-serif' font-size='11'>";
  o << "<text x='" << W / 2 << "' y='16' text-anchor='middle' font-size='13' font-weight='bold'>" << title << "</text>";
  o << "<line x1='" << L << "' y1='" << H - B << "' x2='" << W - R << "' y2='" << H - B << "' stroke='black'/>";
  o << "<line x1='" << L << "' y1='" << T << "' x2='" << L << "' y2='" << H - B << "' stroke='black'/>";
  const double bw = double(W - L - R) / bins;
  auto bars = [&](const std::vector<double>& h, const char* color) {
    for (int i = 0; i < bins; ++i) {
      double bh = (H - T - B) * h[i] / top;
      o << "<rect x='" << L + i * bw << "' y='" << H - B - bh << "' width='" << bw << "' height='" << bh << "' fill='" << color
        << "' fill-opacity='0.55'/>";
    }
  };
  bars(hn, "#3b7dd8");
  bars(ha, "#e04040");
  for (int k = 0; k <= 4; ++k) {
    double x = L + k * (W - L - R) / 4.0;
    char b[32];
    std::snprintf(b, sizeof b, "%.3g", lo + k * (hi - lo) / 4);
    o << "<text x='" << x << "' y='" << H - B + 15 << "' text-anchor='middle'>" << b << "</text>";
  }
  o << "<text x='" << (L + W - R) / 2 << "' y='" << H - 8 << "' text-anchor='middle'>distance (map value)</text>";
  o << "<text x='14' y='" << (T + H - B) / 2 << "' transform='rotate(-90 14 " << (T + H - B) / 2
    << ")' text-anchor='middle'>fraction of pixels</text>";
  o << "<rect x='" << W - 150 << "' y='" << T << "' width='10' height='10' fill='#3b7dd8' fill-opacity='0.55'/><text x='"
    << W - 135 << "' y='" << T + 9 << "'>normal pixels</text>";
  o << "<rect x='" << W - 150 << "' y='" << T + 16 << "' width='10' height='10' fill='#e04040' fill-opacity='0.55'/><text x='"
    << W - 135 << "' y='" << T + 25 << "'>defect pixels</text>";
  o << "</svg>";
  return o.str();
}

// One test image and its ground-truth mask ("" for a good image).
struct TestItem {
  std::string image, mask;
};

// test/<type>/<image> of an MVTec AD category; defect images without a mask are named and left out
// (their pixels are neither known normal nor known defect).
std::vector<TestItem> list_test_items(const std::string& data) {
  const fs::path test = fs::path(data) / "test";
  if (!fs::is_directory(test)) throw Error("--data \"" + data + "\": no test/ folder (MVTec AD layout expected)");
  std::vector<TestItem> items;
  for (const auto& p : list_images((test / "*" / "*").string())) {
    const std::string type = fs::path(p).parent_path().filename().string();
    std::string mask;
    if (type != "good") {
      mask = (fs::path(data) / "ground_truth" / type / (fs::path(p).stem().string() + "_mask.png")).string();
      if (!fs::exists(mask)) {
        cli::log("left out: " + p + ": no ground-truth mask " + mask);
        continue;
      }
    }
    items.push_back({p, mask});
  }
  return items;
}

// The map's values on normal pixels (every pixel of the good images) and on defect pixels.
struct PixelSample {
  std::vector<float> normal, defect;
  long long skipped = 0;  // unreadable images, each named on stderr
};

struct SampleOptions {
  std::vector<ParamOverride> overrides;
  std::string stream;
  int threads = 0;
  bool quiet = false;
};

// GRAPH with MODEL's weights, pruned to the stream, ready to run.
ValidatedGraph analysis_graph(const std::string& graph_path, const Model& model, const SampleOptions& o) {
  GraphConfig g = load_graph_file(graph_path);
  apply_overrides(g, o.overrides);
  bind_params(g, model_bindings(model));
  bool found = false;
  for (const auto& n : g.nodes)
    for (const auto& [port, s] : n.out) found |= s == o.stream;
  if (!found) throw Error(graph_path + ": no node produces stream \"" + o.stream + "\" (choose one with --stream)");
  g = prune_to_streams(g, {o.stream});
  attach_io(g, true, "");
  ValidatedGraph vg = validate(g);
  if (vg.streams[vg.stream(o.stream)].type != "Map2D") throw Error(graph_path + ": stream \"" + o.stream + "\" is not a Map2D");
  return vg;
}

// Sorts one frame's map into normal and defect pixels.
void add_pixels(const cv::Mat& m, const std::string& mask_path, const std::string& source, PixelSample& s) {
  if (mask_path.empty()) {
    for (int y = 0; y < m.rows; ++y)
      for (int x = 0; x < m.cols; ++x) s.normal.push_back(m.at<float>(y, x));
    return;
  }
  cv::Mat mask = read_mask(mask_path, source);
  cv::resize(mask, mask, m.size(), 0, 0, cv::INTER_NEAREST);
  for (int y = 0; y < m.rows; ++y)
    for (int x = 0; x < m.cols; ++x)
      if (mask.at<uchar>(y, x)) s.defect.push_back(m.at<float>(y, x));
}

PixelSample sample_pixels(const std::string& graph_path, const std::string& model_path, const std::vector<TestItem>& items,
                          const SampleOptions& o) {
  Model model = load_model(model_path);
  RunOptions ro;
  ro.threads = o.threads;
  Executor ex(analysis_graph(graph_path, model, o), ro);
  apply_model(model, ex, model_path);
  PixelSample s;
  size_t next = 0;
  long long done = 0;
  cli::Progress bar("analyze " + fs::path(model_path).filename().string(), (long long)items.size(), 1, "images/s");
  ex.run(
      [&](Frame& f) {
        if (next >= items.size()) return false;
        f.source = items[next++].image;
        return true;
      },
      [&](const Frame& f) {
        ++done;
        if (!o.quiet) bar.update(done);
        if (f.dropped) {
          ++s.skipped;
          return cli::log("skipped: " + f.drop_reason);
        }
        const cv::Mat& m = f.get<Map2D>(o.stream).mat;
        if (!cv::checkRange(m))
          throw Error(model_path + ": the map \"" + o.stream + "\" of " + f.source +
                      " holds NaN or infinite values; the model is unusable (did training diverge?)");
        add_pixels(m, items[size_t(f.id())].mask, f.source, s);
      });
  if (!o.quiet) bar.finish();
  return s;
}

// (mean_defect - mean_normal) / std_normal; nullopt without both kinds of pixels or spread, said why.
std::optional<double> separation_of(const Stats& sn, const Stats& sd, const std::string& model_path) {
  if (sn.n > 0 && sd.n > 0 && sn.std > 0) return (sd.mean - sn.mean) / sn.std;
  cli::log(model_path + ": separation undefined: " +
           (sd.n == 0   ? "no defect pixels (no test image with a ground-truth mask was read)"
            : sn.n == 0 ? "no normal pixels (no good test image was read)"
                        : "normal pixels have zero spread"));
  return std::nullopt;
}

// One model's two rows (normal, defect) on stdout and in the HTML table.
void print_rows(const std::string& name, const std::string& graph_path, const std::string& model_path, const Stats& sn,
                const Stats& sd, const std::string& sep_text, std::string& html) {
  for (const auto& [label, s] : {std::pair<const char*, const Stats&>{"normal", sn}, {"defect", sd}}) {
    const char* sep = std::string(label) == "defect" ? sep_text.c_str() : "";
    std::printf("%-24s %-8s %10.4g %10.4g %10.4g %10.4g %10.4g %10s\n", name.c_str(), label, s.mean, s.std, s.p25, s.median,
                s.p75, sep);
    char row[512];
    std::snprintf(row, sizeof row,
                  "<tr><td>%s</td><td>%s</td><td>%s "
                  "(%zu)</td><td>%.4g</td><td>%.4g</td><td>%.4g</td><td>%.4g</td><td>%.4g</td><td>%s</td></tr>",
                  graph_path.c_str(), model_path.c_str(), label, s.n, s.mean, s.std, s.p25, s.median, s.p75, sep);
    html += row;
  }
}

// The report's page up to the table's header row.
std::string html_head(const std::string& data, const std::string& stream) {
  return "<!doctype html><html><head><meta charset='utf-8'><title>fmam "
         "analyze</title><style>body{font-family:sans-serif;margin:24px}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head><body>"
         "<h1>Distance statistics: normal vs defect pixels</h1><p>data: " +
         data + ", stream: " + stream +
         "</p><table><tr><th>graph</th><th>model</th><th>pixels</th><th>mean</th><th>std</th><th>p25</th><th>median</th><th>p75</"
         "th><th>separation</th></tr>";
}

}  // namespace

int cmd_analyze(int argc, char** argv) {
  auto opts = cli::common_options();
  opts.insert(opts.begin(),
              {{"data", "DIR", "a category in MVTec AD layout (test/ and ground_truth/)", false, "d"},
               {"out", "DIR", "writes analysis.html (histograms) and analysis.json here", false, "o"},
               {"stream", "NAME", "the Map2D stream to analyse (default raw_map: summed 1 - cos before blur)", false, ""},
               {"set", "ID.PARAM=VALUE",
                "override a node param of every GRAPH, e.g. --set mapped_pick.levels=[1] with "
                "graphs/ablations/fmam_rkd_per_level.json for layer 2's mapped map alone",
                true, ""},
               {"strict", "", "exit with status 3 if any test image was skipped (unreadable); default 0", false, ""},
               {"quiet", "", "no progress bar", false, "q"}});
  cli::Args a("analyze", "fmam analyze GRAPH:MODEL [GRAPH:MODEL ...] --data CATEGORY_DIR --out DIR",
              "Fig. 5 of the paper: teacher-student distance statistics on normal pixels (good images) vs\n"
              "defect pixels (inside ground-truth masks), per model: mean, std, quartiles, the separation\n"
              "(mean_defect - mean_normal) / std_normal, and density histograms. Give a model without and\n"
              "one with feature mappings to see what FM changes.",
              opts,
              "example:\n"
              "  fmam analyze graphs/rkd.json:rkd.fmam graphs/fmam_rkd.json:fmam_rkd.fmam \\\n"
              "      -d ../shared/data/mvtec_ad/bottle -o fig5/\n"
              "\n"
              "exit status:\n"
              "  0  analysis.html and analysis.json were written (unreadable images, each named on stderr,\n"
              "     and defect images without a ground-truth mask were left out)\n"
              "  1  an error (bad graph, model, data or option; no test image could be read)\n"
              "  3  with --strict: the analysis was written, but some images were skipped");
  if (!a.parse(argc, argv)) return 0;
  cli::load_plugins(a);
  if (a.positionals().empty()) throw Error("fmam analyze: give at least one GRAPH:MODEL; see fmam analyze --help");
  if (a.get("data").empty() || a.get("out").empty()) throw Error("fmam analyze: --data and --out are required");
  SampleOptions so;
  so.stream = a.get("stream", "raw_map");
  for (const auto& s : a.all("set")) so.overrides.push_back(parse_override(s));
  so.threads = a.get_int("threads", 0);
  so.quiet = a.flag("quiet");
  const std::vector<TestItem> items = list_test_items(a.get("data"));

  nlohmann::json out_json = nlohmann::json::array();
  std::string html = html_head(a.get("data"), so.stream);
  std::string svgs;
  long long skipped_in_all = 0;  // over every model, for --strict
  std::printf("%-24s %-8s %10s %10s %10s %10s %10s %10s\n", "graph:model", "pixels", "mean", "std", "p25", "median", "p75",
              "separation");
  for (const auto& pair : a.positionals()) {
    auto colon = pair.rfind(':');
    if (colon == std::string::npos) throw Error("fmam analyze: \"" + pair + "\": expected GRAPH:MODEL");
    const std::string graph_path = pair.substr(0, colon), model_path = pair.substr(colon + 1);
    const PixelSample px = sample_pixels(graph_path, model_path, items, so);
    skipped_in_all += px.skipped;
    if (px.normal.empty() && px.defect.empty())
      throw Error("fmam analyze: " + model_path + ": no test image of " + (fs::path(a.get("data")) / "test").string() +
                  " could be read (" + std::to_string(px.skipped) + " skipped, each named above); nothing to analyse");
    const Stats sn = stats_of(px.normal), sd = stats_of(px.defect);
    const std::optional<double> sep = separation_of(sn, sd, model_path);
    const std::string name = fs::path(graph_path).stem().string() + ":" + fs::path(model_path).filename().string();
    print_rows(name, graph_path, model_path, sn, sd, sep ? std::to_string(*sep).substr(0, 6) : "undefined", html);
    svgs += density_svg(name, px.normal, px.defect);
    out_json.push_back({{"graph", graph_path},
                        {"model", model_path},
                        {"stream", so.stream},
                        {"set", a.all("set")},
                        {"normal", to_json(sn)},
                        {"defect", to_json(sd)},
                        {"separation", sep ? nlohmann::json(*sep) : nlohmann::json(nullptr)}});
  }
  html += "</table><p>separation = (mean over defect pixels - mean over normal pixels) / std over normal pixels.</p>" + svgs +
          "</body></html>";
  const fs::path out = a.get("out");
  atomic_write_text((out / "analysis.html").string(), html);
  atomic_write_text((out / "analysis.json").string(), out_json.dump(2));
  std::cout << "analysis: " << (out / "analysis.html").string() << "\n";
  return a.flag("strict") && skipped_in_all > 0 ? 3 : 0;
}

}  // namespace fmam
