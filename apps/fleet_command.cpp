// fmam fleet: a detector per product, trained by a batch scheduler. `submit` turns a manifest
// (apps/fleet_manifest.h) into one Slurm array job (cluster/slurm/train_array.sbatch); each
// array task runs `fleet task`, which trains one product, evaluates and calibrates it, and
// leaves markers a rerun reads; `gather` makes one table of the fleet. Markers in DIR/<product>/:
//   status.json  attempts, cumulative training seconds, current step (rewritten at each step)
//   FAILED       the failed step, its exit status and log (removed when the product is retried)
//   DONE         written last, atomically: the product is finished and a rerun skips it
// No torch here: this file only starts `fmam train` and `fmam eval` as processes.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "apps/cli.h"
#include "apps/fleet_manifest.h"
#include "framework/error.h"
#include "framework/io.h"

namespace fmam {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* kFleetHelp = R"(usage: fmam fleet <submit|task|gather> ... [--help]

A detector per product, trained by Slurm: one array task per product of a manifest.

  submit MANIFEST --out DIR   sbatch one array job: task i trains product i (fmam train), then
                              evaluates and calibrates it (fmam eval --calibrate) into DIR/<product>/
  task MANIFEST --out DIR     what one array task runs (index from SLURM_ARRAY_TASK_ID or
                              JOB_COMPLETION_INDEX); also the entry point of a Kubernetes Indexed Job
  gather DIR                  one table of the fleet: DIR/fleet.csv and DIR/index.html

The manifest is a CSV file with a header row:
  product,data,graph,overrides
  bottle,../shared/data/mvtec_ad/bottle,graphs/fmam_rkd_train.json,stage1.epochs=10 stage2.epochs=10
  metal_plate,../shared/data/mpdd/metal_plate,graphs/fmam_rkd_train.json,

Resubmitting skips finished products (DIR/<product>/DONE), resumes interrupted ones from their
checkpoint (fmam train --resume) and retries failed ones. Details: docs/SCALE.md.
)";

// ---- small helpers ---------------------------------------------------------------------------

std::string now_iso() {
  char b[32];
  std::time_t t = std::time(nullptr);
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S%z", std::localtime(&t));
  return b;
}

std::string self_exe() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  if (ec) throw Error("fmam fleet: cannot find its own executable (/proc/self/exe): " + ec.message());
  return p.string();
}

std::string host_name() {
  char b[256] = {0};
  gethostname(b, sizeof b - 1);
  return b;
}

std::string shell_quote(const std::string& s) {
  if (!s.empty() &&
      s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.,/=:%+@") == std::string::npos)
    return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string join_command(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + shell_quote(a);
  return s;
}

json read_json_file(const fs::path& p) {
  std::ifstream f(p);
  if (!f) return json();
  try {
    return json::parse(f);
  } catch (const std::exception&) {
    return json();
  }
}

// The last non-empty line of a text file (a failed command's error message, in its log).
std::string last_line(const fs::path& p) {
  std::ifstream f(p);
  std::string line, last;
  while (std::getline(f, line))
    if (line.find_first_not_of(" \t\r") != std::string::npos) last = line;
  return last;
}

// "0-3,5,7-8" from sorted indices (sbatch --array syntax).
std::string index_ranges(const std::vector<size_t>& idx) {
  std::string s;
  for (size_t i = 0; i < idx.size();) {
    size_t j = i;
    while (j + 1 < idx.size() && idx[j + 1] == idx[j] + 1) ++j;
    s += (s.empty() ? "" : ",") + std::to_string(idx[i]) + (j > i ? "-" + std::to_string(idx[j]) : "");
    i = j + 1;
  }
  return s;
}

// The CPUs this process may run on: Slurm and cpusets confine it; hardware_concurrency would
// count the whole node and oversubscribe it.
int usable_cpus() {
  if (const char* c = std::getenv("SLURM_CPUS_PER_TASK"); c && std::atoi(c) > 0) return std::atoi(c);
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return 1;
}

// ---- running fmam train / eval as child processes -------------------------------------------

volatile sig_atomic_t g_child = 0, g_signal = 0;

void forward_signal(int sig) {
  g_signal = sig;
  if (g_child > 0) kill(pid_t(g_child), sig);
}

struct ExitStatus {
  int code = -1;   // exit status, -1 if killed by a signal
  int signal = 0;  // the signal that killed it
  std::string describe() const {
    return signal ? "killed by signal " + std::to_string(signal) + " (" + strsignal(signal) + ")"
                  : "exit status " + std::to_string(code);
  }
};

// Runs argv with stdout and stderr appended to `log`. SIGINT and SIGTERM (scancel, a time
// limit, a preemption) are forwarded, so fmam train saves a checkpoint the next attempt resumes.
ExitStatus run_logged(const std::vector<std::string>& argv, const fs::path& log) {
  {
    std::ofstream f(log, std::ios::app);
    f << "\n=== " << now_iso() << " on " << host_name() << ": " << join_command(argv) << "\n";
  }
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  struct sigaction sa {};
  sa.sa_handler = forward_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {
  }, old_term{};
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  const pid_t pid = fork();
  if (pid < 0) throw Error(std::string("fmam fleet: fork failed: ") + std::strerror(errno));
  if (pid == 0) {
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    const int fd = open(log.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0) _exit(127);
    dup2(fd, 1);
    dup2(fd, 2);
    close(fd);
    execv(cargv[0], cargv.data());
    std::fprintf(stderr, "fmam fleet: cannot run %s: %s\n", cargv[0], std::strerror(errno));
    _exit(127);
  }
  g_child = pid;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  g_child = 0;
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  ExitStatus r;
  if (WIFEXITED(status))
    r.code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status))
    r.signal = WTERMSIG(status);
  return r;
}

