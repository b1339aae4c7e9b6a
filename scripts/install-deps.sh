#!/usr/bin/env bash
# Installs the Debian 12 packages difftrain needs to build, test and run the demo. Idempotent:
# installs only what is missing, and runs `apt-get update` only when something is.
set -euo pipefail

packages=(
  # build
  cmake g++ make pkg-config
  libtorch-dev libopenblas0-openmp
  libopenmpi-dev openmpi-bin
  libhdf5-dev prometheus-cpp-dev libgtest-dev libcli11-dev libyaml-cpp-dev libspdlog-dev
  nlohmann-json3-dev libpng-dev zlib1g-dev libssl-dev
  # data for the demo
  dataset-fashion-mnist
  # tests and benchmarks: PyTorch DDP reference, HDF5 from Python, Prometheus + promtool,
  # a real single-node Slurm, shell linting
  python3 python3-torch python3-h5py prometheus slurm-wlm munge shellcheck
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

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
