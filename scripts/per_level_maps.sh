#!/usr/bin/env bash
# One RKD+FMAM model, which level's mapping gains or costs (docs/RESULTS.md, "Which level's mapping
# costs bottle"): the paper's map (every level mapped), the student alone (every level raw: the RKD
# baseline of the same weights), then for each level j the paper's map with level j alone taken
# from the raw features (graphs/ablations/fmam_rkd_per_level.json). With --alone, also each level's
# map on its own, raw and mapped: whether a mapping costs or gains within its level, apart from how
# the levels add up. fp32 evaluation; prints image AUROC / pixel AUROC / AUPRO over all test images
# and pixel AUROC / AUPRO per defect type.
#
#   bash scripts/per_level_maps.sh [--alone] MODEL DATA_DIR [OUT_DIR (default MODEL.levels)]
#
# A benchmark, not a test: five evaluations of the test split (11 with --alone; seconds to a
# minute each on 2 cores).
set -euo pipefail
ALONE=0
if [ "${1:-}" = --alone ]; then ALONE=1; shift; fi
[ $# -ge 2 ] || { sed -n 2,13p "$0" >&2; exit 2; }
cd "$(dirname "$0")/.."
FMAM=${FMAM:-build/apps/fmam}
MODEL=$1 DATA=$2 OUT=${3:-$1.levels}
GRAPH=graphs/ablations/fmam_rkd_per_level.json
mkdir -p "$OUT"
row() {  # NAME RAW_LEVELS MAPPED_LEVELS
  "$FMAM" eval "$GRAPH" --model "$MODEL" --data "$DATA" --out "$OUT/$1" --precision fp32 -q \
    --set "raw_pick.levels=$2" --set "mapped_pick.levels=$3" > "$OUT/$1.log" 2>&1
  /usr/bin/python3 scripts/results_row.py "$1" "$OUT/$1/results.json"
}
echo "| map | image AUROC / pixel AUROC / AUPRO | per defect type: pixel AUROC / AUPRO |"
echo "|---|---|---|"
row all_mapped '[]' '[0,1,2]'
row all_raw '[0,1,2]' '[]'
row level0_raw '[0]' '[1,2]'
row level1_raw '[1]' '[0,2]'
row level2_raw '[2]' '[0,1]'
if [ $ALONE = 1 ]; then
  for j in 0 1 2; do
    row "level${j}_alone_raw" "[$j]" '[]'
    row "level${j}_alone_mapped" '[]' "[$j]"
  done
fi
