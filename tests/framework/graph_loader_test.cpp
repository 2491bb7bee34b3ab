// The graph loader: parse_graph + validate report every problem of a graph at once, each naming
// the file, the node (id and type) and the field (STYLE.md section 5); --set overrides; to_dot.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <ostream>
#include <string>
#include <vector>

#include "framework/graph.h"
#include "framework/node.h"
#include "framework/registry.h"
#include "framework/types.h"

namespace fmam {

// gmock prints a Value as JSON text (internal linkage: other test files may print it too).
static void PrintTo(const Value& v, std::ostream* os) { *os << v.str(); }

namespace {

using testing::AllOf;
using testing::AnyOf;
using testing::Contains;
using testing::HasSubstr;
using testing::IsEmpty;
using testing::Not;
using testing::ThrowsMessage;

// ---- test-only node types ------------------------------------------------------------------

// Image -> Image, to build cycles (no built-in node maps a type onto itself).
class TestLoaderPassNode final : public Node {
 public:
  struct Params {
    std::vector<std::string> tags;
  };
  static constexpr In<Image> kIn{"image"};
  static constexpr Out<Image> kOut{"image"};
  static Contract contract() {
    return Contract("TestLoaderPass")
        .in(kIn, "any image")
        .out(kOut, "the same image")
        .param(&Params::tags, "tags", "free labels");
  }
  explicit TestLoaderPassNode(const Params&) {}
  void process(Context& ctx) override { kOut(ctx).send(kIn(ctx).get()); }
};

void register_test_types() {
  static const bool once = [] {
    Registry::global().add(make_node_type<TestLoaderPassNode>());
    return true;
  }();
  (void)once;
}

// parse + validate, as the runner loads a graph file.
ValidatedGraph load(const std::string& text, const std::string& file = "bad.json") {
  register_test_types();
  return validate(parse_graph(text, file));
}

// The problems of the GraphError that loading `text` throws (fails the test if none is thrown).
std::vector<std::string> problems_of(const std::string& text, const std::string& file = "bad.json") {
  try {
    load(text, file);
  } catch (const GraphError& e) {
    // what() is the problems, one per line.
    std::string joined;
    for (size_t i = 0; i < e.problems().size(); ++i) joined += (i ? "\n" : "") + e.problems()[i];
    EXPECT_EQ(std::string(e.what()), joined);
    return e.problems();
  }
  ADD_FAILURE() << "no GraphError for:\n" << text;
  return {};
}

// ---- all problems at once ------------------------------------------------------------------

// One graph, many mistakes (all of them found by validate()): one GraphError, one line each.
TEST(GraphLoaderTest, EveryValidationProblemIsReportedAtOnce) {
  const std::string text = R"({
    "schema": 1, "name": "bad", "doc": "a graph with a mistake per node",
    "inputs": {"image": "Image"},
    "outputs": {"score": "Scalar"},
    "nodes": [
      {"id": "resize", "type": "Resise", "in": {"image": "image"}, "out": {"tensor": "t"}},
      {"id": "resize2", "type": "Resize", "in": {"image": "image"}, "out": {"tensor": "t2"},
       "params": {"width": 0, "height": "tall", "sharpness": 3, "interpolation": "bicubic"}},
      {"id": "writer", "type": "ImageWriter", "in": {"image": "imgx"}},
      {"id": "Bad-Id", "type": "ImageSource", "out": {"image": "decoded"}},
      {"id": "src2", "type": "ImageSource", "out": {"image": "decoded"}},
      {"id": "maps", "type": "MapWriter", "in": {"map": "t2"}},
      {"id": "scores", "type": "ScoreWriter"},
      {"id": "src2", "type": "ImageWriter", "in": {"image": "image"}},
      {"id": "loop_a", "type": "TestLoaderPass", "in": {"image": "loop_2"}, "out": {"image": "loop_1"}},
      {"id": "loop_b", "type": "TestLoaderPass", "in": {"image": "loop_1"}, "out": {"image": "loop_2"}}
    ]})";
  const std::vector<std::string> p = problems_of(text);
  const std::vector<std::string> expected = {
      R"(bad.json: nodes[0]: unknown type "Resise"; did you mean "Resize"?)",
      R"(bad.json: node "resize2" (Resize): param "width": must be in [8, 4096], got 0)",
      R"(bad.json: node "resize2" (Resize): param "height": must be an integer, got "tall")",
      R"(bad.json: node "resize2" (Resize): unknown param "sharpness"; known: width, height, interpolation, normalize)",
      R"(bad.json: node "resize2" (Resize): param "interpolation": must be one of: area, linear, cubic, nearest, pil_bilinear; got "bicubic")",
      R"(bad.json: node "writer" (ImageWriter): input "image" reads stream "imgx", which no node produces; did you mean "image"?)",
      R"(bad.json: node "Bad-Id" (ImageSource): field "id": must be snake_case (a-z, 0-9, _), got "Bad-Id")",
      R"(bad.json: node "src2" (ImageSource): output "image" writes stream "decoded", but node "Bad-Id" writes it too; a stream has one producer)",
      R"(bad.json: node "maps" (MapWriter): input "map" reads stream "t2" of type Tensor (output of node "resize2"); expected Map2D)",
      R"(bad.json: node "scores" (ScoreWriter): input "score" is not connected; it takes a Scalar (the frame's score))",
      R"(bad.json: node "src2" (ImageWriter): field "id": "src2" is used by another node)",
      R"(bad.json: graph output "score": no node produces stream "score")",
  };
  for (const auto& e : expected) EXPECT_THAT(p, Contains(e));
  // The cycle, in flow order, from whichever node of it the loader starts at.
  EXPECT_THAT(p, Contains(AnyOf(HasSubstr(R"(bad.json: the graph has a cycle: "loop_a" -> "loop_b" -> "loop_a")"),
                                HasSubstr(R"(bad.json: the graph has a cycle: "loop_b" -> "loop_a" -> "loop_b")"))));
  // Nothing else: no problem is reported twice or invented.
  EXPECT_EQ(p.size(), expected.size() + 1) << testing::PrintToString(p);
}

