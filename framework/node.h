// The node API. A node declares its typed ports, its params (name, type, default, range or
// choices, description) and its concurrency in one contract(); the loader, `fmam describe` and
// every error message come from that one declaration. Nodes never see TBB or JSON.
//
//   class GaussianBlurNode final : public Node {
//    public:
//     struct Params { float sigma = 4.0f; };
//     static constexpr In<Map2D> kIn{"map"};
//     static constexpr Out<Map2D> kOut{"map"};
//     static Contract contract() { return Contract("GaussianBlur").in(kIn, "...")...; }
//     static Shapes infer(const Params&, const Shapes& in);    // optional
//     explicit GaussianBlurNode(const Params& p);
//     void process(Context& ctx) override { kOut(ctx).send(blur(kIn(ctx).get())); }
//   };
//   FMAM_REGISTER_NODE(GaussianBlurNode);
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "framework/error.h"
#include "framework/packet.h"
#include "framework/shape.h"
#include "framework/value.h"

namespace fmam {

class Context;

// ---- ports ---------------------------------------------------------------------------------

template <class T>
class InputRef;
template <class T>
class OutputRef;

template <class T>
struct In {
  const char* name;
  constexpr explicit In(const char* n) : name(n) {}
  InputRef<T> operator()(Context& ctx) const { return InputRef<T>(ctx, name); }
  operator std::string() const { return name; }       // NOLINT: used as a Shapes key
  operator std::string_view() const { return name; }  // NOLINT
};

template <class T>
struct Out {
  const char* name;
  constexpr explicit Out(const char* n) : name(n) {}
  OutputRef<T> operator()(Context& ctx) const { return OutputRef<T>(ctx, name); }
  operator std::string() const { return name; }       // NOLINT
  operator std::string_view() const { return name; }  // NOLINT
};

// ---- params --------------------------------------------------------------------------------

template <class T>
struct Range {
  T lo, hi;
};
template <class T>
Range(T, T) -> Range<T>;

// Enum or string choices with their names: Choices<Mode>{{"add", Mode::kAdd}, ...}.
template <class T>
struct Choices {
  std::vector<std::pair<std::string, T>> items;
  Choices(std::initializer_list<std::pair<std::string, T>> init) : items(init) {}
};

struct ParamSpec {
  std::string name;
  std::string type;  // "float", "int", "bool", "string", "list<string>", "choice", ...
  std::string description;
  std::string constraint;  // "[0.5, 32]", "one of: add, multiply", or ""
  Value default_value;
  // A value a trained model decides ("image_width", "image_height", "map_lo", "map_hi",
  // "threshold"; see framework/model_binding.h), or "". Declared with Contract::from_model().
  std::string model_field;
  std::function<void(void* params, const Value&)> set;  // throws Error(problem) on a bad value
  std::function<Value(const void* params)> get;
};

namespace detail {

std::string format_number(double d);

template <class T>
struct ParamCodec;

template <>
struct ParamCodec<bool> {
  static constexpr const char* type = "bool";
  static bool decode(const Value& v) {
    if (!v.is_bool()) throw Error(std::string("must be true or false, got ") + v.str());
    return v.as_bool();
  }
  static Value encode(bool b) { return Value(b); }
};
template <>
struct ParamCodec<int> {
  static constexpr const char* type = "int";
  static int decode(const Value& v) {
    // Out-of-int values are errors, not wrapped: "width": 4294967552 must not become 256.
    if (v.is_int() && v.as_int() >= INT32_MIN && v.as_int() <= INT32_MAX) return int(v.as_int());
    if (v.is_double() && std::floor(v.as_number()) == v.as_number() && v.as_number() >= INT32_MIN && v.as_number() <= INT32_MAX)
      return int(v.as_number());
    if (v.is_int() || (v.is_double() && std::floor(v.as_number()) == v.as_number()))
      throw Error("must be an integer in [-2147483648, 2147483647], got " + v.str());
    throw Error(std::string("must be an integer, got ") + v.str());
  }
  static Value encode(int i) { return Value(i); }
};
template <>
struct ParamCodec<float> {
  static constexpr const char* type = "float";
  static float decode(const Value& v) {
    if (!v.is_number()) throw Error(std::string("must be a number, got ") + v.str());
    return float(v.as_number());
  }
  static Value encode(float f) { return Value(double(f)); }
};
template <>
struct ParamCodec<double> {
  static constexpr const char* type = "double";
  static double decode(const Value& v) {
    if (!v.is_number()) throw Error(std::string("must be a number, got ") + v.str());
    return v.as_number();
  }
  static Value encode(double d) { return Value(d); }
};
template <>
struct ParamCodec<std::string> {
  static constexpr const char* type = "string";
  static std::string decode(const Value& v) {
    if (!v.is_string()) throw Error(std::string("must be a string, got ") + v.str());
    return v.as_string();
  }
  static Value encode(const std::string& s) { return Value(s); }
};
template <class E>
struct ParamCodec<std::vector<E>> {
  static std::string type_name() { return std::string("list<") + ParamCodec<E>::type + ">"; }
  static std::vector<E> decode(const Value& v) {
    if (!v.is_list()) throw Error("must be a list, got " + v.str());
    std::vector<E> out;
    for (size_t i = 0; i < v.as_list().size(); ++i) {
      try {
        out.push_back(ParamCodec<E>::decode(v.as_list()[i]));
      } catch (const Error& e) {
        throw Error("item " + std::to_string(i) + " " + e.what());
      }
    }
    return out;
  }
  static Value encode(const std::vector<E>& xs) {
    Value::List l;
    for (const auto& x : xs) l.push_back(ParamCodec<E>::encode(x));
    return Value(l);
  }
};

template <class T>
std::string type_name() {
  if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, int> || std::is_same_v<T, float> || std::is_same_v<T, double> ||
                std::is_same_v<T, std::string>)
    return ParamCodec<T>::type;
  else
    return ParamCodec<T>::type_name();
}

}  // namespace detail

