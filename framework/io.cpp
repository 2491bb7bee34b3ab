#include "framework/io.h"

#include <glob.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <opencv2/imgcodecs.hpp>

#include "framework/error.h"

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
        if (fs::is_regular_file(g.gl_pathv[i], ec) && is_image_file(g.gl_pathv[i])) out.push_back(g.gl_pathv[i]);
    globfree(&g);
    if (out.empty()) throw Error("--input \"" + spec + "\": the pattern matches no image file");
  } else if (fs::is_directory(spec, ec)) {
    auto add = [&](const fs::directory_entry& e) {
      if (e.is_regular_file() && is_image_file(e.path().string())) out.push_back(e.path().string());
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

static std::string temp_name(const std::string& path) {
  fs::path p(path);
  // Unique per process and per call (threads may write the same path at once); keep the
  // extension: OpenCV picks the encoder from it.
  static std::atomic<unsigned long long> counter{0};
  return (p.parent_path() / ("." + p.stem().string() + ".tmp" + std::to_string(getpid()) + "_" +
                             std::to_string(++counter) + p.extension().string()))
      .string();
}

static void ensure_parent(const std::string& path) {
  fs::path parent = fs::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec) throw Error(path + ": cannot create folder " + parent.string() + ": " + ec.message());
}

void atomic_write_text(const std::string& path, const std::string& text) {
  atomic_write_bytes(path, text.data(), text.size());
}

void atomic_write_bytes(const std::string& path, const char* data, size_t size) {
  ensure_parent(path);
  std::string tmp = temp_name(path);
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) throw Error(path + ": cannot write (" + tmp + ")");
    f.write(data, std::streamsize(size));
    f.flush();
    if (!f) {
      std::remove(tmp.c_str());
      throw Error(path + ": write failed (disk full?)");
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot rename the finished file into place: " + ec.message());
  }
}

void atomic_write_image(const std::string& path, const cv::Mat& image) {
  ensure_parent(path);
  std::string tmp = temp_name(path);
  bool ok = false;
  try {
    ok = cv::imwrite(tmp, image);
  } catch (const cv::Exception& e) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot encode image: " + e.what());
  }
  if (!ok) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot write image");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot rename the finished file into place: " + ec.message());
  }
}

std::string output_key(const std::string& source, long long frame_id) {
  if (source.empty()) return "frame_" + std::to_string(frame_id);
  fs::path p(source);
  std::string parent = p.parent_path().filename().string();
  return parent.empty() ? p.stem().string() : parent + "_" + p.stem().string();
}

}  // namespace fmam
