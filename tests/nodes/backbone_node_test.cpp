// Backbone against torchvision: layer1..3 of resnet18 on a synthetic image, computed once by
// `/usr/bin/python3 tests/testdata/make_backbone_fixture.py` (Debian's torch 1.13.1 +
// torchvision 0.14.1, ../shared/weights/resnet18_imagenet1k_v1_to_layer3.pth) and stored as
// per-level mean/std/sampled values in tests/testdata/backbone_resnet18_fixture.txt; rerun the
// script to regenerate. The bottleneck archs are checked against the (unfolded) torch module of
// networks/resnet.cpp, whose names and shapes the weights must fit. Plus weight files: full state
// dicts, OrderedDicts, missing/mis-shaped keys, the lookup and its not-found message.
#include "nodes/backbone_node.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <optional>

#include "framework/graph.h"
#include "framework/node_runner.h"
#include "networks/resnet.h"
#include "networks/weights.h"
#include "tests/reference/pyramid_fixture.h"
#include "tests/support/helpers.h"

namespace fmam {
namespace {

namespace fs = std::filesystem;
using testing::AllOf;
using testing::HasSubstr;

const std::string kWeights = std::string(FMAM_SOURCE_DIR) + "/../shared/weights/resnet18_imagenet1k_v1_to_layer3.pth";
const std::string kFixture = std::string(FMAM_SOURCE_DIR) + "/tests/testdata/backbone_resnet18_fixture.txt";

// The script's test_image(): [1, 3, h, w], the same float32 operations in the same order.
at::Tensor SyntheticImage(int64_t h, int64_t w) {
  at::Tensor t = at::empty({1, 3, h, w}, at::kFloat);
  float* p = t.data_ptr<float>();
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        const int64_t a = ((y / 8) * 5 + (x / 8) * 3 + c) % 7, b = (y * x + c) % 13;
        p[(c * h + y) * w + x] = (float(a) / 3.0f - 1.0f) + float(b) / 26.0f;
      }
  return t;
}

std::string Json(const std::string& params) { return R"({"id": "teacher", "type": "Backbone", "params": {)" + params + "}}"; }
std::string WeightsParam(const std::string& path) { return "\"weights\": \"" + path + "\""; }

std::vector<at::Tensor> RunBackbone(const std::string& params, const std::vector<at::Tensor>& images, RunOptions options = {}) {
  NodeRunner runner(Json(params), options);
  for (const auto& img : images) runner.push(BackboneNode::kIn, Tensor{img});
  runner.run();
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < images.size(); ++i)
    for (const auto& l : runner.pop(BackboneNode::kOut).levels) out.push_back(l);
  return out;
}

// A scratch folder, removed at the end of the test.
struct TempDir : test::TempDir {
  TempDir() : test::TempDir("fmam_backbone_test") {}
};

// Sets (or unsets) an environment variable for the scope.
struct EnvGuard {
  std::string name;
  std::optional<std::string> old;
  EnvGuard(std::string n, const char* value) : name(std::move(n)) {
    if (const char* o = std::getenv(name.c_str())) old = o;
    if (value)
      ::setenv(name.c_str(), value, 1);
    else
      ::unsetenv(name.c_str());
  }
  ~EnvGuard() {
    if (old)
      ::setenv(name.c_str(), old->c_str(), 1);
    else
      ::unsetenv(name.c_str());
  }
};

NamedTensors ToNamed(const TensorMap& m) { return NamedTensors(m.begin(), m.end()); }

TEST(BackboneNodeTest, MatchesTorchvisionOnSyntheticImages) {
  const auto runs = reference::ReadPyramidFixture(kFixture);
  ASSERT_EQ(runs.size(), 2u);
  for (const auto& run : runs) {
    auto levels = RunBackbone(WeightsParam(kWeights), {SyntheticImage(run.height, run.width)});
    // BatchNorm folding and oneDNN's summation order move values by ~1e-6 of their scale.
    reference::ExpectPyramidMatches(levels, run, 2e-5, 2e-4);
  }
}

