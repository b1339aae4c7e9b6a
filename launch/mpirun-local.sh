#!/usr/bin/env bash
# Run N MPI ranks of a program on this machine with the flags this project needs: no core
# binding, explicit threads per rank, oversubscription when N exceeds the cores, and a
# Ctrl-C / SIGTERM that asks the ranks to checkpoint instead of killing them.
#
#   launch/mpirun-local.sh [-n N] [--] PROGRAM [ARGS...]
#   launch/mpirun-local.sh -n 2 build/trainer/difftrain train --config configs/fmnist-tiny.yaml
#
# Threads per rank = cores / N (at least 1), or DIFFTRAIN_THREADS; it reaches the ranks as
# OMP_NUM_THREADS and, for `difftrain train` without its own train.threads, as
# `--set train.threads=T`. Extra mpirun flags: DIFFTRAIN_MPIRUN_ARGS (whitespace-separated).
# Signals: the first INT, TERM or USR1 is passed to the ranks as SIGUSR1 (checkpoint, then
# exit 0); a second INT or TERM stops mpirun at once. Exit status: mpirun's.
set -euo pipefail

usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

ranks=${DIFFTRAIN_RANKS:-2}
while (($#)); do
  case "$1" in
    -n | -np)
      ranks=${2:?-n needs a rank count}
      shift 2
      ;;
    -h | --help) usage 0 ;;
    --)
      shift
      break
      ;;
    -*)
      echo "mpirun-local: unknown option '$1'" >&2
      usage
      ;;
    *) break ;;
  esac
done
(($#)) || usage
[[ "${ranks}" =~ ^[1-9][0-9]*$ ]] || {
  echo "mpirun-local: rank count '${ranks}' is not a positive number" >&2
  exit 2
}

cores=$(nproc)
threads=${DIFFTRAIN_THREADS:-$((cores / ranks))}
((threads >= 1)) || threads=1
export OMP_NUM_THREADS=${threads}

mpirun_args=(-np "${ranks}" --bind-to none -x OMP_NUM_THREADS)
# Open MPI refuses more ranks than cores unless told; fine for tests and demos.
if ((ranks > cores)); then
  mpirun_args+=(--oversubscribe)
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

echo "[mpirun-local] ${ranks} rank(s) x ${threads} thread(s) on ${cores} core(s)" >&2

signals_seen=0
mpirun_pid=
# shellcheck disable=SC2317  # called from the traps below
on_signal() {
  signals_seen=$((signals_seen + 1))
  [[ -n "${mpirun_pid}" ]] || return 0
  if ((signals_seen == 1)) || [[ "$1" == USR1 ]]; then
    echo "[mpirun-local] SIG$1: asking the ranks to checkpoint and stop (again to stop at once)" >&2
    # mpirun passes USR1 on to every rank; a TERM would make it kill them.
    kill -USR1 "${mpirun_pid}" 2>/dev/null || true
  else
    echo "[mpirun-local] SIG$1 again: stopping mpirun now" >&2
    kill -TERM "${mpirun_pid}" 2>/dev/null || true
  fi
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal USR1' USR1

# Its own session, so a terminal's Ctrl-C reaches only this script, which decides what the
# ranks get; stdin is not passed on (ranks read none).
setsid mpirun "${mpirun_args[@]}" "${program_args[@]}" </dev/null &
mpirun_pid=$!
while kill -0 "${mpirun_pid}" 2>/dev/null; do
  wait "${mpirun_pid}" || true
done
rc=0
wait "${mpirun_pid}" || rc=$?
exit "${rc}"