// Problems found while parsing (unknown fields) and while validating (unknown type, bad param)
// come in the same GraphError: the user fixes the file once, not once per loader stage.
TEST(GraphLoaderTest, ParseAndValidationProblemsComeInOneError) {
  const std::string text = R"({
    "schema": 1, "inputs": {"image": "Image"}, "outputs": {}, "extra": true,
    "nodes": [
      {"id": "resize", "type": "Resise", "in": {"image": "image"}, "out": {"tensor": "t"}, "param": {}},
      {"id": "resize2", "type": "Resize", "in": {"image": "image"}, "out": {"tensor": "t2"},
       "params": {"width": 0}}
    ]})";
  const std::vector<std::string> p = problems_of(text);
  EXPECT_THAT(p, Contains(HasSubstr(R"(bad.json: unknown field "extra")")));
  EXPECT_THAT(p, Contains(HasSubstr(R"(unknown field "param"; known: doc, id, in, out, params, type)")));
  EXPECT_THAT(p, Contains(HasSubstr(R"(unknown type "Resise"; did you mean "Resize"?)")));
  EXPECT_THAT(p, Contains(HasSubstr(R"(node "resize2" (Resize): param "width": must be in [8, 4096], got 0)")));
}

// ---- one mistake at a time -----------------------------------------------------------------

TEST(GraphLoaderTest, UnknownTypeSuggestsTheClosestRegisteredType) {
  EXPECT_THAT(problems_of(R"({"schema": 1, "nodes": [{"id": "w", "type": "ImageWritr", "in": {}}]})"),
              Contains(R"(bad.json: nodes[0]: unknown type "ImageWritr"; did you mean "ImageWriter"?)"));
  // Nothing close: the known types are listed instead.
  const auto p = problems_of(R"({"schema": 1, "nodes": [{"id": "w", "type": "Zzzzzzzzzzzzzzzzzzz"}]})");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_THAT(p[0], HasSubstr(R"(bad.json: nodes[0]: unknown type "Zzzzzzzzzzzzzzzzzzz"; known types: )"));
  EXPECT_THAT(p[0], HasSubstr("Resize"));
  EXPECT_THAT(p[0], HasSubstr("ImageSource"));
}

TEST(GraphLoaderTest, LevenshteinAndClosest) {
  EXPECT_EQ(levenshtein("GausianBlur", "GaussianBlur"), 1u);
  EXPECT_EQ(levenshtein("", "abc"), 3u);
  EXPECT_EQ(levenshtein("resize", "Resize"), 0u);  // case does not count
  EXPECT_EQ(levenshtein("kitten", "sitting"), 3u);
  EXPECT_THAT(Registry::global().closest("Resise"), Contains("Resize"));
  EXPECT_THAT(Registry::global().closest("Qqqqqqqqqqqqqqq"), IsEmpty());
}

