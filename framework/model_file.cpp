#include "framework/model_file.h"

#include <torch/serialize.h>
#include <zlib.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "framework/io.h"
#include "framework/pickle_archive.h"
#include "framework/sha256.h"
#include "framework/stateful.h"

namespace fmam {

Stateful::~Stateful() = default;
Fingerprinted::~Fingerprinted() = default;
Int8Quantizable::~Int8Quantizable() = default;

namespace {

constexpr const char* kFormat = "fmam-model";
// SHA-256 of the learned tensors, verified at load. Absent in files of older fmam versions.
constexpr const char* kChecksumField = "tensors_sha256";

// SHA-256 over every tensor in key order: its key, dtype, shape and bytes (contiguous, CPU), so
// that a flipped byte, a renamed or a reshaped tensor all change it.
std::string tensors_sha256(const std::map<std::string, at::Tensor>& tensors) {
  Sha256 sha("model file");
  for (const auto& [key, t0] : tensors) {
    const at::Tensor t = t0.detach().contiguous().cpu();
    const std::string head = key + '\0' + std::string(c10::toString(t.scalar_type())) + '\0';
    sha.update(head.data(), head.size());
    for (int64_t d : t.sizes()) sha.update(&d, sizeof d);
    sha.update(t.data_ptr(), t.numel() * t.element_size());
  }
  return sha.hex_digest();
}

// Whether the zip archive was written by fmam (torch::pickle_save names its records
// "archive/..."; Python's torch.save names them after the file). Tools that rewrite a model in
// Python (scripts/rd4ad_official.py export) replace tensors and keep the other fields, a stale
// checksum among them, so only fmam's own files have theirs verified.
bool written_by_fmam(const std::vector<char>& b) {
  static const char kName[] = "archive/";
  if (b.size() < 30 + 8 || b[0] != 'P' || b[1] != 'K' || b[2] != 3 || b[3] != 4) return false;
  const size_t name_len = size_t((unsigned char)b[26]) | size_t((unsigned char)b[27]) << 8;
  return name_len >= 8 && b.size() >= 30 + name_len && std::equal(kName, kName + 8, b.begin() + 30);
}

c10::Dict<std::string, std::string> to_dict(const std::map<std::string, std::string>& m) {
  c10::Dict<std::string, std::string> d;
  for (const auto& [k, v] : m) d.insert(k, v);
  return d;
}

// ---- a structural check of the archive before libtorch reads it ------------------------------
// libtorch allocates what a file's headers claim before it reads: a zip entry's size, a pickled
// string's or byte string's length. One changed byte can ask for tens of GB (found by
// tests/fuzz/model_file_fuzzer.cpp), so these are checked against the file's size first.

uint32_t le32(const std::vector<char>& b, size_t at) {
  return uint32_t((unsigned char)b[at]) | uint32_t((unsigned char)b[at + 1]) << 8 | uint32_t((unsigned char)b[at + 2]) << 16 |
         uint32_t((unsigned char)b[at + 3]) << 24;
}
uint64_t le64(const std::vector<char>& b, size_t at) { return uint64_t(le32(b, at)) | uint64_t(le32(b, at + 4)) << 32; }
uint16_t le16(const std::vector<char>& b, size_t at) {
  return uint16_t(uint16_t((unsigned char)b[at]) | uint16_t((unsigned char)b[at + 1]) << 8);
}

// Bytes per element of a torch storage type ("FloatStorage"), 0 if unknown.
size_t storage_element_size(const std::string& type) {
  static const std::map<std::string, size_t> kSize = {
      {"FloatStorage", 4}, {"DoubleStorage", 8}, {"HalfStorage", 2},         {"BFloat16Storage", 2},
      {"LongStorage", 8},  {"IntStorage", 4},    {"ShortStorage", 2},        {"CharStorage", 1},
      {"ByteStorage", 1},  {"BoolStorage", 1},   {"ComplexFloatStorage", 8}, {"ComplexDoubleStorage", 16}};
  auto it = kSize.find(type);
  return it == kSize.end() ? 0 : it->second;
}

// What an opcode does to the unpickler's stack: the items it takes and pushes, or (to_mark) all
// items down to the last MARK, with `below` items under the mark that it uses too (APPENDS' list).
struct StackEffect {
  int pops = 0, pushes = 0;
  bool to_mark = false, mark = false;
  int below = 0;
};

// One opcode family per line reads like the pickle spec.
// clang-format off
StackEffect stack_effect(unsigned char op) {
  switch (op) {
    case '(': return {0, 0, false, true};
    case '1': return {0, 0, true};                                   // POP_MARK
    case 'l': case 't': case 'd': case 0x91: case 'o': case 'i':     // LIST, TUPLE, DICT, FROZENSET, OBJ, INST
      return {0, 1, true};
    case 'e': case 'u': case 0x90: return {0, 0, true, false, 1};  // APPENDS, SETITEMS, ADDITEMS
    case '0': return {1, 0};                                         // POP
    case '2': return {1, 2};                                         // DUP
    case 'a': return {2, 1};                                         // APPEND
    case 's': return {3, 1};                                         // SETITEM
    case 0x85: return {1, 1};                                        // TUPLE1
    case 0x86: case 'R': case 'b': case 0x81: case 0x93: return {2, 1};  // TUPLE2, REDUCE, BUILD, NEWOBJ, STACK_GLOBAL
    case 0x87: case 0x92: return {3, 1};                             // TUPLE3, NEWOBJ_EX
    case 'q': case 'r': case 'p': case 0x94: case 'Q': case 0x98: return {1, 1};  // PUT, MEMOIZE, BINPERSID, READONLY_BUFFER
    case 0x80: case 0x95: case '.': return {0, 0};                   // PROTO, FRAME, STOP (checked apart)
    default: return {0, 1};                                          // the rest push one value
  }
}
// clang-format on

// Keeps the stack and MARK discipline Python's unpickler enforces and libtorch 1.13's does not:
// TUPLE2 on a stack of one made it free memory it did not allocate
// (tests/testdata/bad_models/unpickler_bad_free.fmam). `depth` and `marks` carry from opcode to opcode.
std::string check_stack(unsigned char op, size_t at, size_t& depth, std::vector<size_t>& marks) {
  const StackEffect e = stack_effect(op);
  const size_t floor = marks.empty() ? 0 : marks.back();  // items under the last MARK are not this opcode's
  char where[48];
  std::snprintf(where, sizeof where, "opcode 0x%02x at byte %zu", op, at);
  if (op == '.')
    return depth == 1 && marks.empty() ? ""
                                       : std::string(where) + " (STOP) leaves " + std::to_string(depth) + " item(s) and " +
                                             std::to_string(marks.size()) + " mark(s)";
  if (e.mark) {
    marks.push_back(depth);
    return "";
  }
  if (e.to_mark) {
    if (marks.empty()) return std::string(where) + " needs a MARK, there is none";
    const size_t m = marks.back();
    marks.pop_back();
    const size_t under = marks.empty() ? 0 : marks.back();
    if (m < under + size_t(e.below)) return std::string(where) + " needs " + std::to_string(e.below) + " item(s) under its MARK";
    depth = m + size_t(e.pushes);
    return "";
  }
  if (depth < floor + size_t(e.pops))
    return std::string(where) + " takes " + std::to_string(e.pops) + " item(s), the stack holds " + std::to_string(depth - floor);
  depth = depth - size_t(e.pops) + size_t(e.pushes);
  return "";
}

// The argument an opcode carries after it: `fixed` bytes (-1: none of that kind), a length of
// `len_bytes` bytes and that many bytes, or `lines` newline-terminated lines. `known` is false
// for an opcode fmam does not know.
struct OpArgument {
  bool known = true;
  int fixed = -1, len_bytes = 0, lines = 0;
};

// Which argument follows opcode `op` (STOP is handled apart, by the caller).
// One argument kind per line, as the pickle spec lists them.
// clang-format off
OpArgument op_argument(unsigned char op) {
  OpArgument a;
  switch (op) {
    case '(': case '0': case '1': case '2': case 'N': case 0x88: case 0x89: case ']': case 'a': case 'e':
    case 'l': case ')': case 't': case 0x85: case 0x86: case 0x87: case '}': case 'd': case 's': case 'u':
    case 0x8f: case 0x90: case 0x91: case 'R': case 'b': case 0x81: case 0x92: case 'o': case 0x93:
    case 0x94: case 'Q': case 0x97: case 0x98:
      a.fixed = 0; break;
    case 'K': case 'q': case 'h': case 0x82: case 0x80: a.fixed = 1; break;
    case 'M': case 0x83: a.fixed = 2; break;
    case 'J': case 'j': case 'r': case 0x84: a.fixed = 4; break;
    case 'G': case 0x95: a.fixed = 8; break;
    case 0x8a: case 'U': case 'C': case 0x8c: a.len_bytes = 1; break;  // LONG1, SHORT_BIN{STRING,BYTES,UNICODE}
    case 0x8b: case 'T': case 'B': case 'X': a.len_bytes = 4; break;  // LONG4, BIN{STRING,BYTES,UNICODE}
    case 0x8d: case 0x8e: case 0x96: a.len_bytes = 8; break;  // BINUNICODE8, BINBYTES8, BYTEARRAY8
    case 'c': case 'i': a.lines = 2; break;  // GLOBAL, INST
    case 'I': case 'L': case 'S': case 'V': case 'F': case 'P': case 'g': case 'p': a.lines = 1; break;
    default: a.known = false;
  }
  return a;
}
// clang-format on

// One walk over a pickle's opcodes (check_pickle): where it is, the unpickler's stack depth and
// marks, and the scalars seen since the last persistent id, which describe a tensor's storage.
// Each step returns "" if it is sound, else what is wrong.
struct PickleScan {
  const char* p;
  size_t n;
  std::map<std::string, uint64_t>& storages;
  size_t i = 0;
  // The scalar arguments since the last persistent id: 's' string, 'g' global, 'i' integer.
  std::vector<std::pair<char, std::string>> args;
  std::map<uint64_t, std::pair<char, std::string>> memo;  // memoised scalars (BINPUT / BINGET)
  uint64_t memo_next = 0;
  bool pushed_scalar = false;  // whether the last opcode pushed a scalar (BINPUT then memoises it)
  size_t depth = 0;
  std::vector<size_t> marks;

