#!/usr/bin/env bash
# Issue 8's measurements on one GPU node with no network, in stages that each fit a 10-minute
# call. Prepare once, on a Debian 12 machine with network, from the repository root:
#
#   bench/gpu_compare/gpu_node.sh pack        # .gpu/: gpu-deps.tar.xz and Fashion-MNIST (~58 MB)
#
# then, on the node (the repository root with .gpu/ beside it, CUDA, a C++ compiler and a
# Python torch with CUDA):
#
#   bench/gpu_compare/gpu_node.sh build       # deps into .gpu/deps, build-gpu (+ benchmarks)
#   bench/gpu_compare/gpu_node.sh test        # ctest -L gpu and the unit tests on this build,
#                                             # then fmnist-tiny with and without train.cuda_graph
#   bench/gpu_compare/gpu_node.sh bench [run.sh options]
#                                             # bench/gpu_compare/run.sh (both presets, or e.g.
#                                             # --configs configs/fmnist.yaml), NHWC rows too
#   bench/gpu_compare/gpu_node.sh train [MIN] # fmnist.yaml for MIN minutes (9) and its grid
#                                             # (train.cuda_graph: $CUDA_GRAPH, default true)
#   bench/gpu_compare/gpu_node.sh eval        # classifier, then FD of the run (n = 1000)
#
# Each stage writes its log to $LOGS (default .gpu/logs) and prints the lines worth keeping.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
gpu=$root/.gpu
logs=${LOGS:-$gpu/logs}
build=$root/build-gpu
mkdir -p "$logs"

with_deps() {
  # shellcheck disable=SC1091  # written by scripts/gpu-deps.sh unpack
  source "$gpu/deps/env.sh"
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
}

bin=$build/trainer/difftrain
data=$gpu/fashion-mnist
prepare_data() {
  if [[ ! -f $data/index.json ]]; then
    "$bin" prepare --images "$gpu/train-images-idx3-ubyte.gz" \
      --labels "$gpu/train-labels-idx1-ubyte.gz" --out "$data" --shards 8 --pad-to 32
  fi
}

case ${1:-} in
  pack)
    mkdir -p "$gpu"
    scripts/gpu-deps.sh pack "$gpu/gpu-deps.tar.xz"
    cp /usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz "$gpu/"
    du -sh "$gpu"
    ;;
  build)
    [[ -f $gpu/deps/env.sh ]] || scripts/gpu-deps.sh unpack "$gpu/gpu-deps.tar.xz" "$gpu/deps"
    with_deps
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
      nvcc --version | tail -1; python3 -c 'import torch; print("torch", torch.__version__)'
    } | tee "$logs/machine.txt"
    # shellcheck disable=SC2086  # DIFFTRAIN_DEPS_CMAKE_ARGS is a list of options
    # LibTorch from the node's own python3 (its torch has CUDA 13; CI builds the pin of
    # python/requirements.txt, and the build accepts 2.9 on); nvcc from the node's toolkit.
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release $DIFFTRAIN_DEPS_CMAKE_ARGS \
      -DDIFFTRAIN_PYTHON="$(command -v python3)" -DCMAKE_PREFIX_PATH="$DIFFTRAIN_DEPS/usr" \
      -DDIFFTRAIN_BUILD_BENCH=ON >"$logs/configure.txt" 2>&1 ||
      { tail -40 "$logs/configure.txt"; exit 1; }
    grep -E "difftrain:|NCCL|Torch|CUDA" "$logs/configure.txt" || true
    start=$(date +%s)
    cmake --build "$build" -j "$(nproc)" >"$logs/build.txt" 2>&1 ||
      { grep -E "error|Error" "$logs/build.txt" | head -40; exit 1; }
    echo "built in $(($(date +%s) - start)) s"
    "$bin" --version | tee -a "$logs/machine.txt"
    ;;
  test)
    with_deps
    ctest --test-dir "$build" -L gpu --output-on-failure >"$logs/ctest-gpu.txt" 2>&1 || true
    tail -15 "$logs/ctest-gpu.txt"
    ctest --test-dir "$build" -L unit -j 8 >"$logs/ctest-unit.txt" 2>&1 || true
    tail -8 "$logs/ctest-unit.txt"
    grep -E "StepGraph" "$logs/ctest-unit.txt" || true
    # The real trainer with and without the graph: same recipe, so similar losses; img/s differ.
    prepare_data
    for graph in false true; do
      rm -rf "$gpu/tiny-graph-$graph"
      "$bin" train --config configs/fmnist-tiny.yaml --run-dir "$gpu/tiny-graph-$graph" \
        --set "data.dir=$data" train.steps=400 train.log_interval_s=5 train.batch_size=64 \
        "train.cuda_graph=$graph" >"$logs/tiny-graph-$graph.txt" 2>&1 || true
      echo "train.cuda_graph=$graph:"
      grep -E "cuda_graph|step [0-9]+/400" "$logs/tiny-graph-$graph.txt" | tail -4
    done
    ;;
  bench)
    with_deps
    shift
    # One call per preset keeps each under 10 minutes (torch.compile, and the NHWC rows).
    bench/gpu_compare/run.sh --build-dir "$build" "$@" 2>&1 |
      tee "$logs/gpu-compare-$(date +%H%M%S).txt" | tail -30
    ;;
  train)
    with_deps
    minutes=${2:-9}
    prepare_data
    run=$gpu/fmnist-run
    rm -rf "$run"
    "$bin" train --config configs/fmnist.yaml --run-dir "$run" --set "data.dir=$data" \
      --set "train.time_limit=$((minutes * 60))" --set train.log_interval_s=30 \
      --set "train.cuda_graph=${CUDA_GRAPH:-true}" \
      >"$logs/train.txt" 2>&1 || { tail -20 "$logs/train.txt"; exit 1; }
    grep -E "parameters|cuda_graph|step [0-9]+/|stopping|samples" "$logs/train.txt" | tail -9
    "$bin" sample --run-dir "$run" --sampler ddim --steps 50 --n 64 --seed 1 \
      --out "$logs/fmnist-h100-grid.png" >>"$logs/train.txt" 2>&1
    ;;
  eval)
    with_deps
    [[ -f $gpu/classifier.pt ]] ||
      "$bin" eval --train-classifier --data "$data" --out "$gpu/classifier.pt" >"$logs/eval.txt" 2>&1
    "$bin" eval --run-dir "$gpu/fmnist-run" --data "$data" --classifier "$gpu/classifier.pt" \
      --n 1000 --steps 50 --device cuda --out "$logs/fmnist-h100-eval.json" >>"$logs/eval.txt" 2>&1 ||
      { tail -20 "$logs/eval.txt"; exit 1; }
    tail -12 "$logs/eval.txt"
    ;;
  *)
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