// A misspelt type is one mistake: the streams it would have written are not also reported as
// "no node produces" for every reader (that would bury the real problem under false ones).
TEST(GraphLoaderTest, UnknownTypeDoesNotCascadeIntoMissingStreams) {
  const auto p = problems_of(R"({"schema": 1, "inputs": {"image": "Image"}, "outputs": {"t": "Tensor"},
    "nodes": [
      {"id": "src", "type": "ImageSorce", "out": {"image": "decoded"}},
      {"id": "writer", "type": "ImageWriter", "in": {"image": "decoded"}}
    ]})");
  EXPECT_THAT(p, Contains(R"(bad.json: nodes[0]: unknown type "ImageSorce"; did you mean "ImageSource"?)"));
  EXPECT_THAT(p, Not(Contains(HasSubstr(R"(reads stream "decoded", which no node produces)"))));
}

TEST(GraphLoaderTest, UnknownParamListsTheKnownOnes) {
  EXPECT_THAT(problems_of(R"({"schema": 1, "inputs": {"image": "Image"}, "nodes": [
      {"id": "r", "type": "Resize", "in": {"image": "image"}, "out": {"tensor": "t"},
       "params": {"widht": 64}}]})"),
              testing::ElementsAre(
                  R"(bad.json: node "r" (Resize): unknown param "widht"; known: width, height, interpolation, normalize)"));
}

TEST(GraphLoaderTest, ParamValuesAreTypeAndRangeChecked) {
  const auto p = problems_of(R"({"schema": 1, "inputs": {"image": "Image", "map": "Map2D"}, "nodes": [
      {"id": "r", "type": "Resize", "in": {"image": "image"}, "out": {"tensor": "t"},
       "params": {"width": 5000, "height": 256.5, "normalize": 3}},
      {"id": "m", "type": "MapWriter", "in": {"map": "map"},
       "params": {"png": 1, "lo": "low", "dir": 7}}]})");
  EXPECT_THAT(p, Contains(R"(bad.json: node "r" (Resize): param "width": must be in [8, 4096], got 5000)"));
  EXPECT_THAT(p, Contains(R"(bad.json: node "r" (Resize): param "height": must be an integer, got 256.5)"));
  EXPECT_THAT(p, Contains(R"(bad.json: node "r" (Resize): param "normalize": must be one of: imagenet, unit; got 3)"));
  EXPECT_THAT(p, Contains(R"(bad.json: node "m" (MapWriter): param "png": must be true or false, got 1)"));
  EXPECT_THAT(p, Contains(R"(bad.json: node "m" (MapWriter): param "lo": must be a number, got "low")"));
  EXPECT_THAT(p, Contains(R"(bad.json: node "m" (MapWriter): param "dir": must be a string, got 7)"));
  EXPECT_EQ(p.size(), 6u) << testing::PrintToString(p);
}

// Whole numbers written as 256.0 are integers; list params check each item.
TEST(GraphLoaderTest, ParamValuesThatFitAreAccepted) {
  ValidatedGraph g = load(R"({"schema": 1, "inputs": {"image": "Image"}, "nodes": [
      {"id": "r", "type": "Resize", "in": {"image": "image"}, "out": {"tensor": "t"},
       "params": {"width": 64.0, "height": 8, "interpolation": "nearest"}},
      {"id": "p", "type": "TestLoaderPass", "in": {"image": "image"}, "out": {"image": "i2"},
       "params": {"tags": ["a", "b"]}}]})");
  ASSERT_EQ(g.nodes.size(), 2u);
  const ParamSpec* w = g.nodes[0].type->contract.find_param("width");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->get(g.nodes[0].params.get()), Value(64));
  EXPECT_EQ(g.nodes[0].type->contract.find_param("interpolation")->get(g.nodes[0].params.get()), Value("nearest"));
  EXPECT_EQ(g.nodes[1].type->contract.find_param("tags")->get(g.nodes[1].params.get()),
            Value(Value::List{Value("a"), Value("b")}));
  // Shapes come from infer(): [C, H, W] of the tensor.
  EXPECT_EQ(g.streams[g.stream("t")].shape.str(), "[3, 8, 64]");

  EXPECT_THAT(problems_of(R"({"schema": 1, "inputs": {"image": "Image"}, "nodes": [
      {"id": "p", "type": "TestLoaderPass", "in": {"image": "image"}, "out": {"image": "i2"},
       "params": {"tags": ["a", 2]}}]})"),
              testing::ElementsAre(R"(bad.json: node "p" (TestLoaderPass): param "tags": item 1 must be a string, got 2)"));
}

