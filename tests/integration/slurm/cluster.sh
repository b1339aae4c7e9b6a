#!/usr/bin/env bash
# A private single-node Slurm cluster for integration tests: its own munged, slurmctld and
# slurmd, with a private slurm.conf, ports, state, spool and logs under one temporary folder.
# It stops only the processes it started (recorded PIDs, checked against their command line).
#
# Use from a test (sourced):
#   source tests/integration/slurm/cluster.sh
#   slurm_cluster_require || exit 77            # prints why and returns 1 when Slurm is missing
#   slurm_cluster_start                          # exports SLURM_CONF, SLURM_TEST_DIR; traps EXIT
#   sbatch ... ; slurm_cluster_wait_job JOBID 120
# or by hand (the cluster outlives the command; stop it yourself):
#   tests/integration/slurm/cluster.sh start [DIR]   # prints `export SLURM_CONF=...` lines
#   tests/integration/slurm/cluster.sh env DIR
#   tests/integration/slurm/cluster.sh stop DIR
#
# Knobs (environment): SLURM_TEST_CRED_EXPIRE_S (seconds; a requeued job waits about this long
# before it starts again, default 5), SLURM_TEST_KILL_WAIT_S (TERM-to-KILL grace, default 30),
# SLURM_TEST_GPUS (N > 0 declares N stand-in GPUs, character devices equal to /dev/null, so
# that GPU job scripts can be scheduled and run here; default 0).

# Binaries the cluster needs; a test skips (exit 77) when one is missing.
readonly _SLURM_CLUSTER_TOOLS=(munged mungekey slurmctld slurmd sbatch srun squeue sinfo scontrol scancel)

# slurm_cluster_require: return 0 when every daemon and client is installed, else print the
# first missing one (as a skip message) and return 1.
slurm_cluster_require() {
  local tool
  for tool in "${_SLURM_CLUSTER_TOOLS[@]}"; do
    if ! command -v "${tool}" >/dev/null 2>&1; then
      echo "skipped: '${tool}' not found; install slurm-wlm and munge to run the Slurm tests"
      return 1
    fi
  done
  # slurmd starts job steps as the submitting user, which needs root.
  if [[ "$(id -u)" != 0 ]]; then
    echo "skipped: the private Slurm cluster needs root (slurmd switches to the job's user)"
    return 1
  fi
}

_slurm_log() { echo "[slurm-cluster] $*" >&2; }

