#!/usr/bin/env bash
# fmam train with the teacher cache on (default) and off (train.teacher_cache_mb=0), alternated
# in one session: per run, each epoch's images/s (from fmam's epoch lines) and the peak resident
# memory (GNU time). A benchmark, not a test: run it on a quiet machine.
#   bash scripts/bench_teacher_cache.sh [ROUNDS] [EXTRA fmam train ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
FMAM=${FMAM:-build/apps/fmam}
SHARED=${FMAM_SHARED:-../shared}
ROUNDS=${1:-2}
shift || true
ARGS="graphs/fmam_rkd_train.json --data $SHARED/data/mvtec_ad/bottle --max-images 96 --set stage1.epochs=3
      --set stage2.epochs=3 --set train.image_size=256 --set train.batch_size=16 -q"
for r in $(seq "$ROUNDS"); do
  for mode in cache no_cache; do
    set_mb=""
    [ "$mode" = no_cache ] && set_mb="--set train.teacher_cache_mb=0"
    log=$(mktemp)
    /usr/bin/time -v "$FMAM" train $ARGS --out "/tmp/bench_teacher_$mode.fmam" $set_mb "$@" >/dev/null 2>"$log"
    echo "round $r, $mode:"
    grep -E "epoch [0-9]+/[0-9]+:|teacher cache" "$log" | sed 's/^/  /'
    # CPU seconds too: on a shared machine they vary less than wall time does.
    awk '/User time|System time/ {cpu += $NF} /Maximum resident set size/ {rss = $NF / 1024}
         END {printf "  CPU time %.0f s, peak RSS %.0f MiB\n", cpu, rss}' "$log"
    rm -f "$log"
  done
done
