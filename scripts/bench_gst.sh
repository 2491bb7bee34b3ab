#!/usr/bin/env bash
# Throughput of the fmam GStreamer element against `fmam bench` on the same images, in the same
# session, alternated (bench, gst, bench, gst, ...) so that load from other jobs hits both alike;
# medians over ROUNDS. Target: the element within 10% of fmam bench.
#   bash scripts/bench_gst.sh MODEL [IMAGE_DIR] [ROUNDS]
#   (default images: ../shared/data/mvtec_ad/bottle/test/*/*.png, 2 rounds)
# What is timed, on both sides: PNG decode + colour conversion + the graph (map and score), no
# overlays, no file writing.
#   fmam bench: its own median of --repeat 3 timed runs of FRAMES frames (after 8 warm-up frames);
#     it decodes PNGs on the graph, in parallel with the network.
#   gst: multifilesrc loop=true ! pngdec ! videoconvert ! video/x-raw,format=BGR ! fmam ! fakesink
#     sync=false, decoded by pngdec on one streaming thread. Startup (process, plugin and model
#     load, graph build, the first batches) is cancelled out: two whole gst-launch runs of
#     FRAMES/4 and FRAMES frames are timed and the rate is (FRAMES - FRAMES/4) / (t_long - t_short).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: bench_gst.sh MODEL [IMAGE_DIR] [ROUNDS]}
SRC=${2:-${FMAM_SHARED:-../shared}/data/mvtec_ad/bottle/test}
ROUNDS=${3:-2}
BUILD=${FMAM_BUILD_DIR:-build}
GRAPH=graphs/rkd.json
FRAMES=${FRAMES:-160}
export GST_PLUGIN_PATH=$BUILD/gst

# multifilesrc needs numbered names: the same images as symlinks 000.png, 001.png, ...
DIR=$(mktemp -d /tmp/fmam_bench_gst.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
i=0
while IFS= read -r f; do
  ln -s "$(realpath "$f")" "$DIR/$(printf %03d $i).png"
  i=$((i + 1))
done < <(find -L "$SRC" -name '*.png' | sort)
[ "$i" -gt 0 ] || { echo "bench_gst.sh: no .png under $SRC" >&2; exit 1; }
echo "bench_gst.sh: $i images from $SRC, $FRAMES frames per timed run, model $MODEL, $ROUNDS rounds"

gst_run() {  # frames -> seconds of the whole gst-launch run
  local t0 t1
  t0=$(date +%s.%N)
  gst-launch-1.0 -q multifilesrc location="$DIR/%03d.png" index=0 loop=true num-buffers="$1" caps=image/png,framerate=1/1 \
    ! pngdec ! videoconvert ! video/x-raw,format=BGR ! fmam graph=$GRAPH model="$MODEL" ! fakesink sync=false >/dev/null
  t1=$(date +%s.%N)
  awk -v a="$t1" -v b="$t0" 'BEGIN {print a - b}'
}

median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

BENCH=() GST=()
for r in $(seq "$ROUNDS"); do
  b=$("$BUILD/apps/fmam" bench $GRAPH --model "$MODEL" -i "$DIR" --frames "$FRAMES" --repeat 3 2>&1 |
      awk '/^throughput/ {print $2}')
  short=$(gst_run $((FRAMES / 4)))
  long=$(gst_run "$FRAMES")
  g=$(awk -v f="$FRAMES" -v l="$long" -v s="$short" 'BEGIN {print (f - int(f / 4)) / (l - s)}')
  printf 'round %d: fmam bench %.2f images/s, gst element %.2f images/s (runs %.2f s / %.2f s)\n' "$r" "$b" "$g" "$short" "$long"
  BENCH+=("$b") GST+=("$g")
done
mb=$(printf '%s\n' "${BENCH[@]}" | median)
mg=$(printf '%s\n' "${GST[@]}" | median)
printf 'median: fmam bench %.2f images/s, gst element %.2f images/s, ratio %.3f (target >= 0.9)\n' "$mb" "$mg" \
  "$(awk -v g="$mg" -v b="$mb" 'BEGIN {print g / b}')"