// ---- fleet task: one product --------------------------------------------------------------------

struct ProductDir {
  fs::path dir;
  fs::path model() const { return dir / "model.fmam"; }
  fs::path report() const { return dir / "report"; }
  fs::path log() const { return dir / "log"; }
  fs::path status() const { return dir / "status.json"; }
  fs::path done() const { return dir / "DONE"; }
  fs::path failed() const { return dir / "FAILED"; }
  fs::path results() const { return dir / "results.json"; }
};

std::string job_label() {
  if (const char* j = std::getenv("SLURM_ARRAY_JOB_ID"))
    return std::string("slurm ") + j + "_" + (std::getenv("SLURM_ARRAY_TASK_ID") ? std::getenv("SLURM_ARRAY_TASK_ID") : "?");
  if (const char* j = std::getenv("SLURM_JOB_ID")) return std::string("slurm ") + j;
  if (const char* k = std::getenv("JOB_COMPLETION_INDEX")) return "k8s index " + std::string(k) + " (" + host_name() + ")";
  return "local (" + host_name() + ")";
}

int resolve_index(const cli::Args& a) {
  std::string v = a.get("index");
  const char* from = "--index";
  for (const char* env : {"SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"})
    if (v.empty() && std::getenv(env) && *std::getenv(env)) {
      v = std::getenv(env);
      from = env;
    }
  if (v.empty())
    throw Error(
        "fmam fleet task: no product index: give --index I, or run it as a Slurm array task "
        "(SLURM_ARRAY_TASK_ID) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX)");
  try {
    size_t used = 0;
    const int i = std::stoi(v, &used);
    if (used == v.size() && i >= 0) return i;
  } catch (const std::exception&) {
  }
  throw Error(std::string("fmam fleet task: ") + from + " must be an index >= 0, got \"" + v + "\"");
}

