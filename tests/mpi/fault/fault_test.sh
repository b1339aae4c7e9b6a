#!/usr/bin/env bash
# Fault tests: a rank that dies or skips a collective must end the whole job, non-zero, within
# dist.timeout_s plus a margin, with a message that names the collective and the rank.
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
timeout_s=3
margin_s=8  # MPI_Abort and tear-down; start-up is measured by a run without a fault

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT

fail() {
  echo "FAIL ($case_name): $*"
  echo "---- job output ----"
  cat "$log"
  exit 1
}

# run_job RANKS [MPIRUN_OPTIONS...] -- JOB_OPTIONS...: sets rc and elapsed_s.
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
  timeout 120 "$mpirun" --oversubscribe --bind-to none "${mpi_options[@]}" -np "$ranks" \
    "$job" --timeout-s "$timeout_s" "$@" >"$log" 2>&1
  rc=$?
  set -e
  end=$(date +%s.%N)
  elapsed_s=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  echo "$case_name: $* -> rc $rc after $elapsed_s s"
}

within_deadline() {
  local limit
  limit=$(awk -v b="$baseline_s" -v t="$timeout_s" -v m="$margin_s" 'BEGIN { print b + t + m }')
  awk -v e="$elapsed_s" -v limit="$limit" 'BEGIN { exit !(e < limit) }' ||
    fail "took $elapsed_s s, more than a whole run without a fault ($baseline_s s) +" \
      "dist.timeout_s ($timeout_s s) + $margin_s s"
}

expect_output() {
  grep -qE -- "$1" "$log" || fail "output lacks /$1/"
}

# Sanity: without a fault the job succeeds, so the failures below are the faults' doing.
run_job 2 -- --fault none
[[ $rc -eq 0 ]] || fail "the job without a fault failed (rc $rc)"
baseline_s=$elapsed_s
expect_output '\[rank 0/2\] fault_job: 5 steps done'

case $case_name in
  skip)
    run_job 3 -- --fault skip --victim 1 --at-step 2
    [[ $rc -ne 0 ]] || fail "job exited 0 although rank 1 skipped a collective"
    within_deadline
    # Ranks 0 and 2 wait in step 2's gradient all-reduce, the victim in the control barrier
    # (another communicator); whichever deadline fires first aborts the job.
    expect_output "\[rank ([0-9])/3\] error: (all_reduce_sum #[0-9]+ of [0-9.]+ MB|barrier #[0-9]+) on rank \1/3 did not finish within $timeout_s s"
    expect_output "\[rank 1/3\] fault_job: skipping the gradient all-reduce of step 2"
    ;;
  kill)
    run_job 2 -- --fault kill --victim 1 --at-step 2
    [[ $rc -ne 0 ]] || fail "job exited 0 although rank 1 was killed"
    within_deadline
    expect_output "rank 1 .*exited on signal 9"
    ;;
  kill-survivors)
    # Open MPI's --enable-recovery keeps the survivors running after a rank dies, as srun does
    # without --kill-on-bad-exit; it also reports exit code 0 after MPI_Abort in this mode, so
    # the test checks the survivors' own error line instead of mpirun's code.
    run_job 3 --enable-recovery -- --fault kill --victim 2 --at-step 2
    within_deadline
    expect_output "\[rank ([01])/3\] error: (all_reduce_sum #[0-9]+ of [0-9.]+ MB|barrier #[0-9]+) on rank \1/3 did not finish within $timeout_s s"
    expect_output "MPI_ABORT was invoked"
    ;;
  *)
    fail "unknown case"
    ;;
esac
echo "PASS ($case_name)"