  // Whether k more bytes are left.
  bool need(uint64_t k) const { return uint64_t(n - i) >= k; }

  // Skips a newline-terminated argument; false if the pickle ends first.
  bool line() {
    const void* nl = std::memchr(p + i, '\n', n - i);
    if (!nl) return false;
    i = size_t(static_cast<const char*>(nl) - p) + 1;
    return true;
  }

  // Reads a k-byte little-endian unsigned integer.
  uint64_t uint_le(int k) {
    uint64_t v = 0;
    for (int j = k - 1; j >= 0; --j) v = v << 8 | (unsigned char)p[i + size_t(j)];
    i += size_t(k);
    return v;
  }

  // BINPERSID: the tuple just built is a storage; records its key and size in bytes.
  std::string note_storage() {
    if (args.size() < 5) return "a tensor storage without its description";
    const auto* a = &args[args.size() - 5];
    const size_t esize =
        a[1].first == 'g' && a[1].second.rfind("torch\n", 0) == 0 ? storage_element_size(a[1].second.substr(6)) : 0;
    if (a[0] != std::make_pair('s', std::string("storage")) || !esize || a[2].first != 's' || a[3].first != 's' ||
        a[4].first != 'i' || a[4].second[0] == '-')
      return "a tensor storage fmam does not know";
    const uint64_t numel = std::stoull(a[4].second);
    if (numel > (uint64_t(1) << 40)) return "storage \"" + a[2].second + "\" claims " + a[4].second + " elements";
    // A key named twice is one storage to libtorch (the first one read): keep the largest claim.
    uint64_t& claim = storages[a[2].second];
    claim = std::max(claim, numel * esize);
    args.clear();
    return "";
  }

