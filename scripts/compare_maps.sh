#!/usr/bin/env bash
# One RKD+FMAM model, three anomaly maps, one table row each (docs/RESULTS.md, "The raw map beside
# the mapped one"): the paper's map (graphs/fmam_rkd.json, mapped features), the student alone
# (graphs/rkd.json, raw features: the RKD baseline of the same seed, scripts/student_only.sh), and
# their sum (graphs/ablations/fmam_rkd_raw_plus_mapped.json). fp32 evaluation; prints image AUROC /
# pixel AUROC / AUPRO over all test images and pixel AUROC / AUPRO per defect type.
#
#   bash scripts/compare_maps.sh MODEL DATA_DIR [OUT_DIR (default MODEL.maps)]
#
# A benchmark, not a test: three evaluations of the test split (about a minute each on 2 cores).
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,9p "$0" >&2; exit 2; }
cd "$(dirname "$0")/.."
FMAM=${FMAM:-build/apps/fmam}
MODEL=$1 DATA=$2 OUT=${3:-$1.maps}
mkdir -p "$OUT"
bash scripts/student_only.sh "$MODEL" "$OUT/student_only.fmam"
row() {  # NAME GRAPH MODEL
  "$FMAM" eval "$2" --model "$3" --data "$DATA" --out "$OUT/$1" --precision fp32 -q > "$OUT/$1.log" 2>&1
  /usr/bin/python3 scripts/results_row.py "$1" "$OUT/$1/results.json"
}
echo "| map | image AUROC / pixel AUROC / AUPRO | per defect type: pixel AUROC / AUPRO |"
echo "|---|---|---|"
row mapped graphs/fmam_rkd.json "$MODEL"
row raw graphs/rkd.json "$OUT/student_only.fmam"
row raw_plus_mapped graphs/ablations/fmam_rkd_raw_plus_mapped.json "$MODEL"
