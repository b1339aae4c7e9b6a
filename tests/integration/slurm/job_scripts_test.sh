#!/usr/bin/env bash
# The job scripts' plumbing on a real Slurm, with a stand-in trainer (fake_difftrain.sh) so it
# runs in about a minute whatever the state of the real one:
#   - slurm/train-*.sbatch refuse to run outside Slurm (exit 2, clear message);
#   - train-cpu.sbatch: 2 ranks, threads from --cpus-per-task; the time-limit warning
#     (SIGUSR1 to the batch shell, as --signal=B:USR1@T sends it) -> checkpoint -> self-requeue
#     -> SLURM_RESTART_COUNT=1 -> resume -> every step exactly once -> COMPLETED;
#   - a Slurm-side requeue (SIGTERM to everything, as for preemption) -> checkpoint -> Slurm
#     requeues -> resume -> COMPLETED;
#   - DIFFTRAIN_MAX_RESTARTS stops a requeue loop; train-gpu.sbatch binds one GPU per rank;
#   - launch/mpirun-slurm.sh forwards the batch shell's SIGUSR1 to the ranks;
#   - launch/mpirun-local.sh: oversubscribed ranks, SIGTERM -> ranks checkpoint, exit 0.
# Exit 77 when Slurm, munge or root is missing.
set -uo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=tests/integration/slurm/cluster.sh
source "${here}/cluster.sh"
# shellcheck source=tests/integration/slurm/testlib.sh
source "${here}/testlib.sh"

cd "${T_REPO_ROOT}" || t_fail "no repository root"
fake="${T_REPO_ROOT}/tests/integration/slurm/fake_difftrain.sh"

# Outside Slurm: exit 2 and say how to submit. Runs even where Slurm is not installed.
for script in slurm/train-cpu.sbatch slurm/train-gpu.sbatch; do
  out=$(env -u SLURM_JOB_ID bash "${script}" 2>&1)
  rc=$?
  if ((rc != 2)) || [[ "${out}" != *"submit it with: sbatch"* ]]; then
    t_fail "${script} outside Slurm: exit ${rc}, output '${out}'"
  fi
done
t_ok "sbatch scripts refuse to run outside Slurm (exit 2)"
out=$(env -u SLURM_JOB_ID launch/mpirun-slurm.sh true 2>&1)
(($? == 2)) || t_fail "mpirun-slurm.sh outside Slurm should exit 2: ${out}"

# launch/mpirun-local.sh: 3 ranks on this machine's cores (oversubscribed on 2 cores), then
# SIGTERM to the launcher -> every rank checkpoints and the launcher exits 0.
work=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-jobtest.XXXXXX")
touch "${work}/tiny.yaml"
T_JOB_LOG="${work}/local.out"
FAKE_STEP_S=0.1 launch/mpirun-local.sh -n 3 "${fake}" train --config "${work}/tiny.yaml" \
  --run-dir "${work}/local-run" --set train.steps=200 >"${T_JOB_LOG}" 2>&1 &
launcher_pid=$!
t_wait_for_line "${T_JOB_LOG}" '\[rank 2/3\] step 3/' 30 || t_fail "mpirun-local.sh ranks did not start"
kill -TERM "${launcher_pid}"
rc=0
wait "${launcher_pid}" || rc=$?
((rc == 0)) || t_fail "mpirun-local.sh exited ${rc} after SIGTERM"
for rank in 0 1 2; do
  grep -q "\[rank ${rank}/3\] threads=1 OMP_NUM_THREADS=1 " "${T_JOB_LOG}" ||
    t_fail "rank ${rank} did not get 1 thread (cores / ranks)"
  grep -q "\[rank ${rank}/3\] SIGUSR1: checkpoint at step" "${T_JOB_LOG}" ||
    t_fail "rank ${rank} did not checkpoint on the forwarded SIGUSR1"
