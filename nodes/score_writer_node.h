// Collects one score per frame and writes <dir>/<file> as CSV (source,key,score) in input order
// when the stream ends; written to a temporary name and renamed, so a crash never leaves half a
// table. Serial: it keeps the rows.
#pragma once

#include <string>
#include <vector>

#include "framework/node.h"
#include "framework/types.h"

namespace fmam {

class ScoreWriterNode final : public Node {
 public:
  struct Params {
    std::string dir = "out";
    std::string file = "scores.csv";
    std::string column = "score";
  };
  static constexpr In<Scalar> kIn{"score"};
  static Contract contract() {
    return Contract("ScoreWriter")
        .doc("writes one CSV row per frame: source, key, score")
        .in(kIn, "the frame's score")
        .param(&Params::dir, "dir", "output folder (created if missing)")
        .param(&Params::file, "file", "CSV file name inside dir")
        .param(&Params::column, "column", "header of the score column")
        .concurrency(Concurrency::kSerial);  // keeps rows, in input order
  }
  explicit ScoreWriterNode(const Params& p) : params_(p) {}
  void process(Context& ctx) override;
  void finish() override;

 private:
  Params params_;
  std::string csv_;
  size_t rows_ = 0;
};

}  // namespace fmam
