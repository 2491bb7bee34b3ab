// int8 building blocks (networks/int8_ops.h): activation scales and zero points as PyTorch's
// MinMaxObserver (quint8, per tensor affine) makes them, computed once with Debian's torch 1.13:
//   for lo, hi in ...: o = torch.ao.quantization.MinMaxObserver(dtype=torch.quint8)
//                      o(torch.tensor([lo, hi])); print(o.calculate_qparams())
// (a range that excludes zero is widened to include it; a negative-only one puts zero at 255),
// and with MinMaxObserver(dtype=torch.quint8, reduce_range=True) for the codes 0..127 that CPUs
// without int8 dot products get;
// ranges merge by widening and travel as [min, max] tensors.
#include "networks/int8_ops.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "framework/error.h"

namespace fmam {
namespace {

using testing::HasSubstr;

TEST(Int8OpsTest, QParamsMatchPyTorchsMinMaxObserver) {
  struct Case {
    float lo, hi;
    double scale;
    int64_t zero_point;
  };
  const auto check = [](const Case& c, int quant_max) {
    const QParams q = qparams_at({{"p", {c.lo, c.hi}}}, "p", quant_max);
    EXPECT_NEAR(q.scale, c.scale, 1e-7 * c.scale) << c.lo << " " << c.hi << " " << quant_max;  // torch's is float32
    EXPECT_EQ(q.zero_point, c.zero_point) << c.lo << " " << c.hi << " " << quant_max;
  };
  for (const Case& c : {Case{-3.25f, 2.0f, 0.020588235929608345, 158}, Case{0.0f, 4.5f, 0.01764705963432789, 0},
                        Case{0.5f, 3.0f, 0.0117647061124444, 0}, Case{-1.0f, -0.25f, 0.003921568859368563, 255}})
    check(c, 255);
  for (const Case& c : {Case{-3.25f, 2.0f, 0.04133858159184456, 79}, Case{0.0f, 4.5f, 0.035433072596788406, 0},
                        Case{0.5f, 3.0f, 0.023622047156095505, 0}, Case{-1.0f, -0.25f, 0.007874015718698502, 127}})
    check(c, 127);
  EXPECT_THAT([] { qparams_at({}, "stem", 255); }, testing::ThrowsMessage<Error>(HasSubstr("no range for activation \"stem\"")));
  EXPECT_THAT(
      [] {
        qparams_at({{"x", {2.f, 1.f}}}, "x", 255);
      },
      testing::ThrowsMessage<Error>(HasSubstr("\"x\" has an invalid range")));
  EXPECT_THAT(
      [] {
        qparams_at({{"x", {0.f, 1.f}}}, "x", 256);
      },
      testing::ThrowsMessage<Error>(HasSubstr("quant_max must be in 1..255")));
}

// Without VNNI, oneDNN's vpmaddubsw adds pairs of u8 x s8 products in int16: 2 x 127 x 127 fits,
// 2 x 255 x 127 does not (BackboneInt8Test measures what the overflow does to the features).
TEST(Int8OpsTest, ActivationsKeepToSevenBitsWithoutInt8DotProducts) {
  EXPECT_EQ(int8_activation_max(true), 255);
  EXPECT_EQ(int8_activation_max(false), 127);
  EXPECT_LE(2 * int8_activation_max(false) * 127, 32767);
}

TEST(Int8OpsTest, RangesWidenMergeAndRoundTripAsTensors) {
  ActivationRanges a;
  widen(a, "x", at::tensor({0.5f, -1.f, 2.f}));
  widen(a, "x", at::tensor({3.f, 0.f}));
  EXPECT_EQ(a.at("x"), std::make_pair(-1.f, 3.f));
  merge(a, {{"x", {-2.f, 1.f}}, {"y", {0.f, 1.f}}});
  EXPECT_EQ(a.at("x"), std::make_pair(-2.f, 3.f));
  EXPECT_EQ(a.at("y"), std::make_pair(0.f, 1.f));
  EXPECT_EQ(ranges_from_tensors(ranges_to_tensors(a)), a);
  EXPECT_THAT(
      [] {
        ranges_from_tensors({{"z", at::zeros({3})}});
      },
      testing::ThrowsMessage<Error>(HasSubstr("activation \"z\" must be a [min, max] float tensor")));
}

}  // namespace
}  // namespace fmam
