#!/usr/bin/env bash
# The real trainer through slurm/train-cpu.sbatch on a real (private) Slurm: 2 tasks, the tiny
# config, a few steps. Checks the job COMPLETED, both ranks ran, the run dir holds the final
# checkpoint (named by checkpoints/LATEST) and a PNG sample grid.
#   run_job_test.sh BUILD_DIR|DIFFTRAIN_BINARY [PREPARED_DATA_DIR]
# Without a data dir (argument or DIFFTRAIN_TEST_DATA) it prepares Fashion-MNIST itself.
# Knobs: RUN_JOB_STEPS (default 6), RUN_JOB_TIMEOUT_S (default 180).
# Exit 77 when difftrain is not built, or Slurm, munge, root or the dataset is missing.
set -uo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=tests/integration/slurm/cluster.sh
source "${here}/cluster.sh"
# shellcheck source=tests/integration/slurm/testlib.sh
source "${here}/testlib.sh"
# shellcheck source=tests/integration/slurm/trainer_setup.sh
source "${here}/trainer_setup.sh"

build_dir=${1:?usage: run_job_test.sh BUILD_DIR|DIFFTRAIN_BINARY [PREPARED_DATA_DIR]}
steps=${RUN_JOB_STEPS:-6}
timeout_s=${RUN_JOB_TIMEOUT_S:-180}
t_trainer_require "${build_dir}"
reason=$(slurm_cluster_require) || t_skip "${reason#skipped: }"
slurm_cluster_start || t_fail "the test cluster did not start"
t_trainer_data "${2:-${DIFFTRAIN_TEST_DATA:-}}"

jobs_dir="${SLURM_TEST_DIR}/jobs"
run_dir="${jobs_dir}/run"
T_JOB_LOG="${jobs_dir}/train.out"
cd "${T_REPO_ROOT}" || t_fail "no repository root"
job_id=$(DIFFTRAIN_BIN="${T_DIFFTRAIN}" DIFFTRAIN_CONFIG="${T_REPO_ROOT}/configs/fmnist-tiny.yaml" \
  DIFFTRAIN_DATA_DIR="${T_DATA_DIR}" DIFFTRAIN_RUN_DIR="${run_dir}" \
  DIFFTRAIN_EXTRA_ARGS="--set train.steps=${steps}" \
  sbatch --parsable --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --time=10 \
  --output="${T_JOB_LOG}" slurm/train-cpu.sbatch) || t_fail "sbatch failed"
t_ok "submitted job ${job_id}: 2 ranks, ${steps} steps"
t_expect_job "${job_id}" COMPLETED "${timeout_s}"
[[ "$(slurm_cluster_job_field "${job_id}" ExitCode)" == 0:0 ]] ||
  t_fail "exit code $(slurm_cluster_job_field "${job_id}" ExitCode), want 0:0"
t_ok "job ${job_id} COMPLETED, exit code 0:0, in $(slurm_cluster_job_field "${job_id}" RunTime)"

# Both ranks ran, as ranks of a 2-rank world.
for rank in 0 1; do
  grep -q "\[rank ${rank}/2\]" "${T_JOB_LOG}" || t_fail "no log line from [rank ${rank}/2]"
done
grep -q "\[rank 0/2\] step ${steps}/${steps} " "${T_JOB_LOG}" || t_fail "rank 0 never logged step ${steps}/${steps}"
grep -q 'training finished' "${T_JOB_LOG}" || t_fail "the job script did not log 'training finished'"
t_ok "log lines from [rank 0/2] and [rank 1/2]; rank 0 reached step ${steps}/${steps}"

# The final checkpoint, named by LATEST, and the sample grid.
latest="${run_dir}/checkpoints/LATEST"
[[ -r "${latest}" ]] || t_fail "no ${latest}"
checkpoint="${run_dir}/checkpoints/$(<"${latest}")"
[[ "${checkpoint}" == *"$(printf 'step-%09d' "${steps}")"* && -s "${checkpoint}" ]] ||
  t_fail "LATEST names '${checkpoint}', want a non-empty checkpoint of step ${steps}"
png=$(find "${run_dir}" -name '*.png' -size +0 | head -n 1)
[[ -n "${png}" ]] || t_fail "no PNG sample grid in ${run_dir}"
[[ "$(head -c 8 "${png}" | od -An -tx1 | tr -d ' \n')" == 89504e470d0a1a0a ]] ||
  t_fail "${png} is not a PNG file"
t_ok "run dir has ${checkpoint#"${run_dir}"/} ($(stat -c %s "${checkpoint}") bytes) and ${png#"${run_dir}"/}"
