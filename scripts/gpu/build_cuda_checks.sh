#!/usr/bin/env bash
# Builds the two GPU checks of the Halide CUDA kernels into .gpu/ (git-ignored), after the project
# build (bash fmam.sh build), so that they can be carried to a machine with an NVIDIA GPU:
#   .gpu/halide_cuda_check   ../shared/tools/halide_cuda_check.cpp: each kernel alone, device-resident
#   .gpu/cuda_node_pattern_check   scripts/gpu/cuda_node_pattern_check.cpp: one frame's chain, called
#                                  as the nodes call it (host maps in and out)
# Both link the kernels and the Halide runtime statically, with libstdc++ and libgcc: at run time
# they need only the GPU driver's libcuda, which the Halide runtime opens itself.
# Usage: bash scripts/gpu/build_cuda_checks.sh [SHARED_DIR]   then, on the GPU machine:
#   .gpu/halide_cuda_check && .gpu/cuda_node_pattern_check
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=${1:-$ROOT/../shared}
GEN=$ROOT/build/halide_generators
OUT=$ROOT/.gpu
[[ -f $GEN/libgaussian_blur_cuda.a ]] || { echo "no CUDA kernels in $GEN: run 'bash fmam.sh build' first (FMAM_CUDA_KERNELS=ON)" >&2; exit 1; }
mkdir -p "$OUT"
grep -qxF '/.gpu/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.gpu/' >>"$ROOT/.git/info/exclude"
link() {  # link SOURCE BINARY
  g++ -O2 -std=c++17 -I/usr/include/halide14 -I "$GEN" "$1" \
    "$GEN"/lib*_cpu.a "$GEN"/lib*_cuda.a "$GEN"/libgaussian_blur_cpu.runtime.a \
    -ldl -lpthread -static-libstdc++ -static-libgcc -o "$OUT/$2"
  echo "built $OUT/$2"
}
link "$SHARED/tools/halide_cuda_check.cpp" halide_cuda_check
link "$ROOT/scripts/gpu/cuda_node_pattern_check.cpp" cuda_node_pattern_check
# The shared check with the one line it lacks (its inputs marked host-dirty after filling), to
# show that its GPU mismatches come from the check, not from the kernels.
sed 's/b.for_each_value(\[&\](float& v) { v = u(g); });/&  b.set_host_dirty();/' \
  "$SHARED/tools/halide_cuda_check.cpp" >"$OUT/halide_cuda_check_host_dirty.cpp"
grep -q 'b.set_host_dirty();' "$OUT/halide_cuda_check_host_dirty.cpp" || { echo "could not patch the shared check" >&2; exit 1; }
link "$OUT/halide_cuda_check_host_dirty.cpp" halide_cuda_check_host_dirty
