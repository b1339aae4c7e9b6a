# shellcheck shell=bash
# Helpers shared by the Slurm integration tests: where the repository is, pass / fail / skip
# reporting (exit 77 = skipped, as CTest's SKIP_RETURN_CODE), and bounded waits on job logs.
# Sourced after cluster.sh; every wait has a deadline, so no test can hang CI.

# shellcheck disable=SC2034  # read by the tests that source this file
T_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
# The log of the job under test; printed when a check fails.
T_JOB_LOG=${T_JOB_LOG:-}

t_ok() { echo "ok: $*"; }

t_skip() {
  echo "skipped: $*"
  exit 77
}

# t_fail MSG...: report, show the job log and the controller's view of the cluster, exit 1.
t_fail() {
  echo "FAIL: $*"
  if [[ -n "${T_JOB_LOG}" && -r "${T_JOB_LOG}" ]]; then
    echo "---- job log ${T_JOB_LOG} (last 60 lines)"
    tail -n 60 "${T_JOB_LOG}"
  fi
  if [[ -n "${SLURM_TEST_DIR:-}" && -r "${SLURM_TEST_DIR}/log/slurmctld.log" ]]; then
    echo "---- slurmctld log (last 15 lines)"
    tail -n 15 "${SLURM_TEST_DIR}/log/slurmctld.log"
    squeue -a 2>/dev/null
  fi
  exit 1
}

# t_wait_for_line FILE REGEX TIMEOUT_S: wait until a line of FILE matches REGEX (grep -E).
t_wait_for_line() {
  local file=$1 regex=$2 timeout_s=$3 start_s=${SECONDS}
  while ((SECONDS - start_s < timeout_s)); do
    if [[ -r "${file}" ]] && grep -qE "${regex}" "${file}"; then
      return 0
    fi
    sleep 0.5
  done
  return 1
}

# t_expect_job JOBID STATE TIMEOUT_S: wait for the job to end; fail unless it ended in STATE.
t_expect_job() {
  local job_id=$1 want=$2 timeout_s=$3 state
  state=$(slurm_cluster_wait_job "${job_id}" "${timeout_s}") ||
    t_fail "job ${job_id} did not finish within ${timeout_s}s (state ${state})"
  [[ "${state}" == "${want}" ]] || t_fail "job ${job_id} ended ${state}, want ${want}"
}

# t_rank0_steps LOG: print the step numbers of rank 0's "step k/N" progress lines, in order.
t_rank0_steps() {
  sed -n 's/.*\[rank 0\/[0-9]*\] step \([0-9]*\)\/[0-9]*.*/\1/p' "$1"
}
