// CPU time of Resize's filters on one 512x512 image (docs/PERFORMANCE.md):
//   g++ -O2 -march=native -I. -I/usr/include/opencv4 scripts/time_resize.cpp nodes/pil_resize.cpp \
//       -o /tmp/time_resize -lopencv_core -lopencv_imgproc -lopencv_imgcodecs && /tmp/time_resize IMAGE
#include <sys/resource.h>

#include <cstdio>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "nodes/pil_resize.h"

static double cpu_seconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec * 1e-6;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: time_resize IMAGE\n");
    return 2;
  }
  const cv::Mat img = cv::imread(argv[1]);
  if (img.empty()) {
    std::fprintf(stderr, "%s: cannot read\n", argv[1]);
    return 1;
  }
  cv::setNumThreads(1);
  const int n = 300;
  cv::Mat out;
  const double t0 = cpu_seconds();
  for (int i = 0; i < n; ++i) out = fmam::resize_like_pil_bilinear(img, {256, 256});
  const double t1 = cpu_seconds();
  for (int i = 0; i < n; ++i) cv::resize(img, out, {256, 256}, 0, 0, cv::INTER_AREA);
  const double t2 = cpu_seconds();
  std::printf("%dx%d -> 256x256, CPU time per image: pil_bilinear %.3f ms, area %.3f ms\n", img.cols, img.rows,
              (t1 - t0) / n * 1e3, (t2 - t1) / n * 1e3);
  return 0;
}