  // BINPUT, LONG_BINPUT, MEMOIZE: remembers the scalar just pushed under the memo index.
  std::string memoise(unsigned char op, int fixed, bool after_scalar) {
    const uint64_t idx = op == 0x94 ? memo_next : uint_le(fixed);
    // libtorch sizes its memo to the largest index: a genuine pickle numbers its entries
    // from 0, so an index beyond the pickle's length can only ask for memory.
    if (idx > n) return "memo index " + std::to_string(idx) + " in a pickle of " + std::to_string(n) + " bytes";
    memo_next = idx + 1;
    if (after_scalar)
      memo[idx] = args.back();
    else
      memo.erase(idx);
    pushed_scalar = after_scalar;
    return "";
  }

  // An argument of `fixed` bytes: small integers are kept as scalars, memo opcodes followed.
  std::string read_fixed(unsigned char op, int fixed, bool after_scalar) {
    if (!need(uint64_t(fixed))) return "the pickle ends inside an opcode";
    if (op == 'K' || op == 'M') {
      args.emplace_back('i', std::to_string(uint_le(fixed)));
      pushed_scalar = true;
    } else if (op == 'J') {
      args.emplace_back('i', std::to_string(int32_t(uint32_t(uint_le(4)))));
      pushed_scalar = true;
    } else if (op == 'q' || op == 'r' || op == 0x94) {
      return memoise(op, fixed, after_scalar);
    } else if (op == 'h' || op == 'j') {  // BINGET, LONG_BINGET: a remembered scalar again
      auto it = memo.find(uint_le(fixed));
      args.push_back(it == memo.end() ? std::make_pair('?', std::string()) : it->second);
      pushed_scalar = it != memo.end();
    } else {
      i += size_t(fixed);
    }
    return "";
  }

  // A length of `len_bytes` bytes and that many bytes: strings and LONG1 integers are kept.
  std::string read_counted(unsigned char op, int len_bytes) {
    if (!need(uint64_t(len_bytes))) return "the pickle ends inside a length";
    const uint64_t len = uint_le(len_bytes);
    if (!need(len)) return "a pickled string claims " + std::to_string(len) + " bytes, " + std::to_string(n - i) + " are left";
    if (op == 0x8c || op == 'X') {
      args.emplace_back('s', std::string(p + i, size_t(len)));
      pushed_scalar = true;
    }
    if (op == 0x8a && len <= 7) {  // LONG1: a little-endian two's complement integer
      uint64_t v = 0;
      for (size_t j = len; j-- > 0;) v = v << 8 | (unsigned char)p[i + j];
      const bool neg = len > 0 && ((unsigned char)p[i + len - 1] & 0x80);
      args.emplace_back('i', neg ? "-1" : std::to_string(v));
      pushed_scalar = true;
    }
    i += size_t(len);
    return "";
  }

  // `lines` text lines: a GLOBAL's module and name are kept as one scalar.
  std::string read_lines(unsigned char op, int lines) {
    const size_t from = i;
    for (int k = 0; k < lines; ++k)
      if (!line()) return "the pickle ends inside a text argument";
    if (op == 'c') {
      args.emplace_back('g', std::string(p + from, i - from - 1));
      pushed_scalar = true;
    }
    return "";
  }

