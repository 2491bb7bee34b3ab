#!/usr/bin/env bash
# fmam fleet on a real, single-node Slurm: munged, slurmctld and slurmd from Debian's packages
# (slurm-wlm, munge), started here on localhost with a generated slurm.conf for this machine's
# CPUs, state and spool in a temporary folder, stopped on exit. Submits a three-product array
# (bottle and metal_plate with tiny epochs, and one product whose data folder holds no image),
# waits for it, checks the models, reports, markers and the fleet table, then submits again and
# checks that done products are skipped and an unfinished one is resumed.
#   usage: slurm_fleet_test.sh FMAM_BINARY      (ctest: SlurmFleetTest, label "slurm")
#   env:   FMAM_SHARED (default: ../shared beside the sources)
# Exit status 77 (ctest: skipped) with the reason when Slurm or munge is missing, when not root
# (slurmd must run as root), without a cgroup filesystem (slurmd needs one), or when the shared
# data is missing.
set -uo pipefail
FMAM=$(readlink -f "${1:?usage: slurm_fleet_test.sh FMAM_BINARY}")
SRC=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=$(readlink -f "${FMAM_SHARED:-$SRC/../shared}")
export FMAM_SHARED=$SHARED

skip() { echo "SKIPPED: $*"; exit 77; }
fail() { echo "FAILED: $*"; dump_logs; exit 1; }
step() { echo "--- $(date +%T) $*"; }

for tool in munged mungekey slurmctld slurmd sbatch squeue sinfo scontrol; do
  command -v "$tool" >/dev/null 2>&1 ||
    skip "$tool not found: this test needs Debian's slurm-wlm and munge (bash fmam.sh installs them; apt-get install slurm-wlm munge)"
done
[ "$(id -u)" -eq 0 ] || skip "not root: slurmd must run as root to start jobs (CI runs as root)"
# Slurm 22.05's slurmd initialises its cgroup plugin even with proctrack/linuxproc and task/none,
# and exits without a cgroup filesystem (a chroot or container without /sys).
[ -n "$(ls -A /sys/fs/cgroup 2>/dev/null)" ] ||
  skip "no cgroup filesystem at /sys/fs/cgroup: slurmd cannot start here (a chroot or container without /sys?)"
for d in "$SHARED/data/mvtec_ad/bottle" "$SHARED/data/mpdd/metal_plate"; do
  [ -d "$d/train/good" ] || skip "$d not found (set FMAM_SHARED to the shared data folder)"
done

T=$(mktemp -d /tmp/fmam_slurm_test.XXXXXX)
chmod 700 "$T"
PIDS=()
dump_logs() {
  for f in "$T"/slurmctld.log "$T"/slurmd.log "$T"/munged.log "$T"/fleet/.fleet/*.out "$T"/fleet/*/log; do
    [ -f "$f" ] && { echo "=== $f (last 25 lines)"; tail -n 25 "$f"; }
  done
}
cleanup() {
  # Jobs first (their processes are children of slurmd), then the daemons, each by its own pid.
  [ -f "$T/slurm.conf" ] && SLURM_CONF=$T/slurm.conf scancel --quiet --name=fmam-fleet 2>/dev/null
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  [ -f "$T/munged.pid" ] && kill "$(cat "$T/munged.pid")" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# ---- munge: a fresh key and a private socket ----------------------------------------------
step "starting munged"
mkdir -p "$T/munge"
chmod 700 "$T/munge"
mungekey --create --keyfile="$T/munge/munge.key" >/dev/null 2>&1 ||
  dd if=/dev/urandom of="$T/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$T/munge/munge.key"
SOCKET=$T/munge/munge.socket
munged --force --socket="$SOCKET" --key-file="$T/munge/munge.key" --pid-file="$T/munged.pid" \
  --log-file="$T/munged.log" --seed-file="$T/munge/munged.seed" || fail "munged did not start"
for _ in $(seq 50); do [ -S "$SOCKET" ] && break; sleep 0.1; done
[ -S "$SOCKET" ] || fail "munged: no socket at $SOCKET"

# ---- slurm.conf for this machine ---------------------------------------------------------
NODE_LINE=$(slurmd -C | head -n 1)                      # NodeName=<host> CPUs=N ... RealMemory=M
NODE=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$NODE_LINE")
[ -n "$NODE" ] || fail "slurmd -C printed no node line: $NODE_LINE"
CPUS=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
  echo $((20000 + RANDOM % 20000)); }
