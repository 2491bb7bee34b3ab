// Where the running program is, for finding resources beside it (plugins, weights, texture banks)
// whatever folder it was started from.
#pragma once

#include <filesystem>

namespace fmam {

// The folder of the running executable (/proc/self/exe, symbolic links resolved); an empty path
// if it cannot be read. Callers choose their own fallback (the current folder, or none).
std::filesystem::path executable_dir();

}  // namespace fmam
