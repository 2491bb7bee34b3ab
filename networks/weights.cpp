#include "networks/weights.h"

#include <ATen/core/Dict.h>
#include <ATen/core/ivalue.h>
#include <ATen/ops/from_blob.h>
#include <caffe2/serialize/inline_container.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "framework/atomic_file.h"
#include "framework/error.h"
#include "framework/pickle_archive.h"
#include "framework/resource_locator.h"
#include "framework/sha256.h"

namespace fmam {

namespace fs = std::filesystem;

// ---- a minimal unpickler for torch.save'd dicts of tensors ---------------------------------

namespace {

// A Python value, as far as state dicts need them. Containers are shared so that memoised
// objects alias, as in Python.
struct PyObj {
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kTuple, kList, kDict, kGlobal, kTensor };
  Kind kind = Kind::kNone;
  int64_t i = 0;
  double f = 0;
  std::string s;                              // a string, or "module.name" of a global
  std::vector<std::shared_ptr<PyObj>> items;  // tuple/list items; dict: key, value, key, value, ...
  at::Tensor tensor;
};
using PyRef = std::shared_ptr<PyObj>;

PyRef make(PyObj::Kind k) {
  auto o = std::make_shared<PyObj>();
  o->kind = k;
  return o;
}

at::ScalarType storage_dtype(const std::string& global) {
  static const std::map<std::string, at::ScalarType> kTypes = {
      {"torch.FloatStorage", at::kFloat},       {"torch.DoubleStorage", at::kDouble}, {"torch.HalfStorage", at::kHalf},
      {"torch.BFloat16Storage", at::kBFloat16}, {"torch.LongStorage", at::kLong},     {"torch.IntStorage", at::kInt},
      {"torch.ShortStorage", at::kShort},       {"torch.CharStorage", at::kChar},     {"torch.ByteStorage", at::kByte},
      {"torch.BoolStorage", at::kBool}};
  auto it = kTypes.find(global);
  if (it == kTypes.end()) throw Error("unsupported tensor storage type " + global);
  return it->second;
}

class Unpickler {
 public:
  Unpickler(const char* data, size_t size, caffe2::serialize::PyTorchStreamReader& zip)
      : p_(data), end_(data + size), begin_(data), zip_(zip) {}

