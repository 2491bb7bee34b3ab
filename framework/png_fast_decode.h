// A faster decoder for the PNGs inspection cameras and datasets write: 8-bit grey or RGB, not
// interlaced, no transparency chunk. It inflates with libdeflate (about 3x zlib's speed on this
// project's 512² images) and undoes the row filters straight into OpenCV's channel order, and
// gives what cv::imdecode gives, bit for bit (tests/framework/png_fast_decode_test.cpp checks that
// on every filter type, odd sizes and the real datasets). fmam bench's read_image went from
// 4.6-5.2 to 2.8-3.2 ms per 512² RGB image (docs/PERFORMANCE.md).
//
// It is a fast path, not a second decoder to trust: any PNG it does not cover, and any
// inconsistency it meets (a short or overlong zlib stream, a bad adler32, an unknown filter
// byte), returns an empty Mat, and the caller hands the bytes to OpenCV, whose behaviour and
// error messages stay what they were.
#pragma once

#include <opencv2/core.hpp>

#include <string>

namespace fmam {

// `png`: a whole PNG file whose chunks have passed png_damage() (framework/image_integrity.h).
// `imread_flags`: cv::IMREAD_COLOR (BGR out; grey is replicated, as libpng's gray_to_rgb does)
// or cv::IMREAD_GRAYSCALE (grey PNGs only). Returns CV_8UC3 / CV_8UC1, or an empty Mat where the
// fast path does not apply.
cv::Mat decode_png_fast(const std::string& png, int imread_flags);

}  // namespace fmam