  // The whole walk, opcode by opcode, up to STOP.
  std::string run() {
    while (i < n) {
      const unsigned char op = (unsigned char)p[i++];
      if (const std::string bad = check_stack(op, i - 1, depth, marks); !bad.empty()) return "the pickle's " + bad;
      if (op == 'Q') {
        if (const std::string bad = note_storage(); !bad.empty()) return bad;
      }
      if (op == '.') return "";  // STOP
      const OpArgument a = op_argument(op);
      if (!a.known) {
        char b[64];
        std::snprintf(b, sizeof b, "unknown pickle opcode 0x%02x at byte %zu", op, i - 1);
        return b;
      }
      const bool after_scalar = pushed_scalar;
      pushed_scalar = false;
      const std::string bad = a.fixed >= 0  ? read_fixed(op, a.fixed, after_scalar)
                              : a.len_bytes ? read_counted(op, a.len_bytes)
                                            : read_lines(op, a.lines);
      if (!bad.empty()) return bad;
    }
    return "the pickle has no STOP opcode";
  }
};

// Walks a pickle's opcodes: every length must fit in what is left, every opcode be known. The
// storages its tensors use (persistent ids ('storage', torch.<T>Storage, key, location, numel))
// go into `storages` as key -> bytes, for the caller to check against the archive's records.
// Returns "" if it is sound, else what is wrong.
std::string check_pickle(const char* p, size_t n, std::map<std::string, uint64_t>& storages) {
  return PickleScan{p, n, storages}.run();
}

// Where the end-of-central-directory record starts: within the last 64 KB + 22 bytes (its
// comment) of a file of at least 22 bytes; npos if there is none.
size_t find_eocd(const std::vector<char>& b) {
  const size_t n = b.size();
  for (size_t k = n - 22 + 1; k-- > (n > 65557 ? n - 65557 : 0);)
    if (b[k] == 'P' && b[k + 1] == 'K' && b[k + 2] == 5 && b[k + 3] == 6) return k;
  return std::string::npos;
}

// The zip's central directory: its entry count, size and offset, and where it must end.
struct ZipDirectory {
  uint64_t entries = 0, size = 0, at = 0;
  size_t end = 0;
};

// Reads the directory's place from the end record at `eocd` (or the zip64 record it points at)
// and checks that it lies inside the file.
std::string read_directory(const std::vector<char>& b, size_t eocd, ZipDirectory& dir) {
  dir.entries = le16(b, eocd + 10);
  dir.size = le32(b, eocd + 12);
  dir.at = le32(b, eocd + 16);
  dir.end = eocd;
  // A zip64 locator just before it (archives over 4 GB) points at the zip64 record, whose
  // values miniz then uses instead: they are checked the same way.
  if (eocd >= 20 && le32(b, eocd - 20) == 0x07064b50u) {
    const uint64_t z = le64(b, eocd - 20 + 8);
    // (z > ... first: z + 56 would wrap around for an offset near 2^64, found by the fuzzer.)
    if (z > eocd - 20 || eocd - 20 - z < 56 || le32(b, size_t(z)) != 0x06064b50u) return "a damaged zip64 record";
    dir.entries = le64(b, size_t(z) + 32);
    dir.size = le64(b, size_t(z) + 40);
    dir.at = le64(b, size_t(z) + 48);
    dir.end = size_t(z);
  }
  if (dir.at > dir.end || dir.size > dir.end - dir.at || dir.entries > dir.size / 46)
    return "the zip directory lies outside the file";
  return "";
}

// One entry of the central directory at byte `at`, its zip64 values filled in.
struct ZipEntry {
  size_t at = 0;
  uint16_t method = 0, name_len = 0, extra_len = 0, comment_len = 0;
  uint64_t csize = 0, usize = 0, local = 0;
  std::string name;
};

// zip64 entries keep their sizes and offset in the extra field (id 1), each 8 bytes: reads
// those the entry marks 0xFFFFFFFF.
std::string read_zip64_extra(const std::vector<char>& b, ZipEntry& e) {
  size_t x = e.at + 46 + e.name_len, x_end = x + e.extra_len;
  bool found = false;
  while (!found && x + 4 <= x_end) {
    const uint16_t id = le16(b, x), len = le16(b, x + 2);
    if (x + 4 + len > x_end) break;
    if (id == 1) {
      size_t f = x + 4;
      for (uint64_t* v : {&e.usize, &e.csize, &e.local})
        if (*v == 0xFFFFFFFFu) {
          if (f + 8 > x + 4 + len) return "zip entry \"" + e.name + "\": a damaged zip64 field";
          *v = le64(b, f);
          f += 8;
        }
      found = true;
    }
    x += 4 + size_t(len);
  }
  if (!found) return "zip entry \"" + e.name + "\": no zip64 field";
  return "";
}

// Reads the directory entry at `at`, which must lie before `dir_end`.
std::string read_entry(const std::vector<char>& b, size_t at, size_t dir_end, ZipEntry& e) {
  if (at + 46 > dir_end || le32(b, at) != 0x02014b50u) return "a damaged zip directory entry";
  e.at = at;
  e.method = le16(b, at + 10);
  e.name_len = le16(b, at + 28);
  e.extra_len = le16(b, at + 30);
  e.comment_len = le16(b, at + 32);
  e.csize = le32(b, at + 20);
  e.usize = le32(b, at + 24);
  e.local = le32(b, at + 42);
  if (at + 46 + size_t(e.name_len) + e.extra_len > dir_end) return "a damaged zip directory entry";
  e.name.assign(b.data() + at + 46, e.name_len);
  if (e.usize == 0xFFFFFFFFu || e.csize == 0xFFFFFFFFu || e.local == 0xFFFFFFFFu) return read_zip64_extra(b, e);
  return "";
}

// Checks that the entry is stored uncompressed, has its local header and lies inside the file;
// sets `data_at` to where its data starts.
std::string check_entry_data(const std::vector<char>& b, const ZipEntry& e, uint64_t& data_at) {
  const size_t n = b.size();
  if (e.method != 0 || e.csize != e.usize) return "zip entry \"" + e.name + "\" is compressed or its sizes disagree";
  if (e.local + 30 > n || le32(b, size_t(e.local)) != 0x04034b50u) return "zip entry \"" + e.name + "\" has no local header";
  data_at = e.local + 30 + le16(b, size_t(e.local) + 26) + le16(b, size_t(e.local) + 28);
  if (data_at > n || e.usize > n - data_at)
    return "zip entry \"" + e.name + "\" claims " + std::to_string(e.usize) + " bytes beyond the file's end";
  return "";
}

// What the walk over the archive's entries has found so far.
struct ArchiveScan {
  bool have_pickle = false;
  std::map<std::string, uint64_t> storages, records;  // storage key -> bytes; entry name -> bytes
  std::string prefix;                                 // the folder of data.pkl ("archive/")
};

// The entry's data.pkl, at `data_at`: a sound pickle with the right CRC-32.
std::string check_data_pkl(const std::vector<char>& b, const ZipEntry& e, uint64_t data_at, ArchiveScan& scan) {
  const std::string bad = check_pickle(b.data() + data_at, size_t(e.usize), scan.storages);
  if (!bad.empty()) return "zip entry \"" + e.name + "\": " + bad;
  // Damage that check_pickle lets through can still send libtorch's unpickler astray (it freed
  // memory it did not allocate: tests/testdata/bad_models/unpickler_bad_free.fmam); the zip's
  // CRC-32 shows any damage before it runs. (A crafted pickle with a right CRC is not caught.)
  const uLong crc = crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(b.data() + data_at), uInt(e.usize));
  if (crc != le32(b, e.at + 16)) return "zip entry \"" + e.name + "\" fails its CRC-32 check (the file is damaged)";
  scan.prefix = e.name.substr(0, e.name.size() - 8);
  scan.have_pickle = true;
  return "";
}

// Checks the directory entry at `at` and its data, and moves `at` on to the next entry.
std::string check_entry(const std::vector<char>& b, size_t& at, size_t dir_end, ArchiveScan& scan) {
  ZipEntry e;
  if (std::string bad = read_entry(b, at, dir_end, e); !bad.empty()) return bad;
  uint64_t data_at = 0;
  if (std::string bad = check_entry_data(b, e, data_at); !bad.empty()) return bad;
  if (e.name.size() >= 9 && e.name.compare(e.name.size() - 9, 9, "/data.pkl") == 0) {
    if (std::string bad = check_data_pkl(b, e, data_at, scan); !bad.empty()) return bad;
  }
  // Two entries of one name: miniz reads the first, a check of the second would be worthless.
  if (!scan.records.emplace(e.name, e.usize).second) return "zip entry \"" + e.name + "\" appears twice";
  at += 46 + size_t(e.name_len) + e.extra_len + e.comment_len;
  return "";
}

// Each storage's claimed size must be what its record holds: libtorch sizes the storage from
// the pickle but fills it from the record, and would read past a short one.
std::string check_storage_records(const ArchiveScan& scan) {
  for (const auto& [key, bytes] : scan.storages) {
    auto it = scan.records.find(scan.prefix + "data/" + key);
    if (it == scan.records.end()) return "tensor storage \"" + key + "\" has no record";
    if (it->second < bytes)
      return "tensor storage \"" + key + "\" claims " + std::to_string(bytes) + " bytes, its record holds " +
             std::to_string(it->second);
  }
  return "";
}

// Checks the zip archive torch::pickle_save writes (entries stored, not compressed): that every
// entry lies inside the file with the size it claims, and that its data.pkl is a sound pickle.
// Returns "" if so, else what is wrong.
std::string check_archive(const std::vector<char>& b) {
  const size_t n = b.size();
  if (n < 22 || b[0] != 'P' || b[1] != 'K') return "not a zip archive";
  const size_t eocd = find_eocd(b);
  if (eocd == std::string::npos) return "no end of the zip directory (the file was cut short?)";
  ZipDirectory dir;
  if (std::string bad = read_directory(b, eocd, dir); !bad.empty()) return bad;
  ArchiveScan scan;
  size_t at = size_t(dir.at);
  for (size_t e = 0; e < dir.entries; ++e)
    if (std::string bad = check_entry(b, at, dir.end, scan); !bad.empty()) return bad;
  if (!scan.have_pickle) return "no data.pkl in the archive";
  return check_storage_records(scan);
}

// "stopped in stage 1 after 3 epoch(s)" from a checkpoint's progress JSON.
std::string checkpoint_position(const std::string& progress) {
  try {
    const auto j = nlohmann::json::parse(progress);
    return "stopped in stage " + std::to_string(j.value("stage", 0) + 1) + " after " + std::to_string(j.value("epoch", 0)) +
           " epoch(s)";
  } catch (const std::exception&) {
    return "progress unreadable";
  }
}

// ---- reading a model file's fields -------------------------------------------------------------

// Unpickles a model file after the structural check, and returns the dict at its top, which must
// say it is an fmam model.
c10::impl::GenericDict unpickle_model(const std::vector<char>& bytes, const std::string& path) {
  if (bytes.empty()) throw Error(path + ": the model file is empty");
  if (const std::string bad = check_archive(bytes); !bad.empty()) throw Error(path + ": not a model file (" + bad + ")");
  c10::IValue v;
  try {
    v = torch::pickle_load(bytes);
  } catch (const std::exception& e) {
    std::string w = e.what();
    throw Error(path + ": not a model file (cannot unpickle: " + w.substr(0, w.find('\n')) + ")");
  }
  if (!v.isGenericDict()) throw Error(path + ": not an fmam model file (no dict at the top)");
  auto d = v.toGenericDict();
  if (!d.contains("format") || !d.at("format").isString() || d.at("format").toStringRef() != kFormat)
    throw Error(path + ": not an fmam model file (field \"format\" is not \"" + kFormat + "\")");
  return d;
}

// Whether a tensor's sizes, strides and offset stay inside its storage. libtorch's unpickler
// takes them from the pickle without checking: a damaged file reads past it (found by fuzzing).
bool within_storage(const at::Tensor& t) {
  if (t.numel() == 0) return true;
  int64_t last = t.storage_offset();
  bool ok = last >= 0;
  for (int64_t d = 0; ok && d < t.dim(); ++d) {
    ok = t.stride(d) >= 0 && t.size(d) >= 0;
    if (ok) last += (t.size(d) - 1) * t.stride(d);
  }
  return ok && t.storage() && (uint64_t(last) + 1) * uint64_t(t.element_size()) <= uint64_t(t.storage().nbytes());
}

// The model file's top-level dict, read field by field. Each field is checked for its type before
// use: c10's own accessors fail with an INTERNAL ASSERT.
struct ModelFields {
  const c10::impl::GenericDict& d;
  const std::string& path;