int cmd_fleet_task(int argc, char** argv) {
  auto opts = cli::common_options();
  opts.insert(opts.begin(),
              {{"out", "DIR", "the fleet folder: this product goes to DIR/<product>/", false, "o"},
               {"index", "I",
                "the manifest row to train, 0 = the first product (default: $SLURM_ARRAY_TASK_ID,\n"
                "                              else $JOB_COMPLETION_INDEX)",
                false, ""},
               {"max-images", "N", "passed to fmam train: only the first N training images (quick trials, tests)", false, ""}});
  cli::Args a("fleet task", "fmam fleet task MANIFEST --out DIR [--index I] [--threads N]",
              "Train, evaluate and calibrate one product of a manifest: what each Slurm array task (or\n"
              "Kubernetes Indexed Job pod) runs. Writes DIR/<product>/model.fmam, report/ (report.html,\n"
              "results.json), results.json (the product's row of the fleet table), log (fmam train and\n"
              "eval's output), status.json, and DONE last. A product with DONE is skipped; a partial\n"
              "model is resumed (fmam train --resume); a failure writes FAILED (step, exit status, log)\n"
              "and exits 1. SIGTERM (scancel, time limit) makes fmam train save a checkpoint; exit 130.\n"
              "--threads defaults to $SLURM_CPUS_PER_TASK, else the CPUs this process may use.",
              opts,
              "example (by hand, without a scheduler):\n"
              "  fmam fleet task fleet.csv --out runs/ --index 0\n"
              "exit status: 0 done (or already done), 1 failed, 130 interrupted (resume by running again)");
  if (!a.parse(argc, argv)) return 0;
  if (a.positionals().size() != 1) throw Error("fmam fleet task: expected one MANIFEST; see fmam fleet task --help");
  if (a.get("out").empty()) throw Error("fmam fleet task: --out DIR is required; see fmam fleet task --help");
  const std::vector<fleet::Product> products = fleet::read_manifest(a.positionals()[0], false);
  const int index = resolve_index(a);
  if (size_t(index) >= products.size())
    throw Error("fmam fleet task: index " + std::to_string(index) + " is past the last product of " + a.positionals()[0] + " (" +
                std::to_string(products.size()) + " products, indices 0-" + std::to_string(products.size() - 1) + ")");
  const fleet::Product& p = products[size_t(index)];
  ProductDir pd{fs::absolute(fs::path(a.get("out"))) / p.name};
  fs::create_directories(pd.dir);
  if (fs::exists(pd.done())) {
    cli::log(p.name + ": already done (" + pd.done().string() + "); skipping");
    return 0;
  }
  fs::remove(pd.failed());
  json st = read_json_file(pd.status());
  if (!st.is_object()) st = json::object();
  st["product"] = p.name;
  st["attempts"] = st.value("attempts", 0) + 1;
  double train_seconds = st.value("train_seconds", 0.0);
  auto set_status = [&](const std::string& s) {
    st["status"] = s;
    st["train_seconds"] = train_seconds;
    st["job"] = job_label();
    st["updated"] = now_iso();
    atomic_write_text(pd.status().string(), st.dump(2) + "\n");
  };
  auto fail = [&](const std::string& step, const std::string& why) {
    const std::string message = last_line(pd.log());
    json f = {{"product", p.name},  {"step", step},       {"why", why},       {"log", pd.log().string()},
              {"message", message}, {"job", job_label()}, {"time", now_iso()}};
    set_status("failed");
    atomic_write_text(pd.failed().string(), f.dump(2) + "\n");
    cli::log(p.name + ": " + step + " failed (" + why + "): " + message + "; log: " + pd.log().string());
    return 1;
  };
  auto interrupted = [&](const std::string& step) {
    set_status("interrupted");
    cli::log(p.name + ": " + step + " interrupted; submitting again resumes it from " + pd.model().string());
    return 130;
  };

  const int threads = a.get_int("threads", usable_cpus());
  const std::string exe = self_exe();
  if (p.inference_graph.empty()) {
    std::ofstream(pd.log(), std::ios::app) << "fmam fleet: " << p.graph
                                           << ": missing, or not a training graph with train.inference_graph\n";
    return fail("setup", "bad graph");
  }
  // Train (or resume: the model is written after every epoch and on SIGTERM).
  std::vector<std::string> train = {
      exe, "train", p.graph, "--data", p.data, "--out", pd.model().string(), "--threads", std::to_string(threads)};
  for (const auto& o : p.overrides) train.insert(train.end(), {"--set", o});
  if (!a.get("max-images").empty()) train.insert(train.end(), {"--max-images", a.get("max-images")});
  const bool resume = fs::exists(pd.model());
  if (resume) train.push_back("--resume");
  // The common options go on to both commands.
  std::vector<std::string> common;
  for (const auto& plugin : a.all("plugin")) common.insert(common.end(), {"--plugin", plugin});
  if (!a.get("intra-op-threads").empty()) common.insert(common.end(), {"--intra-op-threads", a.get("intra-op-threads")});
  train.insert(train.end(), common.begin(), common.end());
  cli::log(p.name + ": " + (resume ? "resuming training" : "training") + " (attempt " +
           std::to_string(st["attempts"].get<int>()) + ", " + job_label() + "); log: " + pd.log().string());
  set_status("training");
  auto t0 = std::chrono::steady_clock::now();
  ExitStatus tr = run_logged(train, pd.log());
  train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (tr.code == 130 || g_signal) return interrupted("training");
  if (tr.code != 0) return fail("train", tr.describe());

  // Evaluate and calibrate (threshold and heatmap range go into the model).
  std::vector<std::string> eval = {
      exe,    "eval",  p.inference_graph,    "--model",     pd.model().string(), "--data",
      p.data, "--out", pd.report().string(), "--calibrate", "--threads",         std::to_string(threads)};
  eval.insert(eval.end(), common.begin(), common.end());
  set_status("evaluating");
  t0 = std::chrono::steady_clock::now();
  ExitStatus ev = run_logged(eval, pd.log());
  const double eval_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (g_signal) return interrupted("evaluation");
  if (ev.code != 0) return fail("eval", ev.describe());
  const json r = read_json_file(pd.report() / "results.json");
  if (!r.is_object() || !r.contains("all")) {
    std::ofstream(pd.log(), std::ios::app) << "fmam fleet: " << (pd.report() / "results.json").string()
                                           << ": missing or unreadable after fmam eval\n";
    return fail("eval", "no results.json");
  }
  std::string ov;
  for (const auto& o : p.overrides) ov += (ov.empty() ? "" : " ") + o;
  json res = {{"product", p.name},
              {"status", "done"},
              {"data", p.data},
              {"graph", p.graph},
              {"inference_graph", p.inference_graph},
              {"overrides", ov},
              {"image_auroc", r["all"].value("image_auroc", json())},
              {"pixel_auroc", r["all"].value("pixel_auroc", json())},
              {"aupro", r["all"].value("aupro", json())},
              {"f1_max", r["all"].value("f1_max", json())},
              {"threshold", r.value("threshold", json())},
              {"train_seconds", train_seconds},
              {"eval_seconds", eval_seconds},
              {"attempts", st["attempts"]},
              {"model", "model.fmam"},
              {"report", "report/report.html"},
              {"log", "log"},
              {"job", job_label()},
              {"finished", now_iso()}};
  atomic_write_text(pd.results().string(), res.dump(2) + "\n");
  set_status("done");
  atomic_write_text(pd.done().string(), now_iso() + " " + job_label() + "\n");  // last: the product is finished
  char b[160];
  std::snprintf(b, sizeof b, ": done in %.0f s training + %.0f s evaluation", train_seconds, eval_seconds);
  cli::log(p.name + b + "; " + pd.dir.string());
  return 0;
}

