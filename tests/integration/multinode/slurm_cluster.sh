# shellcheck shell=bash
# A private two-or-more-node Slurm cluster on the hosts of hosts.sh: munged and slurmctld on
# the site ("login", 10.77.0.1), one slurmd per host (NodeName=nodeI NodeAddr=its address),
# each with its spool and TmpFS in the host's node-local folder, so that two nodes running
# the same job step never share a socket or a file that real nodes would not share.
# Sourced after hosts.sh (mn_hosts_start first) and ../slurm/cluster.sh (its helpers).
#   mn_slurm_start              # exports SLURM_CONF, SLURM_TEST_DIR; waits until all idle
# Everything it starts lives in the site and ends with it (hosts.sh's EXIT trap).

# mn_slurm_start: write slurm.conf for MN_HOSTS, start munged, slurmctld and the slurmds.
mn_slurm_start() {
  SLURM_TEST_DIR=${MN_DIR:?mn_hosts_start first}/slurm
  export SLURM_TEST_DIR
  mkdir -p "${SLURM_TEST_DIR}"/{munge,munge-key,state,run,log,jobs}
  chmod 755 "${SLURM_TEST_DIR}"
  chmod 700 "${SLURM_TEST_DIR}/munge-key"

  # One munged for all nodes: its socket is a file in the shared folder, and a Unix socket
  # is reached by path whatever the network namespace (as if every node ran the same key).
  _slurm_start_munged || return 1
  local name

  # Each node claims the machine's CPUs and memory (the hosts share them, as the hosts of
  # hosts.sh share everything but network, name and node-local folder).
  local layout
  layout=$(slurmd -C | head -n 1)
  layout=${layout#NodeName=* }
  export SLURM_CONF=${SLURM_TEST_DIR}/slurm.conf
  {
    cat <<EOF
# Private two-node test cluster written by tests/integration/multinode/slurm_cluster.sh.
ClusterName=difftrain-multinode
SlurmctldHost=${MN_LOGIN_HOST}(${MN_LOGIN_ADDR})
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${SLURM_TEST_DIR}/munge/munge.socket,cred_expire=5
StateSaveLocation=${SLURM_TEST_DIR}/state
# Node-local (a tmpfs per host at the same path): spool, PMIx folders and the pid file.
SlurmdSpoolDir=${MN_DIR}/node-local/spool
TmpFS=${MN_DIR}/node-local
SlurmdPidFile=${MN_DIR}/node-local/slurmd.pid
SlurmctldPidFile=${SLURM_TEST_DIR}/run/slurmctld.pid
SlurmctldLogFile=${SLURM_TEST_DIR}/log/slurmctld.log
SlurmdLogFile=${SLURM_TEST_DIR}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
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
MinJobAge=600
KillWait=30
SchedulerParameters=sched_interval=2,bf_interval=2
JobRequeue=1
EOF
    for name in "${MN_HOSTS[@]}"; do
      echo "NodeName=${name} NodeAddr=$(mn_host_addr "${name}") ${layout} State=UNKNOWN"
    done
    echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
  } >"${SLURM_CONF}"

  _slurm_spawn slurmctld slurmctld -D -c -f "${SLURM_CONF}"
  for name in "${MN_HOSTS[@]}"; do
    _slurm_spawn "slurmd-${name}" nsenter -t "$(mn_host_pid "${name}")" --net --uts --mount -- \
      slurmd -D -N "${name}" -f "${SLURM_CONF}"
  done
  _mn_log "Slurm: slurmctld on ${MN_LOGIN_HOST}, slurmd on ${MN_HOSTS[*]}; logs in ${SLURM_TEST_DIR}/log"
  mn_slurm_wait_idle 60
}

# mn_slurm_wait_idle TIMEOUT_S: wait until every node of MN_HOSTS is idle.
mn_slurm_wait_idle() {
  local timeout_s=$1 start_s=${SECONDS} states
  while ((SECONDS - start_s < timeout_s)); do
    states=$(sinfo -h -N -o '%N=%T' 2>/dev/null | sort -u | xargs)
    [[ "$(grep -o '=idle' <<<"${states}" | wc -l)" == "${#MN_HOSTS[@]}" ]] && return 0
    sleep 1
  done
  _mn_log "nodes not all idle after ${timeout_s} s: ${states}"
  tail -n 20 "${SLURM_TEST_DIR}"/log/slurm*.log >&2
  return 1
}
