// Node plugins, loaded once per process whoever asks (the runner, a Pipeline, the GStreamer
// element, the Python module): loading a plugin twice would register its node types twice.
#pragma once

#include <string>
#include <vector>

namespace fmam {

// Loads the built-in node plugin, then each of `extra` not loaded yet. Thread-safe.
void ensure_plugins(const std::vector<std::string>& extra = {});

}  // namespace fmam