// ---- fleet gather: one table --------------------------------------------------------------------

struct Row {
  std::string product, status, image_auroc, pixel_auroc, aupro, threshold, train_seconds, attempts, model, report, log, error;
};

std::string num(const json& v, const char* fmt) {
  if (!v.is_number()) return "";
  char b[32];
  std::snprintf(b, sizeof b, fmt, v.get<double>());
  return b;
}

Row gather_row(const fs::path& dir, const fleet::Product& p) {
  ProductDir pd{dir / p.name};
  Row r;
  r.product = p.name;
  const json st = read_json_file(pd.status());
  if (st.is_object()) {
    r.train_seconds = num(st.value("train_seconds", json()), "%.1f");
    r.attempts = std::to_string(st.value("attempts", 0));
  }
  if (fs::exists(pd.log())) r.log = p.name + "/log";
  if (fs::exists(pd.done())) {
    const json res = read_json_file(pd.results());
    r.status = "done";
    r.image_auroc = num(res.value("image_auroc", json()), "%.4f");
    r.pixel_auroc = num(res.value("pixel_auroc", json()), "%.4f");
    r.aupro = num(res.value("aupro", json()), "%.4f");
    r.threshold = num(res.value("threshold", json()), "%.6g");
    r.train_seconds = num(res.value("train_seconds", json()), "%.1f");
    r.model = p.name + "/model.fmam";
    r.report = p.name + "/report/report.html";
    if (!res.is_object()) r.error = pd.results().string() + ": missing or unreadable";
  } else if (fs::exists(pd.failed())) {
    const json f = read_json_file(pd.failed());
    r.status = "failed";
    r.error =
        f.value("step", std::string("?")) + ": " + f.value("why", std::string("?")) + ": " + f.value("message", std::string());
  } else if (st.is_object()) {
    // "training"/"evaluating" while a task runs (or after its node died without a word);
    // "interrupted" after SIGTERM. Submitting again resumes either.
    r.status = st.value("status", std::string("started"));
  } else {
    r.status = "pending";
  }
  return r;
}