  PyRef run() {
    for (;;) {
      const size_t at = size_t(p_ - begin_);
      const uint8_t op = u8();
      // One opcode per line: the switch reads as the opcode table it is.
      // clang-format off
      switch (op) {
        case 0x80: u8(); break;                 // PROTO
        case 0x95: skip(8); break;              // FRAME
        case '.': return pop();                 // STOP
        case '(': marks_.push_back(stack_.size()); break;  // MARK
        case '0': pop(); break;                 // POP
        case '1': pop_mark(); break;            // POP_MARK
        case 'N': push(make(PyObj::Kind::kNone)); break;
        case 0x88: case 0x89: {                 // NEWTRUE, NEWFALSE
          auto o = make(PyObj::Kind::kBool);
          o->i = op == 0x88;
          push(o);
        } break;
        case 'J': push_int(int32_t(le(4))); break;  // BININT
        case 'K': push_int(int64_t(le(1))); break;  // BININT1
        case 'M': push_int(int64_t(le(2))); break;  // BININT2
        case 0x8a: {                                // LONG1
          const size_t n = u8();
          if (n > 8) throw Error("integer too large in pickle");
          uint64_t v = n ? le(n) : 0;
          if (n && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t(0) << (8 * n);  // sign-extend
          push_int(int64_t(v));
        } break;
        case 'G': {                                 // BINFLOAT, big-endian
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = (bits << 8) | u8();
          auto o = make(PyObj::Kind::kFloat);
          std::memcpy(&o->f, &bits, 8);
          push(o);
        } break;
        case 'X': push_string(le(4)); break;        // BINUNICODE
        case 0x8c: push_string(le(1)); break;       // SHORT_BINUNICODE
        case 0x8d: push_string(le(8)); break;       // BINUNICODE8
        case 'T': push_string(le(4)); break;        // BINSTRING
        case 'U': push_string(le(1)); break;        // SHORT_BINSTRING
        case ')': push(make(PyObj::Kind::kTuple)); break;
        case ']': push(make(PyObj::Kind::kList)); break;
        case '}': push(make(PyObj::Kind::kDict)); break;
        case 't': {                                 // TUPLE
          auto o = make(PyObj::Kind::kTuple);
          o->items = pop_mark();
          push(o);
        } break;
        case 0x85: case 0x86: case 0x87: {          // TUPLE1..3
          auto o = make(PyObj::Kind::kTuple);
          o->items.resize(op - 0x84);
          for (size_t k = o->items.size(); k-- > 0;) o->items[k] = pop();
          push(o);
        } break;
        case 'q': memo_[le(1)] = top(); break;      // BINPUT
        case 'r': memo_[le(4)] = top(); break;      // LONG_BINPUT
        case 0x94: memo_[memo_.size()] = top(); break;  // MEMOIZE
        case 'h': push(memo(le(1))); break;         // BINGET
        case 'j': push(memo(le(4))); break;         // LONG_BINGET
        case 'c': {                                 // GLOBAL
          auto o = make(PyObj::Kind::kGlobal);
          o->s = line();  // module, then name (two statements: operands of + are unordered)
          o->s += "." + line();
          push(o);
        } break;
        case 0x93: {                                // STACK_GLOBAL
          PyRef name = pop(), module = pop();
          auto o = make(PyObj::Kind::kGlobal);
          o->s = module->s + "." + name->s;
          push(o);
        } break;
        case 'R': case 0x81: {                      // REDUCE, NEWOBJ
          PyRef args = pop(), callable = pop();
          push(apply(callable, args));
        } break;
        case 'b': pop(); break;  // BUILD: state of an OrderedDict (_metadata) or tensor: unused
        case 's': {                                 // SETITEM
          PyRef v = pop(), k = pop();
          dict_top().items.insert(dict_top().items.end(), {k, v});
        } break;
        case 'u': {                                 // SETITEMS
          auto kv = pop_mark();
          auto& d = dict_top().items;
          d.insert(d.end(), kv.begin(), kv.end());
        } break;
        case 'a': {                                 // APPEND
          PyRef v = pop();
          top()->items.push_back(v);
        } break;
        case 'e': {                                 // APPENDS
          auto vs = pop_mark();
          top()->items.insert(top()->items.end(), vs.begin(), vs.end());
        } break;
        case 'Q': push(storage(pop())); break;      // BINPERSID
        default: {
          char hex[8];
          std::snprintf(hex, sizeof hex, "0x%02x", op);
          throw Error(std::string("unsupported pickle opcode ") + hex + " at byte " +
                      std::to_string(at));
        }
      }
      // clang-format on
    }
  }

 private:
  uint8_t u8() {
    if (p_ >= end_) throw Error("truncated pickle");
    return uint8_t(*p_++);
  }
  void skip(size_t n) {
    if (size_t(end_ - p_) < n) throw Error("truncated pickle");
    p_ += n;
  }
  uint64_t le(size_t n) {
    uint64_t v = 0;
    for (size_t k = 0; k < n; ++k) v |= uint64_t(u8()) << (8 * k);
    return v;
  }
  std::string line() {
    const char* nl = static_cast<const char*>(std::memchr(p_, '\n', size_t(end_ - p_)));
    if (!nl) throw Error("truncated pickle");
    std::string s(p_, nl);
    p_ = nl + 1;
    return s;
  }
  void push(PyRef o) { stack_.push_back(std::move(o)); }
  void push_int(int64_t v) {
    auto o = make(PyObj::Kind::kInt);
    o->i = v;
    push(o);
  }
  void push_string(uint64_t n) {
    if (uint64_t(end_ - p_) < n) throw Error("truncated pickle");
    auto o = make(PyObj::Kind::kString);
    o->s.assign(p_, size_t(n));
    p_ += n;
    push(o);
  }
  PyRef pop() {
    if (stack_.empty()) throw Error("malformed pickle: stack underflow");
    PyRef o = std::move(stack_.back());
    stack_.pop_back();
    return o;
  }
  const PyRef& top() {
    if (stack_.empty()) throw Error("malformed pickle: stack underflow");
    return stack_.back();
  }
  PyObj& dict_top() {
    if (top()->kind != PyObj::Kind::kDict) throw Error("malformed pickle: SETITEM on a non-dict");
    return *top();
  }
  std::vector<PyRef> pop_mark() {
    if (marks_.empty() || marks_.back() > stack_.size()) throw Error("malformed pickle: no MARK");
    std::vector<PyRef> out(stack_.begin() + marks_.back(), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return out;
  }
  PyRef memo(uint64_t k) {
    auto it = memo_.find(k);
    if (it == memo_.end()) throw Error("malformed pickle: memo " + std::to_string(k) + " unset");
    return it->second;
  }
  static const PyRef& arg(const PyRef& args, size_t k) {
    if (args->kind != PyObj::Kind::kTuple || args->items.size() <= k) throw Error("malformed pickle: too few arguments");
    return args->items[k];
  }
  static std::vector<int64_t> ints(const PyRef& tuple) {
    std::vector<int64_t> v;
    for (const auto& x : tuple->items) v.push_back(x->i);
    return v;
  }

  // The few callables a state dict uses.
  PyRef apply(const PyRef& callable, const PyRef& args) {
    const std::string& g = callable->s;
    if (callable->kind != PyObj::Kind::kGlobal) throw Error("malformed pickle: calling a non-global");
    if (g == "collections.OrderedDict") return make(PyObj::Kind::kDict);  // items follow (SETITEMS)
    if (g == "torch._utils._rebuild_tensor_v2" || g == "torch._utils._rebuild_tensor") {
      // (storage, storage_offset, size, stride, ...)
      const PyRef& st = arg(args, 0);
      if (st->kind != PyObj::Kind::kTensor) throw Error("malformed pickle: tensor without storage");
      auto o = make(PyObj::Kind::kTensor);
      o->tensor = st->tensor.as_strided(ints(arg(args, 2)), ints(arg(args, 3)), arg(args, 1)->i);
      return o;
    }
    if (g == "torch._utils._rebuild_parameter") return arg(args, 0);  // (tensor, requires_grad, hooks)
    // libtorch's pickle_save tags typed containers: restore_type_tag(dict, "Dict[str, Tensor]").
    if (g == "torch.jit._pickle.restore_type_tag") return arg(args, 0);
    if (g == "torch._tensor._rebuild_from_type_v2") return apply(arg(args, 0), arg(args, 2));
    throw Error("holds a Python object of type " + g + "; expected a dict of tensors");
  }

  // persistent_load(('storage', storage_type, key, location, numel)): the bytes of data/<key>.
  PyRef storage(const PyRef& pid) {
    const std::string& key = arg(pid, 2)->s;
    auto it = storages_.find(key);
    if (it == storages_.end()) {
      if (arg(pid, 0)->s != "storage") throw Error("malformed pickle: persistent id " + arg(pid, 0)->s);
      const at::ScalarType dt = storage_dtype(arg(pid, 1)->s);
      const int64_t numel = arg(pid, 4)->i;
      auto record = zip_.getRecord("data/" + key);
      auto holder = std::make_shared<at::DataPtr>(std::move(std::get<0>(record)));
      if (int64_t(std::get<1>(record)) < numel * int64_t(c10::elementSize(dt)))
        throw Error("tensor data data/" + key + " is shorter than its " + std::to_string(numel) + " elements");
      auto o = make(PyObj::Kind::kTensor);
      o->tensor = at::from_blob(
          holder->get(), {numel}, [holder](void*) {}, at::TensorOptions().dtype(dt));
      it = storages_.emplace(key, o).first;
    }
    return it->second;
  }

  const char* p_;
  const char* end_;
  const char* begin_;
  caffe2::serialize::PyTorchStreamReader& zip_;
  std::vector<PyRef> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, PyRef> memo_;
  std::map<std::string, PyRef> storages_;
};

}  // namespace

TensorMap read_state_dict(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw Error(path + ": no such file");
  try {
    std::unique_ptr<caffe2::serialize::PyTorchStreamReader> zip;
    try {
      zip = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
    } catch (const c10::Error&) {
      throw Error(
          "not a zip-format torch.save file (the legacy pre-1.6 format cannot be read); re-save it "
          "with torch.save(dict(torch.load(f)), f)");
    }
    if (!zip->hasRecord("data.pkl")) throw Error("no data.pkl in the archive: not a torch.save file");
    auto record = zip->getRecord("data.pkl");
    Unpickler up(static_cast<const char*>(std::get<0>(record).get()), std::get<1>(record), *zip);
    PyRef root = up.run();
    if (root->kind != PyObj::Kind::kDict) throw Error("holds a Python object, not a dict of tensors");
    TensorMap out;
    for (size_t k = 0; k + 1 < root->items.size(); k += 2) {
      const PyRef& name = root->items[k];
      const PyRef& value = root->items[k + 1];
      if (name->kind != PyObj::Kind::kString || value->kind != PyObj::Kind::kTensor)
        throw Error("holds a dict that is not string -> tensor (item " + std::to_string(k / 2) + ")");
      out[name->s] = value->tensor;
    }
    return out;
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  } catch (const c10::Error& e) {
    throw Error(path + ": " + e.what_without_backtrace());
  }
}

void write_state_dict(const std::string& path, const NamedTensors& tensors) {
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& [name, t] : tensors) dict.insert(name, t.detach().cpu().contiguous());
  atomic_write_stream(path, [&](std::ostream& out) { write_pickle_archive(c10::IValue(dict), out); });
}

// ---- SHA-256 -------------------------------------------------------------------------------

std::string sha256_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open");
  // Fed in 64 KiB reads: a 100 MB ResNet-50 file is never held whole.
  Sha256 sha(path);
  std::vector<char> buf(1 << 16);
  while (f) {
    f.read(buf.data(), std::streamsize(buf.size()));
    sha.update(buf.data(), size_t(f.gcount()));
  }
  return sha.hex_digest();
}

