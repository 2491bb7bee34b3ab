#include "framework/png_fast_decode.h"

#include <libdeflate.h>
#include <opencv2/imgcodecs.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

namespace fmam {

namespace {

uint32_t be32(const unsigned char* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

struct Layout {
  int width = 0, height = 0;
  int channels = 0;  // 1 (grey) or 3 (RGB)
  std::string idat;  // the IDAT chunks' data, concatenated: one zlib stream
};

// IHDR fields the fast path covers, and the zlib stream. False where it does not apply.
bool read_layout(const std::string& png, Layout* out) {
  const auto* u = reinterpret_cast<const unsigned char*>(png.data());
  const size_t n = png.size();
  if (n < 8 + 25 || std::memcmp(u, "\x89PNG\r\n\x1a\n", 8) != 0 || std::memcmp(u + 12, "IHDR", 4) != 0 || be32(u + 8) != 13)
    return false;
  const uint32_t w = be32(u + 16), h = be32(u + 20);
  const int depth = u[24], colour = u[25], compression = u[26], filter = u[27], interlace = u[28];
  // The caller has bounded the pixel count (ImageSource's max_pixels); this bound only keeps a
  // direct call from sizing a buffer off a forged header. Larger images go to OpenCV.
  if (w == 0 || h == 0 || uint64_t(w) * h > (uint64_t(1) << 28)) return false;
  if (depth != 8 || (colour != 0 && colour != 2) || compression != 0 || filter != 0 || interlace != 0) return false;
  out->width = int(w);
  out->height = int(h);
  out->channels = colour == 2 ? 3 : 1;
  out->idat.clear();
  size_t i = 8;
  bool seen_idat = false, idat_ended = false;
  while (i + 12 <= n) {
    const uint32_t len = be32(u + i);
    if (len > n - i - 12) return false;
    const char* type = png.data() + i + 4;
    if (std::memcmp(type, "IDAT", 4) == 0) {
      if (idat_ended) return false;  // IDAT chunks must be consecutive
      seen_idat = true;
      out->idat.append(png, i + 8, len);
    } else {
      if (seen_idat) idat_ended = true;
      // Transparency, a palette or EXIF (its orientation) change what OpenCV makes of the
      // pixels: leave those to it.
      for (const char* other : {"tRNS", "PLTE", "eXIf"})
        if (std::memcmp(type, other, 4) == 0) return false;
      if (std::memcmp(type, "IEND", 4) == 0) return seen_idat;
    }
    i += size_t(len) + 12;
  }
  return false;
}

uint8_t paeth(int a, int b, int c) {
  const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  return uint8_t(pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
}

// Undoes one row's filter (PNG spec 9.2) from `in` (the filtered bytes) into `out`, `prev` being
// the row above as already decoded (zeros for the first). Pixels are `bpp` bytes; `order` says
// which input byte of a pixel becomes output byte k (RGB -> BGR). Each predictor reads the same
// channel of its neighbours, so reordering the channels before or after unfiltering gives the
// same pixels: the unfiltered bytes go straight to OpenCV's order.
template <int bpp, int type>
void unfilter_row(const uint8_t* in, const uint8_t* prev, uint8_t* out, int pixels, const int (&order)[3]) {
  for (int k = 0; k < bpp; ++k) {  // the first pixel: no left neighbour (a = c = 0)
    const int s = in[order[k]], b = prev[k];
    out[k] = uint8_t(type == 2 || type == 4 ? s + b : type == 3 ? s + (b >> 1) : s);
  }
  for (int p = 1; p < pixels; ++p) {
    const uint8_t* i = in + p * bpp;
    uint8_t* o = out + p * bpp;
    const uint8_t* up = prev + p * bpp;
    for (int k = 0; k < bpp; ++k) {
      const int s = i[order[k]], a = o[k - bpp], b = up[k], c = up[k - bpp];
      if constexpr (type == 0) o[k] = uint8_t(s);
      if constexpr (type == 1) o[k] = uint8_t(s + a);
      if constexpr (type == 2) o[k] = uint8_t(s + b);
      if constexpr (type == 3) o[k] = uint8_t(s + ((a + b) >> 1));
      if constexpr (type == 4) o[k] = uint8_t(s + paeth(a, b, c));
    }
  }
}

template <int bpp>
bool unfilter_row(int type, const uint8_t* in, const uint8_t* prev, uint8_t* out, int pixels, const int (&order)[3]) {
  switch (type) {
    case 0: unfilter_row<bpp, 0>(in, prev, out, pixels, order); return true;
    case 1: unfilter_row<bpp, 1>(in, prev, out, pixels, order); return true;
    case 2: unfilter_row<bpp, 2>(in, prev, out, pixels, order); return true;
    case 3: unfilter_row<bpp, 3>(in, prev, out, pixels, order); return true;
    case 4: unfilter_row<bpp, 4>(in, prev, out, pixels, order); return true;
    default: return false;  // not a PNG filter type: libpng's error, via OpenCV
  }
}

struct DecompressorDeleter {
  void operator()(libdeflate_decompressor* d) const { libdeflate_free_decompressor(d); }
};

// One per thread (a decompressor holds state while it runs); made on first use.
libdeflate_decompressor* thread_decompressor() {
  thread_local std::unique_ptr<libdeflate_decompressor, DecompressorDeleter> d(libdeflate_alloc_decompressor());
  return d.get();
}

// Per-thread buffers, reused from image to image so that their pages stay mapped (a fresh page
// costs a fault); one beyond kKeptBytes (a very large image) is given back after use.
constexpr size_t kKeptBytes = size_t(32) << 20;

template <typename Buffer>
void give_back_if_large(Buffer& b) {
  if (b.capacity() > kKeptBytes) Buffer().swap(b);
}

cv::Mat decode_rows(const Layout& layout, const std::vector<uint8_t>& raw) {
  const size_t row_bytes = size_t(layout.width) * layout.channels;
  cv::Mat out(layout.height, layout.width, layout.channels == 3 ? CV_8UC3 : CV_8UC1);
  const std::vector<uint8_t> zeros(row_bytes, 0);
  static constexpr int kBgr[3] = {2, 1, 0}, kSame[3] = {0, 1, 2};
  for (int y = 0; y < layout.height; ++y) {
    const uint8_t* row = raw.data() + size_t(y) * (row_bytes + 1);
    const uint8_t* prev = y == 0 ? zeros.data() : out.ptr<uint8_t>(y - 1);
    const bool ok = layout.channels == 3 ? unfilter_row<3>(row[0], row + 1, prev, out.ptr<uint8_t>(y), layout.width, kBgr)
                                         : unfilter_row<1>(row[0], row + 1, prev, out.ptr<uint8_t>(y), layout.width, kSame);
    if (!ok) return {};
  }
  return out;
}

}  // namespace

cv::Mat decode_png_fast(const std::string& png, int imread_flags) {
  if (imread_flags != cv::IMREAD_COLOR && imread_flags != cv::IMREAD_GRAYSCALE) return {};
  thread_local Layout layout;
  thread_local std::vector<uint8_t> raw;
  struct GiveBack {
    ~GiveBack() {
      give_back_if_large(layout.idat);
      give_back_if_large(raw);
    }
  } give_back;
  if (!read_layout(png, &layout)) return {};
  const bool colour_out = imread_flags == cv::IMREAD_COLOR;
  // RGB to grey is libpng's own weighted conversion: leave it to OpenCV.
  if (layout.channels == 3 && !colour_out) return {};
  libdeflate_decompressor* d = thread_decompressor();
  if (d == nullptr) return {};

  const size_t raw_size = size_t(layout.height) * (size_t(layout.width) * layout.channels + 1);  // + a filter byte a row
  raw.resize(raw_size);
  size_t got = 0;
  // Checks the zlib header and adler32; a stream that is short, or longer than the image, fails.
  if (libdeflate_zlib_decompress(d, layout.idat.data(), layout.idat.size(), raw.data(), raw_size, &got) != LIBDEFLATE_SUCCESS ||
      got != raw_size)
    return {};
  cv::Mat out = decode_rows(layout, raw);
  if (!out.empty() && layout.channels == 1 && colour_out) {
    cv::Mat bgr;
    cv::merge(std::vector<cv::Mat>{out, out, out}, bgr);  // libpng's gray_to_rgb: R = G = B
    return bgr;
  }
  return out;
}

}  // namespace fmam