std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

// The last `n` lines of a log, for the failures section of the index.
std::string tail_lines(const fs::path& p, size_t n) {
  std::ifstream f(p);
  std::vector<std::string> lines;
  for (std::string l; std::getline(f, l);) {
    lines.push_back(l);
    if (lines.size() > n) lines.erase(lines.begin());
  }
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  return s;
}

std::string fleet_html(const fs::path& dir, const std::vector<Row>& rows, const std::map<std::string, int>& counts) {
  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>fmam fleet: " << html_escape(dir.filename().string())
    << "</title>\n<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
       "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
       ".done{color:#080}.failed{color:#b00;font-weight:bold}pre{background:#f4f4f4;padding:8px;overflow-x:auto}"
       "</style></head><body>\n<h1>fmam fleet</h1>\n<p>"
    << html_escape(dir.string()) << ", gathered " << html_escape(now_iso()) << ": ";
  std::string sep;
  for (const auto& [s, n] : counts) {
    h << sep << n << " " << html_escape(s);
    sep = ", ";
  }
  h << ". The same table as CSV: <a href=\"fleet.csv\">fleet.csv</a>.</p>\n<table>\n<tr><th>product</th><th>status</th>"
       "<th>image AUROC</th><th>pixel AUROC</th><th>AUPRO</th><th>threshold</th><th>training s</th><th>attempts</th>"
       "<th>files</th></tr>\n";
  for (const auto& r : rows) {
    h << "<tr><td>" << html_escape(r.product) << "</td><td class=\"" << html_escape(r.status) << "\">" << html_escape(r.status)
      << "</td><td>" << r.image_auroc << "</td><td>" << r.pixel_auroc << "</td><td>" << r.aupro << "</td><td>" << r.threshold
      << "</td><td>" << r.train_seconds << "</td><td>" << r.attempts << "</td><td>";
    if (!r.report.empty()) h << "<a href=\"" << html_escape(r.report) << "\">report</a> ";
    if (!r.model.empty()) h << "<a href=\"" << html_escape(r.model) << "\">model</a> ";
    if (!r.log.empty()) h << "<a href=\"" << html_escape(r.log) << "\">log</a>";
    h << "</td></tr>\n";
  }
  h << "</table>\n";
  bool any = false;
  for (const auto& r : rows) {
    if (r.status != "failed") continue;
    if (!any) h << "<h2>Failures</h2>\n";
    any = true;
    h << "<h3>" << html_escape(r.product) << "</h3>\n<p>" << html_escape(r.error) << "</p>\n<p>log: <a href=\""
      << html_escape(r.log) << "\">" << html_escape((dir / r.log).string()) << "</a>, last lines:</p>\n<pre>"
      << html_escape(tail_lines(dir / r.product / "log", 15)) << "</pre>\n";
  }
  h << "</body></html>\n";
  return h.str();
}