// An integer that does not fit an int must not wrap around into range: 2^32 + 256 is not 256.
TEST(GraphLoaderTest, HugeIntegerParamIsOutOfRangeNotWrapped) {
  EXPECT_THAT(problems_of(R"({"schema": 1, "inputs": {"image": "Image"}, "nodes": [
      {"id": "r", "type": "Resize", "in": {"image": "image"}, "out": {"tensor": "t"},
       "params": {"width": 4294967552}}]})"),
              Contains(HasSubstr(R"(bad.json: node "r" (Resize): param "width": )")));
  // 1e10 is a whole number, but no int: the message must show it, not a wrapped value.
  EXPECT_THAT(problems_of(R"({"schema": 1, "inputs": {"image": "Image"}, "nodes": [
      {"id": "r", "type": "Resize", "in": {"image": "image"}, "out": {"tensor": "t"},
       "params": {"width": 1e10}}]})"),
              Contains(AllOf(HasSubstr(R"(bad.json: node "r" (Resize): param "width": )"),
                             AnyOf(HasSubstr("10000000000"), HasSubstr("1e+10")))));
}

TEST(GraphLoaderTest, StreamNobodyProducesSuggestsACloseName) {
  const auto p = problems_of(R"({"schema": 1, "inputs": {"image": "Image"}, "nodes": [
      {"id": "w", "type": "ImageWriter", "in": {"image": "imaeg"}},
      {"id": "w2", "type": "ImageWriter", "in": {"image": "something_else"}}]})");
  EXPECT_THAT(
      p,
      testing::UnorderedElementsAre(
          R"(bad.json: node "w" (ImageWriter): input "image" reads stream "imaeg", which no node produces; did you mean "image"?)",
          R"(bad.json: node "w2" (ImageWriter): input "image" reads stream "something_else", which no node produces)"));
}

TEST(GraphLoaderTest, TwoProducersForOneStream) {
  const auto p = problems_of(R"({"schema": 1, "inputs": {"image": "Image"}, "nodes": [
      {"id": "a", "type": "ImageSource", "out": {"image": "decoded"}},
      {"id": "b", "type": "ImageSource", "out": {"image": "decoded"}},
      {"id": "c", "type": "ImageSource", "out": {"image": "image"}}]})");
  EXPECT_THAT(
      p,
      testing::UnorderedElementsAre(
          R"(bad.json: node "b" (ImageSource): output "image" writes stream "decoded", but node "a" writes it too; a stream has one producer)",
          R"(bad.json: node "c" (ImageSource): output "image" writes stream "image", but it is a graph input; a stream has one producer)"));
}

// The cycle message lists the nodes of the cycle in the order data flows, and only those: a node
// fed by the cycle (tail) is not part of it.
TEST(GraphLoaderTest, CycleIsListedInFlowOrder) {
  const auto p = problems_of(R"({"schema": 1, "nodes": [
      {"id": "tail", "type": "TestLoaderPass", "in": {"image": "s3"}, "out": {"image": "s4"}},
      {"id": "a", "type": "TestLoaderPass", "in": {"image": "s3"}, "out": {"image": "s1"}},
      {"id": "b", "type": "TestLoaderPass", "in": {"image": "s1"}, "out": {"image": "s2"}},
      {"id": "c", "type": "TestLoaderPass", "in": {"image": "s2"}, "out": {"image": "s3"}}]})");
  ASSERT_EQ(p.size(), 1u) << testing::PrintToString(p);
  EXPECT_THAT(p[0], AnyOf(HasSubstr(R"(bad.json: the graph has a cycle: "a" -> "b" -> "c" -> "a";)"),
                          HasSubstr(R"(bad.json: the graph has a cycle: "b" -> "c" -> "a" -> "b";)"),
                          HasSubstr(R"(bad.json: the graph has a cycle: "c" -> "a" -> "b" -> "c";)")));
  EXPECT_THAT(p[0], Not(HasSubstr("tail")));
}

