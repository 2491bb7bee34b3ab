#include "api/plugins.h"

#include <filesystem>
#include <mutex>
#include <set>

#include "framework/registry.h"

namespace fmam {

void ensure_plugins(const std::vector<std::string>& extra) {
  static std::mutex mutex;
  static bool builtin = false;
  static std::set<std::string> loaded;
  std::lock_guard<std::mutex> lock(mutex);
  if (!builtin) {
    load_builtin_plugin();
    builtin = true;
  }
  for (const auto& p : extra) {
    std::error_code ec;
    std::string key = std::filesystem::weakly_canonical(p, ec).string();
    if (ec || key.empty()) key = p;
    if (loaded.count(key)) continue;
    load_plugin(p);
    loaded.insert(key);
  }
}

}  // namespace fmam
