// What the CPU can do, for choosing the networks' arithmetic.
#pragma once

namespace fmam {

// Whether this CPU multiplies bfloat16 natively (AVX512-BF16: Zen 4, Cooper Lake, Sapphire
// Rapids and later). Elsewhere oneDNN emulates bfloat16 and it is slower than float32.
inline bool cpu_has_native_bf16() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

// Whether oneDNN has bfloat16 convolution kernels for this CPU: AVX-512 BW, VL and DQ, the test
// PyTorch's mkldnn_bf16_device_check makes (they emulate bfloat16 products where AVX512-BF16 is
// missing, summing in float32). Without them PyTorch falls back to kernels that sum in bfloat16:
// a 3x3 conv of 2304 products came out 5.4 % off float32 on an AVX2 host, where rounding its
// inputs to bfloat16 alone would cost about 0.4 % (BatchNormFoldingTest.Bf16ConvSumsInFloat32OnlyWhereOneDnnHasKernels).
inline bool cpu_has_bf16_kernels() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

// What asking for bfloat16 costs on a CPU without AVX512-BF16, for the warnings of inference and
// training: always speed, and accuracy too where oneDNN has no bfloat16 kernels.
inline const char* bf16_emulation_cost() {
  return cpu_has_bf16_kernels() ? "so it is emulated, several times slower than fp32"
                                : "so it is emulated, several times slower than fp32, and less accurate: without AVX-512 "
                                  "the convolutions sum in bfloat16";
}

// Whether this CPU has int8 dot-product instructions (AVX512-VNNI: Cascade Lake, Ice Lake, Zen 4
// and later; AVX-VNNI: Alder Lake): what makes oneDNN's int8 convolutions faster than bfloat16.
inline bool cpu_has_int8_dot() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512vnni") || __builtin_cpu_supports("avxvnni");
#else
  return false;
#endif
}

// Whether oneDNN's int8 convolutions beat float32 on this CPU, so that `auto` runs a calibrated
// model's teacher in int8: with int8 dot products (measured on Zen 4 and Ice Lake-class hosts,
// 8-bit activations), and on AVX2 without them (an AMD EPYC AVX2 host: 1.13-1.27x the whole fp32 run,
// 7-bit activations, within 0.2 point of fp32's AUROC; docs/PERFORMANCE.md).
inline bool cpu_has_fast_int8() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return cpu_has_int8_dot() || __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

}  // namespace fmam
