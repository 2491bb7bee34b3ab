// Errors of fmam. Nodes say what is wrong (FMAM_CHECK, PortError); the loader and the runner add
// the file, node id, type, field and frame, so a message always says where (STYLE.md section 5).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace fmam {

// Base of every error fmam throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A problem with one port of a node ("input", "teacher", "level 2 has 512 channels ...").
// Thrown by infer() and process(); the loader/runner prefixes the node.
class PortError : public Error {
 public:
  PortError(std::string kind, std::string port, const std::string& problem)
      : Error(kind + " \"" + port + "\": " + problem), kind_(std::move(kind)), port_(std::move(port)), problem_(problem) {}
  const std::string& kind() const { return kind_; }
  const std::string& port() const { return port_; }
  const std::string& problem() const { return problem_; }

 private:
  std::string kind_, port_, problem_;
};

// All configuration problems of one graph, reported at once (one per line).
class GraphError : public Error {
 public:
  explicit GraphError(std::vector<std::string> problems) : Error(join(problems)), problems_(std::move(problems)) {}
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  static std::string join(const std::vector<std::string>& p) {
    std::string s;
    for (size_t i = 0; i < p.size(); ++i) s += (i ? "\n" : "") + p[i];
    return s;
  }
  std::vector<std::string> problems_;
};

// A node failed while running: carries node id, type and frame.
class NodeError : public Error {
 public:
  NodeError(const std::string& what, std::string node_id, std::string node_type, long long frame, std::string source)
      : Error(what), node_id_(std::move(node_id)), node_type_(std::move(node_type)), frame_(frame), source_(std::move(source)) {}
  const std::string& node_id() const { return node_id_; }
  const std::string& node_type() const { return node_type_; }
  long long frame() const { return frame_; }
  const std::string& source() const { return source_; }

 private:
  std::string node_id_, node_type_;
  long long frame_;
  std::string source_;
};

namespace detail {
// Collects the streamed message and throws when destroyed at the end of the full expression.
class CheckFailure {
 public:
  CheckFailure(const char* cond, const char* file, int line) {
    (void)file;
    (void)line;
    cond_ = cond;
  }
  template <class T>
  CheckFailure& operator<<(const T& v) {
    os_ << v;
    return *this;
  }
  [[noreturn]] ~CheckFailure() noexcept(false) {
    std::string msg = os_.str();
    if (msg.empty()) msg = std::string("check failed: ") + cond_;
    throw Error(msg);
  }

 private:
  const char* cond_;
  std::ostringstream os_;
};
}  // namespace detail

}  // namespace fmam

// FMAM_CHECK(x > 0) << "must be positive, got " << x;  throws fmam::Error with the message.
#define FMAM_CHECK(cond) \
  if (cond) {            \
  } else                 \
    ::fmam::detail::CheckFailure(#cond, __FILE__, __LINE__)
