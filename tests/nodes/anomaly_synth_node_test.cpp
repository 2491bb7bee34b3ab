// AnomalySynth against independent checks: Perlin noise against a port of DRAEM's
// rand_perlin_2d_np (tests/reference/perlin.h); the structure image against patch matching with
// loop-written rotations; texture pixels against a solid-colour texture folder; masks, ranges,
// determinism under parallel frames, and the param / folder messages.
#include "nodes/anomaly_synth_node.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <string>
#include <vector>

#include "framework/graph.h"
#include "framework/node_runner.h"
#include "nodes/perlin.h"
#include "tests/reference/perlin.h"

namespace fmam {
namespace {

namespace fs = std::filesystem;
using testing::HasSubstr;
using Params = AnomalySynthNode::Params;

// A temporary folder, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string t = (fs::temp_directory_path() / "fmam_synth_XXXXXX").string();
    path_ = mkdtemp(t.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A folder with one solid-colour PNG texture (any size: resizing keeps the colour exact).
const cv::Vec3b kTextureColor(10, 200, 30);
struct SolidTextures {
  TempDir dir;
  SolidTextures() {
    fs::create_directories(dir.path() + "/sub");
    cv::imwrite(dir.path() + "/sub/solid.png", cv::Mat(17, 23, CV_8UC3, cv::Scalar(kTextureColor)));
  }
  std::string json_path() const { return dir.path(); }
};

// Random pixels: patches are then told apart by content.
cv::Mat random_image(int h, int w, int type = CV_8UC3, uint64_t seed = 7) {
  cv::Mat m(h, w, type);
  cv::RNG rng(seed);
  rng.fill(m, cv::RNG::UNIFORM, 0, 256);
  return m;
}

Params solid_params(const SolidTextures& t) {
  Params p;
  p.textures = t.dir.path();
  return p;
}

bool equal_mats(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && a.type() == b.type() && cv::norm(a, b, cv::NORM_INF) == 0;
}

std::vector<uchar> sorted_bytes(const cv::Mat& m) {
  std::vector<uchar> v;
  for (int y = 0; y < m.rows; ++y) v.insert(v.end(), m.ptr<uchar>(y), m.ptr<uchar>(y) + m.cols * m.elemSize());
  std::sort(v.begin(), v.end());
  return v;
}

// dst equals src turned by k * 90 deg clockwise, written with index loops (not cv::rotate).
bool is_rotation(const cv::Mat& src, const cv::Mat& dst, int k) {
  const int h = src.rows, w = src.cols, e = int(src.elemSize());
  if ((k % 2 == 0 && dst.size() != src.size()) || (k % 2 == 1 && (dst.rows != w || dst.cols != h))) return false;
  for (int y = 0; y < dst.rows; ++y)
    for (int x = 0; x < dst.cols; ++x) {
      int sy = y, sx = x;
      if (k == 1) sy = h - 1 - x, sx = y;
      if (k == 2) sy = h - 1 - y, sx = w - 1 - x;
      if (k == 3) sy = x, sx = w - 1 - y;
      if (std::memcmp(dst.ptr(y, x), src.ptr(sy, sx), e) != 0) return false;
    }
  return true;
}

// Every grid cell of S (boundaries floor(i*size/g)) is a turned copy of a distinct cell of I.
void expect_patch_permutation(const cv::Mat& image, const cv::Mat& s, int grid) {
  const int g = std::min({grid, image.rows, image.cols});
  std::vector<cv::Rect> rects;
  for (int r = 0; r < g; ++r)
    for (int c = 0; c < g; ++c)
      rects.emplace_back(c * image.cols / g, r * image.rows / g, (c + 1) * image.cols / g - c * image.cols / g,
                         (r + 1) * image.rows / g - r * image.rows / g);
  std::vector<int> used(rects.size(), 0);
  int moved = 0;
  for (size_t d = 0; d < rects.size(); ++d) {
    int found = -1;
    for (size_t src = 0; src < rects.size() && found < 0; ++src)
      for (int k = 0; k < 4 && found < 0; ++k)
        if (!used[src] && is_rotation(image(rects[src]), s(rects[d]), k)) {
          found = int(src);
          moved += (src != d || k != 0);
        }
    ASSERT_GE(found, 0) << "cell " << d << " of S is no turned cell of I";
    used[found] = 1;
  }
  EXPECT_GT(moved, int(rects.size()) / 2) << "S barely differs from I";
}

at::Tensor expected_mask(const AnomalySynthNode::Result& r) { return AnomalySynthNode::mask_tensor(r); }

bool equal_tensors(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && std::memcmp(a.data_ptr<float>(), b.data_ptr<float>(), a.numel() * sizeof(float)) == 0;
}

std::string node_json(const std::string& params) {
  return R"({"id": "synth", "type": "AnomalySynth", "params": {)" + params + "}}";
}

// ---- Perlin noise ------------------------------------------------------------------------------

TEST(AnomalySynthNodeTest, PerlinMatchesDraemReference) {
  struct Case {
    int h, w, ry, rx;
  };
  std::mt19937_64 rng(3);
  for (Case c : {Case{64, 64, 4, 8}, Case{256, 256, 1, 32}, Case{32, 128, 2, 4}, Case{256, 256, 32, 1}}) {
    std::vector<double> angles(size_t(c.ry + 1) * (c.rx + 1));
    for (double& a : angles) a = 2 * M_PI * std::uniform_real_distribution<double>(0, 1)(rng);
    cv::Mat ours = perlin_2d(cv::Size(c.w, c.h), c.ry, c.rx, angles);
    cv::Mat ref = reference::RandPerlin2dNp(c.h, c.w, c.ry, c.rx, angles);
    ASSERT_EQ(ours.type(), CV_32FC1);
    ASSERT_EQ(ours.size(), ref.size());
    cv::Mat ours64;
    ours.convertTo(ours64, CV_64F);
    EXPECT_LT(cv::norm(ours64, ref, cv::NORM_INF), 1e-6) << c.h << "x" << c.w << " res " << c.ry << "x" << c.rx;
  }
}

TEST(AnomalySynthNodeTest, PerlinAnySizeStaysInUnitRange) {
  std::vector<double> angles(5 * 9);
  std::mt19937_64 rng(5);
  for (double& a : angles) a = 2 * M_PI * std::uniform_real_distribution<double>(0, 1)(rng);
  cv::Mat p = perlin_2d(cv::Size(37, 50), 4, 8, angles);  // 50 / 4, 37 / 8 not integers
  double lo, hi;
  cv::minMaxLoc(p, &lo, &hi);
  EXPECT_GE(lo, -1.0 - 1e-6);
  EXPECT_LE(hi, 1.0 + 1e-6);
  EXPECT_EQ(p.at<float>(0, 0), 0.0f);  // a lattice point
  EXPECT_GT(hi - lo, 0.3);
}

// ---- masks -------------------------------------------------------------------------------------

TEST(AnomalySynthNodeTest, MasksAreDisjointBinaryAndNonEmptyAtDefaultTau) {
  SolidTextures tex;
  TextureBank bank(tex.dir.path());
  const Params p = solid_params(tex);
  const cv::Mat img = random_image(128, 128);
  int m1_nonempty = 0, m2_nonempty = 0, first_try = 0;
  for (int seed = 0; seed < 50; ++seed) {
    auto r = AnomalySynthNode::synthesize(img, AnomalySynthNode::frame_seed(seed, 0), p, bank);
    ASSERT_TRUE(r.anomalous);
    ASSERT_EQ(r.m1.type(), CV_8UC1);
    ASSERT_EQ(r.m2.type(), CV_8UC1);
    double hi1, hi2;
    cv::minMaxLoc(r.m1, nullptr, &hi1);
    cv::minMaxLoc(r.m2, nullptr, &hi2);
    EXPECT_LE(hi1, 1.0);
    EXPECT_LE(hi2, 1.0);
    cv::Mat both;
    cv::bitwise_and(r.m1, r.m2, both);
    EXPECT_EQ(cv::countNonZero(both), 0) << "seed " << seed;
    const int n1 = cv::countNonZero(r.m1), n2 = cv::countNonZero(r.m2);
    EXPECT_GT(n1 + n2, 0) << "seed " << seed;
    EXPECT_FLOAT_EQ(r.tau, 0.5f) << "seed " << seed << ": the fallback ran at the default tau";
    m1_nonempty += n1 > 0;
    m2_nonempty += n2 > 0;
    first_try += r.attempts == 1;
  }
  // P is symmetric in distribution, so each side shows up in most frames (measured: 96 % of
  // 2000 frames each, 50 and 49 of these 50); a frame with only one of them is a pure structure
  // or texture defect. 1.3 % of frames needed a second noise field, none a third.
  EXPECT_GE(m1_nonempty, 40);
  EXPECT_GE(m2_nonempty, 40);
  EXPECT_GE(first_try, 45);
}

TEST(AnomalySynthNodeTest, FallbackLowersTauWhenNoiseNeverCrossesIt) {
  SolidTextures tex;
  TextureBank bank(tex.dir.path());
  Params p = solid_params(tex);
  p.tau = 1.0f;  // |P| <= 1: no field gets past it
  auto r = AnomalySynthNode::synthesize(random_image(64, 64), 11, p, bank);
  EXPECT_EQ(r.attempts, 16);
  EXPECT_LT(r.tau, 1.0f);
  EXPECT_GT(cv::countNonZero(r.m1) + cv::countNonZero(r.m2), 0);
}

// ---- pixels ------------------------------------------------------------------------------------

TEST(AnomalySynthNodeTest, OutsideUnchangedM1FromStructureM2FromTexture) {
  SolidTextures tex;
  TextureBank bank(tex.dir.path());
  const Params p = solid_params(tex);
  const cv::Mat img = random_image(128, 128);
  bool saw_m1 = false, saw_m2 = false;
  for (int seed = 0; seed < 10; ++seed) {
    auto r = AnomalySynthNode::synthesize(img, AnomalySynthNode::frame_seed(seed, 3), p, bank);
    ASSERT_EQ(r.image.type(), CV_8UC3);
    ASSERT_EQ(r.image.size(), img.size());
    for (int y = 0; y < img.rows; ++y)
      for (int x = 0; x < img.cols; ++x) {
        const cv::Vec3b out = r.image.at<cv::Vec3b>(y, x);
        if (r.m1.at<uchar>(y, x)) {
          ASSERT_EQ(out, r.structure.at<cv::Vec3b>(y, x)) << y << "," << x;
        } else if (r.m2.at<uchar>(y, x)) {
          ASSERT_EQ(out, kTextureColor) << y << "," << x;
        } else {
          ASSERT_EQ(out, img.at<cv::Vec3b>(y, x)) << y << "," << x;
        }
      }
    if (cv::countNonZero(r.m1)) {
      saw_m1 = true;
      EXPECT_EQ(sorted_bytes(r.structure), sorted_bytes(img));  // 90-degree turns move pixels only
      expect_patch_permutation(img, r.structure, p.grid);
    }
    saw_m2 |= cv::countNonZero(r.m2) > 0;
  }
  EXPECT_TRUE(saw_m1);
  EXPECT_TRUE(saw_m2);
}

TEST(AnomalySynthNodeTest, StructureImageIsShuffledTurnedPatches) {
  const cv::Mat img = random_image(256, 256);
  cv::Mat s = AnomalySynthNode::structure_image(img, 8, false, 42);
  EXPECT_EQ(sorted_bytes(s), sorted_bytes(img));
  expect_patch_permutation(img, s, 8);
  // Flips: still a permutation of the pixels, and some patch is mirrored (no pure turn).
  cv::Mat f = AnomalySynthNode::structure_image(img, 8, true, 42);
  EXPECT_EQ(sorted_bytes(f), sorted_bytes(img));
  int mirrored = 0;
  for (int r = 0; r < 8; ++r)
    for (int c = 0; c < 8; ++c) {
      const cv::Mat cell = f(cv::Rect(c * 32, r * 32, 32, 32));
      bool turned = false;
      for (int sr = 0; sr < 8 && !turned; ++sr)
        for (int sc = 0; sc < 8 && !turned; ++sc)
          for (int k = 0; k < 4 && !turned; ++k) turned = is_rotation(img(cv::Rect(sc * 32, sr * 32, 32, 32)), cell, k);
      mirrored += !turned;
    }
  EXPECT_GT(mirrored, 16);  // about half of 64
}

TEST(AnomalySynthNodeTest, NonSquareAndNonDivisibleSizes) {
  SolidTextures tex;
  TextureBank bank(tex.dir.path());
  const Params p = solid_params(tex);
  for (cv::Size size : {cv::Size(100, 37), cv::Size(61, 203), cv::Size(320, 256)}) {
    const cv::Mat img = random_image(size.height, size.width);
    cv::Mat s = AnomalySynthNode::structure_image(img, 8, false, 9);
    ASSERT_EQ(s.size(), img.size());
    EXPECT_EQ(sorted_bytes(s), sorted_bytes(img)) << size;
    expect_patch_permutation(img, s, 8);
    for (int seed = 0; seed < 5; ++seed) {
      auto r = AnomalySynthNode::synthesize(img, seed, p, bank);
      ASSERT_EQ(r.image.size(), img.size());
      ASSERT_EQ(r.m1.size(), img.size());
      // Outside M1 | M2 the output is the input: pasting the output over the input on the
      // mask must give the output back.
      cv::Mat m = r.m1 | r.m2, rebuilt = img.clone();
      r.image.copyTo(rebuilt, m);
      EXPECT_TRUE(equal_mats(rebuilt, r.image)) << size << " seed " << seed;
      EXPECT_GT(cv::countNonZero(m), 0);
    }
  }
}

TEST(AnomalySynthNodeTest, OpacityUniformBlendsWithBeta) {
  SolidTextures tex;
  TextureBank bank(tex.dir.path());
  Params p = solid_params(tex);
  p.opacity = AnomalySynthNode::Opacity::kUniform;
  p.beta_min = p.beta_max = 0.5f;
  const cv::Mat img = random_image(96, 96);
  for (int seed = 0; seed < 5; ++seed) {
    auto r = AnomalySynthNode::synthesize(img, seed, p, bank);
    EXPECT_FLOAT_EQ(r.beta, 0.5f);
    for (int y = 0; y < img.rows; ++y)
      for (int x = 0; x < img.cols; ++x) {
        const bool in1 = r.m1.at<uchar>(y, x), in2 = r.m2.at<uchar>(y, x);
        if (!in1 && !in2) continue;
        const cv::Vec3b src = in1 ? r.structure.at<cv::Vec3b>(y, x) : kTextureColor;
        for (int c = 0; c < 3; ++c) {
          const double want = 0.5 * img.at<cv::Vec3b>(y, x)[c] + 0.5 * src[c];
          ASSERT_LE(std::abs(r.image.at<cv::Vec3b>(y, x)[c] - want), 0.5 + 1e-9) << y << "," << x;
        }
      }
  }
  // DRAEM's range: beta within [beta_min, beta_max].
  p.beta_min = 0.2f;
  p.beta_max = 1.0f;
  for (int seed = 0; seed < 20; ++seed) {
    auto r = AnomalySynthNode::synthesize(img, seed, p, bank);
    EXPECT_GE(r.beta, 0.2f);
    EXPECT_LE(r.beta, 1.0f);
  }
}

// feather: the texture shows as it is deep inside M2, the image as it is far outside, and a blend
// on M2's edge; the mask stays binary. A constant image makes the structure image S = I, so only
// M2 changes pixels.
TEST(AnomalySynthNodeTest, FeatherFadesTheDefectsEdges) {
  SolidTextures tex;
  TextureBank bank(tex.dir.path());
  Params p = solid_params(tex);
  p.feather = 2.0f;
  p.perlin_max_scale = 2;  // big blobs: interiors far from any edge
  const cv::Mat img(96, 96, CV_8UC3, cv::Scalar(50, 50, 50));
  int blended_edges = 0, frames_with_m2 = 0;
  for (int seed = 0; seed < 8; ++seed) {
    auto r = AnomalySynthNode::synthesize(img, seed, p, bank);
    if (cv::countNonZero(r.m2) == 0) continue;
    ++frames_with_m2;
    cv::Mat inside, outside;  // distance to the nearest pixel on the other side of M2's edge
    cv::distanceTransform(r.m2, inside, cv::DIST_L2, 5);
    cv::distanceTransform(1 - r.m2, outside, cv::DIST_L2, 5);
    const at::Tensor mask = AnomalySynthNode::mask_tensor(r);
    const float* m = mask.data_ptr<float>();
    for (int64_t i = 0; i < mask.numel(); ++i) ASSERT_TRUE(m[i] == 0.0f || m[i] == 1.0f) << "the mask stays M1 | M2";
    bool blended = false;
    for (int y = 0; y < img.rows; ++y)
      for (int x = 0; x < img.cols; ++x) {
        const cv::Vec3b v = r.image.at<cv::Vec3b>(y, x);
        if (inside.at<float>(y, x) >= 8)
          for (int c = 0; c < 3; ++c) ASSERT_LE(std::abs(v[c] - kTextureColor[c]), 1) << y << "," << x;
        if (outside.at<float>(y, x) >= 8) ASSERT_EQ(v, cv::Vec3b(50, 50, 50)) << y << "," << x;
        if (inside.at<float>(y, x) == 1) blended |= v[1] > 60 && v[1] < 190;  // G: 50 in I, 200 in T
      }
    blended_edges += blended;
  }
  EXPECT_GT(frames_with_m2, 2);
  EXPECT_EQ(blended_edges, frames_with_m2) << "every frame's M2 edge is a blend of image and texture";
  p.feather = 0.0f;  // hard edges: the edge pixel is the texture itself
  auto hard = AnomalySynthNode::synthesize(img, 0, p, bank);
  for (int y = 0; y < img.rows; ++y)
    for (int x = 0; x < img.cols; ++x)
      if (hard.m2.at<uchar>(y, x)) ASSERT_EQ(hard.image.at<cv::Vec3b>(y, x), kTextureColor);
}

// The draws of the paper's synthesis stay as they were when params are added (new draws come after
// them): FNV-1a of I' and of M1 | M2 for three frames at the defaults (textures: one solid image),
// recorded before the shade params existed. A change here changes every RKD+FMAM model's training.
uint64_t fnv1a(const cv::Mat& m) {
  uint64_t h = 1469598103934665603ULL;
  for (int y = 0; y < m.rows; ++y)
    for (size_t i = 0; i < m.cols * m.elemSize(); ++i) h = (h ^ m.ptr<uchar>(y)[i]) * 1099511628211ULL;
  return h;
}

TEST(AnomalySynthNodeTest, ThePapersDrawsStayAsTheyWere) {
  SolidTextures tex;
  TextureBank bank(tex.dir.path());
  const cv::Mat img = random_image(80, 96);
  const uint64_t want[3][2] = {{6255507264390904532ULL, 10469273412359151803ULL},
                               {11819860005850892739ULL, 9049671437791469894ULL},
                               {4217993778362820264ULL, 16516378941210120087ULL}};
  for (int frame = 0; frame < 3; ++frame) {
    auto r = AnomalySynthNode::synthesize(img, AnomalySynthNode::frame_seed(9, frame), solid_params(tex), bank);
    EXPECT_EQ(fnv1a(r.image), want[frame][0]) << "frame " << frame;
    EXPECT_EQ(fnv1a(r.m1 | r.m2), want[frame][1]) << "frame " << frame;
  }
}

// shade: M2 shows the image itself times g (rounded, saturating), not a texture; M1 and the outside
// are as without it, so the same frame with shade 0 differs only in M2. shade 0.5 shades about
// half the frames, with gains inside [shade_gain_min, shade_gain_max].
TEST(AnomalySynthNodeTest, ShadeDarkensTheImageInM2) {
  SolidTextures tex;
  TextureBank bank(tex.dir.path());
  Params p = solid_params(tex);
  p.shade = 1.0f;
  p.shade_gain_min = p.shade_gain_max = 0.5f;
  const cv::Mat img = random_image(96, 96);
  int frames_with_m2 = 0;
  for (int seed = 0; seed < 6; ++seed) {
    const auto r = AnomalySynthNode::synthesize(img, seed, p, bank);
    const auto paper = AnomalySynthNode::synthesize(img, seed, solid_params(tex), bank);
    ASSERT_TRUE(r.shaded);
    EXPECT_FLOAT_EQ(r.shade_gain, 0.5f);
    EXPECT_FALSE(paper.shaded);
    ASSERT_TRUE(equal_mats(r.m1, paper.m1) && equal_mats(r.m2, paper.m2)) << "the masks do not depend on shade";
    frames_with_m2 += cv::countNonZero(r.m2) > 0;
    for (int y = 0; y < img.rows; ++y)
      for (int x = 0; x < img.cols; ++x) {
        const cv::Vec3b got = r.image.at<cv::Vec3b>(y, x), i = img.at<cv::Vec3b>(y, x);
        if (r.m2.at<uchar>(y, x)) {
          for (int c = 0; c < 3; ++c) ASSERT_EQ(got[c], cvRound(0.5 * i[c])) << y << "," << x;
        } else {
          ASSERT_EQ(got, paper.image.at<cv::Vec3b>(y, x)) << y << "," << x;
        }
      }
  }
  EXPECT_GT(frames_with_m2, 2);
  p.shade = 0.5f;
  p.shade_gain_min = 0.3f;
  p.shade_gain_max = 0.6f;
  int shaded = 0;
  for (int seed = 0; seed < 200; ++seed) {
    const auto r = AnomalySynthNode::synthesize(random_image(8, 8), seed, p, bank);
    shaded += r.shaded;
    if (r.shaded) EXPECT_TRUE(r.shade_gain >= 0.3f && r.shade_gain <= 0.6f) << r.shade_gain;
  }
  EXPECT_GT(shaded, 70);
  EXPECT_LT(shaded, 130);
}

TEST(AnomalySynthNodeTest, GrayAndOnePixelImages) {
  SolidTextures tex;
  TextureBank bank(tex.dir.path());
  const Params p = solid_params(tex);
  auto g = AnomalySynthNode::synthesize(random_image(64, 48, CV_8UC1), 1, p, bank);
  EXPECT_EQ(g.image.type(), CV_8UC1);
  EXPECT_EQ(g.image.size(), cv::Size(48, 64));
  // A 1x1 image: flat noise, so the fallback marks the one pixel; S = I, the pixel is unchanged.
  const cv::Mat one = random_image(1, 1);
  auto r = AnomalySynthNode::synthesize(one, 1, p, bank);
  EXPECT_EQ(cv::countNonZero(r.m1) + cv::countNonZero(r.m2), 1);
  EXPECT_EQ(r.image.size(), cv::Size(1, 1));
}

// ---- the node ----------------------------------------------------------------------------------

TEST(AnomalySynthNodeTest, NodeOutputsTypesRangesAndMatchesSynthesize) {
  SolidTextures tex;
  NodeRunner runner(node_json(R"("seed": 5, "textures": ")" + tex.json_path() + "\""));
  const cv::Mat img = random_image(80, 120);
  for (int i = 0; i < 4; ++i) runner.push(AnomalySynthNode::kIn, Image{img});
  runner.run();
  TextureBank bank(tex.dir.path());
  Params p = solid_params(tex);
  p.seed = 5;
  for (int i = 0; i < 4; ++i) {
    cv::Mat out = runner.pop(AnomalySynthNode::kOut).mat;
    at::Tensor mask = runner.pop(AnomalySynthNode::kMask).t;
    ASSERT_EQ(out.type(), CV_8UC3);
    ASSERT_EQ(out.size(), img.size());
    ASSERT_EQ(mask.scalar_type(), at::kFloat);
    ASSERT_EQ(mask.sizes(), (at::IntArrayRef{1, 1, 80, 120}));
    const float* d = mask.data_ptr<float>();
    for (int64_t k = 0; k < mask.numel(); ++k) ASSERT_TRUE(d[k] == 0.0f || d[k] == 1.0f);
    auto r = AnomalySynthNode::synthesize(img, AnomalySynthNode::frame_seed(5, i), p, bank);
    EXPECT_TRUE(equal_mats(out, r.image)) << "frame " << i;
    EXPECT_TRUE(equal_tensors(mask, expected_mask(r))) << "frame " << i;
  }
}

TEST(AnomalySynthNodeTest, DeterministicPerSeedAndFrameUnderParallelRuns) {
  SolidTextures tex;
  const std::string json = node_json(R"("seed": 3, "textures": ")" + tex.json_path() + "\"");
  const cv::Mat img = random_image(64, 64);
  auto run = [&](long long first, int threads) {
    RunOptions o;
    o.first_frame_id = first;
    o.threads = threads;
    o.max_in_flight = 16;
    NodeRunner runner(json, o);
    for (int i = 0; i < 16; ++i) runner.push(AnomalySynthNode::kIn, Image{img});
    runner.run();
    std::vector<cv::Mat> outs;
    for (int i = 0; i < 16; ++i) {
      outs.push_back(runner.pop(AnomalySynthNode::kOut).mat);
      runner.pop(AnomalySynthNode::kMask);
    }
    return outs;
  };
  const auto a = run(0, 1), b = run(0, 4), c = run(100, 4);
  for (int i = 0; i < 16; ++i) EXPECT_TRUE(equal_mats(a[i], b[i])) << "frame " << i;
  for (int i = 1; i < 16; ++i) EXPECT_FALSE(equal_mats(a[i], a[0])) << "frame " << i;
  for (int i = 0; i < 16; ++i) EXPECT_FALSE(equal_mats(a[i], c[i])) << "frame " << i;
  // Frame ids, not positions: c[0] is frame 100.
  TextureBank bank(tex.dir.path());
  Params p = solid_params(tex);
  p.seed = 3;
  EXPECT_TRUE(equal_mats(c[0], AnomalySynthNode::synthesize(img, AnomalySynthNode::frame_seed(3, 100), p, bank).image));
  // Another seed, same frames: different.
  p.seed = 4;
  EXPECT_FALSE(equal_mats(a[0], AnomalySynthNode::synthesize(img, AnomalySynthNode::frame_seed(4, 0), p, bank).image));
}

TEST(AnomalySynthNodeTest, ProbabilityZeroLeavesImageAndZeroMask) {
  SolidTextures tex;
  NodeRunner runner(node_json(R"("probability": 0.0, "textures": ")" + tex.json_path() + "\""));
  const cv::Mat img = random_image(50, 70);
  for (int i = 0; i < 5; ++i) runner.push(AnomalySynthNode::kIn, Image{img});
  runner.run();
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(equal_mats(runner.pop(AnomalySynthNode::kOut).mat, img));
    at::Tensor m = runner.pop(AnomalySynthNode::kMask).t;
    ASSERT_EQ(m.sizes(), (at::IntArrayRef{1, 1, 50, 70}));
    EXPECT_EQ(m.sum().item<float>(), 0.0f);
  }
}

