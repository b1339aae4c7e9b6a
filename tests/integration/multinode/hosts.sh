# shellcheck shell=bash
# Several "hosts" on this one machine for multi-node tests: each host is a network, UTS and
# mount namespace of its own (own address on a bridge, own hostname, own node-local folder),
# and Open MPI starts its daemons there through an rsh agent that enters the host's namespaces
# (no sshd needed). Ranks on different hosts can then only talk over TCP on the bridge.
#
# The whole test runs inside a private "site": new network, mount, PID and UTS namespaces
# (mn_enter_site re-executes the test there). The bridge, the hosts and every daemon live in
# that site, so the machine's own network, /etc/hosts and processes are never touched, two
# tests never collide, and the kernel removes everything when the test ends, even on SIGKILL.
#
# Use from a test (sourced):
#   source tests/integration/multinode/hosts.sh
#   mn_enter_site "$@"          # re-executes this script in the site; exit 77 where the
#                               # machine forbids namespaces (the reason is printed)
#   mn_hosts_start 2            # hosts node1 (10.77.0.2) and node2 (10.77.0.3); EXIT trap
#   mn_mpi_env                  # OMPI_MCA_* so that `mpirun --host node1:2,node2:2` works
#   mn_exec node2 CMD...        # run CMD on node2 (its network, hostname and mounts)
#   mn_host_pids node2          # PIDs of the processes on node2 (its holder excluded)
#   mn_link node2 down          # pull node2's cable (and `up` to plug it in again)
# The site itself is host "login" (10.77.0.1): mpirun, Prometheus and slurmctld run there.
#
# Knobs: MN_KEEP=1 keeps the work folder (MN_DIR) after the test.

readonly MN_SUBNET_PREFIX=10.77.0
readonly MN_SUBNET=${MN_SUBNET_PREFIX}.0/24
readonly MN_LOGIN_HOST=login
readonly MN_LOGIN_ADDR=${MN_SUBNET_PREFIX}.1
readonly MN_BRIDGE=mnbr0
MN_HOSTS=()

_mn_log() { echo "[multinode] $*" >&2; }

