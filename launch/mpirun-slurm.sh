#!/usr/bin/env bash
# Run a program with mpirun inside a Slurm allocation (salloc, or as an sbatch script), one
# rank per Slurm task, and turn Slurm's time-limit warning into a checkpoint request.
#
#   salloc -n 4 -c 8 launch/mpirun-slurm.sh build/trainer/difftrain train --config C --run-dir D
#   sbatch -n 4 -c 8 --time=2:00:00 --signal=B:USR1@300 launch/mpirun-slurm.sh PROGRAM [ARGS...]
#
# Ranks = SLURM_NTASKS; threads per rank = SLURM_CPUS_PER_TASK (default 1), passed as
# OMP_NUM_THREADS and, for `difftrain train` without its own train.threads, as
# `--set train.threads=T`. Extra mpirun flags: DIFFTRAIN_MPIRUN_ARGS (whitespace-separated).
# Signals: USR1 (use --signal=B:USR1@T: only this shell gets it) and TERM are passed to the
# ranks as SIGUSR1, which mpirun forwards and the trainer answers with a checkpoint and exit 0
# (mpirun would kill the ranks on TERM). A TERM that Slurm sends to the whole job also reaches
# mpirun itself, which then kills the ranks: for graceful preemption and automatic requeue use
# slurm/train-*.sbatch (srun), described in slurm/README.md. Exit status: mpirun's.
set -euo pipefail

if [[ -z "${SLURM_JOB_ID:-}" ]]; then
  echo "mpirun-slurm: not inside a Slurm allocation; use salloc/sbatch (or launch/mpirun-local.sh)" >&2
  exit 2
fi
if (($# == 0)) || [[ "$1" == -h || "$1" == --help ]]; then
  echo "usage: [salloc|sbatch] ... $0 PROGRAM [ARGS...]" >&2
  exit 2
fi

threads=${SLURM_CPUS_PER_TASK:-1}
export OMP_NUM_THREADS=${threads}

# Open MPI reads the allocation (nodes, slots) from Slurm and starts its daemons with srun.
mpirun_args=(--bind-to none -x OMP_NUM_THREADS)
if [[ -n "${SLURM_NTASKS:-}" ]]; then
  mpirun_args+=(-np "${SLURM_NTASKS}")
fi
# Open MPI refuses to run as root without both variables (containers, CI).
if (($(id -u) == 0)); then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
read -r -a extra_mpirun_args <<<"${DIFFTRAIN_MPIRUN_ARGS:-}"
mpirun_args+=("${extra_mpirun_args[@]}")

program_args=("$@")
if [[ "${2:-}" == train && "$*" != *train.threads=* ]]; then
  program_args+=(--set "train.threads=${threads}")
fi

log() { echo "[mpirun-slurm $(date -u +%H:%M:%S)] $*" >&2; }
log "job ${SLURM_JOB_ID}: ${SLURM_NTASKS:-all slots} rank(s) x ${threads} thread(s)" \
  "on ${SLURM_JOB_NODELIST:-?}; SLURM_RESTART_COUNT=${SLURM_RESTART_COUNT:-0}"

mpirun_pid=
# shellcheck disable=SC2317  # called from the traps below
forward() {
  log "SIG$1: asking the ranks to checkpoint and stop"
  if [[ -n "${mpirun_pid}" ]]; then
    kill -USR1 "${mpirun_pid}" 2>/dev/null || true
  fi
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM

mpirun "${mpirun_args[@]}" "${program_args[@]}" </dev/null &
mpirun_pid=$!
# A trapped signal interrupts `wait`; wait again until mpirun has really ended.
while kill -0 "${mpirun_pid}" 2>/dev/null; do
  wait "${mpirun_pid}" || true
done
rc=0
wait "${mpirun_pid}" || rc=$?
log "mpirun exited with status ${rc}"
exit "${rc}"
