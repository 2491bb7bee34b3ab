#include "framework/resource_locator.h"

#include <dlfcn.h>
#include <limits.h>
#include <unistd.h>

#include <cstdlib>
#include <utility>

namespace fmam {

namespace fs = std::filesystem;

fs::path executable_dir() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  buf[n] = 0;
  return fs::path(buf).parent_path();
}

fs::path library_dir(const void* symbol) {
  Dl_info info{};
  if (!dladdr(symbol, &info) || !info.dli_fname) return {};
  return fs::path(info.dli_fname).parent_path();
}

std::optional<std::string> env_value(const char* var) {
  const char* v = std::getenv(var);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

ResourceLocator::ResourceLocator(fs::path exe_dir) : exe_dir_(std::move(exe_dir)) {}

ResourceLocator& ResourceLocator::add(const fs::path& path, std::string label) {
  places_.push_back({path, label.empty() ? path.string() : std::move(label)});
  return *this;
}

std::vector<fs::path> ResourceLocator::exe_ancestors() const {
  std::vector<fs::path> out;
  for (fs::path d = exe_dir_; !d.empty(); d = d.parent_path()) {
    out.push_back(d);
    if (d == d.parent_path()) break;  // the root is its own parent
  }
  return out;
}

ResourceLocator& ResourceLocator::add_exe_ancestors(const fs::path& rel) {
  for (const fs::path& d : exe_ancestors()) add((d / rel).lexically_normal());
  return *this;
}

fs::path ResourceLocator::nearest_exe_ancestor(const fs::path& rel, const std::function<bool(const fs::path&)>& accept) const {
  for (const fs::path& d : exe_ancestors())
    if (accept(d / rel)) return d;
  return {};
}

const ResourceLocator::Place* ResourceLocator::find(const std::function<bool(const Place&)>& accept,
                                                    std::vector<std::string>* looked) const {
  for (const Place& p : places_) {
    if (looked) looked->push_back(p.label);
    if (accept(p)) return &p;
  }
  return nullptr;
}

}  // namespace fmam
