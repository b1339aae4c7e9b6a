#!/usr/bin/env bash
# Stand-in for `difftrain train` that tests the job scripts' plumbing (arguments, threads,
# signals, requeue, resume) in seconds and without the real trainer. It is not MPI: every
# rank runs the same fixed-length steps, and rank 0 alone writes checkpoints.
#   fake_difftrain.sh train --config FILE --run-dir DIR [--set train.steps=N] [--set k=v ...]
# Like the real trainer: SIGTERM or SIGUSR1 -> checkpoint at the next step, log it, exit 0;
# an existing run dir resumes from the checkpoint that DIR/checkpoints/LATEST names; the same
# file layout (checkpoints/step-NNNNNNNNN.ckpt, samples/step-NNNNNNNNN.png) and log lines.
# FAKE_STEP_S sets the seconds per step (default 0.2).
set -uo pipefail

rank=${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-${SLURM_PROCID:-0}}}
world_size=${OMPI_COMM_WORLD_SIZE:-${SLURM_NTASKS:-1}}
log() { echo "[rank ${rank}/${world_size}] $*"; }

[[ "${1:-}" == train ]] || {
  log "error: fake trainer knows only 'train', got '${1:-}'"
  exit 2
}
shift
run_dir='' config='' steps=20 threads=auto
while (($#)); do
  case "$1" in
    --config)
      config=$2
      shift 2
      ;;
    --run-dir)
      run_dir=$2
      shift 2
      ;;
    --set)
      case "$2" in
        train.steps=*) steps=${2#train.steps=} ;;
        train.threads=*) threads=${2#train.threads=} ;;
      esac
      shift 2
      ;;
    *)
      log "error: unknown argument '$1'"
      exit 2
      ;;
  esac
done
[[ -n "${run_dir}" && -r "${config}" ]] || {
  log "error: need --run-dir and a readable --config"
  exit 2
}

stop_signal=
trap 'stop_signal=USR1' USR1
trap 'stop_signal=TERM' TERM

# write_checkpoint STEP: rank 0 writes the checkpoint file, then points LATEST at it. Shell
# built-ins only: the launchers signal every process of a rank, and an external `mv` killed
# halfway would lose the checkpoint (the real trainer is one process with a handler).
write_checkpoint() {
  ((rank == 0)) || return 0
  local name
  printf -v name 'step-%09d.ckpt' "$1"
  echo "step=$1" >"${run_dir}/checkpoints/${name}"
  echo "${name}" >"${run_dir}/checkpoints/LATEST"
  log "checkpoint ${run_dir}/checkpoints/${name} written"
}

mkdir -p "${run_dir}/checkpoints" "${run_dir}/samples"
step=0
if [[ -r "${run_dir}/checkpoints/LATEST" ]]; then
  checkpoint="${run_dir}/checkpoints/$(<"${run_dir}/checkpoints/LATEST")"
  read -r step <"${checkpoint}"
  step=${step#step=}
  log "resumed from ${checkpoint} at step ${step}"
else
  log "fresh run"
fi
log "threads=${threads} OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset} CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset} steps=${steps}"

while ((step < steps)); do
  if [[ -n "${stop_signal}" ]]; then
    write_checkpoint "${step}"
    log "SIG${stop_signal}: checkpoint at step ${step} written; exiting"
    exit 0
  fi
  # A signal cuts the sleep short (the launchers signal every process of a rank); the step
  # still counts, as a real step in flight would.
  sleep "${FAKE_STEP_S:-0.2}" || true
  step=$((step + 1))
  log "step ${step}/${steps} (fake)"
done
write_checkpoint "${step}"
if ((rank == 0)); then
  printf 'not a real PNG\n' >"${run_dir}/samples/$(printf 'step-%09d.png' "${step}")"
fi
log "done: final step ${step}"