  // The field `key`; an Error if the file lacks it.
  c10::IValue need(const char* key) const {
    if (!d.contains(key)) throw Error(path + ": model field \"" + key + "\" is missing");
    return d.at(key);
  }

  // The Error for a field of the wrong type: what it must be, what it is.
  Error bad_type(const char* key, const char* want) const {
    return Error(path + ": model field \"" + key + "\" must be " + want + ", got " + need(key).tagKind());
  }

  // A string field.
  std::string need_string(const char* key) const {
    if (!need(key).isString()) throw bad_type(key, "a string");
    return need(key).toStringRef();
  }

  // A finite number or None.
  std::optional<double> optional_number(const char* key) const {
    const c10::IValue v = need(key);
    if (v.isNone()) return std::nullopt;
    if (!v.isDouble() && !v.isInt()) throw bad_type(key, "a number or None");
    const double x = v.isDouble() ? v.toDouble() : double(v.toInt());
    if (!std::isfinite(x)) throw Error(path + ": model field \"" + key + "\" is not finite (" + std::to_string(x) + ")");
    return x;
  }

  // A dict of name -> tensor, each tensor inside its stored data, into `out`.
  void tensor_dict(const char* key, std::map<std::string, at::Tensor>& out) const {
    const c10::IValue v = need(key);
    if (!v.isGenericDict()) throw bad_type(key, "a dict of tensors");
    for (const auto& e : v.toGenericDict()) {
      if (!e.key().isString() || !e.value().isTensor()) throw bad_type(key, "a dict of name -> tensor");
      const at::Tensor t = e.value().toTensor();
      if (!within_storage(t))
        throw Error(path + ": tensor \"" + e.key().toStringRef() + "\" in field \"" + key +
                    "\" reaches past its stored data; the file is corrupt");
      out[e.key().toStringRef()] = t;
    }
  }

