#!/usr/bin/env bash
# Trains the demo model under each training recipe for the same budget of images, evaluates
# the checkpoints at 25%, 50% and 100% of it with `difftrain eval` (one classifier, Fashion-MNIST
# t10k as the test split), and prints FD, the floor and FD/floor per recipe and fraction.
# Usage: bench/recipe/run.sh [BUILD_DIR]
#   SCALE=4        budget = SCALE x the demo's (400 steps of 32 images); default 1
#   RECIPES="..."  names from the table below; default all
#   N=1000         images per evaluation; EVAL_STEPS=50 DDIM steps per image
#   OUT=dir        where runs and results go (default runs/bench-recipe)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
bin=$build/trainer/difftrain
scale=${SCALE:-1}
n=${N:-1000}
eval_steps=${EVAL_STEPS:-50}
out=${OUT:-runs/bench-recipe}
fmnist=/usr/share/datasets/fashion-mnist
data=runs/data/fashion-mnist
test_data=runs/data/fashion-mnist-t10k

# Recipe name -> config overrides on configs/fmnist-demo.yaml.
declare -A recipe=(
  [ddpm]=""
  [min_snr]="train.loss_weighting=min_snr"
  [lognormal]="train.timestep_sampling=lognormal"
  [min_snr+lognormal]="train.loss_weighting=min_snr train.timestep_sampling=lognormal"
  [min_snr+hflip]="train.loss_weighting=min_snr data.hflip=true"
)
names=${RECIPES:-ddpm min_snr lognormal min_snr+lognormal min_snr+hflip}

if [ ! -f "$data/index.json" ]; then
  "$bin" prepare --images "$fmnist/train-images-idx3-ubyte.gz" \
    --labels "$fmnist/train-labels-idx1-ubyte.gz" --out "$data" --shards 8 --pad-to 32
fi
if [ ! -f "$test_data/index.json" ]; then
  "$bin" prepare --images "$fmnist/t10k-images-idx3-ubyte.gz" \
    --labels "$fmnist/t10k-labels-idx1-ubyte.gz" --out "$test_data" --shards 2 --pad-to 32
fi
mkdir -p "$out"
classifier=$out/classifier.pt
if [ ! -f "$classifier" ]; then
  "$bin" eval --train-classifier --data "$data" --test-data "$test_data" --out "$classifier"
fi

steps=$((400 * scale))
quarter=$((steps / 4))
results=$out/results-x$scale.tsv
printf 'recipe\tfraction\tstep\timages\tfd\tfloor\tfd_over_floor\ttrain_s\n' >"$results"
for name in $names; do
  run=$out/x$scale-$name
  read -r -a overrides <<<"${recipe[$name]}"
  final=$(printf '%s/checkpoints/step-%09d.ckpt' "$run" "$steps")
  if [ -f "$final" ] && [ -f "$run.train_s" ]; then
    train_s=$(cat "$run.train_s")  # trained by an earlier call: evaluate only
  else
    rm -rf "$run"
    start_s=$(date +%s)
    launch/mpirun-local.sh -n 2 "$bin" train --config configs/fmnist-demo.yaml --run-dir "$run" \
      --set train.steps="$steps" checkpoint.every_steps="$quarter" checkpoint.keep=8 \
      train.log_interval_s=60 "${overrides[@]}" >"$run.log" 2>&1
    train_s=$(($(date +%s) - start_s))
    echo "$train_s" >"$run.train_s"
  fi
  mkdir -p "$run/eval"
  for fraction in 25 50 100; do
    step=$((steps * fraction / 100))
    ckpt=$(printf '%s/checkpoints/step-%09d.ckpt' "$run" "$step")
    json=$run/eval/$(basename "$ckpt" .ckpt).json
    "$bin" eval --checkpoint "$ckpt" --data "$data" --test-data "$test_data" --classifier "$classifier" \
      --n "$n" --steps "$eval_steps" --seed 1 --out "$json" >/dev/null
    "${PYTHON:-.venv/bin/python}" - "$json" "$name" "$fraction" "$step" "$train_s" >>"$results" <<'PY'
import json, sys
path, name, fraction, step, train_s = sys.argv[1:]
r = json.load(open(path))
fd, floor = r["fd"], r["fd_floor"]
print(f"{name}\t{fraction}%\t{step}\t{int(step) * 32}\t{fd:.1f}\t{floor:.1f}\t{fd / floor:.2f}\t{train_s}")
PY
  done
  cp "$(find "$run/samples" -name 'step-*.png' | sort | tail -n 1)" "$out/grid-x$scale-$name.png"
done
column -t -s $'\t' "$results"
echo "results: $results; sample grids: $out/grid-x$scale-*.png"
