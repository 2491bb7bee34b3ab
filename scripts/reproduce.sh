#!/usr/bin/env bash
# The paper's tables on our data: trains and evaluates each configuration on each category and
# prints one markdown row per run (image AUROC, pixel AUROC, AUPRO, train time) with the exact
# commands, for docs/RESULTS.md. Long: a benchmark, not a test (CI runs a short guard instead:
# TrainTest.ShortRealDataRunIsFarBetterThanChance).
#
#   bash scripts/reproduce.sh                       short schedule: 128x128, 8 + 8 epochs, batch 8
#   bash scripts/reproduce.sh --full                the paper's: 256x256, 50 + 50 epochs, batch 16
#   bash scripts/reproduce.sh --configs "rkd fmam_rkd" --data ../shared/data/mpdd/metal_plate
#   bash scripts/reproduce.sh --epochs 20 --size 128
#   bash scripts/reproduce.sh --full --seeds "0 1 2" --data ../shared/data/mpdd/metal_plate   # mean +- std rows too
#   bash scripts/reproduce.sh --configs rkd --set "stage1.betas=[0.5,0.999]"             # extra --set for every run
# Seeds: train.seed S reseeds the data order and every node's seed (student, mappings, synthesis).
# Evaluation runs in bf16 (EVAL_PRECISION=fp32|int8|auto to change it), as every table in
# docs/RESULTS.md was evaluated: fmam train now calibrates models for int8, which "auto" would pick.
# Configurations (Tables 1, 3, 5): rd4ad (the official RD4AD recipe, 20 epochs at 256²) nkd fmam_nkd rkd fmam_rkd fm_only aml_only l1ml l2ml margin5 margin30 margin60 margin90
set -euo pipefail
cd "$(dirname "$0")/.."
FMAM=${FMAM:-build/apps/fmam}
SHARED=${FMAM_SHARED:-../shared}
DATA=("$SHARED/data/mvtec_ad/bottle" "$SHARED/data/mpdd/metal_plate")
CONFIGS=(rkd fmam_rkd nkd fmam_nkd)
EPOCHS=8 SIZE=128 BATCH=8
SEEDS=(0)
EXTRA=()
OUT=${OUT:-out/reproduce}
EVAL_PRECISION=${EVAL_PRECISION:-bf16}
while [ $# -gt 0 ]; do
  case "$1" in
    --full) EPOCHS=50 SIZE=256 BATCH=16 ;;
    --epochs) EPOCHS=$2; shift ;;
    --size) SIZE=$2; shift ;;
    --configs) read -r -a CONFIGS <<< "$2"; shift ;;
    --data) DATA=("$2"); shift ;;
    --seeds) read -r -a SEEDS <<< "$2"; shift ;;
    --set) EXTRA+=(--set "$2"); shift ;;
    *) echo "reproduce.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

graphs() {  # config -> "training_graph inference_graph [NODE.PARAM=VALUE]": one-setting ablations are a --set
  case "$1" in
    nkd) echo graphs/nkd_train.json graphs/nkd.json ;;
    fmam_nkd) echo graphs/fmam_nkd_train.json graphs/fmam_nkd.json ;;
    rkd) echo graphs/rkd_train.json graphs/rkd.json ;;
    rd4ad) echo graphs/rd4ad_train.json graphs/rkd.json ;;  # the official RD4AD recipe: its own schedule
    fmam_rkd) echo graphs/fmam_rkd_train.json graphs/fmam_rkd.json ;;
    fm_only) echo graphs/ablations/fm_only_rkd_train.json graphs/fmam_rkd.json ;;
    aml_only) echo graphs/ablations/aml_only_rkd_train.json graphs/rkd.json ;;
    l1ml) echo graphs/fmam_rkd_train.json graphs/fmam_rkd.json aml.distance=l1 ;;  # Table 3: FM + L1ML
    l2ml) echo graphs/fmam_rkd_train.json graphs/fmam_rkd.json aml.distance=l2 ;;  # Table 3: FM + L2ML
    margin*) echo graphs/fmam_rkd_train.json graphs/fmam_rkd.json aml.margin=${1#margin} ;;  # Table 5
    *) echo "reproduce.sh: unknown config $1" >&2; exit 2 ;;
  esac
}

mkdir -p "$OUT"
summary=()
echo "| data | config | seed | image AUROC | pixel AUROC | AUPRO | train time | command |"
echo "|---|---|---|---|---|---|---|---|"
for data in "${DATA[@]}"; do
  cat=$(basename "$data")
  for cfg in "${CONFIGS[@]}"; do
    read -r tg ig ablation <<< "$(graphs "$cfg")"
    rows=()
    for seed in "${SEEDS[@]}"; do
      tag="${cat}_${cfg}_s${seed}"
      model="$OUT/$tag.fmam"
      sets="--set stage1.epochs=$EPOCHS --set stage2.epochs=$EPOCHS --set train.image_size=$SIZE --set train.batch_size=$BATCH --set train.seed=$seed"
      [ "$cfg" = rd4ad ] && sets="--set train.seed=$seed"
      [ -n "$ablation" ] && sets="$sets --set $ablation"
      train_cmd="fmam train $tg --data $data --out $model $sets ${EXTRA[*]}"
      start=$(date +%s)
      "$FMAM" train "$tg" --data "$data" --out "$model" $sets "${EXTRA[@]}" -q > /dev/null 2> "$OUT/$tag.train.log"
      secs=$(( $(date +%s) - start ))
      "$FMAM" eval "$ig" --model "$model" --data "$data" --out "$OUT/${tag}_report" -q --precision "$EVAL_PRECISION" \
        > "$OUT/$tag.eval.txt" 2>&1
      json="$OUT/${tag}_report/results.json"
      metric() { grep -m1 -o "\"$1\": [-0-9.e]*" "$json" | awk '{printf "%.4f", $2}'; }  # "all" comes first
      iauc=$(metric image_auroc) pauc=$(metric pixel_auroc) aupro=$(metric aupro)
      rows+=("$iauc $pauc $aupro")
      echo "| $cat | $cfg | $seed | $iauc | $pauc | $aupro | ${secs} s | \`$train_cmd\` |"
    done
    # mean +- sample std over the seeds, per metric
    summary+=("| $cat | $cfg | ${#SEEDS[@]} | $(printf '%s\n' "${rows[@]}" | awk '
      { for (i = 1; i <= 3; ++i) { s[i] += $i; q[i] += $i * $i } n++ }
      END { for (i = 1; i <= 3; ++i) { m = s[i] / n; v = n > 1 ? (q[i] - n * m * m) / (n - 1) : 0; if (v < 0) v = 0
            printf "%.4f ± %.4f%s", m, sqrt(v), (i < 3 ? " | " : "") } }') |")
  done
done
echo
echo "| data | config | seeds | image AUROC | pixel AUROC | AUPRO |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${summary[@]}"
