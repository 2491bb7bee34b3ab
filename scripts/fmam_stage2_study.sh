#!/usr/bin/env bash
# What FMAM's stage 2 does to a detector: every variant starts from ONE stage-1 model (RKD with
# the official RD4AD settings, 20 epochs, 256², seed 0, fp32) and trains stage 2 for 10 epochs
# (shortened from 50), then is evaluated twice: with its inference graph, and its student alone
# with graphs/rkd.json (so a change of the map is told apart from a change of the student).
# The rows of docs/RESULTS.md "FMAM's stage 2" come from this script. A benchmark, not a test:
# about 4 minutes a variant on 2 cores.
#
#   bash scripts/fmam_stage2_study.sh [--data DIR] [--out DIR] [--epochs N] [VARIANT ...]
#
# Variants are edits of graphs/fmam_rkd_train.json (or the rkd / aml_only recipes) written into
# OUT/graphs; "VARIANT" names are listed in variant() below. Needs /usr/bin/python3 for the
# JSON edits and the model surgery (student alone), nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
FMAM=${FMAM:-build/apps/fmam}
DATA=${FMAM_SHARED:-../shared}/data/mpdd/metal_plate
OUT=out/stage2_study
EPOCHS=10
VARIANTS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data) DATA=$2; shift ;;
    --out) OUT=$2; shift ;;
    --epochs) EPOCHS=$2; shift ;;
    -*) echo "fmam_stage2_study.sh: unknown option $1" >&2; exit 2 ;;
    *) VARIANTS+=("$1") ;;
  esac
  shift
done
[ ${#VARIANTS[@]} -gt 0 ] || VARIANTS=(rkd shipped_paper identity margin30 opacity aml_all fm_only_identity aml_no_kd_fm
                                      routed_random routed_identity routed_identity_kd_raw routed_identity_frozen_bn recipe kd_fm_to_fm aml_only_raw
                                      aml_weight0 aml_only_frozen_bn)
mkdir -p "$OUT/graphs"
STAGE1="--set stage1.lr=0.005 --set stage1.betas=[0.5,0.999] --set stage1.weight_decay=0 --set kd.distance=cos_flat
        --set train.precision=fp32 --set stage1.epochs=20"

# A copy of a training graph with its stage 2 edited by a Python expression on `st` (the stage)
# and `fm` (the FeatureMap node's params), inference graph made absolute.
edit() {  # edit SRC NAME PYTHON
  /usr/bin/python3 - "$1" "$OUT/graphs/$2.json" "$3" "$PWD/graphs" <<'EOF'
import json, os, sys
src, dst, code, graphs = sys.argv[1:5]
g = json.load(open(src))
g['train']['inference_graph'] = os.path.join(graphs, os.path.basename(g['train']['inference_graph']))
st = g['train']['stages'][1]
fm = next((n['params'] for n in g['nodes'] if n['id'] == 'fm'), {})
syn = next((n['params'] for n in g['nodes'] if n['id'] == 'student_syn'), {})
def syn_bn(update):  # the synthetic twin in the student's BatchNorm statistics or not
    syn['update_bn_stats'] = update
def kd_fm_stage2():  # stage 2 as shipped until 2026-12-06: the student learns from KD on the
    # mapped features (and AML), the mappings from AML alone
    if not any(n['id'] == 'kd_fm' for n in g['nodes']):
        g['nodes'].append({'id': 'kd_fm', 'type': 'KDLoss', 'in': {'teacher': 't_mapped', 'student': 's_mapped'},
                           'out': {'loss': 'loss_kd_fm'}, 'params': {'distance': 'cos'}})
    st['losses'] = {'loss_kd_fm': 1.0, 'loss_aml': 1.0}
    st['updates'] = {'loss_kd_fm': ['student']}
exec(code)
json.dump(g, open(dst, 'w'), indent=1)
EOF
  echo "$OUT/graphs/$2.json"
}

# The model's student alone, for graphs/rkd.json (the mappings dropped).
student_only() { bash scripts/student_only.sh "$1" "$2"; }

variant() {  # name -> "training_graph inference_graph"
  local F=graphs/fmam_rkd_train.json A=graphs/ablations/aml_only_rkd_train.json
  # Rows measured before update_bn_stats existed put the synthetic twin in the statistics: syn_bn(True).
  case "$1" in
    rkd) echo "graphs/rkd_train.json rkd" ;;
    shipped_paper) echo "$(edit $F "$1" "kd_fm_stage2(); syn_bn(True); fm['init'] = 'random'; st.pop('updates', None)") fmam_rkd" ;;
    identity) echo "$(edit $F "$1" "kd_fm_stage2(); syn_bn(True); fm['init'] = 'identity'; st.pop('updates', None)") fmam_rkd" ;;
    routed_random) echo "$(edit $F "$1" "kd_fm_stage2(); syn_bn(True); fm['init'] = 'random'") fmam_rkd" ;;
    routed_identity) echo "$(edit $F "$1" "kd_fm_stage2(); syn_bn(True)") fmam_rkd" ;;
    routed_identity_frozen_bn) echo "$(edit $F "$1" "kd_fm_stage2()") fmam_rkd" ;;  # the recipe until 2026-12-06
    recipe) echo "$F fmam_rkd" ;;  # the student as RKD's stage 2 trains it; the mappings by AML alone
    kd_fm_to_fm) echo "$(edit $F "$1" "kd_fm_stage2(); st['losses'] = {'loss_kd': 1.0, 'loss_kd_fm': 1.0, 'loss_aml': 1.0}; st['updates'] = {'loss_kd_fm': ['fm'], 'loss_aml': ['fm']}") fmam_rkd" ;;  # the recipe, plus KD on the mapped features for the mappings
    fm_only_identity) echo "$(edit $F "$1" "kd_fm_stage2(); syn_bn(True); st.pop('updates', None); st['train'] = ['fm']") fmam_rkd" ;;
    aml_no_kd_fm) echo "$(edit $F "$1" "kd_fm_stage2(); syn_bn(True); st.pop('updates', None); st['losses'] = {'loss_aml': 1.0}") fmam_rkd" ;;
    margin30) echo "$(edit $F "$1" "kd_fm_stage2(); syn_bn(True); st.pop('updates', None); [n['params'].update(margin=30.0) for n in g['nodes'] if n['id'] == 'aml']") fmam_rkd" ;;
    opacity) echo "$(edit $F "$1" "kd_fm_stage2(); syn_bn(True); st.pop('updates', None); [n['params'].update(opacity='uniform') for n in g['nodes'] if n['id'] == 'synth']") fmam_rkd" ;;
    aml_all) echo "$(edit $F "$1" "kd_fm_stage2(); syn_bn(True); st.pop('updates', None); [n['params'].update(region='all') for n in g['nodes'] if n['id'] == 'aml']") fmam_rkd" ;;
    routed_identity_kd_raw) echo "$(edit $F "$1" "kd_fm_stage2(); syn_bn(True); st['losses'] = {'loss_kd': 1.0, 'loss_kd_fm': 1.0, 'loss_aml': 1.0}; st['updates'] = {'loss_kd': ['student'], 'loss_kd_fm': ['student']}") fmam_rkd" ;;
    aml_only_raw) echo "$(edit $A "$1" "syn_bn(True)") rkd" ;;
    aml_only_frozen_bn) echo "$A rkd" ;;
    aml_weight0) echo "$(edit $A "$1" "syn_bn(True); st['losses']['loss_aml'] = 0.0") rkd" ;;
    *) echo "fmam_stage2_study.sh: unknown variant $1" >&2; exit 2 ;;
  esac
}

