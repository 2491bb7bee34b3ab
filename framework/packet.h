// Packets: the type-erased values that flow on streams, and the names of the data types.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <typeinfo>
#include <vector>

#include "framework/error.h"

namespace fmam {

// DataTypeName<T>::value is the name graphs and `fmam describe` use ("Image", "Map2D", ...).
template <class T>
struct DataTypeName;

#define FMAM_DATA_TYPE(T, NAME)                \
  template <>                                  \
  struct DataTypeName<T> {                     \
    static constexpr const char* value = NAME; \
  }

// An immutable, cheaply copied value of any data type.
class Packet {
 public:
  Packet() = default;
  template <class T>
  static Packet make(T value) {
    Packet p;
    p.data_ = std::make_shared<const T>(std::move(value));
    p.type_ = &typeid(T);
    p.type_name_ = DataTypeName<T>::value;
    return p;
  }
  bool empty() const { return !data_; }
  const char* type_name() const { return type_name_; }
  template <class T>
  bool holds() const {
    return type_ && *type_ == typeid(T);
  }
  template <class T>
  const T& get() const {
    if (!holds<T>())
      throw Error(std::string("packet holds ") + (type_name_ ? type_name_ : "nothing") + ", asked for " + DataTypeName<T>::value);
    return *static_cast<const T*>(data_.get());
  }

 private:
  std::shared_ptr<const void> data_;
  const std::type_info* type_ = nullptr;
  const char* type_name_ = nullptr;
};

// Run-time facts about a data type: how to stack frames into a batch and split it again.
struct DataTypeInfo {
  std::string name;
  std::string description;
  // Both empty for types that cannot be batched (images of varying size, strings).
  std::function<Packet(const std::vector<Packet>&)> concat;
  std::function<std::vector<Packet>(const Packet&, size_t n)> split;
};

// The data types known to this process (core types plus any a plugin adds).
class DataTypes {
 public:
  static DataTypes& global();
  void add(DataTypeInfo info);
  const DataTypeInfo* find(const std::string& name) const;
  std::vector<std::string> names() const;

 private:
  std::vector<DataTypeInfo> types_;
};

}  // namespace fmam
