#!/usr/bin/env bash
# difftrain across two hosts under mpirun (hosts.sh: network namespaces on a bridge, ranks
# started through Open MPI's rsh launcher, TCP between hosts):
#   1. 2 hosts x 2 ranks trains to the same weights as 1 host x 4 ranks, and every rank
#      reports its host and its local rank on that host;
#   2. the Prometheus targets file lists 4 targets on the 2 hosts, and a real Prometheus on
#      the "login" host scrapes all four as up;
#   3. SIGKILL to the ranks on one host ends the job within dist.timeout_s with a message
#      that names a lost rank and its host, and the run resumes on one host from its last
#      checkpoint;
#   4. pulling one host's network link ends the job within dist.timeout_s with a message
#      naming that host, and leaves no rank running there.
#   mpi_test.sh BUILD_DIR|DIFFTRAIN_BINARY
# Exit 77 when difftrain is not built, or mpirun, prometheus, the project's Python (with
# torch), the dataset or namespaces are missing.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/integration/multinode/hosts.sh
source "${here}/hosts.sh"
# shellcheck source=tests/integration/slurm/testlib.sh
source "${here}/../slurm/testlib.sh"
# shellcheck source=tests/integration/slurm/trainer_setup.sh
source "${here}/../slurm/trainer_setup.sh"

build_dir=${1:?usage: mpi_test.sh BUILD_DIR|DIFFTRAIN_BINARY}
t_trainer_require "${build_dir}"
PY=${DIFFTRAIN_PYTHON:-${T_REPO_ROOT}/.venv/bin/python}
for tool in mpirun prometheus "${PY}"; do
  command -v "${tool}" >/dev/null 2>&1 || t_skip "${tool} not found (make deps)"
done
"${PY}" -c 'import torch' 2>/dev/null || t_skip "${PY} has no torch (make deps)"
[[ -r "${T_FMNIST_DIR}/t10k-images-idx3-ubyte.gz" ]] ||
  t_skip "no Fashion-MNIST in ${T_FMNIST_DIR} (install dataset-fashion-mnist)"
mn_enter_site "$@"
mn_hosts_start 2 || t_fail "the test hosts did not start"
mn_mpi_env
cd "${MN_DIR}" || t_fail "no work folder"

"${T_DIFFTRAIN}" prepare --images "${T_FMNIST_DIR}/t10k-images-idx3-ubyte.gz" \
  --labels "${T_FMNIST_DIR}/t10k-labels-idx1-ubyte.gz" --out data --shards 4 --pad-to 32 \
  >log/prepare.out 2>&1 || t_fail "difftrain prepare: $(tail -n 3 log/prepare.out)"
# A short collective deadline, so that a lost host ends the job in seconds.
timeout_s=10
train=(train --config "${T_REPO_ROOT}/configs/fmnist-tiny.yaml" --set "data.dir=${MN_DIR}/data"
  train.threads=1 train.log_interval_s=0.000001 sample.n=4 sample.steps=2 checkpoint.every_steps=2
  "dist.timeout_s=${timeout_s}")
mpirun=(mpirun --oversubscribe --bind-to none -np 4)

# --- 1. 2x2 equals 1x4; hosts and local ranks ---
steps=4
T_JOB_LOG=two-hosts.out
"${mpirun[@]}" --host node1:2,node2:2 "${T_DIFFTRAIN}" "${train[@]}" "train.steps=${steps}" \
  --run-dir two-hosts >two-hosts.out 2>&1 || t_fail "2 hosts x 2 ranks failed"
T_JOB_LOG=one-host.out
"${mpirun[@]}" --host node1:4 "${T_DIFFTRAIN}" "${train[@]}" "train.steps=${steps}" \
  --run-dir one-host >one-host.out 2>&1 || t_fail "1 host x 4 ranks failed"
for expect in "two-hosts 0 node1 0/2" "two-hosts 1 node1 1/2" "two-hosts 2 node2 0/2" \
  "two-hosts 3 node2 1/2" "one-host 0 node1 0/4" "one-host 1 node1 1/4" "one-host 2 node1 2/4" \
  "one-host 3 node1 3/4"; do
  read -r run rank host local <<<"${expect}"
  T_JOB_LOG=${run}.out
  grep -q "\[rank ${rank}/4\] difftrain on ${host} (local rank ${local})" "${run}.out" ||
    t_fail "${run}: rank ${rank} does not say 'difftrain on ${host} (local rank ${local})'"
