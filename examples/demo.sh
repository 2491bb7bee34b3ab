#!/usr/bin/env bash
# The main job (bash fmam.sh demo): train an RKD+FMAM detector for MVTec AD "bottle" from its
# defect-free images, evaluate it on the test split (metrics + HTML report, calibrating the
# model's threshold), then run it on one folder of test images to show PASS/FAIL per image.
#   bash fmam.sh demo           short schedule: 128x128, 5 + 5 epochs (minutes on 2 cores)
#   bash fmam.sh demo --full    the paper's schedule: 256x256, 50 + 50 epochs
#   bash fmam.sh demo --data DIR   another category in MVTec AD layout (e.g. ../shared/data/mpdd/metal_plate)
set -euo pipefail
BUILD=$1 SHARED=$2
shift 2
FULL=0
DATA="$SHARED/data/mvtec_ad/bottle"
while [ $# -gt 0 ]; do
  case "$1" in
    --full) FULL=1 ;;
    --data) DATA=$2; shift ;;
    *) echo "demo: unknown option $1 (known: --full, --data DIR)" >&2; exit 2 ;;
  esac
  shift
done
FMAM="$BUILD/apps/fmam"
NAME=$(basename "$DATA")
OUT=out/demo
mkdir -p "$OUT"
if [ "$FULL" = 1 ]; then
  SETS=()
  echo "demo: the paper's schedule (256x256, 50 + 50 epochs): about 20 minutes for bottle on 2 cores"
else
  SETS=(--set stage1.epochs=5 --set stage2.epochs=5 --set train.image_size=128 --set train.batch_size=8)
  echo "demo: short schedule (128x128, 5 + 5 epochs); the paper's: bash fmam.sh demo --full"
fi

"$FMAM" train graphs/fmam_rkd_train.json --data "$DATA" --out "$OUT/$NAME.fmam" "${SETS[@]}"
"$FMAM" eval graphs/fmam_rkd.json --model "$OUT/$NAME.fmam" --data "$DATA" --out "$OUT/${NAME}_report" --calibrate
first_defect=$(ls "$DATA/test" | grep -v '^good$' | head -1)
echo "demo: fmam run on $DATA/test/$first_defect (scores and PASS/FAIL; heatmaps and overlays in $OUT/run)"
"$FMAM" run graphs/fmam_rkd.json --model "$OUT/$NAME.fmam" --input "$DATA/test/$first_defect" --output "$OUT/run" --quiet
echo
echo "model:  $OUT/$NAME.fmam"
echo "report: $OUT/${NAME}_report/report.html"