TEST(BackboneNodeTest, ChannelsLastMatchesContiguous) {
  const at::Tensor img = SyntheticImage(64, 80);
  auto nhwc = RunBackbone(WeightsParam(kWeights) + R"(, "channels_last": true)", {img});
  auto nchw = RunBackbone(WeightsParam(kWeights) + R"(, "channels_last": false)", {img});
  ASSERT_EQ(nhwc.size(), 3u);
  for (size_t j = 0; j < 3; ++j) {
    // Inference hands the pyramid on in the format it was computed in.
    EXPECT_TRUE(nhwc[j].is_contiguous(at::MemoryFormat::ChannelsLast) && !nhwc[j].is_contiguous());
    EXPECT_TRUE(nchw[j].is_contiguous());
    EXPECT_TRUE(at::allclose(nhwc[j], nchw[j], 1e-4, 1e-5)) << "level " << j;
  }
}

TEST(BackboneNodeTest, OddAndTinySizesFollowTheConvs) {
  BackboneNode::Params p;
  for (auto [h, w] : std::vector<std::pair<int64_t, int64_t>>{{67, 93}, {1, 1}, {33, 2}}) {
    const Shapes s = BackboneNode::infer(p, Shapes{{"image", Shape::of({3, h, w})}});
    auto levels = RunBackbone(WeightsParam(kWeights), {SyntheticImage(h, w)});
    const auto& dims = s.at("features").levels;
    ASSERT_EQ(dims.size(), 3u);
    for (size_t j = 0; j < 3; ++j)
      EXPECT_EQ(dims[j], (std::vector<int64_t>{levels[j].size(1), levels[j].size(2), levels[j].size(3)}))
          << h << "x" << w << " level " << j;
  }
  // 67 x 93: ceil(67/4) = 17, ceil(93/4) = 24, then halving with ceil.
  const Shapes s = BackboneNode::infer(p, Shapes{{"image", Shape::of({3, 67, 93})}});
  EXPECT_EQ(s.at("features").levels, (std::vector<std::vector<int64_t>>{{64, 17, 24}, {128, 9, 12}, {256, 5, 6}}));
  // Unknown image size: channels still known, for the student's load-time check.
  const Shapes u = BackboneNode::infer(p, Shapes{{"image", Shape::unknown()}});
  EXPECT_EQ(u.at("features").levels, (std::vector<std::vector<int64_t>>{{64, -1, -1}, {128, -1, -1}, {256, -1, -1}}));
  BackboneNode::Params p50;
  p50.arch = Arch::kWideResNet50_2;
  p50.layers = {"layer2", "layer4"};
  EXPECT_EQ(BackboneNode::infer(p50, Shapes{{"image", Shape::of({3, 256, 256})}}).at("features").levels,
            (std::vector<std::vector<int64_t>>{{512, 32, 32}, {2048, 8, 8}}));
}

TEST(BackboneNodeTest, BatchOfTwoEqualsTwoSingleFrames) {
  const at::Tensor a = SyntheticImage(64, 64), b = SyntheticImage(64, 64).flip({3});
  RunOptions batched;
  batched.batch = 2;
  auto together = RunBackbone(WeightsParam(kWeights), {a, b}, batched);
  auto one = RunBackbone(WeightsParam(kWeights), {a}), two = RunBackbone(WeightsParam(kWeights), {b});
  ASSERT_EQ(together.size(), 6u);
  for (size_t j = 0; j < 3; ++j) {
    EXPECT_TRUE(at::allclose(together[j], one[j], 1e-4, 1e-5)) << "frame 0 level " << j;
    EXPECT_TRUE(at::allclose(together[3 + j], two[j], 1e-4, 1e-5)) << "frame 1 level " << j;
  }
}

TEST(BackboneNodeTest, FullTorchvisionStateDictLoadsTheSame) {
  // A full resnet18 file: the shared layers plus layer4.* and fc.*, which are ignored.
  TensorMap sd = read_state_dict(kWeights);
  sd["layer4.0.conv1.weight"] = at::randn({512, 256, 3, 3});
  sd["layer4.0.bn1.running_var"] = at::ones({512});
  sd["fc.weight"] = at::randn({1000, 512});
  sd["fc.bias"] = at::zeros({1000});
  TempDir dir;
  write_state_dict(dir.file("resnet18-f37072fd.pth"), ToNamed(sd));
  const at::Tensor img = SyntheticImage(48, 40);
  auto full = RunBackbone(WeightsParam(dir.file("resnet18-f37072fd.pth")), {img});
  auto part = RunBackbone(WeightsParam(kWeights), {img});
  for (size_t j = 0; j < 3; ++j) EXPECT_TRUE(at::equal(full[j], part[j])) << "level " << j;
  // All four layers of the full file.
  auto four = RunBackbone(WeightsParam(dir.file("resnet18-f37072fd.pth")) + R"(, "layers": ["layer3"])", {img});
  ASSERT_EQ(four.size(), 1u);
  EXPECT_TRUE(at::equal(four[0], part[2]));
}

