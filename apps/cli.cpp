#include "apps/cli.h"

#include "api/plugins.h"

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>

#include <set>

#include <opencv2/imgcodecs.hpp>

#include <stdexcept>
#include "framework/graph.h"
#include "framework/io.h"
#include "framework/registry.h"

namespace fmam::cli {

Args::Args(std::string command, std::string usage, std::string description, std::vector<Option> options, std::string epilog)
    : command_(std::move(command)),
      usage_(std::move(usage)),
      description_(std::move(description)),
      epilog_(std::move(epilog)),
      options_(std::move(options)) {
  options_.push_back({"help", "", "show this help and exit", false, "h"});
}

std::string Args::help() const {
  std::string s = "usage: " + usage_ + "\n\n" + description_ + "\n\noptions:\n";
  for (const auto& o : options_) {
    std::string left = "  " + (o.short_name.empty() ? "    " : "-" + o.short_name + ", ") + "--" + o.name +
                       (o.metavar.empty() ? "" : " " + o.metavar);
    if (left.size() < 30)
      left += std::string(30 - left.size(), ' ');
    else
      left += "\n" + std::string(30, ' ');
    s += left + o.help + (o.repeatable ? " (repeatable)" : "") + "\n";
  }
  if (!epilog_.empty()) s += "\n" + epilog_ + "\n";
  return s;
}

bool Args::parse(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a.size() > 1 && a[0] == '-' && a != "-") {
      std::string name, value;
      bool has_value = false;
      if (a.rfind("--", 0) == 0) {
        name = a.substr(2);
        auto eq = name.find('=');
        if (eq != std::string::npos) {
          value = name.substr(eq + 1);
          name = name.substr(0, eq);
          has_value = true;
        }
      } else {
        std::string s = a.substr(1);
        for (const auto& o : options_)
          if (o.short_name == s) name = o.name;
        if (name.empty())
          throw std::runtime_error("fmam " + command_ + ": unknown option " + a + "; see fmam " + command_ + " --help");
      }
      const Option* opt = nullptr;
      for (const auto& o : options_)
        if (o.name == name) opt = &o;
      if (!opt)
        throw std::runtime_error("fmam " + command_ + ": unknown option --" + name + "; see fmam " + command_ + " --help");
      if (name == "help") {
        std::cout << help();
        return false;
      }
      if (opt->metavar.empty()) {
        if (has_value) throw std::runtime_error("fmam " + command_ + ": --" + name + " takes no value");
        values_[name].push_back("1");
        continue;
      }
      if (!has_value) {
        if (i + 1 >= argc) throw std::runtime_error("fmam " + command_ + ": --" + name + " needs a value (" + opt->metavar + ")");
        value = argv[++i];
      }
      if (!opt->repeatable && values_.count(name)) throw std::runtime_error("fmam " + command_ + ": --" + name + " given twice");
      values_[name].push_back(value);
    } else {
      positionals_.push_back(a);
    }
  }
  return true;
}

std::string Args::get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second.back();
}

