// The libdeflate PNG fast path against OpenCV's decoder (libpng), the independent reference:
// bit-identical pixels on every row filter, odd sizes, grey and RGB, and on the real datasets;
// an empty result (OpenCV decodes instead) wherever it does not apply or meets something wrong.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "framework/io.h"
#include "framework/png_fast_decode.h"

namespace fmam {
namespace {

namespace fs = std::filesystem;

void put32(std::string& s, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) s += char((v >> shift) & 0xff);
}

std::string chunk(const std::string& type, const std::string& data) {
  std::string c;
  put32(c, uint32_t(data.size()));
  const std::string body = type + data;
  c += body;
  put32(c, uint32_t(crc32(0, reinterpret_cast<const Bytef*>(body.data()), uInt(body.size()))));
  return c;
}

int paeth(int a, int b, int c) {
  const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

struct PngSpec {
  int depth = 8, colour = 2, interlace = 0;
  std::string extra_chunks;  // inserted before IDAT
  int bad_filter_row = -1;   // this row gets filter byte 5 (not a PNG filter)
  size_t cut_stream = 0;     // drop this many bytes off the zlib stream's end
};

// A PNG of `img` (8-bit, 1 or 3 channels, RGB order in the file) whose row y uses filter
// y % 5: None, Sub, Up, Average, Paeth, so that every filter meets every position.
std::string encode(const cv::Mat& img, const PngSpec& spec = {}) {
  const int c = img.channels(), row = img.cols * c;
  std::string raw;
  for (int y = 0; y < img.rows; ++y) {
    const int type = y == spec.bad_filter_row ? 5 : y % 5;
    raw += char(type);
    const uint8_t* cur = img.ptr<uint8_t>(y);
    const uint8_t* up = y > 0 ? img.ptr<uint8_t>(y - 1) : nullptr;
    for (int x = 0; x < row; ++x) {
      const int a = x >= c ? cur[x - c] : 0, b = up ? up[x] : 0, cc = up && x >= c ? up[x - c] : 0;
      const int pred = type == 1 ? a : type == 2 ? b : type == 3 ? (a + b) / 2 : type == 4 ? paeth(a, b, cc) : 0;
      raw += char(uint8_t(cur[x] - pred));
    }
  }
  uLongf n = compressBound(uLong(raw.size()));
  std::string z(n, '\0');
  compress2(reinterpret_cast<Bytef*>(z.data()), &n, reinterpret_cast<const Bytef*>(raw.data()), uLong(raw.size()), 6);
  z.resize(n - spec.cut_stream);
  std::string ihdr;
  put32(ihdr, uint32_t(img.cols));
  put32(ihdr, uint32_t(img.rows));
  ihdr += char(spec.depth);
  ihdr += char(spec.colour);
  ihdr += std::string("\0\0", 2);
  ihdr += char(spec.interlace);
  // Two IDAT chunks: a reader must join them into one stream.
  const size_t half = z.size() / 2;
  return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", ihdr) + spec.extra_chunks + chunk("IDAT", z.substr(0, half)) +
         chunk("IDAT", z.substr(half)) + chunk("IEND", "");
}

// RGB in the file is BGR in OpenCV: encode() writes the Mat's channel order as is.
cv::Mat test_image(int w, int h, int channels, uint32_t seed) {
  cv::Mat m(h, w, CV_8UC(channels));
  std::mt19937 rng(seed);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w * channels; ++x)  // smooth ramps plus noise: every predictor branch
      m.ptr<uint8_t>(y)[x] = uint8_t((x * 7 + y * 13) / 3 + (rng() % 40));
  return m;
}

cv::Mat opencv_decode(const std::string& png, int flags) {
  return cv::imdecode(cv::Mat(1, int(png.size()), CV_8U, const_cast<char*>(png.data())), flags);
}

double max_diff(const cv::Mat& a, const cv::Mat& b) {
  if (a.size() != b.size() || a.type() != b.type()) return 1e9;
  return cv::norm(a, b, cv::NORM_INF);
}

TEST(PngFastDecodeTest, EveryRowFilterAndSizeGivesOpenCVsPixels) {
  for (const cv::Size size : {cv::Size(1, 1), cv::Size(2, 7), cv::Size(7, 3), cv::Size(33, 17), cv::Size(256, 255)}) {
    for (int channels : {1, 3}) {
      const cv::Mat img = test_image(size.width, size.height, channels, uint32_t(size.area() * channels));
      PngSpec spec;
      spec.colour = channels == 3 ? 2 : 0;
      const std::string png = encode(img, spec);
      for (int flags : {cv::IMREAD_COLOR, cv::IMREAD_GRAYSCALE}) {
        if (channels == 3 && flags == cv::IMREAD_GRAYSCALE) continue;  // libpng's rgb_to_gray: OpenCV's
        const cv::Mat fast = decode_png_fast(png, flags);
        ASSERT_FALSE(fast.empty()) << size << " channels " << channels << " flags " << flags;
        const cv::Mat ref = opencv_decode(png, flags);
        EXPECT_EQ(max_diff(fast, ref), 0) << size << " channels " << channels << " flags " << flags;
      }
    }
  }
}

TEST(PngFastDecodeTest, LeavesToOpenCVWhatItDoesNotCover) {
  const cv::Mat rgb = test_image(9, 6, 3, 1), grey = test_image(9, 6, 1, 2);
  const std::string trns = chunk("tRNS", std::string("\0\x10", 2));  // grey sample 16 is transparent
  struct Case {
    const char* what;
    std::string png;
    int flags;
  };
  PngSpec interlaced, grey_spec, with_trns, with_exif;
  interlaced.interlace = 1;
  grey_spec.colour = 0;
  with_trns.colour = 0;
  with_trns.extra_chunks = trns;
  with_exif.extra_chunks = chunk("eXIf", "MM\0*");
  const Case cases[] = {
      {"RGB read as grey (libpng's weighted conversion)", encode(rgb), cv::IMREAD_GRAYSCALE},
      {"IMREAD_UNCHANGED", encode(rgb), cv::IMREAD_UNCHANGED},
      {"interlaced", encode(rgb, interlaced), cv::IMREAD_COLOR},
      {"transparency chunk", encode(grey, with_trns), cv::IMREAD_COLOR},
      {"EXIF chunk (orientation)", encode(rgb, with_exif), cv::IMREAD_COLOR},
  };
  for (const Case& c : cases) EXPECT_TRUE(decode_png_fast(c.png, c.flags).empty()) << c.what;
  cv::Mat rgba(6, 9, CV_8UC4, cv::Scalar(1, 2, 3, 4));
  PngSpec rgba_spec;
  rgba_spec.colour = 6;
  EXPECT_TRUE(decode_png_fast(encode(rgba, rgba_spec), cv::IMREAD_COLOR).empty()) << "RGBA";
  const cv::Mat sixteen = cv::Mat(6, 54, CV_8UC1, cv::Scalar(7)).reshape(6);  // 16-bit RGB: 6 bytes a pixel
  PngSpec sixteen_spec;
  sixteen_spec.depth = 16;
  EXPECT_TRUE(decode_png_fast(encode(sixteen, sixteen_spec), cv::IMREAD_COLOR).empty()) << "16-bit";
  EXPECT_TRUE(decode_png_fast("not a png", cv::IMREAD_COLOR).empty());
  std::string huge = encode(grey, grey_spec);  // a forged header: 65536 x 65536 pixels
  huge.replace(16, 8, std::string("\0\x01\0\0\0\x01\0\0", 8));
  EXPECT_TRUE(decode_png_fast(huge, cv::IMREAD_GRAYSCALE).empty()) << "header beyond the size bound";
  std::string no_signature = encode(grey, grey_spec);
  no_signature[1] = 'Q';
  EXPECT_TRUE(decode_png_fast(no_signature, cv::IMREAD_GRAYSCALE).empty()) << "no PNG signature";
}

TEST(PngFastDecodeTest, DamageInsideTheStreamFallsBackToOpenCVsError) {
  const cv::Mat rgb = test_image(17, 11, 3, 3);
  PngSpec bad_filter, cut;
  bad_filter.bad_filter_row = 4;
  cut.cut_stream = 6;  // the adler32 and more: CRCs still match, the stream ends early
  for (const PngSpec& spec : {bad_filter, cut}) {
    const std::string png = encode(rgb, spec);
    EXPECT_TRUE(decode_png_fast(png, cv::IMREAD_COLOR).empty());
    // decode_image then hands it to OpenCV: an error naming the file, or OpenCV's own pixels.
    try {
      const cv::Mat m = decode_image(png, "damaged.png", cv::IMREAD_COLOR, 1 << 20);
      EXPECT_EQ(max_diff(m, opencv_decode(png, cv::IMREAD_COLOR)), 0);
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("damaged.png"), std::string::npos) << e.what();
    }
  }
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The images fmam is benchmarked and tested on: RGB photographs and grey masks, as written by
// the datasets' own tools. Each must take the fast path and give OpenCV's pixels.
TEST(PngFastDecodeTest, RealDatasetImagesGiveOpenCVsPixels) {
  const fs::path shared = fs::path(FMAM_SOURCE_DIR) / ".." / "shared" / "data";
  struct Folder {
    const char* path;
    int flags;
  };
  const Folder folders[] = {{"mvtec_ad/bottle/test/broken_large", cv::IMREAD_COLOR},
                            {"mvtec_ad/bottle/train/good", cv::IMREAD_COLOR},
                            {"mpdd/metal_plate/test/defect", cv::IMREAD_COLOR},
                            {"mvtec_ad/bottle/ground_truth/broken_large", cv::IMREAD_GRAYSCALE}};
  int checked = 0;
  for (const Folder& f : folders) {
    ASSERT_TRUE(fs::is_directory(shared / f.path)) << shared / f.path;
    int in_folder = 0;
    for (const auto& e : fs::directory_iterator(shared / f.path)) {
      if (e.path().extension() != ".png" || ++in_folder > 12) continue;
      const std::string png = slurp(e.path());
      const cv::Mat fast = decode_png_fast(png, f.flags);
      ASSERT_FALSE(fast.empty()) << e.path();
      EXPECT_EQ(max_diff(fast, opencv_decode(png, f.flags)), 0) << e.path();
      ++checked;
    }
  }
  EXPECT_GE(checked, 40);
}

}  // namespace
}  // namespace fmam
