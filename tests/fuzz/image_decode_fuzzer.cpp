// libFuzzer target: the image decode path every input image takes (framework/io.h decode_image:
// the PNG/JPEG header and completeness checks, the pixel bound, OpenCV's decoders). Any outcome
// but an image or an fmam::Error naming the input is a finding: a crash, a sanitizer report, an
// uncaught exception (libFuzzer reports it as a deadly signal), or a huge allocation.
// Build and run: tests/fuzz/run_fuzzers.sh (clang-14, libfuzzer-14-dev).
#include <cstddef>
#include <cstdint>
#include <string>

#include <opencv2/imgcodecs.hpp>

#include "framework/error.h"
#include "framework/io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  for (int flags : {cv::IMREAD_COLOR, cv::IMREAD_GRAYSCALE}) {
    try {
      // A 4-megapixel bound, so that one input cannot ask for gigabytes.
      cv::Mat m = fmam::decode_image(bytes, "fuzz input", flags, 4 << 20);
      if (m.empty() || (long long)m.cols * m.rows > (4 << 20)) __builtin_trap();  // decode_image promised otherwise
    } catch (const fmam::Error&) {
    }
  }
  return 0;
}