  // The field "version", which must be the one this fmam reads.
  void check_version() const {
    if (!need("version").isInt()) throw bad_type("version", "an integer");
    int64_t version = need("version").toInt();
    if (version != Model::kVersion)
      throw Error(path + ": model version " + std::to_string(version) + ", this fmam reads " + std::to_string(Model::kVersion));
  }

  // The field "fingerprints", a dict of strings, into `out`.
  void fingerprints(std::map<std::string, std::string>& out) const {
    if (!need("fingerprints").isGenericDict()) throw bad_type("fingerprints", "a dict of strings");
    for (const auto& e : need("fingerprints").toGenericDict()) {
      if (!e.key().isString() || !e.value().isString()) throw bad_type("fingerprints", "a dict of strings");
      out[e.key().toStringRef()] = e.value().toStringRef();
    }
  }

  // The field "image_size", [height, width], into the model.
  void image_size(Model& m) const {
    // A typed int list from C++, a generic list from Python's torch.save: both hold ints.
    std::vector<int64_t> size;
    const c10::IValue sz = need("image_size");
    if (sz.isIntList())
      size = sz.toIntVector();
    else if (sz.isList())
      for (const auto& e : sz.toListRef()) size.push_back(e.isInt() ? e.toInt() : -1);
    if (size.size() != 2 || size[0] < 1 || size[1] < 1)
      throw Error(path + ": model field \"image_size\" must hold [height, width], two positive integers");
    m.image_height = int(size[0]);
    m.image_width = int(size[1]);
  }

