#include "nodes/score_writer_node.h"

#include <cstdio>

#include "framework/io.h"

namespace fmam {

namespace {
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += (c == '"') ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}
}  // namespace

void ScoreWriterNode::process(Context& ctx) {
  char num[32];
  std::snprintf(num, sizeof num, "%.9g", kIn(ctx).get().value);
  csv_ += csv_field(ctx.source()) + "," + csv_field(output_key(ctx.source(), ctx.frame_id())) + "," + num + "\n";
  ++rows_;
}

void ScoreWriterNode::finish() {
  atomic_write_text(params_.dir + "/" + params_.file, "source,key," + csv_field(params_.column) + "\n" + csv_);
}

FMAM_REGISTER_NODE(ScoreWriterNode);

}  // namespace fmam