std::vector<std::string> Args::all(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

// The smallest value each count option takes: a count of 0 or -5 threads, frames or batch
// members is a typing mistake, never a request.
int min_value(const std::string& name) {
  static const std::map<std::string, int> kMin = {{"threads", 1},       {"intra-op-threads", 1}, {"batch", 1},
                                                  {"max-in-flight", 1}, {"frames", 1},           {"repeat", 1},
                                                  {"warmup", 0},        {"rss-every", 0},        {"max-images", 0}};
  auto it = kMin.find(name);
  return it == kMin.end() ? std::numeric_limits<int>::min() : it->second;
}

int Args::get_int(const std::string& name, int fallback) const {
  std::string v = get(name);
  if (v.empty()) return fallback;
  int x = 0;
  try {
    size_t used = 0;
    x = std::stoi(v, &used);
    if (used != v.size()) throw std::invalid_argument(v);
  } catch (const std::exception&) {
    throw std::runtime_error("fmam " + command_ + ": --" + name + " must be an integer, got \"" + v + "\"");
  }
  if (x < min_value(name))
    throw std::runtime_error("fmam " + command_ + ": --" + name + " must be at least " + std::to_string(min_value(name)) +
                             ", got " + v);
  return x;
}

double Args::get_number(const std::string& name, double fallback) const {
  std::string v = get(name);
  if (v.empty()) return fallback;
  double x = 0;
  try {
    size_t used = 0;
    x = std::stod(v, &used);
    if (used != v.size()) throw std::invalid_argument(v);
  } catch (const std::exception&) {
    throw std::runtime_error("fmam " + command_ + ": --" + name + " must be a number, got \"" + v + "\"");
  }
  if (!std::isfinite(x)) throw std::runtime_error("fmam " + command_ + ": --" + name + " must be a finite number, got " + v);
  return x;
}

Progress::Progress(std::string what, long long total, double per_step, std::string unit)
    : what_(std::move(what)),
      total_(total),
      per_step_(per_step),
      unit_(std::move(unit)),
      tty_(isatty(2)),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

// A rate needs time to measure: the first item can arrive microseconds after the bar starts
// (eval starts its bar at its first image), and "2207505.5 images/s" would be a lie. Until a
// quarter second has passed, the rate and the ETA print as "--".
std::string Progress::rate_and_eta(long long done, double secs) const {
  if (secs < 0.25 || done <= 0) return "-- " + unit_ + "  ETA --";
  const double rate = done / secs;
  const double eta = total_ > 0 ? (total_ - done) / rate : 0;
  char text[96];
  std::snprintf(text, sizeof text, "%.1f %s  ETA %.0fs", rate * per_step_, unit_.c_str(), eta);
  return text;
}

void Progress::update(long long done, const std::string& extra) {
  auto now = std::chrono::steady_clock::now();
  double secs = std::chrono::duration<double>(now - start_).count();
  int decile = total_ > 0 ? int(10 * done / total_) : 0;
  if (tty_) {
    if (done != total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  } else if (decile == last_decile_) {
    return;
  }
  last_draw_ = now;
  last_decile_ = decile;
  const int width = 30;
  int filled = total_ > 0 ? int(width * done / total_) : 0;
  std::string bar = std::string(filled, '=') + (filled < width ? ">" : "") + std::string(std::max(0, width - filled - 1), ' ');
  char line[256];
  std::snprintf(line, sizeof line, "%s [%s] %lld/%lld  %s", what_.c_str(), bar.c_str(), done, total_,
                rate_and_eta(done, secs).c_str());
  std::cerr << (tty_ ? "\r" : "") << line << (extra.empty() ? "" : "  " + extra) << (tty_ ? "\033[K" : "\n") << std::flush;
}

void Progress::finish(const std::string& extra) {
  if (tty_) {
    std::cerr << "\r\033[K";
  }
  (void)extra;
}

void log(const std::string& msg) { std::cerr << "fmam: " << msg << "\n" << std::flush; }

std::vector<Args::Option> common_options() {
  return {{"plugin", "FILE", "load an extra node plugin (.so) before reading the graph", true, ""},
          {"threads", "N", "worker threads for the graph and the networks (default: all cores)", false, ""},
          {"intra-op-threads", "N",
           "threads inside one torch op (default: 1 for run/bench/eval, whose\n"
           "                              graph runs frames in parallel; --threads for train)",
           false, ""}};
}

Args::Option precision_option() {
  return {"precision", "P",
          "the networks' arithmetic: auto (default: int8 for a model calibrated for it on CPUs with\n"
          "                              AVX2 or VNNI, else bf16 on CPUs with AVX512-BF16, else fp32), fp32, bf16\n"
          "                              (convolutions in bfloat16, ~2x faster), or int8 (the teacher in\n"
          "                              int8; fmam train calibrates models for it, fmam quantize older\n"
          "                              ones). docs/PERFORMANCE.md",
          false, ""};
}

void load_plugins(const Args& a) { ensure_plugins(a.all("plugin")); }

static double status_mib(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) return std::atof(line.c_str() + std::strlen(key)) / 1024.0;
  return 0;
}

double peak_rss_mib() { return status_mib("VmHWM:"); }
double rss_mib() { return status_mib("VmRSS:"); }

}  // namespace fmam::cli