// A generated graph with a 5000-node loop used to print a 54 KB line; its ends are enough.
TEST(GraphLoaderTest, ALongCycleIsShownByItsEnds) {
  std::string nodes;
  const int n = 5000;
  for (int i = 0; i < n; ++i)
    nodes += std::string(i ? "," : "") + R"({"id": "n)" + std::to_string(i) +
             R"(", "type": "TestLoaderPass", "in": {"image": "s)" + std::to_string((i + n - 1) % n) +
             R"("}, "out": {"image": "s)" + std::to_string(i) + R"("}})";
  const auto p = problems_of(R"({"schema": 1, "nodes": [)" + nodes + "]}");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_LT(p[0].size(), 400u) << p[0].substr(0, 400);
  EXPECT_THAT(p[0], HasSubstr("bad.json: the graph has a cycle: \""));
  EXPECT_THAT(p[0], HasSubstr(" -> ... (5000 nodes in the loop) ... -> "));
  EXPECT_THAT(p[0], HasSubstr("streams must flow one way"));
}

TEST(GraphLoaderTest, NodeReadingItsOwnOutputIsACycle) {
  EXPECT_THAT(problems_of(R"({"schema": 1, "nodes": [
      {"id": "me", "type": "TestLoaderPass", "in": {"image": "s"}, "out": {"image": "s"}}]})"),
              testing::ElementsAre(HasSubstr(R"(bad.json: the graph has a cycle: "me" -> "me")")));
}

TEST(GraphLoaderTest, TypeMismatchBetweenPortsNamesBothEnds) {
  EXPECT_THAT(
      problems_of(R"({"schema": 1, "inputs": {"image": "Image", "map": "Map2D"}, "nodes": [
      {"id": "r", "type": "Resize", "in": {"image": "map"}, "out": {"tensor": "t"}},
      {"id": "w", "type": "ScoreWriter", "in": {"score": "t"}}]})"),
      testing::UnorderedElementsAre(
          R"(bad.json: node "r" (Resize): input "image" reads stream "map" of type Map2D (graph input); expected Image)",
          R"(bad.json: node "w" (ScoreWriter): input "score" reads stream "t" of type Tensor (output of node "r"); expected Scalar)"));
}

TEST(GraphLoaderTest, UnconnectedRequiredInputAndUnknownPorts) {
  EXPECT_THAT(
      problems_of(R"({"schema": 1, "inputs": {"image": "Image"}, "nodes": [
      {"id": "r", "type": "Resize", "in": {"img": "image"}, "out": {"tensr": "t"}},
      {"id": "s", "type": "ImageSource", "in": {"image": "image"}, "out": {"image": "i2"}}]})"),
      testing::UnorderedElementsAre(
          R"(bad.json: node "r" (Resize): unknown input "img"; known: image)",
          R"(bad.json: node "r" (Resize): input "image" is not connected; it takes a Image (image, 8-bit BGR or gray, any size))",
          R"(bad.json: node "r" (Resize): unknown output "tensr"; known: tensor)",
          R"(bad.json: node "s" (ImageSource): unknown input "image"; known: (none: a source node))"));
}

TEST(GraphLoaderTest, IdsMustBeSnakeCaseAndUnique) {
  const auto p = problems_of(R"({"schema": 1, "inputs": {"image": "Image"}, "nodes": [
      {"id": "writeOut", "type": "ImageWriter", "in": {"image": "image"}},
      {"id": "9lives", "type": "ImageWriter", "in": {"image": "image"}},
      {"id": "w", "type": "ImageWriter", "in": {"image": "image"}},
      {"id": "w", "type": "ImageWriter", "in": {"image": "image"}}]})");
  EXPECT_THAT(p, testing::UnorderedElementsAre(
                     R"(bad.json: node "writeOut" (ImageWriter): field "id": must be snake_case (a-z, 0-9, _), got "writeOut")",
                     R"(bad.json: node "9lives" (ImageWriter): field "id": must be snake_case (a-z, 0-9, _), got "9lives")",
                     R"(bad.json: node "w" (ImageWriter): field "id": "w" is used by another node)"));
}

TEST(GraphLoaderTest, UnknownFieldsAreErrorsNotWarnings) {
  const auto p = problems_of(R"({"schema": 1, "node": [], "nodes": [
      {"id": "w", "type": "ImageWriter", "in": {"image": "image"}, "params": {}, "inputs": {}}]})");
  EXPECT_THAT(p, Contains(HasSubstr(R"(bad.json: unknown field "node"; known: doc, inputs, name, nodes, outputs, schema)")));
  // The node field names the file, the node and the field.
  EXPECT_THAT(p, Contains(AllOf(HasSubstr("bad.json: "), HasSubstr(R"("w")"),
                                HasSubstr(R"(unknown field "inputs"; known: doc, id, in, out, params, type)"))));
}