TEST(AnomalySynthNodeTest, ProbabilityHalfGivesAboutHalf) {
  SolidTextures tex;
  TextureBank bank(tex.dir.path());
  Params p = solid_params(tex);
  p.probability = 0.5f;
  int n = 0;
  for (int f = 0; f < 200; ++f)
    n += AnomalySynthNode::synthesize(random_image(16, 16), AnomalySynthNode::frame_seed(0, f), p, bank).anomalous;
  EXPECT_GT(n, 70);
  EXPECT_LT(n, 130);
}

TEST(AnomalySynthNodeTest, TexturesFolderErrorsNameFolderAndParam) {
  TempDir tmp;
  const std::string missing = tmp.path() + "/no_such_folder";
  EXPECT_THAT([&] { NodeRunner r(node_json(R"("textures": ")" + missing + "\"")); },
              testing::ThrowsMessage<Error>(testing::AllOf(
                  HasSubstr(R"(node "synth" (AnomalySynth): param "textures": folder ")" + missing + "\" not found"))));
  const std::string empty = tmp.path() + "/empty";
  fs::create_directories(empty + "/deeper");
  std::ofstream(empty + "/notes.txt") << "not an image";
  EXPECT_THAT([&] { NodeRunner r(node_json(R"("textures": ")" + empty + "\"")); },
              testing::ThrowsMessage<Error>(testing::AllOf(HasSubstr(R"(param "textures")"), HasSubstr("\"" + empty + "\""),
                                                           HasSubstr("holds no .jpg/.jpeg/.png image"))));
  EXPECT_THAT(
      [&] { NodeRunner r(node_json(R"("textures": ")" + empty + "/notes.txt\"")); },
      testing::ThrowsMessage<Error>(testing::AllOf(HasSubstr(R"(param "textures")"), HasSubstr("notes.txt\" is not a folder"))));
}

