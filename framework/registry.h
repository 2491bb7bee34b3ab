// The node types known to this process, filled by plugins (the built-in one and --plugin files).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "framework/node.h"

namespace fmam {

class Registry {
 public:
  static Registry& global();
  // Adds a type; a second type of the same name is an error naming both plugins.
  void add(NodeType t);
  const NodeType* find(const std::string& type) const;
  std::vector<std::string> names() const;
  // Up to three known names closest to `type` (for "did you mean").
  std::vector<std::string> closest(const std::string& type) const;

 private:
  std::map<std::string, NodeType> types_;
};

// The C entry point every plugin exports (FMAM_PLUGIN_ENTRY in plugin_entry.cpp):
//   extern "C" int fmam_register_plugin(fmam::Registry* registry, const char* plugin_name);
// It returns the number of node types added.
using PluginEntry = int (*)(Registry*, const char*);
constexpr const char* kPluginEntrySymbol = "fmam_register_plugin";
constexpr int kPluginAbiVersion = 1;

// dlopen()s a plugin and registers its nodes. Errors name the file.
int load_plugin(const std::string& path, Registry& registry = Registry::global());
// Finds and loads the built-in node plugin (libfmam_nodes.so): $FMAM_PLUGIN_PATH, then beside
// the executable, then ../lib, then the build tree's plugin/.
int load_builtin_plugin(Registry& registry = Registry::global());

size_t levenshtein(const std::string& a, const std::string& b);

}  // namespace fmam
