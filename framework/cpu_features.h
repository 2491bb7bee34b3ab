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

}  // namespace fmam
