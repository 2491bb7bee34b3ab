#!/usr/bin/env bash
# fmam's one entry point for a fresh Debian 12 machine (run as root, or with sudo available):
#   bash fmam.sh demo    install what is missing, build, run the main job on the default data
#   bash fmam.sh test    install what is missing, build, run the test suite (ctest)
#   bash fmam.sh build   install what is missing and build only
#   bash fmam.sh fuzz [SECONDS]   build, then a run (default 45 s) of each libFuzzer target in
#                        tests/fuzz/ with a random seed (`test` runs 45 s each with a fixed seed,
#                        ctest FuzzSmokeTest); docs/RELIABILITY.md records the long runs
#   bash fmam.sh sanitize   build the tree and its tests with AddressSanitizer + UBSan in
#                        build-asan/ and run the test suite there (slow: not part of `test`)
# Idempotent: packages already there are not reinstalled, and the build is incremental.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
BUILD=${FMAM_BUILD_DIR:-$ROOT/build}
SHARED=${FMAM_SHARED:-$ROOT/../shared}
JOBS=${JOBS:-$(nproc)}

# Debian 12 packages only. libopenblas0-openmp: without it libtorch falls back to the reference
# BLAS, 60x slower. The test fixtures are committed: python3 is only for the Python module
# (python/) and its tests.
PACKAGES=(build-essential cmake ninja-build pkg-config
  libopencv-dev libtorch-dev libhalide14-0-dev libtbb-dev libgtest-dev libgmock-dev
  nlohmann-json3-dev libopenblas0-openmp libssl-dev
  libjpeg-dev zlib1g-dev  # framework/image_integrity.cpp: damaged JPEGs (libjpeg), PNG chunk CRCs (zlib)
  libdeflate-dev  # framework/png_fast_decode.cpp: PNG inflate, ~3x zlib
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev  # gst/: the fmam GStreamer elements
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good  # their tests: gst-inspect, videotestsrc, pngdec
  pybind11-dev python3-dev python3-numpy python3-pytest  # python/: the Python module fmam, and its pytest tests
  slurm-wlm munge  # a single-node Slurm for the fmam fleet test (tests/fleet/slurm_fleet_test.sh)
  clang-format git  # FormatTest (scripts/check_format.sh, lists the tracked files with git): the tree stays as .clang-format writes it
  clang-14 libfuzzer-14-dev)  # FuzzSmokeTest and `fmam.sh fuzz`: the libFuzzer targets of tests/fuzz/


install_packages() {  # [PACKAGE...]: the given ones, else PACKAGES
  local wanted=("$@")
  [ ${#wanted[@]} -eq 0 ] && wanted=("${PACKAGES[@]}")
  local missing=()
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "fmam.sh: all ${#wanted[@]} Debian packages present"
    return
  fi
  echo "fmam.sh: installing ${missing[*]}"
  local SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q "${missing[@]}"
}

build() {
  install_packages
  echo "fmam.sh: building in $BUILD ($JOBS jobs)"
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" -j "$JOBS"
}

# ASan/UBSan: the instrumented libraries are also loaded by uninstrumented programs (python3 for
# the module, gst-launch-1.0 for the element), so the ASan runtime is preloaded into every test
# process. Leaks are not checked (libtorch's and the generators' static state would be reported).
sanitize() {
  install_packages
  local asan_build=${FMAM_ASAN_BUILD_DIR:-$ROOT/build-asan}
  export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:detect_odr_violation=0
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  echo "fmam.sh: building with -fsanitize=address,undefined in $asan_build ($JOBS jobs)"
  cmake -S "$ROOT" -B "$asan_build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFMAM_SANITIZE=ON \
    -DFMAM_CUDA_KERNELS=OFF >/dev/null
  cmake --build "$asan_build" -j "$JOBS"
  cd "$ROOT"
  LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)" \
    FMAM_SHARED="$SHARED" ctest --test-dir "$asan_build" --output-on-failure -j "$JOBS" --timeout 3600
}

cmd=${1:-}
case "$cmd" in
  build)
    build
    ;;
  test)
    build
    cd "$ROOT"
    FMAM_SHARED="$SHARED" ctest --test-dir "$BUILD" --output-on-failure -j "$JOBS" --timeout 1200
    ;;
  demo)
    build
    shift
    FMAM_SHARED="$SHARED" bash "$ROOT/examples/demo.sh" "$BUILD" "$SHARED" "$@"
    ;;
  sanitize)
    sanitize
    ;;
  fuzz)
    build
    bash "$ROOT/tests/fuzz/run_fuzzers.sh" "${2:-45}"
    ;;
  *)
    echo "usage: bash fmam.sh demo|test|build|sanitize|fuzz [SECONDS]" >&2
    exit 2
    ;;
esac
