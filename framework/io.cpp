#include "framework/io.h"

#include <glob.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>

#include <opencv2/imgcodecs.hpp>

#include "framework/error.h"
#include "framework/image_integrity.h"
#include "framework/png_fast_decode.h"

namespace fmam {

namespace fs = std::filesystem;

bool is_image_file(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  static const char* kExt[] = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"};
  for (const char* e : kExt)
    if (ext == e) return true;
  return false;
}

std::vector<std::string> list_images(const std::string& spec, bool recursive) {
  std::vector<std::string> out;
  std::error_code ec;
  if (spec.find_first_of("*?[") != std::string::npos) {
    glob_t g{};
    if (glob(spec.c_str(), 0, nullptr, &g) == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i)
        if (is_image_file(g.gl_pathv[i])) out.push_back(g.gl_pathv[i]);  // read_image names a folder or dead link
    globfree(&g);
    if (out.empty()) throw Error("--input \"" + spec + "\": the pattern matches no image file");
  } else if (fs::is_directory(spec, ec)) {
    // Anything named like an image is listed, a folder "x.png" or a broken link too: the reader
    // then reports it by name instead of the file vanishing from the run unseen.
    auto add = [&](const fs::directory_entry& e) {
      if (is_image_file(e.path().string())) out.push_back(e.path().string());
    };
    if (recursive)
      for (const auto& e : fs::recursive_directory_iterator(spec)) add(e);
    else
      for (const auto& e : fs::directory_iterator(spec)) add(e);
    if (out.empty())
      throw Error("--input \"" + spec + "\": the folder holds no image (.png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp)" +
                  (recursive ? "" : "; add --recursive to look in sub-folders"));
  } else if (fs::exists(spec, ec)) {
    if (fs::path(spec).extension() == ".txt") {
      std::ifstream f(spec);
      std::string line;
      fs::path base = fs::path(spec).parent_path();
      while (std::getline(f, line)) {
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
        if (line.empty() || line[0] == '#') continue;
        fs::path p(line);
        out.push_back(p.is_absolute() ? p.string() : (base / p).string());
      }
      if (out.empty()) throw Error("--input \"" + spec + "\": the list file names no image");
      return out;  // list order is the user's order
    }
    out.push_back(spec);
  } else {
    throw Error("--input \"" + spec + "\": no such file or folder");
  }
  std::sort(out.begin(), out.end());
  return out;
}

namespace {

uint32_t be32(const unsigned char* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }
uint32_t be16(const unsigned char* p) { return uint32_t(p[0]) << 8 | p[1]; }

bool is_png(const std::string& b) { return b.size() >= 8 && b.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0; }
bool is_jpeg(const std::string& b) {
  return b.size() >= 3 && (unsigned char)b[0] == 0xFF && (unsigned char)b[1] == 0xD8 && (unsigned char)b[2] == 0xFF;
}

// Whether the first bytes are those of a format fmam reads (the extensions of is_image_file).
bool known_format(const std::string& b) {
  auto starts = [&](const char* m, size_t n) { return b.size() >= n && b.compare(0, n, m, n) == 0; };
  return is_png(b) || is_jpeg(b) || starts("BM", 2) || starts("II*\0", 4) || starts("MM\0*", 4) ||
         (starts("RIFF", 4) && b.size() >= 12 && b.compare(8, 4, "WEBP") == 0) ||
         (b.size() >= 2 && b[0] == 'P' && b[1] >= '1' && b[1] <= '7');
}

// What the header says about a PNG or JPEG: its size (-1 if not found) and, when the whole file
// is given, whether it ends properly.
struct HeaderInfo {
  int width = -1, height = -1;
  bool complete = false;
};

HeaderInfo png_info(const std::string& b) {
  HeaderInfo h;
  const auto* u = reinterpret_cast<const unsigned char*>(b.data());
  if (b.size() >= 24 && b.compare(12, 4, "IHDR") == 0) {
    h.width = int(std::min<uint32_t>(be32(u + 16), 0x7fffffff));
    h.height = int(std::min<uint32_t>(be32(u + 20), 0x7fffffff));
  }
  // The IEND chunk (length 0) closes every complete PNG; bytes after it are tolerated.
  h.complete = b.rfind(std::string("\0\0\0\0IEND", 8)) != std::string::npos;
  return h;
}

// Walks the JPEG's markers: segment lengths outside the scans, entropy-coded data (where 0xFF is
// always followed by 0x00 or a restart marker) inside them, until the end-of-image marker.
HeaderInfo jpeg_info(const std::string& b) {
  HeaderInfo h;
  const auto* u = reinterpret_cast<const unsigned char*>(b.data());
  const size_t n = b.size();
  size_t i = 2;
  while (i + 1 < n) {
    if (u[i] != 0xFF) return h;  // lost sync: corrupt
    unsigned m = u[i + 1];
    if (m == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    i += 2;
    if (m == 0xD9) {
      h.complete = true;
      return h;
    }
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // no payload
    if (i + 2 > n) return h;
    const size_t len = be16(u + i);
    if (len < 2) return h;
    const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof && h.width < 0 && i + 7 <= n) {
      h.height = int(be16(u + i + 3));
      h.width = int(be16(u + i + 5));
    }
    i += len;
    if (m == 0xDA) {  // a scan: skip its entropy-coded data
      while (i + 1 < n && !(u[i] == 0xFF && u[i + 1] != 0x00 && !(u[i + 1] >= 0xD0 && u[i + 1] <= 0xD7))) ++i;
    }
  }
  return h;
}

std::string slurp_bytes(const std::string& path, size_t limit) {
  std::ifstream f(path, std::ios::binary);
  std::string b;
  if (!f) return b;
  b.resize(limit);
  f.read(&b[0], std::streamsize(limit));
  b.resize(size_t(f.gcount()));
  return b;
}

}  // namespace

std::pair<int, int> image_header_size(const std::string& path) {
  std::string b = slurp_bytes(path, 32);           // a PNG's IHDR is in its first 24 bytes
  if (is_jpeg(b)) b = slurp_bytes(path, 1 << 20);  // a JPEG's frame header follows its APP segments (<= 64 KB each)
  HeaderInfo h = is_png(b) ? png_info(b) : is_jpeg(b) ? jpeg_info(b) : HeaderInfo{};
  return {h.width, h.height};
}

cv::Mat read_image(const std::string& path, int flags, long long max_pixels) {
  const std::string q = "\"" + path + "\": ";
  std::error_code ec;
  if (fs::is_symlink(fs::symlink_status(path, ec)) && !fs::exists(path, ec))
    throw Error(q + "a broken symbolic link (its target \"" + fs::read_symlink(path, ec).string() + "\" does not exist)");
  if (fs::is_directory(path, ec)) throw Error(q + "a folder, not an image file");
  if (!fs::exists(path, ec)) throw Error(q + "no such file");
  if (!fs::is_regular_file(path, ec)) throw Error(q + "not a regular file");
  const auto size = fs::file_size(path, ec);
  if (ec) throw Error(q + "cannot read: " + ec.message());
  if (size == 0) throw Error(q + "the file is empty");
  const std::string b = slurp_bytes(path, size_t(size));
  if (b.size() != size) throw Error(q + "cannot read (" + std::to_string(b.size()) + " of " + std::to_string(size) + " bytes)");
  return decode_image(b, path, flags, max_pixels);
}

// Complete but damaged inside: OpenCV would decode it, grey where libjpeg lost the data, and
// libpng or libjpeg would print a warning that names no file. Throws Error after `q` (the quoted
// name); returns the PNG without the chunks libpng would only warn about, or "" to decode `b`.
static std::string refuse_damage(const std::string& b, const std::string& q, bool png, bool jpeg) {
  std::string cleaned;
  const std::string why = png ? png_damage(b, &cleaned) : jpeg ? jpeg_damage(b) : std::string();
  if (!why.empty()) throw Error(q + (png ? "damaged PNG: " : "damaged JPEG: ") + why);
  return cleaned;
}

cv::Mat decode_image(const std::string& b, const std::string& name, int flags, long long max_pixels) {
  const std::string q = "\"" + name + "\": ";
  if (b.empty()) throw Error(q + "the file is empty");
  if (b.size() > size_t(std::numeric_limits<int>::max())) throw Error(q + "larger than 2 GB; not decoded");
  HeaderInfo h;
  const bool png = is_png(b), jpeg = is_jpeg(b);
  if (png) h = png_info(b);
  if (jpeg) h = jpeg_info(b);
  if ((png || jpeg) && h.width >= 0 && (long long)h.width * h.height > max_pixels)
    throw Error(q + "the header says " + std::to_string(h.width) + "x" + std::to_string(h.height) +
                " pixels, more than the bound of " + std::to_string(max_pixels) + " pixels (ImageSource param max_pixels)");
  // Only formats fmam lists are handed to OpenCV, chosen by their first bytes: cv::imdecode would
  // try every codec it was built with, and Debian's OpenCV includes GDCM (DICOM), which abort()s
  // the whole process on some malformed input (found by tests/fuzz/image_decode_fuzzer.cpp).
  if (!known_format(b)) throw Error(q + "cannot decode: not a PNG, JPEG, BMP, TIFF, WebP or PNM image (by its first bytes)");
  if (png && !h.complete) throw Error(q + "truncated PNG (no IEND chunk: the file was cut short)");
  if (jpeg && !h.complete) throw Error(q + "truncated JPEG (no end-of-image marker after the last scan: the file was cut short)");
  const std::string cleaned = refuse_damage(b, q, png, jpeg);
  cv::Mat m;
  try {
    const std::string& src = cleaned.empty() ? b : cleaned;
    if (png) m = decode_png_fast(src, flags);  // 8-bit grey/RGB; empty where OpenCV must decode
    if (m.empty()) m = cv::imdecode(cv::Mat(1, int(src.size()), CV_8U, const_cast<char*>(src.data())), flags);
  } catch (const cv::Exception& e) {
    std::string w = e.what();
    while (!w.empty() && (w.back() == '\n' || w.back() == ' ')) w.pop_back();
    throw Error(q + "cannot decode: " + w.substr(w.rfind('\n') == std::string::npos ? 0 : w.rfind('\n') + 1));
  }
  if (m.empty()) throw Error(q + "cannot decode (not an image, or truncated)");
  if ((long long)m.cols * m.rows > max_pixels)
    throw Error(q + std::to_string(m.cols) + "x" + std::to_string(m.rows) + " pixels, more than the bound of " +
                std::to_string(max_pixels) + " pixels (ImageSource param max_pixels)");
  return m;
}

void atomic_write_image(const std::string& path, const cv::Mat& image) {
  atomic_write_with(path, [&](const std::string& tmp) {
    bool ok = false;
    try {
      ok = cv::imwrite(tmp, image);
    } catch (const cv::Exception& e) {
      throw Error(path + ": cannot encode image: " + e.what());
    }
    if (!ok) throw Error(path + ": cannot write image");
  });
}

std::string output_key(const std::string& source, long long frame_id) {
  if (source.empty()) return "frame_" + std::to_string(frame_id);
  fs::path p(source);
  std::string parent = p.parent_path().filename().string();
  return parent.empty() ? p.stem().string() : parent + "_" + p.stem().string();
}

cv::Mat read_mask(const std::string& mask_path, const std::string& image_path) {
  cv::Mat m = read_image(mask_path, cv::IMREAD_GRAYSCALE);  // names the file on any problem
  auto [w, h] = image_header_size(image_path);
  if (w < 0) {
    const cv::Mat img = read_image(image_path, cv::IMREAD_GRAYSCALE);
    w = img.cols, h = img.rows;
  }
  if (m.cols != w || m.rows != h)
    throw Error(mask_path + ": the ground-truth mask is " + std::to_string(m.cols) + "x" + std::to_string(m.rows) +
                ", its image " + image_path + " is " + std::to_string(w) + "x" + std::to_string(h) +
                "; a mask must have its image's size");
  return m;
}

}  // namespace fmam