done
t_ok "2x2: ranks 0,1 on node1 and 2,3 on node2 with local ranks 0,1 each; 1x4: local ranks 0-3 on node1"
losses_of() { sed -n 's/.*\[rank 0\/4\] step \([0-9]*\)\/[0-9]* .* loss \([0-9.]*\) .*/\1 \2/p' "$1"; }
[[ "$(losses_of two-hosts.out | wc -l)" == "${steps}" ]] || t_fail "two-hosts.out: not ${steps} loss lines"
[[ "$(losses_of two-hosts.out)" == "$(losses_of one-host.out)" ]] ||
  t_fail "losses differ: 2x2 $(losses_of two-hosts.out | tr '\n' ' ') vs 1x4 $(losses_of one-host.out | tr '\n' ' ')"
# Tolerance: the only allowed difference is the order in which the four ranks' gradients are
# summed (TCP between hosts instead of shared memory). That changes a summed fp32 gradient by a
# few units in the last place (~1e-7 relative); AdamW's first steps move every weight by about
# lr (2e-4 at step 1), so 1e-5 is 1/20 of one step's update: far above reduction noise, far
# below what different data, a lost gradient or a wrong rank would do. (Open MPI picks the
# all-reduce algorithm by size and rank count, not transport: we see bit-identical weights.)
ckpt=checkpoints/$(printf 'step-%09d.ckpt' "${steps}")
verdict=$("${PY}" "${here}/compare_checkpoints.py" "two-hosts/${ckpt}" "one-host/${ckpt}" 1e-5) ||
  t_fail "2x2 and 1x4 weights differ: ${verdict}"
t_ok "2x2 and 1x4 after ${steps} steps: same losses; weights ${verdict}"

# --- 2. targets file and a real Prometheus ---
prom_port=9090 # the site has a network of its own: no other Prometheus here
mkdir -p lost
cat >prometheus.yml <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: difftrain
    file_sd_configs:
      - files: [${MN_DIR}/lost/prometheus-targets.json]
        refresh_interval: 1s
EOF
prometheus --config.file=prometheus.yml --storage.tsdb.path=tsdb \
  --web.listen-address="127.0.0.1:${prom_port}" --log.level=warn >log/prometheus.out 2>&1 &
T_JOB_LOG=lost.out
"${mpirun[@]}" --host node1:2,node2:2 "${T_DIFFTRAIN}" "${train[@]}" train.steps=100000 \
  monitoring.port=0 --run-dir lost >lost.out 2>&1 &