CTLD_PORT=$(free_port)
SLURMD_PORT=$(free_port)
[ "$SLURMD_PORT" = "$CTLD_PORT" ] && SLURMD_PORT=$((CTLD_PORT + 1))
mkdir -p "$T/state" "$T/spool"
cat >"$T/slurm.conf" <<CONF
ClusterName=fmamtest
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
$NODE_LINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=fleet Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$T/slurm.conf

step "starting slurmctld and slurmd ($NODE, $CPUS CPUs, ports $CTLD_PORT/$SLURMD_PORT)"
slurmctld -D -i -f "$SLURM_CONF" >"$T/slurmctld.out" 2>&1 &
PIDS+=($!)
slurmd -D -f "$SLURM_CONF" -N "$NODE" >"$T/slurmd.out" 2>&1 &
PIDS+=($!)
idle=""
for _ in $(seq 60); do
  state=$(sinfo -h -N -o %T 2>/dev/null | head -n 1)
  [ "$state" = "idle" ] && { idle=1; break; }
  sleep 1
done
[ -n "$idle" ] || { cat "$T/slurmctld.out" "$T/slurmd.out"; fail "the node did not become idle within 60 s (state: ${state:-none})"; }

# ---- a fleet: two real products and one whose data folder holds no image -------------------
mkdir -p "$T/broken_data/train/good" "$T/broken_data/test/good"
cat >"$T/manifest.csv" <<CSV
# fmam fleet test: tiny schedules (one epoch per stage, 64x64, 16 images)
product,data,graph,overrides
bottle,$SHARED/data/mvtec_ad/bottle,$SRC/graphs/fmam_rkd_train.json,stage1.epochs=1 stage2.epochs=1 train.image_size=64 train.batch_size=8
metal_plate,$SHARED/data/mpdd/metal_plate,$SRC/graphs/fmam_rkd_train.json,stage1.epochs=1 stage2.epochs=1 train.image_size=64 train.batch_size=8
broken,broken_data,$SRC/graphs/fmam_rkd_train.json,stage1.epochs=1
CSV
OUT=$T/fleet
CPUS_PER_TASK=$((CPUS >= 2 ? CPUS / 2 : 1))   # two products at once where the node has the CPUs
submit() {
  timeout 300 "$FMAM" fleet submit "$T/manifest.csv" --out "$OUT" --cpus "$CPUS_PER_TASK" --mem 1G --time 20:00 \
    --max-images 16 --wait
}

step "submit 1: three products"
submit >"$T/submit1.out" 2>&1
rc=$?
cat "$T/submit1.out"
[ $rc -ne 124 ] || fail "the array did not finish within 300 s"
[ $rc -ne 0 ] || fail "sbatch --wait returned 0 although product \"broken\" must fail"
grep -q -- "--array=0-2 " "$T/submit1.out" || fail "submit 1 did not ask for array indices 0-2"
grep -q "Submitted batch job" "$T/submit1.out" || fail "sbatch did not submit"

for p in bottle metal_plate; do
  d=$OUT/$p
  [ -f "$d/DONE" ] || fail "$p: no DONE marker"
  [ ! -e "$d/FAILED" ] || fail "$p: FAILED marker: $(cat "$d/FAILED")"
  [ -s "$d/model.fmam" ] || fail "$p: no model"
  [ -s "$d/report/report.html" ] && [ -s "$d/report/results.json" ] || fail "$p: no report"
  grep -q '"job": "slurm ' "$d/results.json" || fail "$p: results.json does not say it ran as a Slurm array task"
  grep -q "calibrated $d/model.fmam: threshold" "$d/log" || fail "$p: the log shows no calibration"
  grep -q "stage2 epoch 1/1: 16 images" "$d/log" || fail "$p: the log shows no stage 2 epoch on 16 images"
done
# The models load and carry their calibrated threshold: fmam run says PASS or FAIL.
for p in bottle:mvtec_ad/bottle/test/broken_large/000.png metal_plate:mpdd/metal_plate/test/good/test_test_00002.png; do
  "$FMAM" run "$SRC/graphs/fmam_rkd.json" --model "$OUT/${p%%:*}/model.fmam" -q -i "$SHARED/data/${p#*:}" >"$T/run.out" 2>&1 ||
    { cat "$T/run.out"; fail "${p%%:*}: fmam run with the fleet's model failed"; }
  grep -Eq "\.png,[-0-9.e]+,(PASS|FAIL)$" "$T/run.out" || { cat "$T/run.out"; fail "${p%%:*}: no PASS/FAIL from the calibrated model"; }
