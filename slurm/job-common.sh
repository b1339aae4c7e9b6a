# shellcheck shell=bash
# Shared body of slurm/train-gpu.sbatch and slurm/train-cpu.sbatch: settings from the
# environment, a job header in the log, the training step run under signal handling, and
# the self-requeue that turns a time-limit warning into "checkpoint, requeue, resume".
# Sourced by the sbatch scripts after their "inside Slurm?" guard; not run on its own.

# dt_log MSG...: one job-log line; the prefix tells script lines from the trainer's [rank r/N].
dt_log() { echo "[difftrain-slurm $(date -u +%Y-%m-%dT%H:%M:%SZ)] $*"; }

# dt_die MSG...: report a setup error (found before any rank starts) and exit 2.
dt_die() {
  dt_log "error: $*" >&2
  exit 2
}

# dt_resolve_settings: read the DIFFTRAIN_* knobs (documented in slurm/README.md), apply
# defaults, check what can be checked before launching, and fill DT_TRAIN_CMD.
dt_resolve_settings() {
  DIFFTRAIN_BIN=${DIFFTRAIN_BIN:-${DIFFTRAIN_HOME}/build/trainer/difftrain}
  DIFFTRAIN_CONFIG=${DIFFTRAIN_CONFIG:-${DIFFTRAIN_HOME}/configs/fmnist-tiny.yaml}
  # The job id survives requeues, so every restart of this job finds the same run dir.
  DIFFTRAIN_RUN_DIR=${DIFFTRAIN_RUN_DIR:-${DIFFTRAIN_HOME}/runs/${SLURM_JOB_NAME:-difftrain}-${SLURM_JOB_ID}}
  DIFFTRAIN_MAX_RESTARTS=${DIFFTRAIN_MAX_RESTARTS:-20}
  # One rank per task; its intra-op threads are the CPUs Slurm gave that task.
  DT_THREADS_PER_RANK=${SLURM_CPUS_PER_TASK:-1}
  export OMP_NUM_THREADS=${DT_THREADS_PER_RANK}

  [[ -x "${DIFFTRAIN_BIN}" ]] ||
    dt_die "DIFFTRAIN_BIN=${DIFFTRAIN_BIN} is not an executable (build it, or set DIFFTRAIN_BIN / DIFFTRAIN_HOME)"
  [[ -r "${DIFFTRAIN_CONFIG}" ]] ||
    dt_die "DIFFTRAIN_CONFIG=${DIFFTRAIN_CONFIG} is not a readable file"
  [[ "${DIFFTRAIN_MAX_RESTARTS}" =~ ^[0-9]+$ ]] ||
    dt_die "DIFFTRAIN_MAX_RESTARTS=${DIFFTRAIN_MAX_RESTARTS} is not a whole number"

  local extra_args=()
  # Whitespace-separated on purpose: the variable has to survive sbatch's environment export.
  read -r -a extra_args <<<"${DIFFTRAIN_EXTRA_ARGS:-}"
  DT_TRAIN_CMD=("${DIFFTRAIN_BIN}" train --config "${DIFFTRAIN_CONFIG}" --run-dir "${DIFFTRAIN_RUN_DIR}"
    --set "train.threads=${DT_THREADS_PER_RANK}")
  if [[ -n "${DIFFTRAIN_DATA_DIR:-}" ]]; then
    DT_TRAIN_CMD+=(--set "data.dir=${DIFFTRAIN_DATA_DIR}")
  fi
  # Last, so that a key given here overrides the ones above.
  DT_TRAIN_CMD+=("${extra_args[@]}")
}

# dt_log_header: what this start of the job is, so a requeued job's appended log reads as a
# sequence of attempts.
dt_log_header() {
  local restarts=${SLURM_RESTART_COUNT:-0}
  dt_log "job ${SLURM_JOB_ID} (${SLURM_JOB_NAME:-}) start; SLURM_RESTART_COUNT=${restarts}" \
    "(max ${DIFFTRAIN_MAX_RESTARTS}) on ${SLURM_JOB_NODELIST:-?}"
  dt_log "ranks: ${SLURM_NTASKS:-?} on ${SLURM_JOB_NUM_NODES:-?} node(s)," \
    "${SLURM_NTASKS_PER_NODE:-?} per node, ${DT_THREADS_PER_RANK} thread(s) per rank"
  local latest="${DIFFTRAIN_RUN_DIR}/checkpoints/LATEST"
  if [[ -e "${latest}" ]]; then
    dt_log "run dir ${DIFFTRAIN_RUN_DIR} has checkpoint $(head -c 200 "${latest}"): the trainer resumes from it"
  else
    dt_log "run dir ${DIFFTRAIN_RUN_DIR} has no checkpoint yet: starting fresh"
  fi
  dt_log "command: ${DT_TRAIN_CMD[*]}"
}