# _slurm_free_port: print a TCP port that nothing listens on now (private ports keep this
# cluster apart from any other Slurm, real or test, on the same machine).
_slurm_free_port() {
  local port tries
  for tries in $(seq 1 50); do
    port=$((20000 + RANDOM % 20000))
    # A connection that succeeds means a listener; bash's /dev/tcp needs no extra tools.
    if ! (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
      echo "${port}"
      return 0
    fi
  done
  _slurm_log "no free TCP port found after ${tries} tries"
  return 1
}

# _slurm_spawn NAME CMD...: start CMD in the background, detached from the terminal's signals,
# output to NAME.out, and record its PID in NAME.pid.
_slurm_spawn() {
  local name=$1
  shift
  setsid "$@" >"${SLURM_TEST_DIR}/log/${name}.out" 2>&1 </dev/null &
  echo $! >"${SLURM_TEST_DIR}/${name}.pid"
}

# _slurm_pid_is NAME: print the PID of daemon NAME if it is still running: the PID recorded at
# spawn time or the one the daemon wrote to its own pid file, whichever is a live process of
# that name (so a recycled PID is never signalled).
_slurm_pid_is() {
  local name=$1 pid_file pid exe
  for pid_file in "${SLURM_TEST_DIR}/${name}.pid" "${SLURM_TEST_DIR}/run/${name}.pid" \
    "${SLURM_TEST_DIR}/munge/${name}.pid"; do
    [[ -r "${pid_file}" ]] || continue
    pid=$(<"${pid_file}")
    [[ "${pid}" =~ ^[0-9]+$ ]] || continue
    exe=$(tr '\0' ' ' 2>/dev/null <"/proc/${pid}/cmdline") || continue
    if [[ "${exe}" == *"${name}"* ]]; then
      echo "${pid}"
      return 0
    fi
  done
  return 1
}

# _slurm_write_conf: write slurm.conf for one node that matches `slurmd -C` on this machine.
_slurm_write_conf() {
  local node_line node host user gres_line=
  node_line=$(slurmd -C | head -n 1)
  host=$(hostname -s)
  # `slurmd -C` names the node after the host; keep its CPU/memory layout as the node line.
  node=${node_line#NodeName=* }
  user=$(id -un)
  local gpus=${SLURM_TEST_GPUS:-0}
  if ((gpus > 0)); then
    gres_line="Gres=gpu:${gpus}"
    # gres/gpu wants one character device per GPU; copies of /dev/null (1,3) stand in.
    mkdir -p "${SLURM_TEST_DIR}/dev"
    local gpu
    for ((gpu = 0; gpu < gpus; gpu++)); do
      mknod "${SLURM_TEST_DIR}/dev/nvidia${gpu}" c 1 3 || return 1
    done
    echo "Name=gpu File=${SLURM_TEST_DIR}/dev/nvidia[0-$((gpus - 1))]" >"${SLURM_TEST_DIR}/gres.conf"
  fi
  cat >"${SLURM_TEST_DIR}/slurm.conf" <<EOF
# Private test cluster written by tests/integration/slurm/cluster.sh.
ClusterName=difftrain-test
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${SLURM_TEST_CTLD_PORT}
SlurmdPort=${SLURM_TEST_SLURMD_PORT}
SlurmUser=${user}
SlurmdUser=${user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${SLURM_TEST_DIR}/munge/munge.socket,cred_expire=${SLURM_TEST_CRED_EXPIRE_S:-5}
StateSaveLocation=${SLURM_TEST_DIR}/state
SlurmdSpoolDir=${SLURM_TEST_DIR}/spool
# PMIx puts per-step folders (named by job and step id only) under TmpFS: keep them private
# so that two test clusters running job 1 at once do not collide.
TmpFS=${SLURM_TEST_DIR}/tmp
SlurmctldPidFile=${SLURM_TEST_DIR}/run/slurmctld.pid
SlurmdPidFile=${SLURM_TEST_DIR}/run/slurmd.pid
SlurmctldLogFile=${SLURM_TEST_DIR}/log/slurmctld.log
SlurmdLogFile=${SLURM_TEST_DIR}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=${SLURM_TEST_DIR}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
# Finished jobs stay visible to scontrol show job for the length of any test.
MinJobAge=600
KillWait=${SLURM_TEST_KILL_WAIT_S:-30}
# A short scheduling period so a requeued job starts again within seconds, not a minute.
SchedulerParameters=sched_interval=2,bf_interval=2
JobRequeue=1
GresTypes=gpu
NodeName=${host} NodeAddr=127.0.0.1 ${node} ${gres_line} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  : >"${SLURM_TEST_DIR}/plugstack.conf"
}

# slurm_cluster_wait_idle TIMEOUT_S: wait until the node reports idle.
slurm_cluster_wait_idle() {
  local timeout_s=${1:-60} waited_s=0 state
  while ((waited_s < timeout_s)); do
    state=$(sinfo -h -o '%T' 2>/dev/null | head -n 1)
    [[ "${state}" == "idle" ]] && return 0
    sleep 1
    waited_s=$((waited_s + 1))
  done
  _slurm_log "node not idle after ${timeout_s}s (state '${state}'); slurmctld log tail:"
  tail -n 20 "${SLURM_TEST_DIR}/log/slurmctld.log" >&2
  tail -n 20 "${SLURM_TEST_DIR}/log/slurmd.log" >&2
  return 1
}

# Starts a munged with a fresh private key under SLURM_TEST_DIR and waits for its socket.
_slurm_start_munged() {
  mungekey --create --keyfile="${SLURM_TEST_DIR}/munge-key/munge.key" || return 1
  _slurm_spawn munged munged --foreground \
    --socket="${SLURM_TEST_DIR}/munge/munge.socket" \
    --key-file="${SLURM_TEST_DIR}/munge-key/munge.key" \
    --pid-file="${SLURM_TEST_DIR}/munge/munged.pid" \
    --seed-file="${SLURM_TEST_DIR}/munge/munged.seed" \
    --log-file="${SLURM_TEST_DIR}/log/munged.log"
  for _ in $(seq 1 50); do
    [[ -S "${SLURM_TEST_DIR}/munge/munge.socket" ]] && return 0
    sleep 0.1
  done
  _slurm_log "munged did not create its socket; see ${SLURM_TEST_DIR}/log/munged.out"
  return 1
}

# slurm_cluster_start [DIR]: start munged, slurmctld and slurmd under DIR (default: a new
# temporary folder), wait until the node is idle, and export SLURM_CONF and SLURM_TEST_DIR.
# Installs an EXIT trap that stops the cluster unless SLURM_TEST_KEEP=1 or called with
# SLURM_TEST_NO_TRAP=1 (the `start` subcommand).
slurm_cluster_start() {
  SLURM_TEST_DIR=${1:-$(mktemp -d "${TMPDIR:-/tmp}/difftrain-slurm.XXXXXX")}
  export SLURM_TEST_DIR
  mkdir -p "${SLURM_TEST_DIR}"/{munge,munge-key,state,spool,run,log,jobs,tmp}
  # Daemons and job steps read files here; the tree must be traversable by the job user.
  chmod 755 "${SLURM_TEST_DIR}"
  chmod 700 "${SLURM_TEST_DIR}/munge-key"
  if [[ "${SLURM_TEST_NO_TRAP:-0}" != 1 ]]; then
    trap slurm_cluster_stop EXIT
  fi

  SLURM_TEST_CTLD_PORT=$(_slurm_free_port) || return 1
  SLURM_TEST_SLURMD_PORT=$(_slurm_free_port) || return 1
  while [[ "${SLURM_TEST_SLURMD_PORT}" == "${SLURM_TEST_CTLD_PORT}" ]]; do
    SLURM_TEST_SLURMD_PORT=$(_slurm_free_port) || return 1
  done

  # Munge: a private key and socket, so the machine's own munged (if any) is never touched.
  _slurm_start_munged || return 1

  _slurm_write_conf || return 1
  export SLURM_CONF="${SLURM_TEST_DIR}/slurm.conf"
  # -D keeps each daemon in the foreground so the PID we record is the daemon itself.
  _slurm_spawn slurmctld slurmctld -D -c -f "${SLURM_CONF}"
  _slurm_spawn slurmd slurmd -D -f "${SLURM_CONF}"
  _slurm_log "started in ${SLURM_TEST_DIR} (slurmctld port ${SLURM_TEST_CTLD_PORT}, slurmd port ${SLURM_TEST_SLURMD_PORT})"
  slurm_cluster_wait_idle 60
}

# slurm_cluster_env: print the shell lines that point Slurm clients at this cluster.
slurm_cluster_env() {
  echo "export SLURM_TEST_DIR='${SLURM_TEST_DIR}'"
  echo "export SLURM_CONF='${SLURM_TEST_DIR}/slurm.conf'"
}

# _slurm_stop_pid NAME: TERM the recorded daemon, wait up to 10 s, then KILL it.
_slurm_stop_pid() {
  local name=$1 pid tries
  pid=$(_slurm_pid_is "${name}") || return 0
  kill -TERM "${pid}" 2>/dev/null
  for tries in $(seq 1 100); do
    _slurm_pid_is "${name}" >/dev/null || return 0
    sleep 0.1
  done
  _slurm_log "${name} (pid ${pid}) ignored TERM for 10 s; killing it"
  kill -KILL "${pid}" 2>/dev/null
}

# slurm_cluster_stop: cancel this cluster's jobs (all of them are ours: the cluster is
# private), wait for their steps to end, then stop slurmd, slurmctld and munged.
slurm_cluster_stop() {
  local rc=$?
  [[ -n "${SLURM_TEST_DIR:-}" && -d "${SLURM_TEST_DIR}" ]] || return "${rc}"
  if [[ "${SLURM_TEST_KEEP:-0}" == 1 ]]; then
    _slurm_log "SLURM_TEST_KEEP=1: leaving the cluster in ${SLURM_TEST_DIR} running"
    return "${rc}"
  fi
  if _slurm_pid_is slurmctld >/dev/null; then
    scancel --quiet --full --signal=KILL --state=RUNNING "--user=$(id -un)" 2>/dev/null
    scancel --quiet "--user=$(id -un)" 2>/dev/null
    local waited_s
    for waited_s in $(seq 1 30); do
      [[ -z "$(squeue -h -t RUNNING,COMPLETING,CONFIGURING -o %i 2>/dev/null)" ]] && break
      sleep 1
    done
  fi
  _slurm_stop_pid slurmd
  _slurm_stop_pid slurmctld
  _slurm_stop_pid munged
  # A step daemon still listening in our spool folder means a job outlived the cancel.
  if compgen -G "${SLURM_TEST_DIR}/spool/$(hostname -s)_[0-9]*" >/dev/null; then
    _slurm_log "warning: job step sockets left in ${SLURM_TEST_DIR}/spool"
  fi
  if [[ "${rc}" != 0 && "${rc}" != 77 ]]; then
    _slurm_log "exit ${rc}: keeping ${SLURM_TEST_DIR} for inspection (daemon logs in log/)"
  else
    rm -rf "${SLURM_TEST_DIR}"
  fi
  SLURM_TEST_DIR=
  return "${rc}"
}

# slurm_cluster_job_state JOBID: print the job's state (PENDING, RUNNING, COMPLETED, ...).
slurm_cluster_job_state() {
  scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' | head -n 1
}

# slurm_cluster_job_field JOBID FIELD: print one `scontrol show job` field (e.g. Restarts).
slurm_cluster_job_field() {
  scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}

# slurm_cluster_wait_job JOBID TIMEOUT_S: wait until the job has finished for good (a requeue
# is not an end); print its final state; return 1 on timeout.
slurm_cluster_wait_job() {
  local job_id=$1 timeout_s=$2 start_s=${SECONDS} state
  while ((SECONDS - start_s < timeout_s)); do
    state=$(slurm_cluster_job_state "${job_id}")
    case "${state}" in
      COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE | PREEMPTED)
        echo "${state}"
        return 0
        ;;
    esac
    sleep 1
  done
  echo "${state:-UNKNOWN}"
  _slurm_log "job ${job_id} still ${state:-unknown} after ${timeout_s}s"
  return 1
}

# Subcommands when executed rather than sourced.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -uo pipefail
  case "${1:-}" in
    start)
      slurm_cluster_require || exit 77
      SLURM_TEST_NO_TRAP=1 slurm_cluster_start "${2:-}" || {
        SLURM_TEST_DIR=${SLURM_TEST_DIR:-} slurm_cluster_stop
        exit 1
      }
      slurm_cluster_env
      ;;
    env)
      SLURM_TEST_DIR=${2:?usage: cluster.sh env DIR}
      slurm_cluster_env
      ;;
    stop)
      SLURM_TEST_DIR=${2:?usage: cluster.sh stop DIR}
      export SLURM_CONF="${SLURM_TEST_DIR}/slurm.conf"
      slurm_cluster_stop
      ;;
    *)
      echo "usage: $0 start [DIR] | env DIR | stop DIR" >&2
      exit 2
      ;;
  esac
fi