TEST(BackboneNodeTest, ReadsOrderedDictStateDictsAsTorchSavesThem) {
  // model.state_dict() is an OrderedDict with _metadata (torchvision's downloads are such files),
  // which torch::pickle_load of libtorch 1.13 cannot read.
  const TensorMap sd = read_state_dict(std::string(FMAM_SOURCE_DIR) + "/tests/testdata/backbone_ordereddict_state.pth");
  std::vector<std::string> names;
  for (const auto& [k, v] : sd) names.push_back(k);
  EXPECT_EQ(names, (std::vector<std::string>{"0.bias", "0.weight", "1.bias", "1.num_batches_tracked", "1.running_mean",
                                             "1.running_var", "1.weight"}));
  EXPECT_TRUE(at::equal(sd.at("0.weight"), at::arange(6, at::kFloat).mul(0.5).view({3, 2, 1, 1})));
  EXPECT_TRUE(at::equal(sd.at("0.bias"), at::arange(1, 4, at::kFloat)));
  EXPECT_TRUE(at::equal(sd.at("1.running_var"), at::tensor({0.25f, 0.5f, 4.0f})));
  EXPECT_EQ(sd.at("1.num_batches_tracked").scalar_type(), at::kLong);
  EXPECT_EQ(sd.at("1.num_batches_tracked").item<int64_t>(), 7);
}

TEST(BackboneNodeTest, MissingAndMisShapedKeysAreNamedWithTheFile) {
  TensorMap sd = read_state_dict(kWeights);
  sd.erase("layer3.1.conv2.weight");
  sd["layer2.0.bn1.weight"] = at::ones({64});
  TempDir dir;
  const std::string path = dir.file("broken.pth");
  write_state_dict(path, ToNamed(sd));
  EXPECT_THAT([&] { RunBackbone(WeightsParam(path), {}); },
              testing::ThrowsMessage<Error>(
                  AllOf(HasSubstr(R"(node "teacher" (Backbone): param "weights": )" + path + " does not fit resnet18"),
                        HasSubstr("missing (1): layer3.1.conv2.weight"),
                        HasSubstr("mis-shaped (1): layer2.0.bn1.weight [64] (expected [128])"))));
  // Not a torch.save zip at all.
  { std::ofstream(dir.file("junk.pth")) << "not a zip"; }
  EXPECT_THAT([&] { RunBackbone(WeightsParam(dir.file("junk.pth")), {}); },
              testing::ThrowsMessage<Error>(
                  HasSubstr(R"(param "weights": )" + dir.file("junk.pth") + ": not a zip-format torch.save file")));
}

TEST(BackboneNodeTest, ExplicitPathMustExist) {
  EXPECT_THAT(
      [] { RunBackbone(WeightsParam("nope/missing.pth"), {}); },
      testing::ThrowsMessage<Error>(HasSubstr(R"(node "teacher" (Backbone): param "weights": nope/missing.pth: no such file)")));
}

TEST(BackboneNodeTest, NotFoundListsEveryPlaceLooked) {
  TempDir dir;
  EnvGuard env("FMAM_WEIGHTS", dir.file("nowhere").c_str());
  EnvGuard home("TORCH_HOME", dir.file("torch_home").c_str());
  EXPECT_THAT([] { RunBackbone(R"("arch": "resnet34")", {}); },
              testing::ThrowsMessage<Error>(
                  AllOf(HasSubstr(R"(param "weights": no resnet34 weights found; looked for resnet34-b627a593.pth, )"
                                  "resnet34_imagenet1k_v1_to_layer3.pth in:"),
                        HasSubstr("$FMAM_WEIGHTS (" + dir.file("nowhere") + ")"),
                        HasSubstr(dir.file("torch_home") + "/hub/checkpoints (torchvision's cache)"),
                        HasSubstr("../shared/weights (from "), HasSubstr("(beside the executable's repo)"))));
}