# mn_enter_site ARGS...: when not yet inside the site, check that namespaces work here and
# re-execute the calling script inside a new one (the script's process is replaced); exit 77
# with the reason when this machine forbids them. Inside the site: bring up loopback, name the
# site "login", and return.
mn_enter_site() {
  if [[ "${MN_IN_SITE:-0}" == 1 ]]; then
    ip link set lo up || return 1
    hostname "${MN_LOGIN_HOST}" || return 1
    return 0
  fi
  local tool
  for tool in unshare nsenter ip mount; do
    if ! command -v "${tool}" >/dev/null 2>&1; then
      echo "skipped: '${tool}' not found (install util-linux and iproute2)"
      exit 77
    fi
  done
  if [[ "$(id -u)" != 0 ]]; then
    echo "skipped: multi-node tests need root to make network namespaces, veth pairs and a bridge"
    exit 77
  fi
  local why
  if ! why=$(unshare --net --uts --mount --pid --fork true 2>&1); then
    echo "skipped: this machine forbids namespaces (unshare --net --uts --mount --pid: ${why})"
    exit 77
  fi
  if ! why=$(unshare --net sh -c 'ip link add mnprobe0 type bridge &&
      ip link add mnprobe1 type veth peer name mnprobe2' 2>&1); then
    echo "skipped: no bridge or veth devices in a network namespace here (${why})"
    exit 77
  fi
  # --kill-child: the site's PID 1 (this script) dies with the launcher, and with it, by the
  # kernel's rule for PID namespaces, every process the test started.
  exec unshare --net --uts --mount --pid --fork --kill-child --mount-proc --propagation private \
    env MN_IN_SITE=1 bash "$0" "$@"
}

# mn_hosts_start N: make hosts node1..nodeN joined by a bridge, write /etc/hosts for the site
# (bind-mounted, so only the site sees it), write the rsh agent, and install an EXIT trap that
# removes them. Sets MN_DIR (work folder, shared by all hosts like a cluster file system) and
# MN_HOSTS (the names).
mn_hosts_start() {
  local count=$1 i name addr pid
  [[ "${MN_IN_SITE:-0}" == 1 ]] || {
    _mn_log "call mn_enter_site first"
    return 1
  }
  MN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-multinode.XXXXXX")
  export MN_DIR
  chmod 755 "${MN_DIR}"
  mkdir -p "${MN_DIR}"/{bin,hosts,node-local,log}
  trap mn_hosts_stop EXIT

  ip link add "${MN_BRIDGE}" type bridge || return 1
  ip addr add "${MN_LOGIN_ADDR}/24" dev "${MN_BRIDGE}" || return 1
  ip link set "${MN_BRIDGE}" up || return 1

  {
    echo "127.0.0.1 localhost"
    echo "${MN_LOGIN_ADDR} ${MN_LOGIN_HOST}"
    for ((i = 1; i <= count; i++)); do
      echo "${MN_SUBNET_PREFIX}.$((i + 1)) node${i}"
    done
  } >"${MN_DIR}/etc-hosts"
  mount --bind "${MN_DIR}/etc-hosts" /etc/hosts || return 1

  for ((i = 1; i <= count; i++)); do
    name=node${i}
    addr=${MN_SUBNET_PREFIX}.$((i + 1))
    # The holder keeps the host's namespaces alive; its node-local folder is a tmpfs that
    # only this host sees (at the same path on every host, like /tmp on real nodes).
    # shellcheck disable=SC2016  # $1 and $2 are the inner shell's
    unshare --net --uts --mount --propagation slave sh -c \
      'hostname "$1" && mount -t tmpfs -o size=64m,mode=755 "node-local-$1" "$2" && exec sleep infinity' \
      holder "${name}" "${MN_DIR}/node-local" &
    pid=$!
    # Not a job of this shell: no "Killed" notice when the stop below ends it.
    disown "${pid}"
    echo "${pid}" >"${MN_DIR}/hosts/${name}.pid"
    MN_HOSTS+=("${name}")
    # Wait until the holder is in its own namespaces with its hostname set.
    for _ in $(seq 1 50); do
      [[ "$(nsenter -t "${pid}" --uts hostname 2>/dev/null)" == "${name}" ]] &&
        [[ "$(readlink "/proc/${pid}/exe")" == */sleep ]] && break
      sleep 0.1
    done
    [[ "$(nsenter -t "${pid}" --uts hostname 2>/dev/null)" == "${name}" ]] || {
      _mn_log "host ${name}: holder ${pid} did not come up"
      return 1
    }
    ip link add "mnv${i}" type veth peer name "mnp${i}" || return 1
    ip link set "mnp${i}" netns "${pid}" || return 1
    ip link set "mnv${i}" master "${MN_BRIDGE}" up || return 1
    nsenter -t "${pid}" --net sh -c "ip link set lo up && ip link set mnp${i} name eth0 &&
      ip addr add ${addr}/24 dev eth0 && ip link set eth0 up" || return 1
  done
  _mn_write_agent
  # Every host answers on the bridge before a test relies on it.
  for name in "${MN_HOSTS[@]}"; do
    _mn_wait_reachable "${name}" || return 1
  done
  _mn_log "made ${count} hosts on bridge ${MN_BRIDGE} (${MN_LOGIN_HOST} ${MN_LOGIN_ADDR}):" \
    "$(for name in "${MN_HOSTS[@]}"; do printf '%s=%s(pid %s) ' "${name}" \
      "$(mn_host_addr "${name}")" "$(mn_host_pid "${name}")"; done)work folder ${MN_DIR}"
}

# _mn_wait_reachable HOST: wait up to 5 s until a TCP connection from the site to HOST's
# address gets an answer (a refusal counts: the address is up and routed).
_mn_wait_reachable() {
  local addr out
  addr=$(mn_host_addr "$1")
  for _ in $(seq 1 50); do
    out=$( (exec 3<>"/dev/tcp/${addr}/9") 2>&1) || true
    [[ "${out}" == *"refused"* || -z "${out}" ]] && return 0
    sleep 0.1
  done
  _mn_log "host $1 (${addr}) not reachable: ${out}"
  return 1
}

# _mn_write_agent: MN_DIR/bin/rsh HOST COMMAND...: what Open MPI's rsh launcher calls instead
# of ssh. Runs the command line (a shell string, as sshd would) on HOST.
_mn_write_agent() {
  local name
  {
    cat <<'EOF'
#!/bin/bash
# Written by tests/integration/multinode/hosts.sh: ssh stand-in for its test hosts.
host=${1:?usage: rsh HOST COMMAND...}
shift
case "${host}" in
EOF
    for name in "${MN_HOSTS[@]}"; do
      echo "  ${name} | $(mn_host_addr "${name}")) pid=$(mn_host_pid "${name}") ;;"
    done
    cat <<'EOF'
  *) echo "rsh: unknown test host ${host}" >&2; exit 255 ;;
esac
exec nsenter -t "${pid}" --net --uts --mount -- /bin/sh -c "$*"
EOF
  } >"${MN_DIR}/bin/rsh"
  chmod 755 "${MN_DIR}/bin/rsh"
}

# mn_host_pid HOST: the PID of HOST's holder process.
mn_host_pid() { cat "${MN_DIR}/hosts/$1.pid"; }

# mn_host_addr HOST: HOST's address on the bridge.
mn_host_addr() { sed -n "s/^\([0-9.]*\) $1\$/\1/p" "${MN_DIR}/etc-hosts"; }

# mn_exec HOST CMD...: run CMD on HOST (its network, hostname and mounts; same files).
mn_exec() {
  local host=$1
  shift
  nsenter -t "$(mn_host_pid "${host}")" --net --uts --mount -- "$@"
}

