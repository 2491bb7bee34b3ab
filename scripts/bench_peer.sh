#!/usr/bin/env bash
# fmam bench against the official RD4AD code (../shared/tools/peer), alternated in one session:
# each round runs fmam (default precision), the official loop, fmam --precision fp32, and the
# tuned PyTorch loop (TorchScript freeze + channels_last, batch 4); prints every figure and the
# medians' ratios. A benchmark, not a test: run it on a quiet machine.
#   bash scripts/bench_peer.sh [MODEL] [ROUNDS]
# FMAM_BASELINE=/path/to/an/older/build/apps/fmam adds that binary (its default precision, with the
# graphs of its own checkout) to every round, at its default precision and at fp32: "before and
# after" ratios to the peer in one session. The machine's speed drifts from round to round, so
# the ratios are also given per round (every system ran within minutes) and their median.
# FMAM_OTHER="--precision bf16" adds this binary with those options to every round (fmam_other):
# one precision against another in the same session.
set -euo pipefail
cd "$(dirname "$0")/.."
FMAM=${FMAM:-build/apps/fmam}
SHARED=${FMAM_SHARED:-../shared}
MODEL=${1:-out/paper/metal_plate_fmam_rkd_s0.fmam}
ROUNDS=${2:-3}
MODEL_ABS=$(realpath "$MODEL")
DATA="$(cd "$SHARED" && pwd)/data/mvtec_ad/bottle"
PEER="/usr/bin/python3 $SHARED/tools/peer/rd4ad_bench.py --root $DATA --weights $SHARED/weights/resnet18_imagenet1k_v1_to_layer3.pth --threads 2"
BASELINE=${FMAM_BASELINE:-}
OTHER=${FMAM_OTHER:-}
baseline_ips() { (cd "$(dirname "$BASELINE")/../.." && "$BASELINE" bench graphs/fmam_rkd.json -m "$MODEL_ABS" -i "$DATA/test/*/*.png" --repeat 3 "$@" 2>/dev/null |
                  awk '/^throughput/ {print $2}'); }
fmam_ips() { "$FMAM" bench graphs/fmam_rkd.json -m "$MODEL" -i "$DATA/test/*/*.png" --repeat 3 "$@" 2>/dev/null |
             awk '/^throughput/ {print $2}'; }
declare -A all
for r in $(seq "$ROUNDS"); do
  all[fmam]+="$(fmam_ips) "
  all[official]+="$($PEER --mode official 2>/dev/null | awk '/^official:/ {for (i = 1; i <= NF; ++i) if ($i == "img/s") print $(i - 1)}') "
  all[fmam_fp32]+="$(fmam_ips --precision fp32) "
  [ -n "$OTHER" ] && all[fmam_other]+="$(fmam_ips $OTHER) "
  [ -n "$BASELINE" ] && all[baseline]+="$(baseline_ips) " && all[baseline_fp32]+="$(baseline_ips --precision fp32) "
  all[tuned_b4]+="$($PEER --mode tuned --variants freeze_cl --batches 4 --no_check 2>/dev/null | awk '/^tuned\[.*batch 4:/ {for (i = 1; i <= NF; ++i) if ($i == "img/s") print $(i - 1)}') "
  echo "round $r: $(for k in fmam official fmam_fp32 ${OTHER:+fmam_other} ${BASELINE:+baseline baseline_fp32} tuned_b4; do v=(${all[$k]}); printf "%s %s  " $k "${v[-1]}"; done)" >&2
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR] = $1} END {print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
for k in fmam fmam_fp32 ${OTHER:+fmam_other} ${BASELINE:+baseline baseline_fp32} official tuned_b4; do
  m=$(echo "${all[$k]}" | median)
  eval "med_$k=$m"
  echo "$k: ${all[$k]}-> median $m images/s"
done
awk -v f="$med_fmam" -v f32="$med_fmam_fp32" -v o="$med_official" -v t="$med_tuned_b4" 'BEGIN {
  printf "fmam (default) / official %.2fx, / tuned batch 4 %.2fx; fmam fp32 / official %.2fx, / tuned %.2fx\n", f / o, f / t, f32 / o, f32 / t }'
[ -n "$BASELINE" ] && awk -v b="$med_baseline" -v f32="$med_fmam_fp32" -v o="$med_official" -v t="$med_tuned_b4" 'BEGIN {
  printf "baseline / official %.2fx, / tuned %.2fx\n", b / o, b / t }'
# Per-round ratios: NUM/DEN in every round, then their median.
per_round() {
  local -a a=(${all[$1]}) b=(${all[$2]})
  for i in "${!a[@]}"; do awk -v x="${a[$i]}" -v y="${b[$i]}" 'BEGIN {printf "%.4f ", x / y}'; done
}
for pair in fmam/official fmam/tuned_b4 fmam_fp32/tuned_b4 ${OTHER:+fmam/fmam_other fmam_other/official fmam_other/tuned_b4} ${BASELINE:+baseline/official baseline/tuned_b4 baseline_fp32/tuned_b4 fmam/baseline fmam_fp32/baseline_fp32}; do
  r=$(per_round "${pair%/*}" "${pair#*/}")
  echo "per round $pair: $r-> median $(echo "$r" | median)x"
done
exit 0
