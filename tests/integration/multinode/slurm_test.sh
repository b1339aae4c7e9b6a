#!/usr/bin/env bash
# slurm/train-cpu.sbatch on a private two-node Slurm (slurm_cluster.sh: one slurmd per host of
# hosts.sh): `sbatch --nodes=2 --ntasks-per-node=2` puts ranks 0,1 on node1 and 2,3 on node2
# (local ranks 0,1 on each); `scontrol requeue` mid-run stops the ranks with SIGTERM (they
# checkpoint), Slurm starts the job again, and it resumes from that checkpoint and completes
# at the last step. Also: launch/mpirun-slurm.sh places 2 ranks on each of the 2 nodes, and
# killing node2's ranks fails the job at once with a message naming the task and node.
#   slurm_test.sh BUILD_DIR|DIFFTRAIN_BINARY
# Knobs: MN_SLURM_STEPS (default 30), MN_SLURM_TIMEOUT_S (default 180).
# Exit 77 when difftrain is not built, or Slurm, munge, root, the dataset or namespaces are missing.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/integration/multinode/hosts.sh
source "${here}/hosts.sh"
# shellcheck source=tests/integration/slurm/cluster.sh
source "${here}/../slurm/cluster.sh"
# shellcheck source=tests/integration/multinode/slurm_cluster.sh
source "${here}/slurm_cluster.sh"
# shellcheck source=tests/integration/slurm/testlib.sh
source "${here}/../slurm/testlib.sh"
# shellcheck source=tests/integration/slurm/trainer_setup.sh
source "${here}/../slurm/trainer_setup.sh"

build_dir=${1:?usage: slurm_test.sh BUILD_DIR|DIFFTRAIN_BINARY}
steps=${MN_SLURM_STEPS:-30}
timeout_s=${MN_SLURM_TIMEOUT_S:-180}
t_trainer_require "${build_dir}"
reason=$(slurm_cluster_require) || t_skip "${reason#skipped: }"
[[ -r "${T_FMNIST_DIR}/t10k-images-idx3-ubyte.gz" ]] ||
  t_skip "no Fashion-MNIST in ${T_FMNIST_DIR} (install dataset-fashion-mnist)"
mn_enter_site "$@"
mn_hosts_start 2 || t_fail "the test hosts did not start"
mn_slurm_start || t_fail "the two-node Slurm cluster did not start"
t_ok "Slurm nodes: $(sinfo -h -N -o '%N/%T' | xargs)"

data_dir=${MN_DIR}/data
"${T_DIFFTRAIN}" prepare --images "${T_FMNIST_DIR}/t10k-images-idx3-ubyte.gz" \
  --labels "${T_FMNIST_DIR}/t10k-labels-idx1-ubyte.gz" --out "${data_dir}" --shards 4 --pad-to 32 \
  >"${MN_DIR}/log/prepare.out" 2>&1 || t_fail "difftrain prepare: $(tail -n 3 "${MN_DIR}/log/prepare.out")"

run_dir=${SLURM_TEST_DIR}/jobs/run
T_JOB_LOG=${SLURM_TEST_DIR}/jobs/train.out
cd "${T_REPO_ROOT}" || t_fail "no repository root"
# Periodic checkpoints off: the restart can only resume from the one written on SIGTERM.
job_id=$(DIFFTRAIN_BIN="${T_DIFFTRAIN}" DIFFTRAIN_CONFIG="${T_REPO_ROOT}/configs/fmnist-tiny.yaml" \
  DIFFTRAIN_DATA_DIR="${data_dir}" DIFFTRAIN_RUN_DIR="${run_dir}" \
  DIFFTRAIN_EXTRA_ARGS="--set train.steps=${steps} --set train.log_interval_s=0.001 --set checkpoint.every_steps=100000 --set sample.n=4 --set sample.steps=2" \
  sbatch --parsable --nodes=2 --ntasks-per-node=2 --cpus-per-task=1 --time=10 \
  --output="${T_JOB_LOG}" slurm/train-cpu.sbatch) || t_fail "sbatch failed"
t_ok "submitted job ${job_id}: 2 nodes x 2 ranks, ${steps} steps"

t_wait_for_line "${T_JOB_LOG}" "\[rank 0/4\] step 3/${steps} " "$((timeout_s / 2))" ||
  t_fail "rank 0 did not reach step 3 in $((timeout_s / 2)) s"
for expect in "0 node1 0/2" "1 node1 1/2" "2 node2 0/2" "3 node2 1/2"; do
  read -r rank host local <<<"${expect}"
  grep -q "\[rank ${rank}/4\] difftrain on ${host} (local rank ${local})" "${T_JOB_LOG}" ||
    t_fail "rank ${rank} does not say 'difftrain on ${host} (local rank ${local})'"
done
t_ok "ranks 0,1 on node1 and 2,3 on node2, local ranks 0,1 on each"
grep -q "\[rank 0/4\] step ${steps}/${steps} " "${T_JOB_LOG}" &&
  t_fail "the run finished before the requeue; raise MN_SLURM_STEPS"
scontrol requeue "${job_id}" || t_fail "scontrol requeue ${job_id} failed"
t_ok "scontrol requeue ${job_id} after step 3"
t_expect_job "${job_id}" COMPLETED "${timeout_s}"
[[ "$(slurm_cluster_job_field "${job_id}" Restarts)" == 1 ]] ||
  t_fail "Restarts=$(slurm_cluster_job_field "${job_id}" Restarts), want 1"
