// Small pieces of the core: values, shapes, data types, contracts, contexts, frames.
#include <cmath>
#include <cstdio>

#include "framework/executor.h"
#include "framework/node.h"
#include "framework/packet.h"
#include "framework/types.h"

namespace fmam {

const char* Value::kind() const {
  switch (v_.index()) {
    case 0: return "null";
    case 1: return "bool";
    case 2: return "integer";
    case 3: return "number";
    case 4: return "string";
    default: return "list";
  }
}

std::string Value::str() const {
  switch (v_.index()) {
    case 0: return "null";
    case 1: return as_bool() ? "true" : "false";
    case 2: return std::to_string(as_int());
    case 3: return detail::format_number(std::get<double>(v_));
    case 4: {
      std::string s = "\"";
      for (char c : as_string()) s += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
      return s + "\"";
    }
    default: {
      std::string s = "[";
      for (size_t i = 0; i < as_list().size(); ++i) s += (i ? ", " : "") + as_list()[i].str();
      return s + "]";
    }
  }
}

namespace detail {
std::string format_number(double d) {
  if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 1e15) {
    char b[32];
    std::snprintf(b, sizeof b, "%.0f", d);
    return b;
  }
  char b[32];
  std::snprintf(b, sizeof b, "%g", d);
  return b;
}
}  // namespace detail

static std::string dims_str(const std::vector<int64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + (d[i] < 0 ? std::string("?") : std::to_string(d[i]));
  return s + "]";
}

std::string Shape::str() const {
  if (!known) return "?";
  if (!levels.empty()) {
    std::string s = "{";
    for (size_t i = 0; i < levels.size(); ++i) s += (i ? ", " : "") + dims_str(levels[i]);
    return s + "}";
  }
  return dims_str(dims);
}

DataTypes& DataTypes::global() {
  static DataTypes* t = [] {
    auto* d = new DataTypes;
    d->add({"Image", "decoded image, 8-bit BGR or gray, original resolution", {}, {}});
    d->add({"Map2D", "2-D float32 map (HxW), e.g. an anomaly map", {}, {}});
    d->add({"Mask", "binary mask, HxW uint8 0/255", {}, {}});
    d->add({"Scalar", "one number per frame, e.g. an image score", {}, {}});
    return d;
  }();
  return *t;
}

void DataTypes::add(DataTypeInfo info) {
  for (auto& t : types_)
    if (t.name == info.name) {
      t = std::move(info);
      return;
    }
  types_.push_back(std::move(info));
}

const DataTypeInfo* DataTypes::find(const std::string& name) const {
  for (const auto& t : types_)
    if (t.name == name) return &t;
  return nullptr;
}

std::vector<std::string> DataTypes::names() const {
  std::vector<std::string> n;
  for (const auto& t : types_) n.push_back(t.name);
  return n;
}

const PortSpec* Contract::find_input(std::string_view n) const {
  for (const auto& p : inputs_)
    if (p.name == n) return &p;
  return nullptr;
}
const PortSpec* Contract::find_output(std::string_view n) const {
  for (const auto& p : outputs_)
    if (p.name == n) return &p;
  return nullptr;
}
const ParamSpec* Contract::find_param(std::string_view n) const {
  for (const auto& p : params_)
    if (p.name == n) return &p;
  return nullptr;
}

bool Context::has(std::string_view port) const {
  for (const auto& s : inputs_)
    if (s.port == port) return !s.packet.empty();
  return false;
}

const Packet& Context::packet(std::string_view port) const {
  for (const auto& s : inputs_)
    if (s.port == port) {
      if (s.packet.empty()) break;
      return s.packet;
    }
  throw PortError("input", std::string(port), "is not connected or carries no packet");
}

void Context::send_packet(std::string_view port, Packet p) {
  for (auto& s : outputs_)
    if (s.port == port) {
      s.packet = std::move(p);
      return;
    }
  throw PortError("output", std::string(port), "is not a declared output of this node");
}

void Frame::set(const std::string& stream, Packet p) {
  int i = graph_->stream(stream);
  if (i < 0) throw Error("graph has no stream \"" + stream + "\"");
  streams_[i] = std::move(p);
}
bool Frame::has(const std::string& stream) const {
  int i = graph_->stream(stream);
  return i >= 0 && !streams_[i].empty();
}
const Packet& Frame::packet(const std::string& stream) const {
  int i = graph_->stream(stream);
  if (i < 0) throw Error("graph has no stream \"" + stream + "\"");
  if (streams_[i].empty()) throw Error("stream \"" + stream + "\" carries no packet in this frame");
  return streams_[i];
}

}  // namespace fmam
