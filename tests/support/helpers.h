// Helpers the tests share: scratch folders, reading files, running the built `fmam` binary, and
// random float maps. Header-only (the eval tests also build alone, without the plugin), in
// fmam::test. Test files bring the names in with using-declarations.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>

#include <opencv2/core.hpp>

namespace fmam::test {

namespace fs = std::filesystem;

// The whole file as bytes; "" if it cannot be read.
inline std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The folders process_temp_dir() made, removed when the test process exits (they hold models
// of ~60 MB each; left behind, repeated test runs filled a 250 GB disk). FMAM_KEEP_TEST_TMP=1
// keeps them for a look after a failure.
struct ProcessTempDirs {
  std::mutex mu;
  std::map<std::string, fs::path> made;
  ~ProcessTempDirs() {
    if (std::getenv("FMAM_KEEP_TEST_TMP")) return;
    for (const auto& [name, p] : made) {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  }
};
inline ProcessTempDirs& process_temp_dirs() {
  static ProcessTempDirs dirs;
  return dirs;
}

// <tmp>/<name>_<pid>: one folder per test binary run, made empty on its first use, removed at exit.
inline fs::path process_temp_dir(const std::string& name) {
  ProcessTempDirs& d = process_temp_dirs();
  std::lock_guard<std::mutex> lock(d.mu);
  auto it = d.made.find(name);
  if (it != d.made.end()) return it->second;
  fs::path p = fs::temp_directory_path() / (name + "_" + std::to_string(getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return d.made[name] = p;
}

// A fresh folder, removed with everything in it when the TempDir goes.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& prefix = "fmam_test") {
    static std::atomic<int> n{0};
    path = fs::temp_directory_path() / (prefix + "_" + std::to_string(getpid()) + "_" + std::to_string(n++));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
  std::string operator/(const std::string& name) const { return file(name); }
};

// What the built `fmam` did: exit code (-1: killed by a signal, i.e. a crash) and its output.
struct CliResult {
  int rc;
  std::string out, err;
};

// The shell line that runs the built fmam with `args` from the source folder, stdout to `out` and
// stderr to `err`. `prefix` goes just before the binary: "exec " (the shell becomes fmam, so that
// a signal sent to the child reaches fmam) or environment settings ("VAR=1 ", "env -u VAR ").
inline std::string fmam_command(const std::string& args, const fs::path& out, const fs::path& err,
                                const std::string& prefix = "") {
  return std::string("cd ") + FMAM_SOURCE_DIR + " && " + prefix + FMAM_BINARY_DIR + "/apps/fmam " + args + " >" + out.string() +
         " 2>" + err.string();
}

// Runs the built fmam with `args` from the source folder; stdout and stderr are captured in files
// "out<n>" and "err<n>" under `dir` (kept, for a look after a failure).
inline CliResult run_fmam(const std::string& args, const fs::path& dir, const std::string& prefix = "") {
  static std::atomic<int> n{0};
  const int k = n++;
  const fs::path out = dir / ("out" + std::to_string(k)), err = dir / ("err" + std::to_string(k));
  const int status = std::system(fmam_command(args, out, err, prefix).c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
}

// An h x w float map, uniform in [lo, hi), the same for the same seed.
inline cv::Mat RandomMap(int h, int w, uint64_t seed, float lo = 0.0f, float hi = 1.0f) {
  cv::Mat m(h, w, CV_32FC1);
  cv::RNG rng(seed);
  rng.fill(m, cv::RNG::UNIFORM, lo, hi);
  return m;
}

}  // namespace fmam::test
