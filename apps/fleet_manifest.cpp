#include "apps/fleet_manifest.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "framework/error.h"

namespace fmam::fleet {

namespace fs = std::filesystem;

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        fields.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        fields.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
    } else if (c != '\r') {
      fields.back() += c;
    }
  }
  if (quoted) throw std::invalid_argument("a quoted field is not closed");
  return fields;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

namespace {

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

bool valid_name(const std::string& s) {
  if (s.empty() || s[0] == '.' || s[0] == '-') return false;
  for (char c : s)
    if (!(std::isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-')) return false;
  return true;
}

// The inference graph a training graph's model belongs to ("" and a problem if it names none).
std::string inference_graph_of(const fs::path& graph, std::string* problem) {
  std::ifstream f(graph);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const std::exception& e) {
    *problem = "\"" + graph.string() + "\" is not valid JSON (" + e.what() + ")";
    return "";
  }
  if (!j.is_object() || !j.contains("train") || !j["train"].is_object() || !j["train"].contains("inference_graph") ||
      !j["train"]["inference_graph"].is_string()) {
    *problem = "\"" + graph.string() + "\" is not a training graph (no train.inference_graph); use graphs/*_train.json";
    return "";
  }
  fs::path inf = graph.parent_path() / j["train"]["inference_graph"].get<std::string>();
  if (!fs::is_regular_file(inf)) {
    *problem = "\"" + graph.string() + "\": its train.inference_graph \"" + inf.string() + "\" does not exist";
    return "";
  }
  return inf.lexically_normal().string();
}

}  // namespace

std::vector<Product> read_manifest(const std::string& path, bool check_paths) {
  std::ifstream f(path);
  if (!f) throw Error(path + ": cannot read the manifest");
  const fs::path base = fs::absolute(fs::path(path)).parent_path();
  auto resolve = [&](const std::string& p) { return (fs::path(p).is_absolute() ? fs::path(p) : base / p).lexically_normal(); };
  const std::vector<std::string> known = {"product", "data", "graph", "overrides"};
  std::vector<std::string> problems;
  auto problem = [&](int line, const std::string& msg) { problems.push_back(path + ":" + std::to_string(line) + ": " + msg); };

  std::map<std::string, size_t> col;  // column name -> index
  std::vector<Product> products;
  std::map<std::string, int> seen;  // product name -> line
  std::string text;
  int line_no = 0;
  bool have_header = false;
  while (std::getline(f, text)) {
    ++line_no;
    if (trim(text).empty() || trim(text)[0] == '#') continue;
    std::vector<std::string> fields;
    try {
      fields = split_csv(text);
    } catch (const std::invalid_argument& e) {
      problem(line_no, e.what());
      continue;
    }
    for (auto& x : fields) x = trim(x);
    if (!have_header) {
      have_header = true;
      for (size_t i = 0; i < fields.size(); ++i) {
        bool ok = false;
        for (const auto& k : known) ok |= fields[i] == k;
        if (!ok)
          problem(line_no, "unknown column \"" + fields[i] + "\"; known: product, data, graph, overrides");
        else if (col.count(fields[i]))
          problem(line_no, "column \"" + fields[i] + "\" given twice");
        else
          col[fields[i]] = i;
      }
      for (const char* req : {"product", "data", "graph"})
        if (!col.count(req))
          problem(line_no, std::string("the header has no column \"") + req +
                               "\"; the first row names the columns: product,data,graph,overrides");
      if (!problems.empty()) break;
      continue;
    }
    while (fields.size() > col.size() && fields.back().empty()) fields.pop_back();  // "a,b,c," from spreadsheets
    if (fields.size() > col.size()) {
      problem(line_no, std::to_string(fields.size()) + " fields, the header has " + std::to_string(col.size()) +
                           " (quote a field that holds a comma)");
      continue;
    }
    auto field = [&](const std::string& c) {
      auto it = col.find(c);
      return it == col.end() || it->second >= fields.size() ? std::string() : fields[it->second];
    };
    Product p;
    p.line = line_no;
    p.name = field("product");
    bool ok = true;
    for (const char* req : {"product", "data", "graph"})
      if (field(req).empty()) {
        problem(line_no, std::string("column \"") + req + "\" is empty");
        ok = false;
      }
    if (!ok) continue;
    if (!valid_name(p.name)) {
      problem(line_no,
              "column \"product\": \"" + p.name + "\" is not a folder name; use letters, digits, '.', '_' and '-' (not first)");
    } else if (seen.count(p.name)) {
      problem(line_no, "column \"product\": \"" + p.name + "\" is already on line " + std::to_string(seen[p.name]));
    } else {
      seen[p.name] = line_no;
    }
    const fs::path data = resolve(field("data")), graph = resolve(field("graph"));
    p.data = data.string();
    p.graph = graph.string();
    if (check_paths && !fs::is_directory(data)) problem(line_no, "column \"data\": \"" + p.data + "\" is not a folder");
    if (!fs::is_regular_file(graph)) {
      if (check_paths) problem(line_no, "column \"graph\": \"" + p.graph + "\" does not exist");
    } else {
      std::string why;
      p.inference_graph = inference_graph_of(graph, &why);
      if (!why.empty() && check_paths) problem(line_no, "column \"graph\": " + why);
    }
    std::istringstream ov(field("overrides"));
    for (std::string o; ov >> o;) {
      const size_t eq = o.find('=');
      if (eq == std::string::npos || eq == 0 || o.find('.') > eq)
        problem(line_no, "column \"overrides\": \"" + o + "\" is not KEY=VALUE (e.g. stage1.epochs=10 train.image_size=128)");
      else
        p.overrides.push_back(o);
    }
    products.push_back(p);
  }
  if (!have_header && problems.empty())
    problems.push_back(path + ": empty manifest; the first row names the columns: product,data,graph,overrides");
  if (problems.empty() && products.empty()) problems.push_back(path + ": no product rows under the header");
  if (!problems.empty()) {
    std::string msg;
    for (const auto& p : problems) msg += (msg.empty() ? "" : "\n") + p;
    if (problems.size() > 1) msg += "\n(" + std::to_string(problems.size()) + " problems)";
    throw Error(msg);
  }
  return products;
}

std::string manifest_csv(const std::vector<Product>& products) {
  std::string s = "product,data,graph,overrides\n";
  for (const auto& p : products) {
    std::string ov;
    for (const auto& o : p.overrides) ov += (ov.empty() ? "" : " ") + o;
    s += csv_field(p.name) + "," + csv_field(p.data) + "," + csv_field(p.graph) + "," + csv_field(ov) + "\n";
  }
  return s;
}

}  // namespace fmam::fleet