TEST(AnomalySynthNodeTest, BadParamsAreNamed) {
  SolidTextures tex;
  const std::string t = R"("textures": ")" + tex.json_path() + "\", ";
  auto throws = [&](const std::string& params, const std::string& message) {
    EXPECT_THAT([&] { NodeRunner r(node_json(t + params)); }, testing::ThrowsMessage<Error>(HasSubstr(message))) << params;
  };
  throws(R"("tau": 1.5)", R"(node "synth" (AnomalySynth): param "tau": must be in [0, 1], got 1.5)");
  throws(R"("grid": 0)", R"(param "grid": must be in [1, 64], got 0)");
  throws(R"("probability": -0.1)", R"(param "probability": must be in [0, 1])");
  throws(R"("opacity": "alpha")", R"(param "opacity": must be one of: none, uniform)");
  throws(R"("perlin_min_scale": 3, "perlin_max_scale": 3)",
         R"(param "perlin_max_scale": must be greater than perlin_min_scale (3), got 3)");
  throws(R"("beta_min": 0.8, "beta_max": 0.5)", R"(param "beta_max": must be >= beta_min (0.8), got 0.5)");
  throws(R"("shade_gain_min": 0.9, "shade_gain_max": 0.5)",
         R"(param "shade_gain_max": must be >= shade_gain_min (0.9), got 0.5)");
  throws(R"("shade": 2)", R"(param "shade": must be in [0, 1], got 2)");
  throws(R"("taus": 0.5)", R"(unknown param "taus")");
  throws(R"("seed": 1.5)", R"(param "seed": must be an integer)");
}

