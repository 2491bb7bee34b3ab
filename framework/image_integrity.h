// Damage checks of an image file's bytes that run before OpenCV decodes it (framework/io.cpp
// decode_image). OpenCV decodes a JPEG with damaged entropy-coded data, or lets libpng go on,
// with only a warning on stderr that names no file and a picture partly grey; these checks turn
// such damage into an error that names the file.
#pragma once

#include <string>

namespace fmam {

// Empty if libjpeg reads every scan of `bytes` without complaint; else what libjpeg says
// ("Corrupt JPEG data: premature end of data segment", "bad Huffman code", ...). Warnings that do
// not mean lost pixels (an unknown JFIF revision, an Adobe transform code) are not damage.
// Cost: the entropy decoding of the file, at 1/8 scale (no full-size IDCT or colour conversion).
std::string jpeg_damage(const std::string& bytes);

// Empty if every critical chunk (IHDR, PLTE, IDAT, IEND) of the PNG `bytes` up to IEND has a
// length inside the file and a CRC that matches; else the first that does not ("chunk IDAT at
// byte 33 fails its CRC check").
// Ancillary chunks that OpenCV would only make libpng warn about, with no file named and no pixel
// changed (one with a wrong CRC, an iCCP colour profile: OpenCV ignores profiles), are removed
// into `*cleaned`, left empty when there is none.
std::string png_damage(const std::string& bytes, std::string* cleaned);

}  // namespace fmam