TEST(GraphLoaderTest, StructuralFieldErrors) {
  const auto p = problems_of(R"({"schema": 2, "inputs": {"image": 3}, "outputs": [],
      "nodes": [7, {"type": "ImageWriter"}, {"id": "x", "type": "", "in": "image", "params": []}]})");
  EXPECT_THAT(p, Contains(R"(bad.json: field "schema": this fmam reads schema 1, got 2)"));
  EXPECT_THAT(p, Contains(R"(bad.json: inputs "image" must be a string, got 3)"));
  EXPECT_THAT(p, Contains(R"(bad.json: "outputs" must be an object of name: string pairs)"));
  EXPECT_THAT(p, Contains(R"(bad.json: nodes[0]: a node must be an object)"));
  EXPECT_THAT(p, Contains(R"(bad.json: nodes[1]: field "id" must be a non-empty string)"));
  EXPECT_THAT(p, Contains(R"(bad.json: nodes[2] "x": field "type" must be a non-empty string)"));
  EXPECT_THAT(p, Contains(R"(bad.json: nodes[2] "x": "in" must be an object of name: string pairs)"));
  EXPECT_THAT(p, Contains(R"(bad.json: nodes[2] "x": "params" must be an object)"));
  EXPECT_THAT(problems_of(R"({"schema": 1})"), Contains(R"(bad.json: field "nodes" must be a list of nodes)"));
  EXPECT_THAT(problems_of(R"([1, 2])"), testing::ElementsAre("bad.json: a graph must be a JSON object"));
  EXPECT_THAT(problems_of(R"({"schema": 1, "nodes": [{"id": "w", "type": "TestLoaderPass",
      "in": {"image": "i"}, "params": {"tags": {"a": 1}}}]})"),
              Contains(R"(bad.json: nodes[0] "w": param "tags": objects are not supported as param values)"));
}

// The header promises: wrong field types throw GraphError naming the file. A graph "name" or
// "doc" that is not a string must not be dropped silently.
TEST(GraphLoaderTest, NonStringNameOrDocIsAnError) {
  EXPECT_THAT(problems_of(R"({"schema": 1, "name": 5, "nodes": []})"),
              Contains(AllOf(HasSubstr("bad.json"), HasSubstr(R"("name")"))));
  EXPECT_THAT(problems_of(R"({"schema": 1, "doc": ["a"], "nodes": []})"),
              Contains(AllOf(HasSubstr("bad.json"), HasSubstr(R"("doc")"))));
}

TEST(GraphLoaderTest, InvalidJsonNamesLineAndColumn) {
  const auto p = problems_of("{\n  \"schema\": 1,\n  \"name\": ,\n  \"nodes\": []\n}", "graphs/x.json");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_THAT(p[0], testing::StartsWith("graphs/x.json:3:11: not valid JSON: "));
  // An error on the first character of a line is column 1 of that line.
  const auto q = problems_of("{\"schema\": 1,\n\"nodes\": [],\n}", "y.json");
  ASSERT_EQ(q.size(), 1u);
  EXPECT_THAT(q[0], testing::StartsWith("y.json:3:1: not valid JSON: "));
  EXPECT_THAT(problems_of("", "empty.json"), testing::ElementsAre(testing::StartsWith("empty.json:1:1: not valid JSON")));
  // A number no double holds is not a parse_error to nlohmann but out_of_range, which escaped the
  // loader without the file's name (found by tests/fuzz/graph_fuzzer.cpp).
  EXPECT_THAT(problems_of("55455555555555555555e+555555555555599", "big.json"),
              testing::ElementsAre(testing::StartsWith("big.json: not valid JSON: ")));
}

TEST(GraphLoaderTest, GraphOutputsAndInputsAreChecked) {
  const auto p = problems_of(R"({"schema": 1, "inputs": {"image": "Imag"}, "outputs": {"score": "Scalar",
      "t": "Map2D", "m": "Mapp"},
      "nodes": [{"id": "r", "type": "Resize", "in": {"image": "image"}, "out": {"tensor": "t"}}]})");
  EXPECT_THAT(p, Contains(HasSubstr(R"(bad.json: graph input "image": unknown data type "Imag"; known: Image, )")));
  EXPECT_THAT(p, Contains(HasSubstr(R"(bad.json: graph output "m": unknown data type "Mapp"; known: )")));
  EXPECT_THAT(p, Contains(R"(bad.json: graph output "score": no node produces stream "score")"));
  EXPECT_THAT(p, Contains(R"(bad.json: graph output "t" is declared Map2D, but the stream carries Tensor)"));
}