# mn_host_pids HOST: the PIDs of every process on HOST (in its network namespace) except its
# holder, one a line.
mn_host_pids() {
  local holder net proc pid
  holder=$(mn_host_pid "$1")
  net=$(readlink "/proc/${holder}/ns/net")
  for proc in /proc/[0-9]*; do
    pid=${proc#/proc/}
    [[ "${pid}" == "${holder}" ]] && continue
    [[ "$(readlink "${proc}/ns/net" 2>/dev/null)" == "${net}" ]] && echo "${pid}"
  done
  return 0
}

# mn_link HOST up|down: plug HOST's cable into the bridge, or pull it (the host and its
# processes live on, unreachable: a network failure rather than a crash).
mn_link() {
  local i
  for ((i = 1; i <= ${#MN_HOSTS[@]}; i++)); do
    [[ "${MN_HOSTS[i - 1]}" == "$1" ]] && {
      ip link set "mnv${i}" "$2"
      return
    }
  done
  _mn_log "mn_link: no host $1"
  return 1
}

# mn_mpi_env: export the Open MPI settings for runs across the hosts: daemons started through
# the rsh agent, TCP between hosts on the bridge only, shared memory within a host, and TCP
# keepalives on mpirun's links to its daemons that notice an unreachable host within ~5 s
# (the default, 300 s + 9 x 20 s, is longer than a test's dist.timeout_s: the ranks' deadline
# would fire first, and mpirun then hangs aborting through the daemon it cannot reach).
mn_mpi_env() {
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  export OMPI_MCA_plm_rsh_agent=${MN_DIR}/bin/rsh
  export OMPI_MCA_btl=tcp,vader,self
  export OMPI_MCA_btl_tcp_if_include=${MN_SUBNET}
  export OMPI_MCA_oob_tcp_if_include=${MN_SUBNET}
  export OMPI_MCA_oob_tcp_keepalive_time=2 OMPI_MCA_oob_tcp_keepalive_intvl=1
  export OMPI_MCA_oob_tcp_keepalive_probes=3
}

# mn_hosts_stop: the EXIT trap: stop every process on the hosts, remove the veth pairs, the
# bridge and the /etc/hosts mount, and the work folder (kept on failure or with MN_KEEP=1).
mn_hosts_stop() {
  local rc=$? name pid
  [[ -n "${MN_DIR:-}" && -d "${MN_DIR}" ]] || return "${rc}"
  if [[ $$ == 1 ]]; then
    # PID 1 of the site: every other process in it was started by this test (daemons, ranks,
    # orphans of a crashed mpirun included); kill(-1) reaches exactly those.
    # Disowned first: no "Killed" notice per background job.
    disown -a
    kill -KILL -1 2>/dev/null
    local others=() tries
    for ((tries = 0; tries < 50; tries++)); do
      others=(/proc/[0-9]*)
      ((${#others[@]} <= 1)) && break
      sleep 0.1
    done
  else
    for name in "${MN_HOSTS[@]}"; do
      # shellcheck disable=SC2046  # one PID a word
      kill -KILL $(mn_host_pids "${name}") "$(mn_host_pid "${name}")" 2>/dev/null
    done
  fi
  { wait; } 2>/dev/null
  # The veth ends on the hosts go with their namespaces; remove the site's ends and the bridge.
  for ((pid = 1; pid <= ${#MN_HOSTS[@]}; pid++)); do
    ip link del "mnv${pid}" 2>/dev/null
  done
  ip link del "${MN_BRIDGE}" 2>/dev/null
  umount /etc/hosts 2>/dev/null
  if [[ "${MN_KEEP:-0}" == 1 || ("${rc}" != 0 && "${rc}" != 77) ]]; then
    _mn_log "removed hosts ${MN_HOSTS[*]} and bridge ${MN_BRIDGE}; kept ${MN_DIR} (exit ${rc})"
  else
    rm -rf "${MN_DIR}"
    _mn_log "removed hosts ${MN_HOSTS[*]}, bridge ${MN_BRIDGE} and ${MN_DIR}"
  fi
  MN_DIR=
  return "${rc}"
}

# By hand: hosts.sh run N CMD...: run CMD in a new site with hosts node1..nodeN and the
# Open MPI settings exported; everything is removed when CMD ends. For example:
#   tests/integration/multinode/hosts.sh run 2 mpirun --host node1:2,node2:2 -np 4 hostname
#   tests/integration/multinode/hosts.sh run 2 bash     # a shell on "login"; mn_exec node2 ...
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -uo pipefail
  if [[ "${1:-}" != run || ! "${2:-}" =~ ^[1-9][0-9]*$ || -z "${3:-}" ]]; then
    echo "usage: $0 run N COMMAND [ARGS...]" >&2
    exit 2
  fi
  mn_enter_site "$@"
  mn_hosts_start "$2" || exit 1
  mn_mpi_env
  export -f mn_exec mn_host_pid mn_host_addr mn_host_pids
  "${@:3}"
fi
