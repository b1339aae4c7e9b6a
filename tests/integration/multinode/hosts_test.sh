#!/usr/bin/env bash
# The multi-node harness itself (hosts.sh): each host has its own hostname and address and
# resolves the others by name; mpirun --host starts ranks on each host through the rsh agent
# with the right local ranks; ranks on different hosts cannot use shared memory (a job
# limited to the shared-memory transport fails across hosts); and a
# finished site leaves no bridge, veth, process or folder behind.
#   hosts_test.sh BUILD_DIR|DIFFTRAIN_BINARY
# Exit 77 when difftrain is not built, or mpirun or namespaces are missing.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/integration/multinode/hosts.sh
source "${here}/hosts.sh"
# shellcheck source=tests/integration/slurm/testlib.sh
source "${here}/../slurm/testlib.sh"
# shellcheck source=tests/integration/slurm/trainer_setup.sh
source "${here}/../slurm/trainer_setup.sh"

t_trainer_require "${1:?usage: hosts_test.sh BUILD_DIR|DIFFTRAIN_BINARY}"
command -v mpirun >/dev/null 2>&1 || t_skip "mpirun not found (make deps)"

if [[ "${MN_HOSTS_TEST_INNER:-0}" != 1 ]]; then
  # Outside the site: run the checks below in one, then check that it left nothing behind.
  MN_HOSTS_TEST_INNER=1 bash "$0" "${T_DIFFTRAIN}" >"${TMPDIR:-/tmp}/multinode-hosts-test.$$" 2>&1
  rc=$?
  out=$(cat "${TMPDIR:-/tmp}/multinode-hosts-test.$$")
  rm -f "${TMPDIR:-/tmp}/multinode-hosts-test.$$"
  echo "${out}"
  ((rc == 0)) || exit "${rc}"
  dir=$(sed -n 's/.*work folder \(\/[^ ]*\).*/\1/p' <<<"${out}" | head -n 1)
  [[ -n "${dir}" && ! -e "${dir}" ]] || t_fail "work folder '${dir}' left behind"
  ! ip link show "${MN_BRIDGE}" >/dev/null 2>&1 || t_fail "bridge ${MN_BRIDGE} exists outside the site"
  # A host's holder names its node-local mount after the host; none may outlive the site.
  ! pgrep -f "node-local-\\\$1.*${dir}" >/dev/null || t_fail "a host holder outlived the site"
  t_ok "the site left no work folder, bridge or host behind"
  exit 0
fi

mn_enter_site "${T_DIFFTRAIN}"
mn_hosts_start 2 || t_fail "the test hosts did not start"
mn_mpi_env
for host in node1 node2; do
  [[ "$(mn_exec "${host}" hostname)" == "${host}" ]] || t_fail "${host}: hostname $(mn_exec "${host}" hostname)"
  addr=$(mn_host_addr "${host}")
  mn_exec "${host}" ip -4 -o addr show dev eth0 | grep -q " ${addr}/24 " ||
    t_fail "${host}: eth0 lacks ${addr}: $(mn_exec "${host}" ip -4 -o addr)"
  other=node1
  [[ "${host}" == node1 ]] && other=node2
  [[ "$(mn_exec "${host}" getent hosts "${other}" | cut -d' ' -f1)" == "$(mn_host_addr "${other}")" ]] ||
    t_fail "${host} does not resolve ${other}"
  # Reachable over the bridge: a refused connection is an answer from the other host.
  answer=$(mn_exec "${host}" bash -c "exec 3<>/dev/tcp/${other}/9" 2>&1)
  [[ "${answer}" == *refused* ]] || t_fail "${host} cannot reach ${other} over TCP: ${answer}"
done
[[ "$(hostname)" == "${MN_LOGIN_HOST}" ]] || t_fail "the site is not named ${MN_LOGIN_HOST}"
t_ok "node1 $(mn_host_addr node1) and node2 $(mn_host_addr node2): own hostnames, resolve and reach each other"

# Ranks, hosts and local ranks as Open MPI sees them.
# shellcheck disable=SC2016  # expanded by each rank's shell
got=$(mpirun --oversubscribe --bind-to none --host node1:2,node2:2 -np 4 \
  sh -c 'echo "${OMPI_COMM_WORLD_RANK} $(hostname) ${OMPI_COMM_WORLD_LOCAL_RANK}"' 2>/dev/null | sort | xargs)
[[ "${got}" == "0 node1 0 1 node1 1 2 node2 0 3 node2 1" ]] || t_fail "mpirun --host node1:2,node2:2: '${got}'"
t_ok "mpirun --host node1:2,node2:2: ${got}"

# Shared memory only cannot connect ranks on two hosts (so the 2x2 runs of the other tests
# can only have used TCP between hosts; their 1x4 runs use shared memory within node1).
cd "${MN_DIR}" || t_fail "no work folder"
shm_only=(mpirun --oversubscribe --bind-to none --mca btl "vader,self" -np 4)
if timeout 60 "${shm_only[@]}" --host node1:2,node2:2 "${T_DIFFTRAIN}" train \
  --config "${T_REPO_ROOT}/configs/fmnist-tiny.yaml" --run-dir shm-only >shm-only.out 2>&1; then
  t_fail "a shared-memory-only job across node1 and node2 ran: the hosts share memory transport"
fi
grep -q "unable to reach each other" shm-only.out ||
  t_fail "shared memory across hosts failed, but not for want of a path: $(tail -n 5 shm-only.out)"
t_ok "shared memory only across hosts: 'unable to reach each other'"
echo "multinode hosts: all passed"