// ---- lookup --------------------------------------------------------------------------------

namespace {

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// The repo's weights folder, relative to the folder that holds the checkout.
const fs::path kRepoWeights = fs::path("shared") / "weights";

bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

// The folders find_weights() searches, in order (see weights.h), labelled for its message.
ResourceLocator weights_folders() {
  ResourceLocator loc;
  if (const auto env = env_value("FMAM_WEIGHTS")) loc.add(*env, "$FMAM_WEIGHTS (" + *env + ")");
  fs::path cache;  // torchvision's own order: $TORCH_HOME, then the XDG cache, then ~/.cache
  if (const auto th = env_value("TORCH_HOME")) {
    cache = fs::path(*th) / "hub" / "checkpoints";
  } else if (const auto xdg = env_value("XDG_CACHE_HOME")) {
    cache = fs::path(*xdg) / "torch" / "hub" / "checkpoints";
  } else if (const auto home = env_value("HOME")) {
    cache = fs::path(*home) / ".cache" / "torch" / "hub" / "checkpoints";
  }
  if (!cache.empty()) loc.add(cache, cache.string() + " (torchvision's cache)");
  std::error_code ec;
  const fs::path cwd = fs::current_path(ec);
  loc.add(fs::path("..") / kRepoWeights, "../shared/weights (from " + cwd.string() + ")");
  // Only the nearest repo's shared/weights: a farther one belongs to some other checkout.
  if (const fs::path d = loc.nearest_exe_ancestor(kRepoWeights, is_dir); !d.empty())
    loc.add(d / kRepoWeights, (d / kRepoWeights).string() + " (beside the executable's repo)");
  return loc;
}

}  // namespace

