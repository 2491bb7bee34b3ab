#include "framework/atomic_file.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "framework/error.h"

namespace fmam {

namespace fs = std::filesystem;

namespace {

std::string temp_name(const std::string& path) {
  fs::path p(path);
  // Unique per process and per call (threads may write the same path at once); keep the
  // extension: OpenCV picks the encoder from it.
  static std::atomic<unsigned long long> counter{0};
  return (p.parent_path() / ("." + p.stem().string() + ".tmp" + std::to_string(getpid()) + "_" + std::to_string(++counter) +
                             p.extension().string()))
      .string();
}

void ensure_parent(const std::string& path) {
  fs::path parent = fs::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec) throw Error(path + ": cannot create folder " + parent.string() + ": " + ec.message());
}

// Removes ".<stem>.tmp<pid>_<n><ext>" beside `path` whose process no longer runs: what a write
// killed by SIGKILL (or a power cut) left behind. Temporaries of live processes are theirs.
void remove_stale_temps(const std::string& path) {
  const fs::path p(path);
  const std::string head = "." + p.stem().string() + ".tmp", ext = p.extension().string();
  std::error_code ec;
  fs::directory_iterator it(p.parent_path().empty() ? fs::path(".") : p.parent_path(), ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= head.size() + ext.size() || name.compare(0, head.size(), head) != 0 ||
        name.compare(name.size() - ext.size(), ext.size(), ext) != 0)
      continue;
    const std::string mid = name.substr(head.size(), name.size() - head.size() - ext.size());  // "<pid>_<n>"
    const size_t us = mid.find('_');
    if (us == 0 || us == std::string::npos || mid.find_first_not_of("0123456789_") != std::string::npos) continue;
    const long pid = std::atol(mid.substr(0, us).c_str());
    if (pid <= 0 || pid == long(getpid())) continue;
    if (kill(pid_t(pid), 0) == -1 && errno == ESRCH) {
      std::error_code rm;
      fs::remove(it->path(), rm);
    }
  }
}

}  // namespace

void atomic_write_with(const std::string& path, const std::function<void(const std::string& tmp)>& fill) {
  ensure_parent(path);
  const std::string tmp = temp_name(path);
  try {
    fill(tmp);
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot rename the finished file into place: " + ec.message());
  }
}

void atomic_write_stream(const std::string& path, const std::function<void(std::ostream& out)>& write) {
  remove_stale_temps(path);
  atomic_write_with(path, [&](const std::string& tmp) {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) throw Error(path + ": cannot write (" + tmp + ")");
    write(f);
    f.flush();
    if (!f) throw Error(path + ": write failed (disk full?)");
  });
}

void atomic_write_bytes(const std::string& path, const char* data, size_t size) {
  atomic_write_stream(path, [&](std::ostream& out) { out.write(data, std::streamsize(size)); });
}

void atomic_write_text(const std::string& path, const std::string& text) { atomic_write_bytes(path, text.data(), text.size()); }

}  // namespace fmam
