#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz/ with clang-14 and runs each for N seconds
# (default 60; docs/RELIABILITY.md records the long runs). The code under test (framework/io.cpp,
# image_integrity.cpp, png_fast_decode.cpp, model_file.cpp, graph.cpp) is compiled into each target with -fsanitize=fuzzer,address,undefined,
# so coverage guides the fuzzer there and AddressSanitizer/UBSan check it; the rest of fmam comes
# from the Release build in build/ (libfmam_core.so, the node plugin), uninstrumented.
#   bash tests/fuzz/run_fuzzers.sh [SECONDS] [TARGET...]     (TARGET: image_decode model_file graph)
# Needs: clang-14, libfuzzer-14-dev (Debian; exit 77, skipped, without them), and the Release build
# done (build/, or FMAM_BUILD_DIR). Corpora are seeded
# from tests/testdata/bad_inputs, the shared images, a model made by the test suite and graphs/.
# Findings (crash-*, leak-*, timeout-*) are written to build-fuzz/<target>/; exit status 1 if any.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(image_decode model_file graph)
B=$(cd "${FMAM_BUILD_DIR:-build}" && pwd)  # the Release build the targets link against
OUT=${FMAM_FUZZ_DIR:-build-fuzz}
CXX=${CXX_FUZZ:-clang++-14}
# FUZZ_SEED: libFuzzer's -seed (0: a random one). CI's FuzzSmokeTest fixes it, so that a run there
# repeats the same inputs in the same order (the time limit still decides how many).
SEED=${FUZZ_SEED:-0}
if ! command -v "$CXX" >/dev/null || ! compgen -G "/usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null; then
  echo "run_fuzzers: skipped: needs $CXX and libFuzzer (apt install clang-14 libfuzzer-14-dev)"
  exit 77
fi
mkdir -p "$OUT"
FLAGS=(-std=gnu++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
  -D_GLIBCXX_USE_CXX11_ABI=1 -I. -isystem /usr/include/opencv4 -isystem /usr/include/torch/csrc/api/include
  -Wno-unused-command-line-argument)
LIBS=(-Wl,-rpath,"$B/framework" "$B/framework/libfmam_core.so"
  -lopencv_imgcodecs -lopencv_imgproc -lopencv_core -ljpeg -lz -ldeflate)
TORCH=(-Wl,--no-as-needed -ltorch -ltorch_cpu -lc10 -Wl,--as-needed -lcrypto -lpthread)

build() {  # target, sources...
  local t=$1
  shift
  echo "run_fuzzers: building $OUT/${t}_fuzzer"
  "$CXX" "${FLAGS[@]}" "$@" tests/fuzz/${t}_fuzzer.cpp -o "$OUT/${t}_fuzzer" "${LIBS[@]}" "${TORCH[@]}"
}

seed() {  # target: its seed corpus folder
  local d="$OUT/$1/seeds"
  rm -rf "$d" && mkdir -p "$d"
  case $1 in
    image_decode)
      cp tests/testdata/bad_inputs/* "$d"/ 2>/dev/null || true
      for f in ../shared/data/mvtec_ad/bottle/ground_truth/broken_large/000_mask.png \
               ../shared/data/dtd/images/banded/banded_0002.jpg; do
        if [ -f "$f" ]; then cp "$f" "$d"/; fi
      done ;;
    model_file)
      # A small model with every field, written by the target itself (FMAM_FUZZ_SEED_OUT).
      FMAM_FUZZ_SEED_OUT="$d/small.fmam" "$OUT/model_file_fuzzer" -runs=0 >/dev/null 2>&1 ;;
    graph)
      cp graphs/*.json graphs/ablations/*.json tests/testdata/graphs/*.json examples/graphs/*.json "$d"/ 2>/dev/null || true ;;
  esac
  echo "$d"
}

status=0
for t in "${TARGETS[@]}"; do
  case $t in
    image_decode) build image_decode framework/io.cpp framework/image_integrity.cpp framework/png_fast_decode.cpp ;;
    model_file) build model_file framework/model_file.cpp framework/io.cpp framework/image_integrity.cpp framework/png_fast_decode.cpp ;;
    graph) build graph framework/graph.cpp ;;
    *) echo "run_fuzzers: unknown target $t" >&2; exit 2 ;;
  esac
  seeds=$(seed "$t")
  mkdir -p "$OUT/$t/corpus"
  echo "run_fuzzers: $t for ${SECS}s"
  # One process, one job: the machine is shared. rss_limit bounds what one input may allocate.
  if ! (cd "$OUT/$t" && ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
        "../${t}_fuzzer" -max_total_time="$SECS" -rss_limit_mb=4096 -max_len=$([ "$t" = model_file ] && echo 200000 || echo 65536) \
        -seed="$SEED" -print_final_stats=1 corpus seeds 2>&1 | tail -25); then
    status=1
  fi
done
exit $status