WeightsSearch find_weights(const std::string& requested, const std::vector<std::string>& default_names) {
  WeightsSearch s;
  // A path (or a name that exists here) is taken as given: a missing file is an error, not a
  // reason to load some other file.
  if (!requested.empty() && (requested.find('/') != std::string::npos || is_file(requested))) {
    s.places.push_back(requested);
    s.explicit_path = true;
    if (is_file(requested)) s.path = requested;
    return s;
  }
  const std::vector<std::string> names = requested.empty() ? default_names : std::vector<std::string>{requested};

  if (const auto env = env_value("FMAM_WEIGHTS"); env && is_file(*env) && requested.empty()) {
    s.places.push_back("$FMAM_WEIGHTS (" + *env + ")");
    s.path = *env;
    return s;
  }
  if (!env_value("FMAM_WEIGHTS")) s.places.push_back("$FMAM_WEIGHTS (not set)");
  const ResourceLocator loc = weights_folders();
  const auto holds_one = [&](const ResourceLocator::Place& dir) {
    for (const auto& n : names)
      if (is_file(dir.path / n)) {
        s.path = (dir.path / n).string();
        return true;
      }
    return false;
  };
  if (loc.find(holds_one, &s.places)) return s;
  if (loc.nearest_exe_ancestor(kRepoWeights, is_dir).empty())
    s.places.push_back("shared/weights beside the executable's repo (none above " + loc.exe_dir().string() + ")");
  return s;
}

// ---- messages ------------------------------------------------------------------------------

std::string shape_str(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

void StateProblems::mis_shaped(const std::string& name, at::IntArrayRef got, at::IntArrayRef expected) {
  shaped_.push_back(name + " " + shape_str(got) + " (expected " + shape_str(expected) + ")");
}

std::string StateProblems::str() const {
  std::string out;
  auto list = [&out](const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    out += std::string(out.empty() ? "" : "; ") + what + " (" + std::to_string(v.size()) + "): ";
    for (size_t i = 0; i < v.size() && i < 10; ++i) out += (i ? ", " : "") + v[i];
    if (v.size() > 10) out += ", ... and " + std::to_string(v.size() - 10) + " more";
  };
  list("missing", missing_);
  list("mis-shaped", shaped_);
  list("unexpected", unexpected_);
  return out;
}

}  // namespace fmam