mpirun_pid=$!
t_wait_for_line lost/prometheus-targets.json 'node2' 60 || t_fail "no targets file with node2 in 60 s"
# shellcheck disable=SC2016  # Python, not shell
targets=$("${PY}" -c '
import json, sys
groups = json.load(open(sys.argv[1]))
print(" ".join(sorted(t for g in groups for t in g["targets"])))' lost/prometheus-targets.json) ||
  t_fail "targets file is not file_sd JSON: $(cat lost/prometheus-targets.json)"
read -r -a target_list <<<"${targets}"
hosts=$(printf '%s\n' "${target_list[@]}" | cut -d: -f1 | sort | uniq -c | tr -s ' ' | xargs)
[[ "${#target_list[@]}" == 4 && "${hosts}" == "2 node1 2 node2" ]] ||
  t_fail "targets file lists '${targets}', want 2 on node1 and 2 on node2"
t_ok "targets file lists 4 targets on 2 hosts: ${targets}"
# shellcheck disable=SC2016  # Python, not shell
"${PY}" - "http://127.0.0.1:${prom_port}" <<'PYEOF' || t_fail "Prometheus did not scrape all four targets"
import json, sys, time, urllib.request
deadline, seen = time.time() + 45, []
while time.time() < deadline:
    try:
        with urllib.request.urlopen(sys.argv[1] + "/api/v1/targets?state=active", timeout=5) as r:
            active = json.load(r)["data"]["activeTargets"]
    except OSError:
        active = []
    seen = sorted((t["labels"]["instance"], t["health"]) for t in active)
    if len(seen) == 4 and all(health == "up" for _, health in seen):
        print("ok: Prometheus scrapes all four as up: " + " ".join(i for i, _ in seen))
        sys.exit(0)
    time.sleep(0.5)
sys.exit(f"FAIL: Prometheus targets after 45 s: {seen}")
PYEOF

# --- 3. lose a host's ranks; resume on one host ---
t_wait_for_line lost.out '\[rank 0/4\] checkpoint .* written' 60 || t_fail "no checkpoint in 60 s"
killed=()
for pid in $(mn_host_pids node2); do
  [[ "$(readlink "/proc/${pid}/exe")" == */difftrain* ]] && killed+=("${pid}")
done
((${#killed[@]} == 2)) || t_fail "want the 2 difftrain ranks on node2, found PIDs '${killed[*]}'"
kill -KILL "${killed[@]}"
killed_at=${SECONDS}
rc=0
for _ in $(seq 1 $((timeout_s * 3))); do
  kill -0 "${mpirun_pid}" 2>/dev/null || break
  sleep 1
done
kill -0 "${mpirun_pid}" 2>/dev/null && t_fail "the job still runs $((timeout_s * 3)) s after node2 lost its ranks"
wait "${mpirun_pid}" || rc=$?
ended_s=$((SECONDS - killed_at))
((rc != 0)) || t_fail "mpirun exited 0 after losing node2's ranks"
((ended_s <= timeout_s)) || t_fail "the job ended ${ended_s} s after the kill, want <= dist.timeout_s=${timeout_s}"
lost_line=$(grep -E 'process rank [23] with PID [0-9]+ on node node2' lost.out | head -n 1)
[[ -n "${lost_line}" ]] || t_fail "no message naming rank 2 or 3 on node2"
t_ok "killed node2's ranks: job ended in ${ended_s} s (exit ${rc}): ${lost_line}"

last=$(<lost/checkpoints/LATEST)
last_step=${last#step-}
last_step=$((10#${last_step%.ckpt}))
T_JOB_LOG=resume.out
"${mpirun[@]}" --host node1:4 "${T_DIFFTRAIN}" "${train[@]}" "train.steps=$((last_step + 2))" \
  --run-dir lost >resume.out 2>&1 || t_fail "resume on node1 failed"
grep -q "resumed from lost/checkpoints/${last} at step ${last_step}" resume.out ||
  grep -q "resumed from .*${last} at step ${last_step}" resume.out ||
  t_fail "resume did not start from ${last}"
[[ "$(<lost/checkpoints/LATEST)" == "$(printf 'step-%09d.ckpt' $((last_step + 2)))" ]] ||
  t_fail "resume did not reach step $((last_step + 2)): LATEST $(<lost/checkpoints/LATEST)"
t_ok "resumed on node1 (4 ranks) from ${last}, trained to step $((last_step + 2))"

# --- 4. cut a host's link: mpirun's keepalives notice the lost daemon ---
T_JOB_LOG=cut.out
"${mpirun[@]}" --host node1:2,node2:2 "${T_DIFFTRAIN}" "${train[@]}" train.steps=100000 \
  --run-dir cut >cut.out 2>&1 &
mpirun_pid=$!
t_wait_for_line cut.out '\[rank 0/4\] step 2/' 60 || t_fail "no step 2 in 60 s"
mn_link node2 down || t_fail "cannot pull node2's link"
cut_at=${SECONDS}
for _ in $(seq 1 $((timeout_s * 3))); do
  kill -0 "${mpirun_pid}" 2>/dev/null || break
  sleep 1
done
kill -0 "${mpirun_pid}" 2>/dev/null && t_fail "the job still runs $((timeout_s * 3)) s after node2's link went down"
rc=0
wait "${mpirun_pid}" || rc=$?
ended_s=$((SECONDS - cut_at))
mn_link node2 up
((rc != 0)) || t_fail "mpirun exited 0 after node2's link went down"
((ended_s <= timeout_s)) || t_fail "the job ended ${ended_s} s after the cut, want <= dist.timeout_s=${timeout_s}"
grep -qE 'Remote daemon: .* on node node2' cut.out || t_fail "no message naming node2 as lost"
! mn_host_pids node2 | xargs -r -I{} readlink /proc/{}/exe | grep -q difftrain ||
  t_fail "difftrain ranks still run on node2 after the job ended"
t_ok "pulled node2's link: job ended in ${ended_s} s (exit ${rc}): 'lost communication with a remote daemon ... on node node2'; node2's ranks ended too"
echo "multinode mpi: all passed"