done
[ -f "$OUT/broken/FAILED" ] || fail "broken: no FAILED marker"
[ ! -e "$OUT/broken/DONE" ] || fail "broken: DONE although its data holds no image"
grep -q '"step": "train"' "$OUT/broken/FAILED" || fail "broken: FAILED does not name the train step"
grep -q "\"log\": \"$OUT/broken/log\"" "$OUT/broken/FAILED" || fail "broken: FAILED does not name its log"
grep -q "holds no image" "$OUT/broken/log" || fail "broken: its log does not say why it failed"

step "gather"
"$FMAM" fleet gather "$OUT" >"$T/gather1.out" 2>&1 || { cat "$T/gather1.out"; fail "fleet gather failed"; }
cat "$T/gather1.out"
head -n 1 "$OUT/fleet.csv" | grep -qx "product,status,image_auroc,pixel_auroc,aupro,threshold,train_seconds,attempts,model,report,log,error" ||
  fail "fleet.csv header: $(head -n 1 "$OUT/fleet.csv")"
[ "$(wc -l <"$OUT/fleet.csv")" -eq 4 ] || fail "fleet.csv has not one row per product: $(cat "$OUT/fleet.csv")"
for p in bottle metal_plate; do
  # done, AUROCs and AUPRO in [0, 1], a threshold, training seconds > 0, one attempt, the paths
  grep -Eq "^$p,done,(0\.[0-9]{4}|1\.0000),(0\.[0-9]{4}|1\.0000),(0\.[0-9]{4}|1\.0000),[-0-9.e]+,[0-9]+\.[0-9],1,$p/model.fmam,$p/report/report.html,$p/log,$" "$OUT/fleet.csv" ||
    fail "fleet.csv row of $p: $(grep "^$p," "$OUT/fleet.csv")"
  grep -q "href=\"$p/report/report.html\"" "$OUT/index.html" || fail "index.html does not link $p's report"
done
grep -Eq '^broken,failed,,,,,[0-9.]*,1,,,broken/log,"?train: exit status 1: .*holds no image' "$OUT/fleet.csv" ||
  fail "fleet.csv row of broken: $(grep '^broken,' "$OUT/fleet.csv")"
grep -q "<h2>Failures</h2>" "$OUT/index.html" && grep -q "href=\"broken/log\"" "$OUT/index.html" ||
  fail "index.html does not list the failure with its log"

# ---- rerun: done products are skipped, an unfinished one resumes ----------------------------
step "submit 2: bottle done (skipped), metal_plate unfinished (resumed), broken retried"
rm "$OUT/metal_plate/DONE"   # as if its task had been killed after training
bottle_model=$(stat -c %Y.%s "$OUT/bottle/model.fmam")
bottle_done=$(stat -c %Y "$OUT/bottle/DONE")
submit >"$T/submit2.out" 2>&1
rc=$?
cat "$T/submit2.out"
[ $rc -ne 124 ] || fail "the second array did not finish within 300 s"
grep -Eq "bottle +skip: done" "$T/submit2.out" || fail "submit 2 does not skip bottle"
grep -Eq "metal_plate +resume from " "$T/submit2.out" || fail "submit 2 does not resume metal_plate"
grep -q -- "--array=1-2 " "$T/submit2.out" || fail "submit 2 did not leave bottle out of the array"
[ "$(stat -c %Y.%s "$OUT/bottle/model.fmam")" = "$bottle_model" ] || fail "bottle's model was rewritten"
[ "$(stat -c %Y "$OUT/bottle/DONE")" = "$bottle_done" ] || fail "bottle's DONE was rewritten"
[ -f "$OUT/metal_plate/DONE" ] || fail "metal_plate: no DONE after resuming"
grep -q -- "--resume" "$OUT/metal_plate/log" || fail "metal_plate: not trained with --resume"
grep -q "training already finished" "$OUT/metal_plate/log" &&
  [ "$(grep -c "stage2 epoch 1/1: 16 images" "$OUT/metal_plate/log")" -eq 1 ] || fail "metal_plate: the resume trained again"
[ -f "$OUT/broken/FAILED" ] || fail "broken: no FAILED marker after the retry"
"$FMAM" fleet gather "$OUT" >"$T/gather2.out" 2>&1 || { cat "$T/gather2.out"; fail "fleet gather failed"; }
cat "$T/gather2.out"
grep -q "^metal_plate,done,.*,2,metal_plate/model.fmam," "$OUT/fleet.csv" || fail "metal_plate: not 2 attempts: $(grep '^metal_plate,' "$OUT/fleet.csv")"
grep -q "^broken,failed,.*,2,,,broken/log," "$OUT/fleet.csv" || fail "broken: not 2 attempts: $(grep '^broken,' "$OUT/fleet.csv")"
grep -q "3 product(s): 2 done, 1 failed" "$T/gather2.out" || fail "gather's summary"
step "passed"