// ---- concurrency ---------------------------------------------------------------------------

enum class Concurrency {
  kSerial,     // one frame at a time, in input order (stateful nodes)
  kUnlimited,  // any number of frames at once (pure functions of the input)
};

enum class Device { kCpu, kCuda };

// The arithmetic of the networks (convolutions and matrix products).
//  kFloat32: everything in float32.
//  kBFloat16Mixed: as torch.autocast(device_type="cpu", dtype=torch.bfloat16) or Lightning's
//    precision="bf16-mixed": convolutions and matrix products run in bfloat16; BatchNorm
//    statistics, weights kept for training, and every node's outputs stay float32, so what flows
//    between nodes is float32 whatever the networks do.
// Training asks for it per Trainable node (Trainable::set_precision); inference per run
// (RunOptions::precision, handed to nodes in their NodeEnv).
enum class Precision { kFloat32, kBFloat16Mixed };

// ---- the contract --------------------------------------------------------------------------

struct PortSpec {
  std::string name;
  std::string type;  // data type name
  std::string description;
  bool optional = false;
};

class Contract {
 public:
  explicit Contract(std::string type) : type_(std::move(type)) {}

  template <class T>
  Contract& in(const In<T>& p, std::string description, bool optional = false) {
    inputs_.push_back({p.name, DataTypeName<T>::value, std::move(description), optional});
    return *this;
  }
  // An optional output is sent only in some configurations (e.g. when an optional input is
  // connected); not sending it is then no error.
  template <class T>
  Contract& out(const Out<T>& p, std::string description, bool optional = false) {
    outputs_.push_back({p.name, DataTypeName<T>::value, std::move(description), optional});
    return *this;
  }

