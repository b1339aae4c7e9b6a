#!/usr/bin/env bash
# Preemption end to end with the real trainer on a real (private) Slurm: slurm/train-cpu.sbatch
# runs 2 ranks; mid-run the batch shell gets SIGUSR1 exactly as `--signal=B:USR1@T` delivers it
# before the time limit. Expected: the ranks checkpoint at the next step and exit 0, the job
# requeues itself, the restart (SLURM_RESTART_COUNT=1) resumes from that checkpoint's step, and
# the job completes at the configured final step having run every step exactly once.
#   preempt_test.sh BUILD_DIR|DIFFTRAIN_BINARY [PREPARED_DATA_DIR]
# Knobs: PREEMPT_STEPS (default 30), PREEMPT_AT_STEP (signal after this step, default 3),
# PREEMPT_TIMEOUT_S (default 240).
# Exit 77 when difftrain is not built, the trainer does not checkpoint on signals yet, or
# Slurm, munge, root or the dataset is missing.
set -uo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=tests/integration/slurm/cluster.sh
source "${here}/cluster.sh"
# shellcheck source=tests/integration/slurm/testlib.sh
source "${here}/testlib.sh"
# shellcheck source=tests/integration/slurm/trainer_setup.sh
source "${here}/trainer_setup.sh"

build_dir=${1:?usage: preempt_test.sh BUILD_DIR|DIFFTRAIN_BINARY [PREPARED_DATA_DIR]}
steps=${PREEMPT_STEPS:-30}
signal_after_step=${PREEMPT_AT_STEP:-3}
timeout_s=${PREEMPT_TIMEOUT_S:-240}
t_trainer_require "${build_dir}"
# Checkpoint-on-signal is its own feature of the trainer; until its sources handle SIGUSR1
# this test has nothing to test, and says so instead of passing.
if ! grep -rqs 'SIGUSR1' "${T_REPO_ROOT}/trainer" "${T_REPO_ROOT}/launch" --include='*.cpp' --include='*.h'; then
  t_skip "needs resume: the trainer does not checkpoint on SIGUSR1/SIGTERM yet (no SIGUSR1 in trainer/ or launch/ sources)"
fi
reason=$(slurm_cluster_require) || t_skip "${reason#skipped: }"
slurm_cluster_start || t_fail "the test cluster did not start"
t_trainer_data "${2:-${DIFFTRAIN_TEST_DATA:-}}"

jobs_dir="${SLURM_TEST_DIR}/jobs"
run_dir="${jobs_dir}/run"
T_JOB_LOG="${jobs_dir}/train.out"
cd "${T_REPO_ROOT}" || t_fail "no repository root"
# A progress line every step (to see each step once) and no periodic checkpoints (so the
# one the restart resumes from can only be the one written on the signal).
job_id=$(DIFFTRAIN_BIN="${T_DIFFTRAIN}" DIFFTRAIN_CONFIG="${T_REPO_ROOT}/configs/fmnist-tiny.yaml" \
  DIFFTRAIN_DATA_DIR="${T_DATA_DIR}" DIFFTRAIN_RUN_DIR="${run_dir}" \
  DIFFTRAIN_EXTRA_ARGS="--set train.steps=${steps} --set train.log_interval_s=0.001 --set checkpoint.every_steps=100000" \
  sbatch --parsable --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --time=10 \
  --output="${T_JOB_LOG}" slurm/train-cpu.sbatch) || t_fail "sbatch failed"
t_ok "submitted job ${job_id}: 2 ranks, ${steps} steps"

t_wait_for_line "${T_JOB_LOG}" "\[rank 0/2\] step ${signal_after_step}/${steps} " "$((timeout_s / 2))" ||
  t_fail "rank 0 did not reach step ${signal_after_step} in $((timeout_s / 2)) s"
grep -q "\[rank 0/2\] step ${steps}/${steps} " "${T_JOB_LOG}" &&
  t_fail "the run finished before the signal; raise PREEMPT_STEPS"
# What --signal=B:USR1@T does at T seconds before the time limit.
scancel --batch --signal=USR1 "${job_id}" || t_fail "scancel --signal=USR1 failed"
t_ok "sent SIGUSR1 to the batch shell after step ${signal_after_step}"
t_expect_job "${job_id}" COMPLETED "${timeout_s}"
[[ "$(slurm_cluster_job_field "${job_id}" Restarts)" == 1 ]] ||
  t_fail "Restarts=$(slurm_cluster_job_field "${job_id}" Restarts), want 1"
for line in 'SIGUSR1: time limit near' 'requeueing job' 'SLURM_RESTART_COUNT=1' \
  'the trainer resumes from it' 'training finished'; do
  grep -qe "${line}" "${T_JOB_LOG}" || t_fail "job log lacks '${line}'"
done

# The restart resumed from the step the signal's checkpoint holds.
resumed_step=$(sed -n 's/.*\[rank 0\/2\] resumed from .* at step \([0-9]*\).*/\1/p' "${T_JOB_LOG}" | head -n 1)
[[ -n "${resumed_step}" ]] || t_fail "rank 0 never logged 'resumed from ... at step N'"
((resumed_step >= signal_after_step && resumed_step < steps)) ||
  t_fail "resumed at step ${resumed_step}, want a step in [${signal_after_step}, ${steps})"
grep -q "\[rank 0/2\] checkpoint .*$(printf 'step-%09d' "${resumed_step}").* written" "${T_JOB_LOG}" ||
  t_fail "no checkpoint of step ${resumed_step} was written before the requeue"
t_ok "checkpoint at step ${resumed_step} on SIGUSR1; restart 1 resumed from step ${resumed_step}"

# Every step exactly once across both attempts, ending at the configured final step.
want=$(seq 1 "${steps}")
got=$(t_rank0_steps "${T_JOB_LOG}")
[[ "${got}" == "${want}" ]] ||
  t_fail "rank 0 steps are not 1..${steps} exactly once: $(echo "${got}" | tr '\n' ' ')"
[[ "$(<"${run_dir}/checkpoints/LATEST")" == "$(printf 'step-%09d.ckpt' "${steps}")" ]] ||
  t_fail "LATEST is '$(<"${run_dir}/checkpoints/LATEST")', want the step-${steps} checkpoint"
t_ok "steps 1..${steps} each logged once across 2 attempts; final checkpoint at step ${steps}"
