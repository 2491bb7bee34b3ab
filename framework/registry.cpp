// The node registry and the plugin loader.
#include "framework/registry.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <filesystem>

#include "framework/resource_locator.h"

namespace fmam {

namespace fs = std::filesystem;

Registry& Registry::global() {
  static Registry* r = new Registry;  // never destroyed: plugin code may outlive statics
  return *r;
}

void Registry::add(NodeType t) {
  const std::string name = t.contract.type();
  auto it = types_.find(name);
  if (it != types_.end())
    throw Error("node type \"" + name + "\" from " + t.plugin + " is already registered by " + it->second.plugin);
  types_.emplace(name, std::move(t));
}

const NodeType* Registry::find(const std::string& type) const {
  auto it = types_.find(type);
  return it == types_.end() ? nullptr : &it->second;
}

std::vector<std::string> Registry::names() const {
  std::vector<std::string> n;
  for (const auto& [k, v] : types_) n.push_back(k);
  return n;
}

size_t levenshtein(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (std::tolower(a[i - 1]) == std::tolower(b[j - 1]) ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::vector<std::string> Registry::closest(const std::string& type) const {
  std::vector<std::pair<size_t, std::string>> d;
  for (const auto& [k, v] : types_) d.emplace_back(levenshtein(type, k), k);
  std::sort(d.begin(), d.end());
  std::vector<std::string> out;
  for (const auto& [dist, k] : d)
    if (out.size() < 3 && dist <= std::max<size_t>(2, k.size() / 3)) out.push_back(k);
  return out;
}

int load_plugin(const std::string& path, Registry& registry) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(path + ": plugin file does not exist");
  std::string canonical = fs::canonical(path, ec).string();
  if (ec) canonical = path;
  // RTLD_LOCAL: two plugins may define helpers of the same name without clashing.
  void* h = dlopen(canonical.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) throw Error(path + ": cannot load plugin: " + dlerror());
  auto abi = reinterpret_cast<int (*)()>(dlsym(h, "fmam_plugin_abi_version"));
  auto entry = reinterpret_cast<PluginEntry>(dlsym(h, kPluginEntrySymbol));
  if (!entry || !abi)
    throw Error(path + ": not an fmam plugin (no " + std::string(kPluginEntrySymbol) + "; define it with FMAM_PLUGIN_ENTRY())");
  if (abi() != kPluginAbiVersion)
    throw Error(path + ": plugin ABI version " + std::to_string(abi()) + ", this fmam expects " +
                std::to_string(kPluginAbiVersion) + "; rebuild the plugin");
  return entry(&registry, canonical.c_str());
}

// The executable's folder, or the current one if /proc/self/exe cannot be read.
static fs::path self_dir() {
  fs::path d = executable_dir();
  return d.empty() ? fs::current_path() : d;
}

// Where the built-in plugin may be, in search order: $FMAM_PLUGIN_PATH, beside the executable,
// beside the runtime library itself (a host that is not fmam, gst-launch-1.0 or python3, finds
// the plugin next to libfmam_core.so, installed in lib/, or in the build tree: framework/ ->
// plugin/), the executable's plugin/, ../plugin/ and ../lib/, and the build tree's plugin/.
static ResourceLocator builtin_plugin_places(const char* name) {
  ResourceLocator loc(self_dir());
  const fs::path& d = loc.exe_dir();
  // Set but empty still counts (the current folder), as it always has.
  if (const char* env = std::getenv("FMAM_PLUGIN_PATH")) loc.add(fs::path(env) / name);
  loc.add(d / name);
  if (const fs::path core_dir = library_dir(reinterpret_cast<void*>(&load_builtin_plugin)); !core_dir.empty()) {
    loc.add(core_dir / name);
    loc.add(core_dir.parent_path() / "plugin" / name);
  }
  loc.add(d / "plugin" / name);
  loc.add(d.parent_path() / "plugin" / name);
  loc.add(d.parent_path() / "lib" / name);
#ifdef FMAM_BUILD_PLUGIN_DIR
  loc.add(fs::path(FMAM_BUILD_PLUGIN_DIR) / name);
#endif
  return loc;
}

int load_builtin_plugin(Registry& registry) {
  const char* name = "libfmam_nodes.so";
  const ResourceLocator loc = builtin_plugin_places(name);
  const auto exists = [](const ResourceLocator::Place& p) {
    std::error_code ec;
    return fs::exists(p.path, ec);
  };
  if (const ResourceLocator::Place* found = loc.find(exists)) return load_plugin(found->path.string(), registry);
  std::string where;
  for (const auto& p : loc.places()) where += "\n  " + p.label;
  throw Error(std::string("cannot find the built-in node plugin ") + name + "; looked in:" + where +
              "\nset FMAM_PLUGIN_PATH to the folder that holds it");
}

}  // namespace fmam