  // A param with no constraint beyond its type.
  template <class P, class T>
  Contract& param(T P::*member, std::string name, std::string description) {
    return add_param<P, T>(member, std::move(name), std::move(description), "", [](const T&) { return std::string(); });
  }
  // A numeric param limited to [lo, hi].
  template <class P, class T, class R>
  Contract& param(T P::*member, std::string name, std::string description, Range<R> r) {
    static_assert(std::is_arithmetic_v<T>, "Range needs a numeric param");
    T lo = T(r.lo), hi = T(r.hi);
    std::string c = "[" + detail::format_number(double(lo)) + ", " + detail::format_number(double(hi)) + "]";
    return add_param<P, T>(member, std::move(name), std::move(description), c, [lo, hi, c](const T& v) -> std::string {
      if (v < lo || v > hi || v != v) return "must be in " + c + ", got " + detail::format_number(double(v));
      return "";
    });
  }
  // A param chosen by name from a fixed set (enum or string values).
  template <class P, class T>
  Contract& param(T P::*member, std::string name, std::string description, Choices<T> choices) {
    std::string listing;
    for (const auto& [n, v] : choices.items) listing += (listing.empty() ? "" : ", ") + n;
    ParamSpec s;
    s.name = std::move(name);
    s.type = "choice";
    s.description = std::move(description);
    s.constraint = "one of: " + listing;
    auto items = choices.items;
    s.set = [member, items, listing](void* p, const Value& v) {
      if (!v.is_string()) throw Error("must be one of: " + listing + "; got " + v.str());
      for (const auto& [n, x] : items)
        if (n == v.as_string()) {
          static_cast<P*>(p)->*member = x;
          return;
        }
      throw Error("must be one of: " + listing + "; got " + v.str());
    };
    s.get = [member, items](const void* p) -> Value {
      const T& cur = static_cast<const P*>(p)->*member;
      for (const auto& [n, x] : items)
        if (x == cur) return Value(n);
      return Value();
    };
    P defaults{};
    s.default_value = s.get(&defaults);
    params_.push_back(std::move(s));
    return *this;
  }

  // The param declared last takes its value from a trained model's `field` (model_binding.h):
  // the model's image size reaches every Resize, its calibration every heatmap, without code
  // that names node types.
  Contract& from_model(std::string field) {
    params_.back().model_field = std::move(field);
    return *this;
  }

  Contract& concurrency(Concurrency c) {
    concurrency_ = c;
    return *this;
  }
  // The node accepts a batch of frames stacked on dim 0 of every Tensor / FeaturePyramid input.
  Contract& batchable() {
    batchable_ = true;
    return *this;
  }
  // The node's outputs are a deterministic function of its inputs and params: no random
  // numbers, no state, no use of the frame id (AnomalySynth, seeded per frame id, is not; the
  // concurrency alone cannot tell, as both are kUnlimited). Training reuses the outputs of such
  // a node when everything upstream of it is deterministic too (RunOptions::output_cache).
  Contract& deterministic() {
    deterministic_ = true;
    return *this;
  }
  // One line on what the node computes, printed by `fmam describe`.
  Contract& doc(std::string d) {
    doc_ = std::move(d);
    return *this;
  }

  const std::string& type() const { return type_; }
  const std::string& doc() const { return doc_; }
  const std::vector<PortSpec>& inputs() const { return inputs_; }
  const std::vector<PortSpec>& outputs() const { return outputs_; }
  const std::vector<ParamSpec>& params() const { return params_; }
  Concurrency concurrency() const { return concurrency_; }
  bool is_batchable() const { return batchable_; }
  bool is_deterministic() const { return deterministic_; }
  const PortSpec* find_input(std::string_view n) const;
  const PortSpec* find_output(std::string_view n) const;
  const ParamSpec* find_param(std::string_view n) const;