TEST(GraphLoaderTest, LoadGraphFileNamesAMissingFile) {
  EXPECT_THAT([] { load_graph_file("/nonexistent/dir/g.json"); },
              ThrowsMessage<GraphError>(HasSubstr("/nonexistent/dir/g.json: cannot open graph file")));
}

// ---- a good graph --------------------------------------------------------------------------

const char* kGoodGraph = R"({
  "schema": 1, "name": "good", "doc": "resize, and write the \"image\"",
  "inputs": {"image": "Image"}, "outputs": {"t": "Tensor"},
  "nodes": [
    {"id": "writer", "type": "ImageWriter", "doc": "keeps a copy", "in": {"image": "decoded"},
     "params": {"dir": "out"}},
    {"id": "pass", "type": "TestLoaderPass", "in": {"image": "image"}, "out": {"image": "decoded"}},
    {"id": "resize", "type": "Resize", "in": {"image": "decoded"}, "out": {"tensor": "t"},
     "params": {"width": 32, "height": 24}}
  ]})";

TEST(GraphLoaderTest, ValidGraphIsTopologicallyOrderedAndWired) {
  ValidatedGraph g = load(kGoodGraph, "good.json");
  ASSERT_EQ(g.nodes.size(), 3u);
  // "pass" feeds the others, so it comes first; the rest keep file order.
  EXPECT_EQ(g.nodes[0].config.id, "pass");
  EXPECT_EQ(g.nodes[1].config.id, "writer");
  EXPECT_EQ(g.nodes[2].config.id, "resize");
  EXPECT_EQ(g.config.name, "good");
  EXPECT_EQ(g.nodes[1].config.doc, "keeps a copy");
  const StreamInfo& decoded = g.streams[g.stream("decoded")];
  EXPECT_EQ(decoded.type, "Image");
  EXPECT_EQ(decoded.producer, 0);
  EXPECT_THAT(decoded.consumers, testing::UnorderedElementsAre(1, 2));
  EXPECT_EQ(g.streams[g.stream("image")].producer, -1);
  EXPECT_EQ(g.stream("nope"), -1);
  ASSERT_EQ(g.input_streams.size(), 1u);
  EXPECT_EQ(g.streams[g.input_streams[0]].name, "image");
  ASSERT_EQ(g.output_streams.size(), 1u);
  EXPECT_EQ(g.streams[g.output_streams[0]].name, "t");
  EXPECT_EQ(g.nodes[2].in_streams, std::vector<int>{g.stream("decoded")});
  EXPECT_EQ(g.nodes[2].out_streams, std::vector<int>{g.stream("t")});
  EXPECT_EQ(g.nodes[1].out_streams, std::vector<int>{});
}

TEST(GraphLoaderTest, NodePrefix) {
  EXPECT_EQ(node_prefix("g.json", "blur", "GaussianBlur"), R"(g.json: node "blur" (GaussianBlur))");
}

// ---- --set overrides -----------------------------------------------------------------------

TEST(GraphLoaderTest, ParseOverrideReadsJsonValuesOrBareStrings) {
  ParamOverride o = parse_override("blur.sigma=2");
  EXPECT_EQ(o.node_id, "blur");
  EXPECT_EQ(o.param, "sigma");
  EXPECT_EQ(o.value, Value(2));
  EXPECT_TRUE(o.value.is_int());
  EXPECT_EQ(parse_override("blur.sigma=2.5").value, Value(2.5));
  EXPECT_EQ(parse_override("w.png=false").value, Value(false));
  EXPECT_EQ(parse_override("src.color=gray").value, Value("gray"));         // bare word
  EXPECT_EQ(parse_override(R"(w.dir="out dir")").value, Value("out dir"));  // quoted JSON string
  EXPECT_EQ(parse_override("w.dir=out/x.y").value, Value("out/x.y"));       // dots after '='
  EXPECT_EQ(parse_override("w.name=a=b").value, Value("a=b"));              // first '=' splits
  EXPECT_EQ(parse_override("w.name=").value, Value(""));
  EXPECT_EQ(parse_override(R"(t.layers=["layer1", "layer2"])").value, Value(Value::List{Value("layer1"), Value("layer2")}));
}