TEST(AnomalySynthNodeTest, DefaultDtdFolderFromRepoRoot) {
  // The one test on the shared data: the default "../shared/data/dtd/images" (run from the repo
  // root; also found through the executable's ancestors or $FMAM_SHARED).
  NodeRunner runner(node_json(R"("seed": 1)"));
  const cv::Mat img = random_image(256, 256);
  for (int i = 0; i < 8; ++i) runner.push(AnomalySynthNode::kIn, Image{img});
  runner.run();
  TextureBank bank(Params{}.textures);
  EXPECT_GT(bank.size(), 100u);
  EXPECT_NE(bank.files()[0].find("dtd"), std::string::npos);
  int textured = 0;
  Params p;
  p.seed = 1;
  for (int i = 0; i < 8; ++i) {
    cv::Mat out = runner.pop(AnomalySynthNode::kOut).mat;
    runner.pop(AnomalySynthNode::kMask);
    auto r = AnomalySynthNode::synthesize(img, AnomalySynthNode::frame_seed(1, i), p, bank);
    EXPECT_TRUE(equal_mats(out, r.image));
    if (!r.texture.empty()) {
      ++textured;
      EXPECT_EQ(r.texture.size(), img.size());
      cv::Mat want = img.clone();
      r.texture.copyTo(want, r.m2);
      if (!r.structure.empty()) r.structure.copyTo(want, r.m1);
      EXPECT_TRUE(equal_mats(out, want));
    }
  }
  EXPECT_GT(textured, 0);
}

// Manual timing: build-synth/tests/fmam_tests --gtest_filter='*Timing*'
// --gtest_also_run_disabled_tests
TEST(AnomalySynthNodeTest, DISABLED_Timing) {
  TextureBank bank(Params{}.textures);
  const int threads = cv::getNumThreads();
  cv::setNumThreads(1);
  for (int size : {256, 512}) {
    const cv::Mat img = random_image(size, size);
    Params p;
    const int n = 200;
    auto t0 = std::chrono::steady_clock::now();
    for (int f = 0; f < n; ++f) AnomalySynthNode::synthesize(img, AnomalySynthNode::frame_seed(0, f), p, bank);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / n;
    std::printf("AnomalySynth %dx%d: %.2f ms/frame (one thread)\n", size, size, ms);
  }
  cv::setNumThreads(threads);
}

}  // namespace
}  // namespace fmam
