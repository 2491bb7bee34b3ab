#include "framework/image_integrity.h"

#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <vector>

#include <jpeglib.h>  // after <cstdio>: it needs FILE

#include <jerror.h>  // after <jpeglib.h>: the JWRN_ message codes need its definitions
#include <zlib.h>

namespace fmam {

namespace {

// libjpeg reports through callbacks: a fatal error must not return to it, so both it and a
// warning that means lost pixels jump back to jpeg_damage with the message.
struct JpegErr {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char text[JMSG_LENGTH_MAX];
};

// The warnings libjpeg gives when it fills pixels it could not read (grey rows, smeared blocks).
bool loses_pixels(int code) {
  switch (code) {
    case JWRN_HIT_MARKER:  // premature end of data segment
    case JWRN_HUFF_BAD_CODE:
    case JWRN_JPEG_EOF:
    case JWRN_MUST_RESYNC:        // found marker instead of RSTn
    case JWRN_EXTRANEOUS_DATA:    // bytes before a marker: the scan ended early or late
    case JWRN_BOGUS_PROGRESSION:  // a progressive scan out of order
#ifdef D_ARITH_CODING_SUPPORTED
    case JWRN_ARITH_BAD_CODE:
#endif
      return true;
    default: return false;
  }
}

[[noreturn]] void jump_with_message(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegErr*>(c->err);
  (*c->err->format_message)(c, e->text);
  std::longjmp(e->jump, 1);
}

void on_jpeg_error(j_common_ptr c) { jump_with_message(c); }

void on_jpeg_message(j_common_ptr c, int level) {
  if (level < 0 && loses_pixels(c->err->msg_code)) jump_with_message(c);
  // Trace messages and harmless warnings: say nothing (OpenCV's own decode follows).
}

// Entropy-decodes every scan at 1/8 scale: each coefficient is read (that is where damage
// shows), but only the DC terms are transformed and nothing is colour-converted.
// `rows` is declared by the caller, before setjmp, so a jump skips no C++ destructor.
bool read_all_scans(jpeg_decompress_struct* d, std::vector<JSAMPLE>* rows) {
  jpeg_read_header(d, TRUE);
  d->scale_num = 1;
  d->scale_denom = 8;
  d->dct_method = JDCT_IFAST;
  d->do_fancy_upsampling = FALSE;
  d->do_block_smoothing = FALSE;
  if (d->jpeg_color_space == JCS_YCbCr || d->jpeg_color_space == JCS_GRAYSCALE) d->out_color_space = JCS_GRAYSCALE;
  jpeg_start_decompress(d);
  rows->resize(size_t(d->output_width) * d->output_components);
  JSAMPROW row = rows->data();
  while (d->output_scanline < d->output_height) jpeg_read_scanlines(d, &row, 1);
  jpeg_finish_decompress(d);
  return true;
}

uint32_t be32(const unsigned char* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

}  // namespace

std::string jpeg_damage(const std::string& bytes) {
  jpeg_decompress_struct d{};
  JpegErr err{};
  std::vector<JSAMPLE> rows;
  d.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = on_jpeg_error;
  err.pub.emit_message = on_jpeg_message;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&d);
    return err.text;
  }
  jpeg_create_decompress(&d);
  jpeg_mem_src(&d, reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<unsigned long>(bytes.size()));
  read_all_scans(&d, &rows);
  jpeg_destroy_decompress(&d);
  return {};
}

std::string png_damage(const std::string& bytes, std::string* cleaned) {
  const auto* u = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  cleaned->clear();
  size_t i = 8, kept = 0;  // after the signature; bytes before `kept` are copied to *cleaned
  while (i + 12 <= n) {
    const uint32_t len = be32(u + i);
    const std::string type(bytes, i + 4, 4);
    const std::string at = " at byte " + std::to_string(i);
    for (char c : type)
      if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')))
        return "no chunk" + at + " (the chunk before it has a wrong length)";
    if (len > n - i - 12) return "chunk " + type + at + " claims " + std::to_string(len) + " bytes, past the end of the file";
    const bool critical = (type[0] & 0x20) == 0;  // an upper-case first letter
    const bool crc_ok = crc32(crc32(0L, Z_NULL, 0), u + i + 4, uInt(len) + 4) == be32(u + i + 8 + len);
    if (critical && !crc_ok) return "chunk " + type + at + " fails its CRC check";
    const size_t next = i + size_t(len) + 12;
    if (!critical && (!crc_ok || type == "iCCP")) {
      cleaned->append(bytes, kept, i - kept);
      kept = next;
    }
    if (type == "IEND") {
      if (kept > 0) cleaned->append(bytes, kept, std::string::npos);
      return {};
    }
    i = next;
  }
  cleaned->clear();
  return "no IEND chunk: the file was cut short";
}

}  // namespace fmam