for line in 'SLURM_RESTART_COUNT=0' 'SLURM_RESTART_COUNT=1' 'the trainer resumes from it' \
  'training finished' 'ranks: 4 on 2 node'; do
  grep -qe "${line}" "${T_JOB_LOG}" || t_fail "job log lacks '${line}'"
done
resumed_step=$(sed -n 's/.*\[rank 0\/4\] resumed from .* at step \([0-9]*\).*/\1/p' "${T_JOB_LOG}" | head -n 1)
[[ -n "${resumed_step}" ]] || t_fail "rank 0 never logged 'resumed from ... at step N'"
((resumed_step >= 3 && resumed_step < steps)) ||
  t_fail "resumed at step ${resumed_step}, want a step in [3, ${steps})"
t_ok "requeued once; the restart resumed from the SIGTERM checkpoint at step ${resumed_step}"
want=$(seq 1 "${steps}")
got=$(t_rank0_steps "${T_JOB_LOG}")
[[ "${got}" == "${want}" ]] ||
  t_fail "rank 0 steps are not 1..${steps} exactly once: $(echo "${got}" | tr '\n' ' ')"
[[ "$(<"${run_dir}/checkpoints/LATEST")" == "$(printf 'step-%09d.ckpt' "${steps}")" ]] ||
  t_fail "LATEST is '$(<"${run_dir}/checkpoints/LATEST")', want the step-${steps} checkpoint"
t_ok "steps 1..${steps} each once across 2 starts on 2 nodes; final checkpoint at step ${steps}"

# launch/mpirun-slurm.sh: mpirun inside the allocation (its daemons started by Slurm, not ssh).
T_JOB_LOG=${SLURM_TEST_DIR}/jobs/mpirun.out
job_id=$(sbatch --parsable --nodes=2 --ntasks-per-node=2 --cpus-per-task=1 --time=5 \
  --output="${T_JOB_LOG}" launch/mpirun-slurm.sh "${T_DIFFTRAIN}" train \
  --config "${T_REPO_ROOT}/configs/fmnist-tiny.yaml" --run-dir "${SLURM_TEST_DIR}/jobs/mpirun-run" \
  --set "data.dir=${data_dir}" train.steps=2 sample.n=4 sample.steps=2) || t_fail "sbatch mpirun-slurm.sh failed"
t_expect_job "${job_id}" COMPLETED "${timeout_s}"
for expect in "0 node1 0/2" "1 node1 1/2" "2 node2 0/2" "3 node2 1/2"; do
  read -r rank host local <<<"${expect}"
  grep -q "\[rank ${rank}/4\] difftrain on ${host} (local rank ${local})" "${T_JOB_LOG}" ||
    t_fail "mpirun-slurm.sh: rank ${rank} does not say 'difftrain on ${host} (local rank ${local})'"
done
grep -q "\[rank 0/4\] step 2/2 " "${T_JOB_LOG}" || t_fail "mpirun-slurm.sh: rank 0 never logged step 2/2"
t_ok "sbatch --nodes=2 --ntasks-per-node=2 launch/mpirun-slurm.sh: 2 ranks on each node, COMPLETED"

# A host loses its ranks: srun (--kill-on-bad-exit) names the task and its node at once and
# cancels the step; the ranks left on node1, blocked in a collective with the dead ones, end
# at their deadline (dist.timeout_s), and the job fails.
T_JOB_LOG=${SLURM_TEST_DIR}/jobs/lost.out
lost_timeout_s=10
job_id=$(DIFFTRAIN_BIN="${T_DIFFTRAIN}" DIFFTRAIN_CONFIG="${T_REPO_ROOT}/configs/fmnist-tiny.yaml" \
  DIFFTRAIN_DATA_DIR="${data_dir}" DIFFTRAIN_RUN_DIR="${SLURM_TEST_DIR}/jobs/lost-run" \
  DIFFTRAIN_EXTRA_ARGS="--set train.steps=100000 --set train.log_interval_s=0.001 --set dist.timeout_s=${lost_timeout_s}" \
  sbatch --parsable --nodes=2 --ntasks-per-node=2 --cpus-per-task=1 --time=10 \
  --output="${T_JOB_LOG}" slurm/train-cpu.sbatch) || t_fail "sbatch failed"
t_wait_for_line "${T_JOB_LOG}" "\[rank 0/4\] step 2/" "$((timeout_s / 2))" || t_fail "no step 2"
killed=()
for pid in $(mn_host_pids node2); do
  [[ "$(readlink "/proc/${pid}/exe")" == */difftrain* ]] && killed+=("${pid}")
done
((${#killed[@]} == 2)) || t_fail "want the 2 difftrain ranks on node2, found PIDs '${killed[*]}'"
kill -KILL "${killed[@]}"
killed_at=${SECONDS}
t_expect_job "${job_id}" FAILED "$((lost_timeout_s * 3))"
ended_s=$((SECONDS - killed_at))
# The deadline counts from the collective's start, just before the kill; up to 5 s more for
# Slurm to record the end (and this loop to see it).
((ended_s <= lost_timeout_s + 5)) ||
  t_fail "the job ended ${ended_s} s after the kill, want <= dist.timeout_s=${lost_timeout_s} + 5"
lost_line=$(grep -E 'node2: tasks? [0-9-]*[23].*Killed' "${T_JOB_LOG}" | head -n 1)
[[ -n "${lost_line}" ]] || t_fail "no srun message naming task 2 or 3 on node2"
t_ok "killed node2's ranks: job FAILED in ${ended_s} s: ${lost_line}"
echo "multinode slurm: all passed"
