// Atomic file writes: write to a temporary name in the same folder, then rename, so no reader ever
// sees half a file. The one implementation of it in fmam; torch-free, so that libfmam_eval (the
// report) links it without the runtime (library fmam_files). framework/io.h includes it, and adds
// atomic_write_image.
#pragma once

#include <cstddef>
#include <functional>
#include <iosfwd>
#include <string>

namespace fmam {

// Temporary files of atomic writes that a killed process left behind (".<stem>.tmp<pid>_<n><ext>"
// beside `path`, from a process that no longer runs) are removed by the next write of `path`.
// Creates the parent folders; throws Error naming `path` on failure.
void atomic_write_text(const std::string& path, const std::string& text);
// The same for a buffer.
void atomic_write_bytes(const std::string& path, const char* data, size_t size);
// The same for a writer that streams into the file (model and weight files: the archive goes to disk
// as it is made, with no copy of it in memory). `write` reports its own failures by throwing;
// a stream left bad afterwards (disk full) throws Error naming `path`.
void atomic_write_stream(const std::string& path, const std::function<void(std::ostream& out)>& write);

// The mechanism under all three: creates the parent folders, calls `fill` with a fresh temporary path
// beside `path` (".<stem>.tmp<pid>_<n><ext>": the same extension, as OpenCV picks its encoder by
// it), then renames that over `path`. If `fill` throws, or the rename fails, the temporary file is
// removed and `path` is left as it was. Does not remove stale temporaries: a writer of many files
// into one folder (the map writer) would scan the folder on every write.
void atomic_write_with(const std::string& path, const std::function<void(const std::string& tmp)>& fill);

}  // namespace fmam