  // The tensors' checksum, verified where fmam wrote the file (see written_by_fmam).
  void verify_checksum(const std::vector<char>& bytes, const Model& m) const {
    if (!d.contains(kChecksumField) || !written_by_fmam(bytes)) return;
    const std::string stored = need_string(kChecksumField), actual = tensors_sha256(m.tensors);
    if (stored != actual)
      throw Error(path + ": the model's tensors do not match their checksum (field \"" + kChecksumField + "\": stored " +
                  stored.substr(0, 16) + "..., computed " + actual.substr(0, 16) +
                  "...): the file is corrupt (a damaged copy or disk); use another copy or train again");
  }
};

// No NaN or infinity in a model's floating-point tensors.
void check_finite(const std::map<std::string, at::Tensor>& tensors, const std::string& path) {
  for (const auto& [k, t] : tensors)
    if (t.is_floating_point() && !at::isfinite(t).all().item<bool>())
      throw Error(path + ": tensor \"" + k + "\" holds NaN or infinite values; the model is unusable (did training diverge?)");
}

// Every field of the model, in the order they are checked.
void read_model_fields(const ModelFields& f, const std::vector<char>& bytes, Model& m) {
  f.check_version();
  m.graph_name = f.need_string("graph_name");
  m.graph_json = f.need_string("graph_json");
  f.fingerprints(m.fingerprints);
  f.image_size(m);
  m.normalize = f.need_string("normalize");
  m.train_config = f.need_string("train_config");
  m.threshold = f.optional_number("threshold");
  m.map_lo = f.optional_number("map_lo");
  m.map_hi = f.optional_number("map_hi");
  f.tensor_dict("tensors", m.tensors);
  if (f.d.contains("progress")) m.progress = f.need_string("progress");
  if (f.d.contains("optimizer_state")) f.tensor_dict("optimizer_state", m.optimizer_state);
  // int8 calibration: absent in files older than fmam quantize.
  if (f.d.contains("int8_ranges")) f.tensor_dict("int8_ranges", m.int8_ranges);
  if (f.d.contains("int8_calibration")) m.int8_calibration = f.need_string("int8_calibration");
  f.verify_checksum(bytes, m);
  check_finite(m.tensors, f.path);
  check_finite(m.int8_ranges, f.path);
}

}  // namespace

void save_model(const std::string& path, const Model& m) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("format", std::string(kFormat));
  d.insert("version", int64_t(Model::kVersion));
  d.insert("graph_name", m.graph_name);
  d.insert("graph_json", m.graph_json);
  d.insert("fingerprints", to_dict(m.fingerprints));
  d.insert("image_size", std::vector<int64_t>{m.image_height, m.image_width});
  d.insert("normalize", m.normalize);
  d.insert("train_config", m.train_config);
  d.insert("threshold", m.threshold ? c10::IValue(*m.threshold) : c10::IValue());
  d.insert("map_lo", m.map_lo ? c10::IValue(*m.map_lo) : c10::IValue());
  d.insert("map_hi", m.map_hi ? c10::IValue(*m.map_hi) : c10::IValue());
  c10::Dict<std::string, at::Tensor> t;
  for (const auto& [k, v] : m.tensors) t.insert(k, v.detach().contiguous().cpu());
  d.insert("tensors", t);
  d.insert(kChecksumField, tensors_sha256(m.tensors));
  d.insert("progress", m.progress);
  c10::Dict<std::string, at::Tensor> o;
  for (const auto& [k, v] : m.optimizer_state) o.insert(k, v.detach().contiguous().cpu());
  d.insert("optimizer_state", o);
  c10::Dict<std::string, at::Tensor> r;
  for (const auto& [k, v] : m.int8_ranges) r.insert(k, v.detach().contiguous().cpu());
  d.insert("int8_ranges", r);
  d.insert("int8_calibration", m.int8_calibration);
  atomic_write_stream(path, [&](std::ostream& out) { write_pickle_archive(d, out); });
}

Model load_model(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(path + ": a folder, not a model file");
  if (!std::filesystem::exists(path, ec)) throw Error(path + ": cannot open model file (no such file)");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open model file");
  std::vector<char> bytes;
  try {
    bytes.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  } catch (const std::exception& e) {
    throw Error(path + ": cannot read model file: " + e.what());
  }
  return parse_model(bytes, path);
}