metrics() { "$FMAM" eval "$1" --model "$2" --data "$DATA" --out "$2.report" -q 2>&1 | awk '$1 == "all" {print $3 " | " $4 " | " $5}'; }

S1="$OUT/stage1.fmam"
if [ ! -f "$S1" ]; then
  "$FMAM" train graphs/fmam_rkd_train.json --data "$DATA" --out "$S1" $STAGE1 --set stage2.epochs=0 -q > /dev/null 2> "$OUT/stage1.log"
fi
student_only "$S1" "$OUT/stage1_student.fmam"
echo "| stage 2 variant | its map: image AUROC | pixel AUROC | AUPRO | student alone: image AUROC | pixel AUROC | AUPRO |"
echo "|---|---|---|---|---|---|---|"
echo "| none (stage 1 only) | $(metrics graphs/rkd.json "$OUT/stage1_student.fmam") | | | |"
for v in "${VARIANTS[@]}"; do
  read -r tg ig <<< "$(variant "$v")"
  model="$OUT/$v.fmam"
  cp "$S1" "$model"
  "$FMAM" train "$tg" --data "$DATA" --resume --out "$model" $STAGE1 --set stage2.epochs="$EPOCHS" -q > /dev/null 2> "$OUT/$v.log"
  if [ "$ig" = rkd ]; then
    echo "| $v | $(metrics graphs/rkd.json "$model") | (the same) | | |"
  else
    student_only "$model" "$OUT/${v}_student.fmam"
    echo "| $v | $(metrics graphs/$ig.json "$model") | $(metrics graphs/rkd.json "$OUT/${v}_student.fmam") |"
  fi
done
