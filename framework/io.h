// File helpers shared by the runner and the writer nodes: input enumeration and atomic writes
// (write to a temporary name in the same folder, then rename, so no reader ever sees half a file).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <opencv2/core/mat.hpp>

#include "framework/atomic_file.h"

namespace fmam {

// Default bound of read_image: 64 megapixels (8192 x 7812), about 200 MB decoded as BGR.
constexpr long long kMaxImagePixels = 64LL << 20;

// Image files named by `spec`: a folder (its images, sorted; recursive if asked), a glob
// pattern ("data/*.png"), a single file, or a .txt list of paths (one per line, relative to the
// list's folder). Throws Error naming `spec` if nothing is found.
// Entries named like images that are not regular files (a folder "x.png", a broken symbolic
// link) are listed too, so that the reader reports each one instead of dropping it unseen.
std::vector<std::string> list_images(const std::string& spec, bool recursive = false);
bool is_image_file(const std::string& path);

// Decodes an image file (cv::imread flags). Throws Error naming the file when it is not a regular
// file, is empty, is cut short (a PNG without its IEND chunk, a JPEG without the end-of-image
// marker after its last scan: libjpeg would fill the missing rows with grey and only warn), has
// more than `max_pixels` pixels by its header (checked before any pixel is allocated), or does
// not decode.
cv::Mat read_image(const std::string& path, int flags, long long max_pixels = kMaxImagePixels);
// The same checks and decode for bytes in memory (`name` is the file named in errors): the entry
// point of the image-decode fuzz target (tests/fuzz/).
cv::Mat decode_image(const std::string& bytes, const std::string& name, int flags, long long max_pixels = kMaxImagePixels);
// Width and height from a PNG or JPEG header (no decode); {-1, -1} for other formats or a header
// that cannot be parsed.
std::pair<int, int> image_header_size(const std::string& path);

// atomic_write_text and atomic_write_bytes: framework/atomic_file.h (included above).
// An image, written as atomic_write_with does: the extension picks the format (.png, .tiff, .jpg);
// throws Error naming the file on failure.
void atomic_write_image(const std::string& path, const cv::Mat& image);

// "<parent>_<stem>" of a source path: unique for MVTec-style trees (test/crack/000.png and
// test/good/000.png differ); "frame_<id>" for in-memory frames.
std::string output_key(const std::string& source, long long frame_id);

// A ground-truth mask (gray) of `image_path`: an error naming both files unless it has the
// image's size (a mask of another size would be stretched onto the image without a word).
cv::Mat read_mask(const std::string& mask_path, const std::string& image_path);

}  // namespace fmam