done
[[ -r "${work}/local-run/checkpoints/LATEST" ]] || t_fail "no checkpoint after SIGTERM"
t_ok "mpirun-local.sh: 3 ranks x 1 thread, SIGTERM -> SIGUSR1 -> checkpoint, exit 0"
rm -rf "${work}"

reason=$(slurm_cluster_require) || t_skip "${reason#skipped: }"
SLURM_TEST_GPUS=2 slurm_cluster_start || t_fail "the test cluster did not start"
jobs_dir="${SLURM_TEST_DIR}/jobs"
touch "${jobs_dir}/tiny.yaml"
export DIFFTRAIN_BIN="${fake}" DIFFTRAIN_CONFIG="${jobs_dir}/tiny.yaml" FAKE_STEP_S=0.1

# submit NAME SCRIPT [SBATCH FLAGS...]: submit with run dir and log named NAME; print job id.
# The time limit must stay above the scripts' --signal=B:USR1@300, or Slurm sends the warning
# at once.
submit() {
  local name=$1 script=$2
  shift 2
  DIFFTRAIN_RUN_DIR="${jobs_dir}/${name}-run" sbatch --parsable --output="${jobs_dir}/${name}.out" \
    --ntasks-per-node=2 --cpus-per-task=1 --time=10 "$@" "${script}"
}

# check_steps_once LOG STEPS: rank 0 logged steps 1..STEPS, each exactly once, in order.
check_steps_once() {
  local want got
  want=$(seq 1 "$2")
  got=$(t_rank0_steps "$1")
  [[ "${got}" == "${want}" ]] ||
    t_fail "rank 0 steps are not 1..$2 exactly once: $(echo "${got}" | tr '\n' ' ')"
}

# 1. Time-limit warning -> checkpoint -> self-requeue -> resume.
T_JOB_LOG="${jobs_dir}/usr1.out"
job_id=$(DIFFTRAIN_EXTRA_ARGS="--set train.steps=40" submit usr1 slurm/train-cpu.sbatch) ||
  t_fail "sbatch failed"
t_wait_for_line "${T_JOB_LOG}" '\[rank 0/2\] step 5/' 30 || t_fail "job ${job_id} did not start training"
scancel --batch --signal=USR1 "${job_id}"
t_expect_job "${job_id}" COMPLETED 60
[[ "$(slurm_cluster_job_field "${job_id}" Restarts)" == 1 ]] || t_fail "want Restarts=1"
for line in 'SLURM_RESTART_COUNT=0' 'SIGUSR1: time limit near' 'requeueing job' \
  'SLURM_RESTART_COUNT=1' 'the trainer resumes from it' 'training finished' \
  '\[rank 1/2\] resumed from' '--set train.threads=1 --set train.steps=40' \
  '\[rank 0/2\] threads=1 OMP_NUM_THREADS=1 '; do
  grep -qe "${line}" "${T_JOB_LOG}" || t_fail "job log lacks '${line}'"
done
check_steps_once "${T_JOB_LOG}" 40
ckpt_step=$(sed -n 's/.*\[rank 0\/2\] SIGUSR1: checkpoint at step \([0-9]*\).*/\1/p' "${T_JOB_LOG}")
grep -q "\[rank 0/2\] resumed from .* at step ${ckpt_step}\$" "${T_JOB_LOG}" ||
  t_fail "rank 0 did not resume at the checkpointed step ${ckpt_step}"
t_ok "train-cpu.sbatch: SIGUSR1 -> checkpoint at step ${ckpt_step} -> requeue -> resume -> 40 steps once each"

# 2. Slurm requeues the job itself (SIGTERM to every process, as a preemption does).
T_JOB_LOG="${jobs_dir}/term.out"
job_id=$(DIFFTRAIN_EXTRA_ARGS="--set train.steps=40" submit term slurm/train-cpu.sbatch) ||
  t_fail "sbatch failed"
