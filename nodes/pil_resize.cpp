#include "nodes/pil_resize.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "framework/error.h"

namespace fmam {

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's PRECISION_BITS for 8-bit images

// Per output pixel: the first source pixel, how many follow, and their fixed-point weights.
struct Taps {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weight;  // [out * ksize]
};

double triangle(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for the bilinear filter (support 1).
Taps precompute(int in_size, int out_size) {
  const double scale = double(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 1.0 * filterscale;
  Taps t;
  t.ksize = int(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weight.assign(size_t(out_size) * t.ksize, 0);
  std::vector<double> k(t.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = int(center - support + 0.5);  // C truncation, as Pillow
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) ww += k[x] = triangle((x + xmin - center + 0.5) * ss);
    for (int x = 0; x < xmax; ++x) {
      const double w = ww != 0.0 ? k[x] / ww : k[x];
      t.weight[size_t(xx) * t.ksize + x] =
          w < 0 ? int32_t(-0.5 + w * (1 << kPrecisionBits)) : int32_t(0.5 + w * (1 << kPrecisionBits));
    }
    t.first[xx] = xmin;
    t.count[xx] = xmax;
  }
  return t;
}

uint8_t clip8(int32_t acc) { return uint8_t(std::clamp(acc >> kPrecisionBits, 0, 255)); }

// One row, `C` channels known at compile time (the loops over channels unroll). Where the whole
// window lies inside the row, every pixel runs ksize taps: the weights past `count` are zero
// (precompute() zero-fills them), so adding their products changes nothing, and the loop length
// is the same for all pixels. Only the last pixels, whose window would pass the row's end, run
// `count` taps.
template <int C>
void horizontal_row(const uint8_t* in, uint8_t* out, const Taps& t, int in_w, int out_w) {
  for (int x = 0; x < out_w; ++x) {
    const int32_t* k = &t.weight[size_t(x) * t.ksize];
    const uint8_t* p = in + size_t(t.first[x]) * C;
    const int taps = t.first[x] + t.ksize <= in_w ? t.ksize : t.count[x];
    int32_t acc[C];
    for (int ch = 0; ch < C; ++ch) acc[ch] = 1 << (kPrecisionBits - 1);
    for (int j = 0; j < taps; ++j)
      for (int ch = 0; ch < C; ++ch) acc[ch] += int32_t(p[j * C + ch]) * k[j];
    for (int ch = 0; ch < C; ++ch) out[x * C + ch] = clip8(acc[ch]);
  }
}

void horizontal_row_any(const uint8_t* in, uint8_t* out, const Taps& t, int c, int out_w) {
  for (int x = 0; x < out_w; ++x) {
    const int32_t* k = &t.weight[size_t(x) * t.ksize];
    const uint8_t* p = in + size_t(t.first[x]) * c;
    for (int ch = 0; ch < c; ++ch) {
      int32_t acc = 1 << (kPrecisionBits - 1);
      for (int j = 0; j < t.count[x]; ++j) acc += int32_t(p[j * c + ch]) * k[j];
      out[x * c + ch] = clip8(acc);
    }
  }
}

cv::Mat horizontal(const cv::Mat& src, int out_w) {
  const Taps t = precompute(src.cols, out_w);
  const int c = src.channels();
  cv::Mat dst(src.rows, out_w, src.type());
  for (int y = 0; y < src.rows; ++y) {
    const uint8_t* in = src.ptr<uint8_t>(y);
    uint8_t* out = dst.ptr<uint8_t>(y);
    if (c == 3)
      horizontal_row<3>(in, out, t, src.cols, out_w);
    else if (c == 1)
      horizontal_row<1>(in, out, t, src.cols, out_w);
    else
      horizontal_row_any(in, out, t, c, out_w);
  }
  return dst;
}

cv::Mat vertical(const cv::Mat& src, int out_h) {
  const Taps t = precompute(src.rows, out_h);
  const int row = src.cols * src.channels();
  cv::Mat dst(out_h, src.cols, src.type());
  std::vector<int32_t> acc(row);
  for (int y = 0; y < out_h; ++y) {
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    const int32_t* k = &t.weight[size_t(y) * t.ksize];
    for (int j = 0; j < t.count[y]; ++j) {
      const uint8_t* in = src.ptr<uint8_t>(t.first[y] + j);
      for (int i = 0; i < row; ++i) acc[i] += int32_t(in[i]) * k[j];
    }
    uint8_t* out = dst.ptr<uint8_t>(y);
    for (int i = 0; i < row; ++i) out[i] = clip8(acc[i]);
  }
  return dst;
}

}  // namespace

cv::Mat resize_like_pil_bilinear(const cv::Mat& src, cv::Size size) {
  FMAM_CHECK(src.depth() == CV_8U) << "pil_bilinear resize takes 8-bit images, got OpenCV depth " << src.depth();
  FMAM_CHECK(size.width > 0 && size.height > 0 && !src.empty()) << "pil_bilinear resize: empty image or size";
  cv::Mat m = src.isContinuous() ? src : src.clone();
  if (m.cols != size.width) m = horizontal(m, size.width);
  if (m.rows != size.height) m = vertical(m, size.height);
  return m;
}

}  // namespace fmam
