#!/usr/bin/env bash
# Installs what difftrain needs to build, test and run the demo on Debian 12: the Debian
# packages below, then a project-local Python environment (.venv/) with the pinned PyTorch from
# PyPI (python/requirements.txt), whose LibTorch difftrain builds against. Idempotent: installs
# only what is missing, runs `apt-get update` only when a package is, and runs pip only when
# python/requirements.txt changed since the environment was last brought up to it.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  # build (the CUDA toolkit, with nvcc, cuDNN and NCCL, comes with the machine: see README)
  cmake g++ make pkg-config
  libopenmpi-dev openmpi-bin
  libhdf5-dev prometheus-cpp-dev libgtest-dev libcli11-dev libyaml-cpp-dev libspdlog-dev
  nlohmann-json3-dev libpng-dev zlib1g-dev libssl-dev
  # data for the demo
  dataset-fashion-mnist
  # the Python environment; tests and benchmarks: Prometheus + promtool, a real single-node
  # Slurm, shell linting
  python3 python3-venv prometheus slurm-wlm munge shellcheck
  # multi-node tests: network namespaces, veth pairs and a bridge (ip), nsenter and unshare
  iproute2 util-linux
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} Debian packages present"
else
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  # Packages such as prometheus and slurm-wlm would start their daemons on install; we start
  # our own private instances in tests, so keep the package scripts from starting services.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    created_policy=1
  fi
  cleanup() { if [ "$created_policy" -eq 1 ]; then $sudo rm -f "$policy"; fi; }
  trap cleanup EXIT
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The Python environment, from Debian's python3 (the interpreter every Debian 12 machine has).
# A stamp holds the hash of the requirements it was made from.
venv=.venv
requirements=python/requirements.txt
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" = "$want" ]; then
  echo "install-deps: $venv matches $requirements"
  exit 0
fi
echo "install-deps: installing $requirements into $venv (PyTorch with its NVIDIA runtime wheels)"
start_s=$(date +%s)
# An existing environment is brought up to the pins (pip keeps what already matches).
[ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir -r "$requirements"
echo "$want" >"$venv/.requirements.sha256"
echo "install-deps: $venv ready in $(($(date +%s) - start_s)) s, $(du -sh "$venv" | cut -f1)"
