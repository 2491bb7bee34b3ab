// Finding files that ship beside the program (the node plugin, weights, texture banks) whatever
// folder it was started from. One mechanism for every resource: an ordered list of places, each
// with the words an error message uses for it, searched first to last. Each caller chooses its
// places (an $FMAM_* override first, then folders relative to the executable or to the library
// that holds the caller); the order is the caller's contract, documented at the caller.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace fmam {

// The folder of the running executable (/proc/self/exe, symbolic links resolved); an empty path
// if it cannot be read. Callers choose their own fallback (the current folder, or none).
std::filesystem::path executable_dir();

// The folder of the shared library (or executable) whose code holds `symbol` (dladdr); empty if
// unknown. A host that is not fmam (gst-launch-1.0, python3) finds fmam's files from here.
std::filesystem::path library_dir(const void* symbol);

// $`var` when it is set and not empty.
std::optional<std::string> env_value(const char* var);

class ResourceLocator {
 public:
  struct Place {
    std::filesystem::path path;
    std::string label;  // how a not-found message names the place
  };

  // `exe_dir` is the folder the executable-relative places start from: the running program's
  // by default; tests pass a temporary folder. An empty one adds no executable-relative places.
  explicit ResourceLocator(std::filesystem::path exe_dir = executable_dir());

  const std::filesystem::path& exe_dir() const { return exe_dir_; }

  // Appends a place; its label is its path unless given.
  ResourceLocator& add(const std::filesystem::path& path, std::string label = "");
  // Appends <d>/`rel` for d = the executable's folder and each of its ancestors, nearest first:
  // "../shared/x" is then found whether the program runs in build/, build/tests/ or the repo.
  ResourceLocator& add_exe_ancestors(const std::filesystem::path& rel);

  // The executable's folder and its ancestors, nearest first, up to the root.
  std::vector<std::filesystem::path> exe_ancestors() const;
  // The nearest d of exe_ancestors() where `accept(d / rel)` holds; empty if none.
  std::filesystem::path nearest_exe_ancestor(const std::filesystem::path& rel,
                                             const std::function<bool(const std::filesystem::path&)>& accept) const;

  // The first place (in the order added) for which `accept` holds, or null. The label of every
  // place looked at, the found one included, is appended to `looked` when given.
  const Place* find(const std::function<bool(const Place&)>& accept, std::vector<std::string>* looked = nullptr) const;

  const std::vector<Place>& places() const { return places_; }

 private:
  std::filesystem::path exe_dir_;
  std::vector<Place> places_;
};

}  // namespace fmam