 private:
  template <class P, class T, class Check>
  Contract& add_param(T P::*member, std::string name, std::string description, std::string constraint, Check check) {
    using Codec = detail::ParamCodec<T>;
    ParamSpec s;
    s.name = std::move(name);
    s.type = detail::type_name<T>();
    s.description = std::move(description);
    s.constraint = std::move(constraint);
    s.set = [member, check](void* p, const Value& v) {
      T x = Codec::decode(v);
      std::string problem = check(x);
      if (!problem.empty()) throw Error(problem);
      static_cast<P*>(p)->*member = std::move(x);
    };
    s.get = [member](const void* p) -> Value { return Codec::encode(static_cast<const P*>(p)->*member); };
    P defaults{};
    s.default_value = s.get(&defaults);
    params_.push_back(std::move(s));
    return *this;
  }

  std::string type_, doc_;
  std::vector<PortSpec> inputs_, outputs_;
  std::vector<ParamSpec> params_;
  Concurrency concurrency_ = Concurrency::kUnlimited;
  bool batchable_ = false;
  bool deterministic_ = false;
};

// ---- the per-frame context -----------------------------------------------------------------

class Context {
 public:
  // The frame (or the first frame of a batch), and where it came from (a file path or "").
  long long frame_id() const { return frame_id_; }
  const std::string& source() const { return source_; }
  // Frames in this call: 1 unless the node is batchable and the runner batches.
  int batch_size() const { return batch_size_; }
  // Sources of each frame of the batch.
  const std::vector<std::string>& sources() const { return sources_; }
  Device device() const { return device_; }

  bool has(std::string_view port) const;
  const Packet& packet(std::string_view port) const;
  void send_packet(std::string_view port, Packet p);
  // Skip this frame (e.g. an unreadable file): the runner reports the reason and goes on.
  void drop(std::string reason) {
    dropped_ = true;
    drop_reason_ = std::move(reason);
  }
  bool dropped() const { return dropped_; }
  const std::string& drop_reason() const { return drop_reason_; }

  // Used by the runner and NodeRunner.
  struct Slot {
    std::string port;
    Packet packet;
  };
  Context(long long frame_id, std::string source, int batch_size, Device device)
      : frame_id_(frame_id), source_(std::move(source)), batch_size_(batch_size), device_(device) {}
  std::vector<Slot>& inputs() { return inputs_; }
  std::vector<Slot>& outputs() { return outputs_; }
  std::vector<std::string>& mutable_sources() { return sources_; }

 private:
  long long frame_id_;
  std::string source_;
  int batch_size_;
  Device device_;
  std::vector<std::string> sources_;
  std::vector<Slot> inputs_, outputs_;
  bool dropped_ = false;
  std::string drop_reason_;
};

template <class T>
class InputRef {
 public:
  InputRef(Context& c, const char* n) : ctx_(c), name_(n) {}
  bool has() const { return ctx_.has(name_); }
  const T& get() const {
    try {
      return ctx_.packet(name_).template get<T>();
    } catch (const PortError&) {
      throw;
    } catch (const Error& e) {
      throw PortError("input", name_, e.what());
    }
  }

 private:
  Context& ctx_;
  const char* name_;
};

template <class T>
class OutputRef {
 public:
  OutputRef(Context& c, const char* n) : ctx_(c), name_(n) {}
  void send(T value) { ctx_.send_packet(name_, Packet::make<T>(std::move(value))); }

 private:
  Context& ctx_;
  const char* name_;
};

// ---- nodes ---------------------------------------------------------------------------------

class Node {
 public:
  virtual ~Node() = default;
  // Called once per frame (or batch) with every connected input present.
  virtual void process(Context& ctx) = 0;
  // Called once after the last frame (serial nodes see it after every frame). Writers close
  // their files here.
  virtual void finish() {}
};

// ---- construction environment ----------------------------------------------------------------

