// Readers for the small reference files of tests/testdata/make_{backbone,student}_fixture.py:
// per level its shape, mean, std and values at sampled flat (NCHW) indices, and a check of a
// computed pyramid against them.
#pragma once

#include <ATen/core/Tensor.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace fmam::reference {

struct FixtureLevel {
  int64_t c = 0, h = 0, w = 0;
  double mean = 0, std = 0;
  std::vector<std::pair<int64_t, double>> samples;  // flat NCHW index (batch 0), value
};
struct FixtureRun {
  int64_t height = 0, width = 0;  // the input size
  std::vector<FixtureLevel> levels;
};

// The "size"/"level"/sample lines of a fixture file; other lines ("count", "state", "#") are
// left to the caller (read them with FixtureLines()).
inline std::vector<FixtureRun> ReadPyramidFixture(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << "missing " << path;
  std::vector<FixtureRun> runs;
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string head;
    in >> head;
    if (head == "size") {
      runs.emplace_back();
      in >> runs.back().height >> runs.back().width;
    } else if (head == "level") {
      FixtureLevel l;
      int j = 0;
      in >> j >> l.c >> l.h >> l.w >> l.mean >> l.std;
      runs.back().levels.push_back(l);
    } else if (!head.empty() && std::isdigit(static_cast<unsigned char>(head[0])) && !runs.empty() &&
               !runs.back().levels.empty()) {
      double v = 0;
      in >> v;
      runs.back().levels.back().samples.emplace_back(std::stoll(head), v);
    }
  }
  return runs;
}

// The lines of a fixture file that start with `head` + " ", without it.
inline std::vector<std::string> FixtureLines(const std::string& path, const std::string& head) {
  std::ifstream f(path);
  std::vector<std::string> out;
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(head + " ", 0) == 0) out.push_back(line.substr(head.size() + 1));
  return out;
}

// Checks levels[j] (batch 0 of [B, C, H, W]) against the fixture: shape, mean, std, samples,
// each within abs_tol + rel_tol * |reference|.
inline void ExpectPyramidMatches(const std::vector<at::Tensor>& levels, const FixtureRun& ref, double abs_tol, double rel_tol) {
  ASSERT_EQ(levels.size(), ref.levels.size());
  for (size_t j = 0; j < levels.size(); ++j) {
    SCOPED_TRACE("level " + std::to_string(j) + " of the " + std::to_string(ref.height) + "x" + std::to_string(ref.width) +
                 " input");
    const FixtureLevel& r = ref.levels[j];
    const at::Tensor t = levels[j].narrow(0, 0, 1).contiguous().to(at::kDouble);
    ASSERT_EQ(t.size(1), r.c);
    ASSERT_EQ(t.size(2), r.h);
    ASSERT_EQ(t.size(3), r.w);
    EXPECT_NEAR(t.mean().item<double>(), r.mean, abs_tol + rel_tol * std::abs(r.mean));
    EXPECT_NEAR(t.std().item<double>(), r.std, abs_tol + rel_tol * std::abs(r.std));
    const double* p = t.data_ptr<double>();
    int bad = 0;
    for (const auto& [i, v] : r.samples) {
      if (std::abs(p[i] - v) > abs_tol + rel_tol * std::abs(v) && bad++ < 5)
        ADD_FAILURE() << "flat index " << i << ": got " << p[i] << ", reference " << v;
    }
    EXPECT_EQ(bad, 0) << "samples off";
  }
}

}  // namespace fmam::reference
