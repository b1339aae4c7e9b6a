#!/usr/bin/env bash
# `make demo`: prepare Fashion-MNIST shards, train a U-Net on two MPI ranks for a few minutes,
# draw samples from the EMA weights, and print where everything is.
# Usage: scripts/demo.sh [BUILD_DIR]   (DEMO_STEPS overrides the step count)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
bin=$build/trainer/difftrain
data=runs/data/fashion-mnist
run=runs/demo
fmnist=/usr/share/datasets/fashion-mnist
steps_args=()
if [ -n "${DEMO_STEPS:-}" ]; then steps_args=(--set "train.steps=$DEMO_STEPS"); fi

if [ ! -f "$data/index.json" ]; then
  echo "== preparing Fashion-MNIST (60000 images, padded to 32x32) into $data"
  "$bin" prepare --images "$fmnist/train-images-idx3-ubyte.gz" \
    --labels "$fmnist/train-labels-idx1-ubyte.gz" --out "$data" --shards 8 --pad-to 32
fi
"$bin" inspect data "$data"

# A fresh run each time: the demo's own run directory only.
rm -rf "$run"
echo "== training configs/fmnist-demo.yaml on 2 ranks (progress every 10 s)"
launch/mpirun-local.sh -n 2 "$bin" train --config configs/fmnist-demo.yaml --run-dir "$run" \
  "${steps_args[@]}"

echo "== sampling on 2 ranks: DPM-Solver++(2M) 20 steps, EMA weights, x_T -> x_0 progression"
launch/mpirun-local.sh -n 2 "$bin" sample --run-dir "$run" --sampler dpmpp2m --steps 20 --n 64 --seed 1 \
  --out "$run/samples/demo-grid.png" --progression "$run/samples/demo-progression.png"

final_grid=$(find "$run/samples" -name 'step-*.png' | sort | tail -n 1)
cat <<MSG

Done. Open these:
  samples (end of training):  $final_grid
  samples (64, 20 steps):     $run/samples/demo-grid.png
  noise -> image strip:       $run/samples/demo-progression.png
  training log:               $run/train.log
  checkpoints:                $run/checkpoints/ (resume: run the same train command again)
  resolved config:            $run/config.yaml
MSG
