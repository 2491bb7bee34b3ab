#!/bin/bash
# What --precision int8 costs in accuracy: for each trained model given, calibrates a copy with
# fmam quantize on its category's train/good images and evaluates it with --precision int8, which
# also evaluates fp32 on the same images and prints the difference. A measurement for
# docs/PERFORMANCE.md, not a test; the models stay untouched.
#   bash scripts/int8_accuracy.sh DATA_DIR MODEL... (graph from the model's name: *fmam_rkd* ->
#   graphs/fmam_rkd.json, *fmam_nkd* -> fmam_nkd.json, *nkd* -> nkd.json, else rkd.json)
# e.g. bash scripts/int8_accuracy.sh ../shared/data/mpdd/metal_plate out/paper6/metal_plate_*_s0.fmam
set -euo pipefail
cd "$(dirname "$0")/.."
data=$1
shift
export FMAM_WEIGHTS=${FMAM_WEIGHTS:-$(realpath ../shared/weights)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for model in "$@"; do
  name=$(basename "$model" .fmam)
  case $name in
    *fmam_rkd*) graph=fmam_rkd ;; *fmam_nkd*) graph=fmam_nkd ;; *nkd*) graph=nkd ;; *) graph=rkd ;;
  esac
  cp "$model" "$tmp/$name.fmam"
  build/apps/fmam quantize "graphs/$graph.json" -m "$tmp/$name.fmam" -d "$data" -q
  echo "== $name ($graph.json)"
  build/apps/fmam eval "graphs/$graph.json" -m "$tmp/$name.fmam" -d "$data" -o "$tmp/$name.report" -q --precision int8 2>&1 |
    grep -E "^all|precision int8"
done
