// A JSON-like parameter value, so that nodes and their contracts never see a JSON library.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace fmam {

class Value {
 public:
  using List = std::vector<Value>;
  Value() = default;
  Value(bool b) : v_(b) {}                      // NOLINT: implicit by design
  Value(int i) : v_(int64_t{i}) {}              // NOLINT
  Value(int64_t i) : v_(i) {}                   // NOLINT
  Value(double d) : v_(d) {}                    // NOLINT
  Value(float f) : v_(double{f}) {}             // NOLINT
  Value(std::string s) : v_(std::move(s)) {}    // NOLINT
  Value(const char* s) : v_(std::string(s)) {}  // NOLINT
  Value(List l) : v_(std::move(l)) {}           // NOLINT

  bool is_null() const { return v_.index() == 0; }
  bool is_bool() const { return v_.index() == 1; }
  bool is_int() const { return v_.index() == 2; }
  bool is_double() const { return v_.index() == 3; }
  bool is_number() const { return is_int() || is_double(); }
  bool is_string() const { return v_.index() == 4; }
  bool is_list() const { return v_.index() == 5; }

  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const { return std::get<int64_t>(v_); }
  double as_number() const { return is_int() ? double(as_int()) : std::get<double>(v_); }
  const std::string& as_string() const { return std::get<std::string>(v_); }
  const List& as_list() const { return std::get<List>(v_); }

  // "number", "string", ... for messages.
  const char* kind() const;
  // Compact JSON text: 4, 0.5, "cos", ["layer1", "layer2"].
  std::string str() const;
  bool operator==(const Value& o) const { return v_ == o.v_; }

 private:
  std::variant<std::monostate, bool, int64_t, double, std::string, List> v_;
};

}  // namespace fmam
