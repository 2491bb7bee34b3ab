#include "framework/locate.h"

#include <limits.h>
#include <unistd.h>

namespace fmam {

std::filesystem::path executable_dir() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  buf[n] = 0;
  return std::filesystem::path(buf).parent_path();
}

}  // namespace fmam