TEST(GraphLoaderTest, ParseOverrideRejectsBadSyntax) {
  for (const std::string bad : {"blur", "blur=2", ".sigma=2", "blur.=2", "blur.sigma", "sigma=2.5", ""})
    EXPECT_THAT([&] { parse_override(bad); },
                ThrowsMessage<Error>(HasSubstr("--set \"" + bad + "\": expected NODE_ID.PARAM=VALUE, e.g. blur.sigma=2")))
        << bad;
  EXPECT_THAT([] { parse_override(R"(t.p={"a": 1})"); },
              ThrowsMessage<Error>(HasSubstr("objects are not supported as param values")));
}

TEST(GraphLoaderTest, ApplyOverridesSetsOrAddsParamsBeforeValidation) {
  register_test_types();
  GraphConfig g = parse_graph(kGoodGraph, "good.json");
  apply_overrides(g, {parse_override("resize.width=64"), parse_override("resize.normalize=unit")});
  const NodeConfig& r = g.nodes[2];
  ASSERT_EQ(r.id, "resize");
  EXPECT_THAT(r.params, testing::UnorderedElementsAre(testing::Pair("width", Value(64)), testing::Pair("height", Value(24)),
                                                      testing::Pair("normalize", Value("unit"))));
  ValidatedGraph vg = validate(g);
  EXPECT_EQ(vg.streams[vg.stream("t")].shape.str(), "[3, 24, 64]");

  // A bad value set on the command line is reported like one in the file.
  GraphConfig g2 = parse_graph(kGoodGraph, "good.json");
  apply_overrides(g2, {parse_override("resize.width=1"), parse_override("resize.widht=64")});
  EXPECT_THAT([&] { validate(g2); },
              ThrowsMessage<GraphError>(
                  AllOf(HasSubstr(R"(good.json: node "resize" (Resize): param "width": must be in [8, 4096], got 1)"),
                        HasSubstr(R"(good.json: node "resize" (Resize): unknown param "widht"; known: width, height)"))));
}

TEST(GraphLoaderTest, ApplyOverridesToAnUnknownNodeListsTheNodes) {
  GraphConfig g = parse_graph(kGoodGraph, "good.json");
  try {
    apply_overrides(g, {parse_override("resise.width=64"), parse_override("resize.width=64"), parse_override("nope.x=1")});
    FAIL() << "no GraphError";
  } catch (const GraphError& e) {
    EXPECT_THAT(e.problems(),
                testing::ElementsAre(R"(good.json: --set resise.width: no node "resise"; nodes: writer, pass, resize)",
                                     R"(good.json: --set nope.x: no node "nope"; nodes: writer, pass, resize)"));
  }
}

// ---- Graphviz ------------------------------------------------------------------------------

TEST(GraphLoaderTest, ToDotHasEveryNodeAndEdge) {
  const std::string dot = to_dot(load(kGoodGraph, "good.json"));
  EXPECT_THAT(dot, testing::StartsWith("digraph \"good\" {\n"));
  EXPECT_THAT(dot, testing::EndsWith("}\n"));
  EXPECT_THAT(dot, HasSubstr(R"(label="resize, and write the \"image\"")"));  // quotes escaped
  EXPECT_THAT(dot, HasSubstr(R"("in:image" [shape=ellipse, label="image\nImage"];)"));
  EXPECT_THAT(dot, HasSubstr(R"("out:t" [shape=ellipse, label="t\nTensor"];)"));
  for (const char* n : {R"("writer" [label="writer\nImageWriter"];)", R"("pass" [label="pass\nTestLoaderPass"];)",
                        R"("resize" [label="resize\nResize"];)"})
    EXPECT_THAT(dot, HasSubstr(n));
  EXPECT_THAT(dot, HasSubstr(R"("in:image" -> "pass" [label="image : Image"];)"));
  EXPECT_THAT(dot, HasSubstr(R"("pass" -> "writer" [label="decoded : Image"];)"));
  EXPECT_THAT(dot, HasSubstr(R"("pass" -> "resize" [label="decoded : Image"];)"));
  EXPECT_THAT(dot, HasSubstr(R"("resize" -> "out:t";)"));
  // 3 edges between nodes/inputs + 1 to the output.
  size_t arrows = 0;
  for (size_t p = dot.find("->"); p != std::string::npos; p = dot.find("->", p + 2)) ++arrows;
  EXPECT_EQ(arrows, 4u) << dot;
}

}  // namespace
}  // namespace fmam