int cmd_fleet_gather(int argc, char** argv) {
  cli::Args a("fleet gather", "fmam fleet gather DIR",
              "Gather every product of a fleet folder (made by fmam fleet submit) into one table:\n"
              "DIR/fleet.csv, one row per product of DIR/manifest.csv, with columns\n"
              "  product,status,image_auroc,pixel_auroc,aupro,threshold,train_seconds,attempts,model,report,log,error\n"
              "(status: done, failed, training, evaluating, interrupted or pending; paths relative to DIR;\n"
              "threshold: the calibrated F1-max one), and DIR/index.html linking each product's report,\n"
              "with failures listed with the end of their logs. Both are written atomically, so run it\n"
              "while the array is running as often as you like. Prints the table; exit status 0 when\n"
              "it was written, whatever the products' states.",
              {}, "example:\n  fmam fleet gather runs/ && xdg-open runs/index.html");
  if (!a.parse(argc, argv)) return 0;
  if (a.positionals().size() != 1) throw Error("fmam fleet gather: expected one DIR; see fmam fleet gather --help");
  const fs::path dir = fs::absolute(fs::path(a.positionals()[0]));
  const fs::path manifest = dir / "manifest.csv";
  if (!fs::exists(manifest))
    throw Error("fmam fleet gather: " + manifest.string() + " does not exist; is " + dir.string() +
                " a fleet folder (fmam fleet submit MANIFEST --out DIR)?");
  const std::vector<fleet::Product> products = fleet::read_manifest(manifest.string(), false);
  std::vector<Row> rows;
  std::map<std::string, int> counts;
  std::string csv = "product,status,image_auroc,pixel_auroc,aupro,threshold,train_seconds,attempts,model,report,log,error\n";
  for (const auto& p : products) {
    Row r = gather_row(dir, p);
    ++counts[r.status];
    for (const std::string* f : {&r.product, &r.status, &r.image_auroc, &r.pixel_auroc, &r.aupro, &r.threshold, &r.train_seconds,
                                 &r.attempts, &r.model, &r.report, &r.log})
      csv += fleet::csv_field(*f) + ",";
    csv += fleet::csv_field(r.error) + "\n";
    rows.push_back(r);
  }
  atomic_write_text((dir / "fleet.csv").string(), csv);
  atomic_write_text((dir / "index.html").string(), fleet_html(dir, rows, counts));
  std::printf("%-20s %-12s %12s %12s %8s %10s %10s\n", "product", "status", "image AUROC", "pixel AUROC", "AUPRO", "threshold",
              "training s");
  for (const auto& r : rows)
    std::printf("%-20s %-12s %12s %12s %8s %10s %10s\n", r.product.c_str(), r.status.c_str(), r.image_auroc.c_str(),
                r.pixel_auroc.c_str(), r.aupro.c_str(), r.threshold.c_str(), r.train_seconds.c_str());
  for (const auto& r : rows)
    if (r.status == "failed") std::printf("failed: %s: %s; log: %s\n", r.product.c_str(), r.error.c_str(), (dir / r.log).c_str());
  std::string summary;
  for (const auto& [s, n] : counts) summary += (summary.empty() ? "" : ", ") + std::to_string(n) + " " + s;
  cli::log(std::to_string(rows.size()) + " product(s): " + summary + "; table: " + (dir / "fleet.csv").string() +
           ", index: " + (dir / "index.html").string());
  return 0;
}

// ---- fleet submit: one array job ----------------------------------------------------------------

// The sbatch script: --script, else beside the sources this binary was built from.
std::string find_script(const cli::Args& a) {
  if (!a.get("script").empty()) {
    if (!fs::is_regular_file(a.get("script"))) throw Error("fmam fleet submit: --script " + a.get("script") + " does not exist");
    return fs::absolute(a.get("script")).string();
  }
  const fs::path built = fs::path(FMAM_SOURCE_DIR) / "cluster" / "slurm" / "train_array.sbatch";
  if (fs::is_regular_file(built)) return built.string();
  throw Error("fmam fleet submit: cannot find train_array.sbatch (looked in " + built.parent_path().string() +
              "); give it with --script FILE");
}

