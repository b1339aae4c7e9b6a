#!/usr/bin/env bash
# Fault tests: a rank that dies or skips a collective must end the whole job, non-zero, within
# dist.timeout_s plus a margin after the fault, with a message that names the collective and the
# rank. The clock starts at the fault (the victim prints its time), not at mpirun: start-up on a
# loaded machine takes as long as it takes, and is no part of what the deadline promises.
#
# usage: fault_test.sh CASE FAULT_JOB MPIRUN
#   CASE: skip          one rank skips a gradient all-reduce; the others time out in it
#         kill          one rank dies by SIGKILL; mpirun ends the job and names the rank
#         kill-survivors one rank dies by SIGKILL and the launcher leaves the others running
#                       (as srun does without --kill-on-bad-exit; here mpirun --enable-recovery):
#                       the survivors' deadline ends the job
set -euo pipefail

case_name=$1
job=$2
mpirun=$3
# Long enough that a fault-free run never trips it although its ranks can be descheduled for
# seconds on a loaded two-core machine (3 s left little room), and short against the hang guard.
timeout_s=10
# From the deadline to the end of mpirun: the error line, MPI_Abort and tear-down of every
# process (0.1-2 s seen on a loaded machine).
margin_s=15
hang_guard_s=90  # a job still running then hangs; far beyond timeout_s + margin_s

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT

fail() {
  echo "FAIL ($case_name): $*"
  echo "---- job output ----"
  cat "$log"
  exit 1
}

# run_job RANKS [MPIRUN_OPTIONS...] -- JOB_OPTIONS...: sets rc, elapsed_s and end_s (the time
# mpirun returned, seconds since the epoch).
run_job() {
  local ranks=$1
  shift
  local mpi_options=()
  while [[ $1 != -- ]]; do
    mpi_options+=("$1")
    shift
  done
  shift
  local start end
  start=$(date +%s.%N)
  set +e
  # The outer timeout only guards CTest against a hang; the test's own bound is checked below.
  timeout "$hang_guard_s" "$mpirun" --oversubscribe --bind-to none "${mpi_options[@]}" -np "$ranks" \
    "$job" --timeout-s "$timeout_s" "$@" >"$log" 2>&1
  rc=$?
  set -e
  end=$(date +%s.%N)
  end_s=$end
  elapsed_s=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  echo "$case_name: $* -> rc $rc after $elapsed_s s"
}

# within_deadline MIN_S: the job ended at least MIN_S and less than dist.timeout_s + margin_s
# after the victim's fault (MIN_S > 0 where a deadline, not the launcher, has to end it).
within_deadline() {
  local min_s=$1 fault_s after_s
  fault_s=$(sed -nE 's/.*fault_job: .* at t=([0-9.]+) s$/\1/p' "$log" | head -1)
  [[ -n $fault_s ]] || fail "the victim did not print the time of its fault"
  after_s=$(awk -v f="$fault_s" -v e="$end_s" 'BEGIN { printf "%.1f", e - f }')
  echo "$case_name: the job ended $after_s s after the fault (bound: $min_s s <= t <" \
    "$timeout_s s + $margin_s s)"
  awk -v a="$after_s" -v lo="$min_s" -v hi="$((timeout_s + margin_s))" \
    'BEGIN { exit !(a >= lo && a < hi) }' ||
    fail "ended $after_s s after the fault; want at least $min_s s and less than dist.timeout_s" \
      "($timeout_s s) + $margin_s s"
}

expect_output() {
  grep -qE -- "$1" "$log" || fail "output lacks /$1/"
}

# Sanity: without a fault the job succeeds, so the failures below are the faults' doing.
run_job 2 -- --fault none
[[ $rc -eq 0 ]] || fail "the job without a fault failed (rc $rc)"
expect_output '\[rank 0/2\] fault_job: 5 steps done'

case $case_name in
  skip)
    run_job 3 -- --fault skip --victim 1 --at-step 2
    [[ $rc -ne 0 ]] || fail "job exited 0 although rank 1 skipped a collective"
    # A waiting rank may have entered its collective up to one (millisecond) step before the
    # victim printed: 1 s of slack below the deadline.
    within_deadline $((timeout_s - 1))
    # Ranks 0 and 2 wait in step 2's gradient all-reduce, the victim in the control barrier
    # (another communicator); whichever deadline fires first aborts the job.
    expect_output "\[rank ([0-9])/3\] error: (all_reduce_sum #[0-9]+ of [0-9.]+ MB|barrier #[0-9]+) on rank \1/3 did not finish within $timeout_s s"
    expect_output "\[rank 1/3\] fault_job: skipping the gradient all-reduce of step 2"
    ;;
  kill)
    run_job 2 -- --fault kill --victim 1 --at-step 2
    [[ $rc -ne 0 ]] || fail "job exited 0 although rank 1 was killed"
    within_deadline 0  # mpirun itself sees the death: no deadline needed
    expect_output "rank 1 .*exited on signal 9"
    ;;
  kill-survivors)
    # Open MPI's --enable-recovery keeps the survivors running after a rank dies, as srun does
    # without --kill-on-bad-exit; it also reports exit code 0 after MPI_Abort in this mode, so
    # the test checks the survivors' own error line instead of mpirun's code. Nor does it check
    # mpirun's "MPI_ABORT was invoked" banner: when both survivors abort at once, Open MPI 4.1
    # sometimes loses it ("ORTE_ERROR_LOG: Data unpack would read past end of buffer in
    # show_help.c"). The job ending within the bound after that error line shows the abort.
    run_job 3 --enable-recovery -- --fault kill --victim 2 --at-step 2
    within_deadline $((timeout_s - 1))
    expect_output "\[rank ([01])/3\] error: (all_reduce_sum #[0-9]+ of [0-9.]+ MB|barrier #[0-9]+) on rank \1/3 did not finish within $timeout_s s"
    ;;
  *)
    fail "unknown case"
    ;;
esac
echo "PASS ($case_name)"