// Handed to a node's constructor when it takes one (`N(const Params&, NodeEnv&)`): which node it
// is, the device, and objects shared between the nodes of one executor, e.g. two Student nodes
// of a training graph (normal and synthetic branch) that must train ONE set of weights, or two
// Backbone nodes that need not load the same file twice.
class NodeEnv {
 public:
  NodeEnv(std::string node_id, Device device, std::map<std::string, std::shared_ptr<void>>* store,
          Precision precision = Precision::kFloat32, bool training = false)
      : node_id_(std::move(node_id)), device_(device), precision_(precision), training_(training), store_(store) {}
  const std::string& node_id() const { return node_id_; }
  Device device() const { return device_; }
  // The arithmetic inference asks of a network node (frozen or in eval mode); nodes without
  // networks ignore it.
  Precision precision() const { return precision_; }
  // The node is built for a training run: Trainable nodes keep float32 weights (the optimizer
  // updates them; their arithmetic is Trainable::set_precision's), frozen ones may still use
  // precision().
  bool training() const { return training_; }
  // The object stored under `key` for type T, made by make() on first use.
  template <class T, class Make>
  std::shared_ptr<T> shared(const std::string& key, Make make) {
    const std::string full = std::string(typeid(T).name()) + "|" + key;
    auto it = store_->find(full);
    if (it != store_->end()) return std::static_pointer_cast<T>(it->second);
    std::shared_ptr<T> obj = make();
    (*store_)[full] = obj;
    return obj;
  }
  // The object stored under `key` for type T, or null.
  template <class T>
  std::shared_ptr<T> find(const std::string& key) const {
    auto it = store_->find(std::string(typeid(T).name()) + "|" + key);
    return it == store_->end() ? nullptr : std::static_pointer_cast<T>(it->second);
  }

 private:
  std::string node_id_;
  Device device_;
  Precision precision_;
  bool training_;
  std::map<std::string, std::shared_ptr<void>>* store_;
};

// ---- registration --------------------------------------------------------------------------

// Everything the runtime knows about a node type, built from its class by make_node_type<N>().
struct NodeType {
  Contract contract{""};
  std::function<std::shared_ptr<void>()> make_params;
  std::function<std::unique_ptr<Node>(const void* params, NodeEnv& env)> make;
  std::function<Shapes(const void* params, const Shapes& in)> infer;  // empty: shapes unknown
  std::string plugin;                                                 // filled by the loader
};

namespace detail {
template <class N, class = void>
struct HasInfer : std::false_type {};
template <class N>
struct HasInfer<N, std::void_t<decltype(N::infer(std::declval<const typename N::Params&>(), std::declval<const Shapes&>()))>>
    : std::true_type {};
}  // namespace detail

template <class N>
NodeType make_node_type() {
  using P = typename N::Params;
  NodeType t;
  t.contract = N::contract();
  t.make_params = [] { return std::static_pointer_cast<void>(std::make_shared<P>()); };
  t.make = [](const void* p, NodeEnv& env) -> std::unique_ptr<Node> {
    if constexpr (std::is_constructible_v<N, const P&, NodeEnv&>)
      return std::make_unique<N>(*static_cast<const P*>(p), env);
    else
      return std::make_unique<N>(*static_cast<const P*>(p));
  };
  if constexpr (detail::HasInfer<N>::value)
    t.infer = [](const void* p, const Shapes& in) { return N::infer(*static_cast<const P*>(p), in); };
  return t;
}

// The node types registered by the plugin being built (one list per plugin .so; the plugin's
// C entry point hands it to the runtime). Defined with hidden visibility in plugin_entry.cpp.
namespace plugin_local {
__attribute__((visibility("hidden"))) std::vector<NodeType>& node_types();
struct Registrar {
  explicit Registrar(NodeType t) { node_types().push_back(std::move(t)); }
};
}  // namespace plugin_local

}  // namespace fmam

#define FMAM_REGISTER_NODE_CONCAT2(a, b) a##b
#define FMAM_REGISTER_NODE_CONCAT(a, b) FMAM_REGISTER_NODE_CONCAT2(a, b)
// The last line of a node's .cpp (MediaPipe's REGISTER_CALCULATOR).
#define FMAM_REGISTER_NODE(N) \
  static ::fmam::plugin_local::Registrar FMAM_REGISTER_NODE_CONCAT(fmam_registrar_, __COUNTER__)(::fmam::make_node_type<N>())
