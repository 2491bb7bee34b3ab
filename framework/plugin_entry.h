// Include in exactly one .cpp of a plugin, then write FMAM_PLUGIN_ENTRY(); on its own line.
// It defines the plugin's private list of node types (filled by FMAM_REGISTER_NODE) and the one
// C entry point that hands them to the runtime.
#pragma once

#include "framework/registry.h"

#define FMAM_PLUGIN_ENTRY()                                                                             \
  namespace fmam::plugin_local {                                                                        \
  __attribute__((visibility("hidden"))) std::vector<NodeType>& node_types() {                           \
    static std::vector<NodeType> types;                                                                 \
    return types;                                                                                       \
  }                                                                                                     \
  }                                                                                                     \
  extern "C" __attribute__((visibility("default"))) int fmam_register_plugin(fmam::Registry* registry,  \
                                                                             const char* plugin_name) { \
    int n = 0;                                                                                          \
    for (auto t : fmam::plugin_local::node_types()) {                                                   \
      t.plugin = plugin_name ? plugin_name : "";                                                        \
      const fmam::NodeType* had = registry->find(t.contract.type());                                    \
      if (had && had->plugin == t.plugin) continue; /* the same plugin loaded twice */                  \
      registry->add(std::move(t));                                                                      \
      ++n;                                                                                              \
    }                                                                                                   \
    return n;                                                                                           \
  }                                                                                                     \
  extern "C" __attribute__((visibility("default"))) int fmam_plugin_abi_version() { return fmam::kPluginAbiVersion; }
