// Small command-line helpers for the fmam runner: argument parsing, logging, a progress bar.
#pragma once

#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace fmam::cli {

// Parses "--name value", "--name=value", flags and positionals. Unknown options are errors
// naming the option and the subcommand's --help.
class Args {
 public:
  struct Option {
    std::string name;     // "output"
    std::string metavar;  // "DIR"; empty for a flag
    std::string help;
    bool repeatable = false;
    std::string short_name;  // "o" for -o
  };
  Args(std::string command, std::string usage, std::string description, std::vector<Option> options, std::string epilog = "");
  // Returns false if --help was printed.
  bool parse(int argc, char** argv);
  bool flag(const std::string& name) const { return values_.count(name) > 0; }
  std::string get(const std::string& name, const std::string& fallback = "") const;
  std::vector<std::string> all(const std::string& name) const;
  // Count options (threads, batch, max-in-flight, frames, ...) are checked against their least
  // value; a number must be finite.
  int get_int(const std::string& name, int fallback) const;
  double get_number(const std::string& name, double fallback) const;
  const std::vector<std::string>& positionals() const { return positionals_; }
  std::string help() const;

 private:
  std::string command_, usage_, description_, epilog_;
  std::vector<Option> options_;
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positionals_;
};

// Progress on stderr: redrawn in place on a terminal, a line per 10% otherwise (CI logs).
class Progress {
 public:
  // `per_step` items per step, shown as a rate in `unit` (e.g. 8 images per batch: "images/s").
  Progress(std::string what, long long total, double per_step = 1, std::string unit = "/s");
  void update(long long done, const std::string& extra = "");
  void finish(const std::string& extra = "");

 private:
  std::string rate_and_eta(long long done, double secs) const;
  std::string what_;
  long long total_;
  double per_step_;
  std::string unit_;
  bool tty_;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

void log(const std::string& msg);  // "fmam: msg" on stderr

// Options every command accepts (--plugin, --threads), and loading the plugins they name.
std::vector<Args::Option> common_options();
// --precision, for the commands that run a trained detector (run, eval, bench).
Args::Option precision_option();
void load_plugins(const Args& a);
// Peak resident memory of this process so far (VmHWM), in MiB.
double peak_rss_mib();
double rss_mib();  // current (VmRSS)

}  // namespace fmam::cli

namespace fmam {
// The subcommands (one file each under apps/).
int cmd_train(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_analyze(int argc, char** argv);
int cmd_quantize(int argc, char** argv);
int cmd_fleet(int argc, char** argv);  // fleet_command.cpp: no torch, starts train/eval as processes
// The --help lines for the environment variables that run, eval and bench read.
inline constexpr const char* kInferenceEnvironmentHelp =
    "environment:\n"
    "  FMAM_CPU_CACHE_MB=N   MiB of freed tensors (1 MiB and larger) kept for the next frames\n"
    "                        instead of going back to the system (default 256; 0 turns it off)\n";

}  // namespace fmam