TEST(BackboneNodeTest, LookupFindsEnvFileEnvFolderAndSharedDefault) {
  TempDir dir;
  EnvGuard home("TORCH_HOME", dir.file("torch_home").c_str());
  {
    EnvGuard env("FMAM_WEIGHTS", nullptr);  // default: ../shared/weights (cwd or beside the repo)
    NodeRunner runner(Json(""));
    auto& node = dynamic_cast<BackboneNode&>(runner.node());
    EXPECT_THAT(node.weights_path(), testing::EndsWith("shared/weights/resnet18_imagenet1k_v1_to_layer3.pth"));
    // ../shared/README.md: sha256 bf3fe62f...5b43.
    EXPECT_THAT(node.weights_sha256(), AllOf(testing::StartsWith("bf3fe62f"), testing::EndsWith("5b43")));
    EXPECT_EQ(node.weights_sha256().size(), 64u);
  }
  {
    EnvGuard env("FMAM_WEIGHTS", kWeights.c_str());  // a file: taken as is
    NodeRunner runner(Json(""));
    EXPECT_EQ(dynamic_cast<BackboneNode&>(runner.node()).weights_path(), kWeights);
  }
  {
    fs::create_directories(dir.path / "w");
    fs::create_symlink(fs::absolute(kWeights), dir.path / "w" / "resnet18-f37072fd.pth");
    EnvGuard env("FMAM_WEIGHTS", (dir.path / "w").c_str());  // a folder: searched first
    NodeRunner runner(Json(""));
    EXPECT_EQ(dynamic_cast<BackboneNode&>(runner.node()).weights_path(), dir.file("w/resnet18-f37072fd.pth"));
  }
}

TEST(BackboneNodeTest, BadLayersAreNamed) {
  EXPECT_THAT([] { NodeRunner r(Json(R"("layers": ["layer5"])")); },
              testing::ThrowsMessage<GraphError>(
                  HasSubstr(R"(param "layers": unknown layer "layer5"; known: layer1, layer2, layer3, layer4)")));
  EXPECT_THAT([] { NodeRunner r(Json(R"("layers": ["layer3", "layer1"])")); },
              testing::ThrowsMessage<GraphError>(HasSubstr(
                  R"(param "layers": must be in increasing order (shallow to deep) without repeats, got ["layer3", "layer1"])")));
  EXPECT_THAT([] { NodeRunner r(Json(R"("arch": "resnet101")")); },
              testing::ThrowsMessage<GraphError>(
                  HasSubstr(R"(param "arch": must be one of: resnet18, resnet34, resnet50, wide_resnet50_2)")));
}

TEST(BackboneNodeTest, DeeperArchsMatchTheTorchModule) {
  // resnet34 (BasicBlock x [3, 4, 6]) and resnet50 (Bottleneck): weights from the torch module
  // of networks/resnet.cpp with random BatchNorm statistics, so the folding is not trivial.
  for (Arch arch : {Arch::kResNet34, Arch::kResNet50}) {
    SCOPED_TRACE(arch_name(arch));
    Network net = make_resnet(arch, {1, 2, 3}, 7);
    {
      at::NoGradGuard no_grad;
      for (auto& [name, t] : net.named_state()) {
        if (name.find("running_var") != std::string::npos)
          t.uniform_(0.5, 2.0);
        else if (name.find("running_mean") != std::string::npos || name.find("bn") != std::string::npos ||
                 name.find("downsample.1") != std::string::npos)
          if (t.is_floating_point()) t.add_(at::randn(t.sizes()).mul(0.1));
      }
    }
    net.train(false);
    TempDir dir;
    write_state_dict(dir.file("w.pth"), net.named_state());
    const at::Tensor img = SyntheticImage(40, 56);
    auto folded = RunBackbone(WeightsParam(dir.file("w.pth")) + R"(, "arch": ")" + arch_name(arch) + "\"", {img});
    std::vector<at::Tensor> ref;
    {
      c10::InferenceMode guard;
      ref = net.forward({img});
    }
    ASSERT_EQ(folded.size(), 3u);
    for (size_t j = 0; j < 3; ++j) {
      EXPECT_EQ(folded[j].sizes(), ref[j].sizes());
      const double scale = ref[j].abs().max().item<double>();
      EXPECT_LT((folded[j] - ref[j]).abs().max().item<double>(), 1e-4 * scale) << "level " << j;
    }
  }
}

}  // namespace
}  // namespace fmam
