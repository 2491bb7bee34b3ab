// File helpers shared by the runner and the writer nodes: input enumeration and atomic writes
// (write to a temporary name in the same folder, then rename, so no reader ever sees half a file).
#pragma once

#include <string>
#include <vector>

#include <opencv2/core/mat.hpp>

namespace fmam {

// Image files named by `spec`: a folder (its images, sorted; recursive if asked), a glob
// pattern ("data/*.png"), a single file, or a .txt list of paths (one per line, relative to the
// list's folder). Throws Error naming `spec` if nothing is found.
std::vector<std::string> list_images(const std::string& spec, bool recursive = false);
bool is_image_file(const std::string& path);

void atomic_write_text(const std::string& path, const std::string& text);
// The same for a buffer (model files: no second copy of a few hundred MB).
void atomic_write_bytes(const std::string& path, const char* data, size_t size);
// The extension picks the format (.png, .tiff, .jpg); throws Error naming the file on failure.
void atomic_write_image(const std::string& path, const cv::Mat& image);

// "<parent>_<stem>" of a source path: unique for MVTec-style trees (test/crack/000.png and
// test/good/000.png differ); "frame_<id>" for in-memory frames.
std::string output_key(const std::string& source, long long frame_id);

}  // namespace fmam
