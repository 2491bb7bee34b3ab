#!/usr/bin/env bash
# The fmam GStreamer elements over MVTec AD bottle test images: trains a small model (seconds),
# then scores every frame (one fmam-result message per frame on the bus, printed by -m) and
# writes heatmap overlays to out/gst/overlay_000.png ... Run from anywhere after bash fmam.sh build.
#   bash examples/gstreamer/run.sh [IMAGE_DIR]   (default: ../shared/data/mvtec_ad/bottle/test/broken_large)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${FMAM_BUILD_DIR:-build}
SHARED=${FMAM_SHARED:-../shared}
IMAGES=${1:-$SHARED/data/mvtec_ad/bottle/test/broken_large}
MODEL=out/gst/bottle.fmam
mkdir -p out/gst
if [ ! -f "$MODEL" ]; then
  echo "run.sh: training a quick model into $MODEL (1 epoch, 64x64: a smoke-test model, not an accurate one)"
  "$BUILD/apps/fmam" train graphs/rkd_train.json --data "$SHARED/data/mvtec_ad/bottle" --out "$MODEL" \
    --set stage1.epochs=1 --set stage2.epochs=0 --set train.image_size=64 --max-images 8 -q
fi
export GST_PLUGIN_PATH=$BUILD/gst
gst-launch-1.0 -m multifilesrc location="$IMAGES/%03d.png" index=0 caps=image/png,framerate=1/1 \
  ! pngdec ! videoconvert ! video/x-raw,format=BGR \
  ! fmam graph=graphs/rkd.json model="$MODEL" \
  ! fmamoverlay lo=1.5 hi=2.5 ! videoconvert ! pngenc ! multifilesink location=out/gst/overlay_%03d.png \
  | grep -E 'fmam-result|ERROR|EOS'
echo "run.sh: overlays in out/gst/"