Model parse_model(const std::vector<char>& bytes, const std::string& path) {
  const c10::impl::GenericDict d = unpickle_model(bytes, path);
  Model m;
  try {
    read_model_fields(ModelFields{d, path}, bytes, m);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    std::string w = e.what();
    throw Error(path + ": malformed model file: " + w.substr(0, w.find('\n')));
  }
  return m;
}

void collect_model(Executor& ex, Model& m) {
  for (const auto& vn : ex.graph().nodes) {
    Node& n = ex.node(vn.config.id);
    if (auto* s = dynamic_cast<Stateful*>(&n))
      for (auto& [name, t] : s->named_state()) m.tensors[vn.config.id + "/" + name] = t.detach().clone();
    if (auto* f = dynamic_cast<Fingerprinted*>(&n)) m.fingerprints[vn.config.id] = f->fingerprint();
  }
}

void apply_model(const Model& m, Executor& ex, const std::string& path) {
  std::map<std::string, std::map<std::string, at::Tensor>> per_node;
  for (const auto& [key, t] : m.tensors) {
    auto slash = key.find('/');
    if (slash == std::string::npos) throw Error(path + ": tensor \"" + key + "\" has no \"<node_id>/\" prefix");
    per_node[key.substr(0, slash)][key.substr(slash + 1)] = t;
  }
  const std::string& file = ex.graph().config.file;
  for (const auto& [id, state] : per_node) {
    const ValidatedNode* vn = nullptr;
    for (const auto& n : ex.graph().nodes)
      if (n.config.id == id) vn = &n;
    if (!vn)
      throw Error(path + ": the model holds tensors for node \"" + id + "\", which " + file +
                  " does not have; was it trained for graph \"" + m.graph_name + "\"?");
    auto* s = dynamic_cast<Stateful*>(&ex.node(id));
    if (!s) throw Error(path + ": the model holds tensors for " + node_prefix(file, id, vn->config.type) + ", which has none");
    try {
      s->load_state(state);
    } catch (const std::exception& e) {
      throw Error(path + ": " + node_prefix(file, id, vn->config.type) + ": " + e.what());
    }
  }
  for (const auto& vn : ex.graph().nodes) {
    Node& n = ex.node(vn.config.id);
    if (dynamic_cast<Stateful*>(&n) && !per_node.count(vn.config.id)) {
      // A checkpoint stopped in an early stage lacks the nodes later stages add (stage 1 of
      // fmam_rkd trains no feature mapping): say so, not that the graph is the wrong one.
      if (!m.progress.empty())
        throw Error(path + ": an unfinished training checkpoint (" + checkpoint_position(m.progress) +
                    "), not a finished model: it has no tensors for " + node_prefix(file, vn.config.id, vn.config.type) +
                    " yet; finish it with fmam train --resume");
      throw Error(path + ": the model has no tensors for " + node_prefix(file, vn.config.id, vn.config.type) +
                  "; it was trained for graph \"" + m.graph_name + "\"");
    }
    if (auto* f = dynamic_cast<Fingerprinted*>(&n)) {
      auto it = m.fingerprints.find(vn.config.id);
      if (it != m.fingerprints.end() && !f->same_as(it->second))
        throw Error(path + ": " + node_prefix(file, vn.config.id, vn.config.type) + ": the model was trained against \"" +
                    it->second + "\", this graph loads \"" + f->fingerprint() + "\"");
    }
  }
}

std::string not_calibrated_for_int8(const std::string& graph_file, const std::string& model_path) {
  return "the model is not calibrated for int8; run fmam quantize " + graph_file + " --model " + model_path +
         " --data <its category or a folder of defect-free images>, or use --precision bf16 or fp32";
}

void collect_int8_ranges(Executor& ex, Model& m) {
  m.int8_ranges.clear();
  for (const auto& vn : ex.graph().nodes)
    if (auto* q = dynamic_cast<Int8Quantizable*>(&ex.node(vn.config.id)))
      for (auto& [point, range] : q->activation_ranges()) m.int8_ranges[vn.config.id + "/" + point] = range;
}

void apply_int8(const Model& m, Executor& ex, const std::string& path) {
  const std::string& file = ex.graph().config.file;
  bool any = false;
  for (const auto& vn : ex.graph().nodes) {
    auto* q = dynamic_cast<Int8Quantizable*>(&ex.node(vn.config.id));
    if (!q) continue;
    any = true;
    std::map<std::string, at::Tensor> ranges;
    const std::string prefix = vn.config.id + "/";
    for (auto it = m.int8_ranges.lower_bound(prefix); it != m.int8_ranges.end() && it->first.rfind(prefix, 0) == 0; ++it)
      ranges[it->first.substr(prefix.size())] = it->second;
    if (ranges.empty())
      throw Error(path + ": " + node_prefix(file, vn.config.id, vn.config.type) + ": " + not_calibrated_for_int8(file, path));
    try {
      q->use_int8(ranges);
    } catch (const std::exception& e) {
      throw Error(path + ": " + node_prefix(file, vn.config.id, vn.config.type) + ": " + e.what());
    }
  }
  if (!any) throw Error(file + ": precision int8: no node of this graph runs in int8 (Backbone does); use bf16 or fp32");
}

}  // namespace fmam