int cmd_fleet_submit(int argc, char** argv) {
  cli::Args a(
      "fleet submit", "fmam fleet submit MANIFEST --out DIR [--partition P] [--time T] [--cpus N] [--dry-run]",
      "Submit one Slurm array job for a manifest: array task i runs `fmam fleet task` for product i,\n"
      "which trains it (fmam train GRAPH --data DATA --set OVERRIDES...), evaluates and calibrates\n"
      "it (fmam eval --calibrate) and writes DIR/<product>/: model.fmam, report/, results.json,\n"
      "log, and DONE last. Products already DONE are left out of the array; a product with a\n"
      "model but no DONE resumes from it; a failed one is retried. The manifest is checked first\n"
      "(every problem at once) and copied with absolute paths to DIR/manifest.csv (read by fmam\n"
      "fleet gather) and DIR/.fleet/ (read by this submission's tasks). DIR, the data, the\n"
      "graphs and this binary must be on storage every node sees at the same path.\n"
      "\n"
      "Manifest: CSV with a header row product,data,graph,overrides (overrides optional):\n"
      "  product    folder name under DIR (letters, digits, '.', '_', '-')\n"
      "  data       the product's images in MVTec AD layout (train/good, test/, ground_truth/)\n"
      "  graph      training graph, e.g. graphs/fmam_rkd_train.json (its model is evaluated with\n"
      "             the inference graph it names)\n"
      "  overrides  fmam train --set KEY=VALUE settings separated by spaces, e.g.\n"
      "             stage1.epochs=10 stage2.epochs=10 train.image_size=128\n"
      "Relative paths are relative to the manifest's folder; '#' lines are comments.",
      {{"out", "DIR",
        "the fleet folder (created): DIR/<product>/, DIR/manifest.csv, Slurm's output\n"
        "                              in DIR/.fleet/slurm-JOB_TASK.out",
        false, "o"},
       {"partition", "P", "sbatch --partition", false, "p"},
       {"time", "T",
        "sbatch --time: limit per product (e.g. 2:00:00); two minutes before it,\n"
        "                              SIGTERM makes fmam train checkpoint, so a resubmit resumes",
        false, "t"},
       {"cpus", "N", "sbatch --cpus-per-task (default: the script's, 2); fmam uses that many threads", false, ""},
       {"mem", "SIZE", "sbatch --mem (default: the script's, 4G; 256x256 training peaks at 2.7 GB)", false, ""},
       {"max-parallel", "K", "at most K products train at once (sbatch --array=...%K)", false, ""},
       {"max-images", "N", "train on the first N images of each product only (quick trial runs, tests)", false, ""},
       {"sbatch", "ARG", "pass ARG to sbatch as it is, e.g. --sbatch=--account=vision", true, ""},
       {"script", "FILE", "the batch script (default: cluster/slurm/train_array.sbatch of this source tree)", false, ""},
       {"wait", "", "wait until every task has ended (sbatch --wait); exit status non-zero if one failed", false, ""},
       {"dry-run", "", "check the manifest, print the plan and the sbatch command; submit nothing, write nothing", false, "n"}},
      "examples:\n"
      "  fmam fleet submit fleet.csv --out /shared/runs/fleet --partition cpu --time 2:00:00 --cpus 2\n"
      "  fmam fleet gather /shared/runs/fleet      # while it runs, and after: fleet.csv, index.html\n"
      "  fmam fleet submit fleet.csv --out /shared/runs/fleet   # again: skips DONE, resumes the rest\n"
      "details: docs/SCALE.md");
  if (!a.parse(argc, argv)) return 0;
  if (a.positionals().size() != 1) throw Error("fmam fleet submit: expected one MANIFEST; see fmam fleet submit --help");
  if (a.get("out").empty()) throw Error("fmam fleet submit: --out DIR is required; see fmam fleet submit --help");
  for (const char* n : {"cpus", "max-parallel", "max-images"})
    if (!a.get(n).empty() && a.get_int(n, 0) < 1) throw Error(std::string("fmam fleet submit: --") + n + " must be >= 1");
  const std::vector<fleet::Product> products = fleet::read_manifest(a.positionals()[0], true);
  const fs::path out = fs::absolute(fs::path(a.get("out"))).lexically_normal();

  // The plan: which rows become array tasks.
  std::vector<size_t> todo;
  std::cout << "fmam fleet: " << products.size() << " product(s) in " << a.positionals()[0] << "\n";
  for (size_t i = 0; i < products.size(); ++i) {
    ProductDir pd{out / products[i].name};
    std::string action = "train";
    if (fs::exists(pd.done()))
      action = "skip: done";
    else if (fs::exists(pd.failed()))
      action = "retry after failure" + std::string(fs::exists(pd.model()) ? " (resume)" : "");
    else if (fs::exists(pd.model()))
      action = "resume from " + pd.model().string();
    if (!fs::exists(pd.done())) todo.push_back(i);
    std::printf("  %3zu  %-20s %s\n", i, products[i].name.c_str(), action.c_str());
  }
  if (todo.empty()) {
    std::cout << "fmam fleet: every product is done; nothing to submit. Table: fmam fleet gather " << out.string() << "\n";
    return 0;
  }
  const std::string script = find_script(a);
  std::vector<std::string> sb = {
      "sbatch", "--array=" + index_ranges(todo) + (a.get("max-parallel").empty() ? "" : "%" + a.get("max-parallel")),
      "--job-name=fmam-fleet", "--output=" + (out / ".fleet" / "slurm-%A_%a.out").string(), "--export=ALL,FMAM=" + self_exe()};
  if (!a.get("partition").empty()) sb.push_back("--partition=" + a.get("partition"));
  if (!a.get("time").empty()) sb.push_back("--time=" + a.get("time"));
  if (!a.get("cpus").empty()) sb.push_back("--cpus-per-task=" + a.get("cpus"));
  if (!a.get("mem").empty()) sb.push_back("--mem=" + a.get("mem"));
  for (const auto& s : a.all("sbatch")) sb.push_back(s);
  if (a.flag("wait")) sb.push_back("--wait");
  // Tasks address rows by index, so each submission's tasks read their own copy: a manifest
  // edited and resubmitted while tasks of the last submission still run cannot shift their rows.
  char stamp[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  const fs::path snapshot = out / ".fleet" / ("manifest-" + std::string(stamp) + "-" + std::to_string(getpid()) + ".csv");
  sb.insert(sb.end(), {script, snapshot.string(), "--out", out.string()});
  if (!a.get("max-images").empty()) sb.insert(sb.end(), {"--max-images", a.get("max-images")});
  std::cout << "fmam fleet: " << join_command(sb) << "\n";
  if (a.flag("dry-run")) {
    std::cout << "fmam fleet: dry run: nothing written, nothing submitted\n";
    return 0;
  }
  fs::create_directories(out / ".fleet");
  atomic_write_text(snapshot.string(), fleet::manifest_csv(products));
  atomic_write_text((out / "manifest.csv").string(), fleet::manifest_csv(products));  // what gather reads
  std::cout << std::flush;
  std::vector<char*> cargv;
  for (auto& s : sb) cargv.push_back(s.data());
  cargv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) throw Error(std::string("fmam fleet submit: fork failed: ") + std::strerror(errno));
  if (pid == 0) {
    execvp("sbatch", cargv.data());
    std::fprintf(stderr,
                 "fmam fleet submit: cannot run sbatch (%s): Slurm's client commands must be on PATH "
                 "(Debian: slurm-client); --dry-run prints the command without them\n",
                 std::strerror(errno));
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
  if (rc != 0 && rc != 127)
    cli::log("sbatch exited with status " + std::to_string(rc) + (a.flag("wait") ? " (a product failed?)" : ""));
  std::cout << "fmam fleet: progress and results: fmam fleet gather " << out.string() << "\n";
  return rc;
}

}  // namespace

int cmd_fleet(int argc, char** argv) {
  const std::string sub = argc > 0 ? argv[0] : "";
  if (sub == "submit") return cmd_fleet_submit(argc - 1, argv + 1);
  if (sub == "task") return cmd_fleet_task(argc - 1, argv + 1);
  if (sub == "gather") return cmd_fleet_gather(argc - 1, argv + 1);
  if (sub.empty() || sub == "--help" || sub == "-h" || sub == "help") {
    std::cout << kFleetHelp;
    return sub.empty() ? 2 : 0;
  }
  std::cerr << "fmam fleet: unknown subcommand \"" << sub << "\"; one of submit, task, gather\n\n" << kFleetHelp;
  return 2;
}

}  // namespace fmam
