#!/usr/bin/env bash
# One train per run directory: a second job on a live run fails at once naming the holder and
# writes nothing there; the lock of a SIGKILLed job, of a dead host (silent heartbeat) and of
# the same Slurm job requeued on another host never blocks the next start.
# Usage: run_lock_test.sh PATH/TO/difftrain
source "$(dirname "$0")/lib.sh"
BIN=$1
start_fmnist_test "$BIN" 2
COMMON=(--config "$CONFIG" --set data.dir=data train.threads=1 sample.n=4 sample.steps=2)
HOST=$(hostname)

wait_for_step() { # LOG: until the run has logged a step
  for _ in $(seq 600); do
    grep -q "step [0-9]*/" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "no step logged in $1: $(cat "$1")"
}

# --- a live run on 2 ranks holds the directory; a second job fails at once ---
"${MPIRUN[@]}" -np 2 "$BIN" train "${COMMON[@]}" train.steps=100000 train.log_interval_s=0.000001 \
  --run-dir live >live.out 2>&1 &
first=$!
wait_for_step live.out
[ -f live/train.lock ] || fail "no live/train.lock while the run trains"
holder_pid=$(sed -n 's/^pid: //p' live/train.lock)
log_lines=$(wc -l <live/train.log)
start_s=$(date +%s)
expect_error "second train" "run dir live is in use by another difftrain train (host $HOST, pid $holder_pid" -- \
  "$BIN" train "${COMMON[@]}" train.steps=3 --run-dir live
[ $(($(date +%s) - start_s)) -lt 30 ] || fail "the second job took $(($(date +%s) - start_s)) s to fail"
kill -0 "$first" || fail "the first run died when the second one started"
# The second job wrote nothing: train.log grows only by the first run's own lines.
if grep -q "train.steps=3\|config .*steps 3" live/train.log; then fail "the second job wrote to train.log"; fi
[ "$(wc -l <live/train.log)" -ge "$log_lines" ] || fail "train.log shrank"
echo "ok: a second train on a live run dir fails at once, naming host $HOST and pid $holder_pid"

# --- SIGKILL leaves the lock behind; the next start takes it over ---
kill -KILL "$holder_pid"
wait "$first" || true
[ -f live/train.lock ] || fail "a SIGKILLed run left no lock (test assumption)"
"$BIN" train "${COMMON[@]}" train.steps=3 --run-dir live >after.out 2>after.err ||
  fail "the run after a SIGKILL did not start: $(cat after.err)"
grep -q "took over the lock of run dir live from host $HOST, pid $holder_pid" after.out after.err ||
  fail "no takeover message: $(cat after.out after.err)"
[ ! -f live/train.lock ] || fail "the finished run left its lock: $(cat live/train.lock)"
echo "ok: the lock of a SIGKILLed job is taken over and released at the end"

# --- another host's lock: refused while its heartbeat is fresh, taken once silent ---
plant_lock() { # DIR HOST JOB
  mkdir -p "$1"
  printf 'host: %s\npid: 4242\npid_start: 77\nslurm_job: %s\nstarted: 2026-12-03T10:00:00Z\n' \
    "$2" "$3" >"$1/train.lock"
}
plant_lock foreign node-that-died ""
expect_error "foreign host" "in use by another difftrain train (host node-that-died, pid 4242" -- \
  "$BIN" train "${COMMON[@]}" train.steps=2 --run-dir foreign
[ ! -f foreign/train.log ] || fail "the refused job wrote foreign/train.log"
touch -d "-6 minutes" foreign/train.lock
"$BIN" train "${COMMON[@]}" train.steps=2 --run-dir foreign >foreign.out 2>&1 ||
  fail "a 6-minute-silent lock blocked the start: $(cat foreign.out)"
grep -q "no heartbeat for" foreign.out || fail "no heartbeat reason: $(cat foreign.out)"
echo "ok: another host's lock blocks while fresh and frees itself after 5 minutes of silence"

# --- a Slurm requeue on another host (same SLURM_JOB_ID) takes its own lock over ---
plant_lock requeued node-b 5150
SLURM_JOB_ID=5150 "$BIN" train "${COMMON[@]}" train.steps=2 --run-dir requeued >requeued.out 2>&1 ||
  fail "the requeued job was refused its own lock: $(cat requeued.out)"
grep -q "this Slurm job, restarted on another host" requeued.out || fail "no requeue reason: $(cat requeued.out)"
plant_lock other-job node-b 5150
expect_error "another job" "Slurm job 5150" -- env SLURM_JOB_ID=6000 "$BIN" train "${COMMON[@]}" \
  train.steps=2 --run-dir other-job
echo "ok: a requeued Slurm job takes over its own lock; another job does not"
echo "run_lock: all passed"