# _dt_on_signal SIG: the batch shell received SIG.
# USR1 is our time-limit warning, and --signal=B:USR1@T sends it to this shell alone: pass it
# to srun, which forwards it to every rank, and remember to requeue afterwards.
# TERM means Slurm itself is ending the job (scancel, preemption, scontrol requeue) and has
# sent TERM to every rank as well: only remember it; a second signal on top could hit a rank
# (or its helper processes) in the middle of writing the checkpoint.
_dt_on_signal() {
  case "$1" in
    USR1)
      DT_GOT_USR1=1
      dt_log "SIGUSR1: time limit near; asking the ranks to checkpoint and stop"
      if [[ -n "${DT_STEP_PID:-}" ]]; then
        kill -USR1 "${DT_STEP_PID}" 2>/dev/null || true
      fi
      ;;
    TERM)
      DT_GOT_TERM=1
      dt_log "SIGTERM: Slurm is ending this job; the ranks checkpoint on their own SIGTERM"
      ;;
  esac
}

# dt_install_traps: catch USR1 and TERM from here on. Called first thing, so a signal that
# comes before the ranks start is recorded instead of killing the batch shell.
dt_install_traps() {
  DT_GOT_USR1=0
  DT_GOT_TERM=0
  DT_STEP_PID=
  trap '_dt_on_signal USR1' USR1
  trap '_dt_on_signal TERM' TERM
}

# dt_run_step CMD...: run the srun command in the background (so that traps run while it
# does), wait for it, and set DT_STEP_RC to its exit status. A signal already received means
# the job is ending: the ranks are not started at all.
dt_run_step() {
  DT_STEP_RC=0
  if ((DT_GOT_USR1 || DT_GOT_TERM)); then
    dt_log "signalled before the ranks started; not starting them"
    return 0
  fi
  "$@" &
  DT_STEP_PID=$!
  # A trapped signal interrupts `wait`; keep waiting until the step has really ended, then
  # take its status (bash keeps the status of a reaped background child).
  while kill -0 "${DT_STEP_PID}" 2>/dev/null; do
    wait "${DT_STEP_PID}" || true
  done
  wait "${DT_STEP_PID}" || DT_STEP_RC=$?
}

# dt_finish: decide how this start of the job ends: failure, stop, requeue or done.
dt_finish() {
  local restarts=${SLURM_RESTART_COUNT:-0}
  if ((DT_GOT_TERM)); then
    # Slurm requeues a preempted or `scontrol requeue`d job by itself (--requeue); a
    # cancelled job stays cancelled. Requeueing here would undo a user's scancel.
    dt_log "ranks stopped (exit status ${DT_STEP_RC}) after SIGTERM; leaving requeue to Slurm"
    exit "${DT_STEP_RC}"
  fi
  if ((DT_STEP_RC != 0)); then
    dt_log "training step failed with exit status ${DT_STEP_RC}; not requeueing"
    exit "${DT_STEP_RC}"
  fi
  if ((DT_GOT_USR1)); then
    if ((restarts >= DIFFTRAIN_MAX_RESTARTS)); then
      dt_log "error: checkpointed, but SLURM_RESTART_COUNT=${restarts} reached DIFFTRAIN_MAX_RESTARTS; not requeueing"
      exit 1
    fi
    dt_log "checkpointed before the time limit; requeueing job ${SLURM_JOB_ID} (restart $((restarts + 1)))"
    if ! scontrol requeue "${SLURM_JOB_ID}"; then
      dt_log "error: scontrol requeue ${SLURM_JOB_ID} failed; resubmit with the same DIFFTRAIN_RUN_DIR to resume"
      exit 1
    fi
    exit 0
  fi
  dt_log "training finished"
  exit 0
}
