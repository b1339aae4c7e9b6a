#!/usr/bin/env bash
# The private test cluster works: it comes up idle, and a 2-task `srun --mpi=pmix` batch job
# runs an MPI program whose two ranks find each other (an all-reduce over both).
# Exit 77 when Slurm, munge or root is missing.
set -uo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=tests/integration/slurm/cluster.sh
source "${here}/cluster.sh"
# shellcheck source=tests/integration/slurm/testlib.sh
source "${here}/testlib.sh"

reason=$(slurm_cluster_require) || t_skip "${reason#skipped: }"
slurm_cluster_start || t_fail "the test cluster did not start"
t_ok "cluster up: $(sinfo -h -o '%P %D %T %c CPUs')"

jobs_dir="${SLURM_TEST_DIR}/jobs"
# An MPI program if there is a compiler for one, else `hostname` per task.
program=(hostname)
if command -v mpicc >/dev/null 2>&1; then
  cat >"${jobs_dir}/hello_mpi.c" <<'EOF'
#include <mpi.h>
#include <stdio.h>
int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0, one = 1, sum = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  printf("hello from rank %d of %d, allreduce sum %d\n", rank, size, sum);
  MPI_Finalize();
  return 0;
}
EOF
  mpicc -o "${jobs_dir}/hello_mpi" "${jobs_dir}/hello_mpi.c" || t_fail "mpicc failed"
  program=("${jobs_dir}/hello_mpi")
fi

T_JOB_LOG="${jobs_dir}/hello.out"
job_id=$(sbatch --parsable --ntasks=2 --time=2 --output="${T_JOB_LOG}" \
  --wrap="srun --mpi=pmix ${program[*]}") || t_fail "sbatch failed"
t_expect_job "${job_id}" COMPLETED 60
if [[ "${program[0]}" == hostname ]]; then
  (($(grep -c . "${T_JOB_LOG}") == 2)) || t_fail "want 2 lines of hostname output"
else
  for rank in 0 1; do
    grep -q "hello from rank ${rank} of 2, allreduce sum 2" "${T_JOB_LOG}" ||
      t_fail "rank ${rank} of 2 did not report the all-reduce"
  done
fi
t_ok "2-task srun --mpi=pmix job ${job_id} completed:"
sed 's/^/    /' "${T_JOB_LOG}"
slurm_cluster_wait_idle 30 || t_fail "the node did not return to idle"
t_ok "node idle again"