t_wait_for_line "${T_JOB_LOG}" '\[rank 0/2\] step 5/' 30 || t_fail "job ${job_id} did not start training"
scontrol requeue "${job_id}" || t_fail "scontrol requeue ${job_id} failed"
t_expect_job "${job_id}" COMPLETED 60
for line in 'SIGTERM: Slurm is ending this job' 'leaving requeue to Slurm' \
  '\[rank 0/2\] SIGTERM: checkpoint at step' 'SLURM_RESTART_COUNT=1' 'training finished'; do
  grep -qe "${line}" "${T_JOB_LOG}" || t_fail "job log lacks '${line}'"
done
check_steps_once "${T_JOB_LOG}" 40
t_ok "train-cpu.sbatch: Slurm requeue (SIGTERM) -> checkpoint -> restart -> resume -> 40 steps once each"

# 3. DIFFTRAIN_MAX_RESTARTS=0: checkpoint on SIGUSR1, but do not requeue; the job fails.
T_JOB_LOG="${jobs_dir}/max.out"
job_id=$(DIFFTRAIN_MAX_RESTARTS=0 DIFFTRAIN_EXTRA_ARGS="--set train.steps=400" submit max slurm/train-cpu.sbatch) ||
  t_fail "sbatch failed"
t_wait_for_line "${T_JOB_LOG}" '\[rank 0/2\] step 2/' 30 || t_fail "job ${job_id} did not start training"
scancel --batch --signal=USR1 "${job_id}"
t_expect_job "${job_id}" FAILED 30
grep -q 'reached DIFFTRAIN_MAX_RESTARTS; not requeueing' "${T_JOB_LOG}" || t_fail "no max-restarts message"
t_ok "DIFFTRAIN_MAX_RESTARTS=0 stops the requeue loop (job FAILED with a message)"

# 4. train-gpu.sbatch on two stand-in GPUs: one GPU per rank, NCCL defaults in the header.
T_JOB_LOG="${jobs_dir}/gpu.out"
job_id=$(DIFFTRAIN_EXTRA_ARGS="--set train.steps=3" submit gpu slurm/train-gpu.sbatch) ||
  t_fail "sbatch failed"
t_expect_job "${job_id}" COMPLETED 60
for line in '\[rank 0/2\] .*CUDA_VISIBLE_DEVICES=0 ' '\[rank 1/2\] .*CUDA_VISIBLE_DEVICES=1 ' \
  'NCCL_DEBUG=WARN' 'gpu-bind per_task:1 (default)' '\[rank 0/2\] done: final step 3'; do
  grep -qe "${line}" "${T_JOB_LOG}" || t_fail "job log lacks '${line}'"
done
t_ok "train-gpu.sbatch: 2 ranks, CUDA_VISIBLE_DEVICES 0 and 1, COMPLETED"

# 5. launch/mpirun-slurm.sh as a batch script: the batch shell's SIGUSR1 reaches the ranks.
T_JOB_LOG="${jobs_dir}/mpirun.out"
job_id=$(sbatch --parsable --ntasks=2 --time=10 --output="${T_JOB_LOG}" launch/mpirun-slurm.sh \
  "${fake}" train --config "${jobs_dir}/tiny.yaml" --run-dir "${jobs_dir}/mpirun-run" \
  --set train.steps=400) || t_fail "sbatch failed"
t_wait_for_line "${T_JOB_LOG}" '\[rank 1/2\] step 3/' 30 || t_fail "job ${job_id} did not start"
scancel --batch --signal=USR1 "${job_id}"
t_expect_job "${job_id}" COMPLETED 30
for rank in 0 1; do
  grep -q "\[rank ${rank}/2\] SIGUSR1: checkpoint at step" "${T_JOB_LOG}" ||
    t_fail "rank ${rank} did not get the forwarded SIGUSR1"
done
grep -q 'mpirun exited with status 0' "${T_JOB_LOG}" || t_fail "mpirun did not exit 0"
t_ok "mpirun-slurm.sh: batch-shell SIGUSR1 -> mpirun -> both ranks checkpoint, exit 0"
