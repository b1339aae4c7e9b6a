#!/usr/bin/env bash
# Trains the demo model under each training recipe for the same budget of images, evaluates
# the checkpoints at 25%, 50% and 100% of it with `difftrain eval` (one classifier, Fashion-MNIST
# t10k as the test split), then trains the DDPM recipe and the chosen one for 4x that budget,
# and prints FD, the floor and FD/floor per recipe, budget and fraction.
# Usage: bench/recipe/run.sh [BUILD_DIR]
#   RECIPES="..."     names from the table below for the demo's budget (default: the table's
#                     story, DDPM to the chosen recipe)
#   X4_RECIPES="..."  recipes also trained for 4x the budget (default: DDPM and the chosen one)
#   SCALE=K FRACTIONS="100"  instead: only budget K x the demo's, at these fractions
#   N=1000            images per evaluation; EVAL_STEPS=20 network calls per image
#   OUT=dir           where runs and results go (default runs/bench-recipe)
# A recipe that sets train.batch_size trains for as many steps as the budget of images allows.
# Finished runs and evaluations are reused (delete OUT to start over).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
bin=$build/trainer/difftrain
n=${N:-1000}
eval_steps=${EVAL_STEPS:-20}
out=${OUT:-runs/bench-recipe}
fmnist=/usr/share/datasets/fashion-mnist
data=runs/data/fashion-mnist
test_data=runs/data/fashion-mnist-t10k

# Recipe name -> config overrides on configs/fmnist-demo.yaml, after $base (the DDPM paper's
# objective on session 8's three-level model, so that a recipe names everything it changes).
# "NAME@heun" evaluates NAME's run with EDM's heun sampler at EVAL_STEPS / 2 noise levels
# (2 x that - 1 network calls) instead of DDIM at EVAL_STEPS, "NAME@dpmpp2m" with
# DPM-Solver++(2M) at EVAL_STEPS. "NAME+sN" trains NAME with train.seed=N (weights, sample order
# and noise; the table's runs use seed 0). The v+... rows are session 9's screening on top of min-SNR +
# log-normal + v (bench/RESULTS.md).
base="model.channel_mult=[1,2,2] model.prediction=eps train.loss_weighting=none"
base+=" train.timestep_sampling=uniform data.hflip=false"
snr_ln="train.loss_weighting=min_snr train.timestep_sampling=lognormal"
edm="diffusion.formulation=edm train.timestep_sampling=lognormal"
v="$snr_ln model.prediction=v"
v4="$v model.channel_mult=[1,2,2,2]"  # the demo's recipe
v5c="$v model.channel_mult=[1,2,2,2,2] diffusion.schedule=cosine"
declare -A recipe=(
  [ddpm]=""
  [min_snr]="train.loss_weighting=min_snr"
  [lognormal]="train.timestep_sampling=lognormal"
  [min_snr+lognormal]="$snr_ln"
  [min_snr+hflip]="train.loss_weighting=min_snr data.hflip=true"
  [min_snr+lognormal+hflip]="$snr_ln data.hflip=true"
  [min_snr+lognormal+v]="$snr_ln model.prediction=v"
  [min_snr+lognormal+b8]="$snr_ln train.batch_size=8"
  [min_snr+lognormal+b4]="$snr_ln train.batch_size=4"
  [min_snr+lognormal+b8+cosine]="$snr_ln train.batch_size=8 train.lr_decay=cosine"
  [min_snr+lognormal+v+b8]="$snr_ln model.prediction=v train.batch_size=8"
  [min_snr+lognormal+v+b8+cosine]="$snr_ln model.prediction=v train.batch_size=8 train.lr_decay=cosine"
  [min_snr+lognormal+v+b8+cosine+lr4]="$snr_ln model.prediction=v train.batch_size=8 train.lr_decay=cosine train.lr=4e-3"
  [min_snr+lognormal+v+b8+cosine+rb2]="$snr_ln model.prediction=v train.batch_size=8 train.lr_decay=cosine model.num_res_blocks=2"
  [min_snr+lognormal+v+mult1222]="$v4"
  [v+wu20]="$v train.warmup_steps=20"
  [v+attn8]="$v model.attention_resolutions=[8]"
  [v+mult12222]="$v model.channel_mult=[1,2,2,2,2]"
  [v+mult1224]="$v model.channel_mult=[1,2,2,4]"
  [v+mult1222+rb2]="$v4 model.num_res_blocks=2"
  [v+mult1222+wu200]="$v4 train.warmup_steps=200"
  [v+mult1222+lr1]="$v4 train.lr=1e-3"
  [v+mult1222+b2]="$v4 train.adam_beta2=0.99"
  [v+mult1222+cos]="$v4 diffusion.schedule=cosine"
  [v+mult1222+cond]="$v4 model.num_classes=10"
  [v+mult12222+cos]="$v5c"
  [v5c+ema05]="$v5c ema.std=0.05"
  [v5c+ema20]="$v5c ema.std=0.2"
  [v5c+lr3]="$v5c train.lr=3e-3"
  [v5c+ln06]="$v5c train.lognormal_mean=-0.6"
  [v5c+draws2]="$v5c train.noise_draws=2"
  [edm]="$edm"
  [edm+b8]="$edm train.batch_size=8"
  [edm+b8+cosine]="$edm train.batch_size=8 train.lr_decay=cosine"
)
chosen=min_snr+lognormal+v+mult1222@dpmpp2m  # configs/fmnist-demo.yaml's recipe and sampler
names=${RECIPES:-ddpm ddpm@dpmpp2m min_snr+lognormal edm@heun min_snr+lognormal+v $chosen}

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

# run_budget SCALE "FRACTIONS" "RECIPES": trains (or reuses) and evaluates, appending rows to
# $results.
run_budget() {
  local scale=$1 fractions=$2 names=$3
  local images=$((400 * 32 * scale))  # the demo: 400 steps of 2 ranks x 16 images
  local name trained seed recipe_name run batch steps quarter final train_s start_s fraction step ckpt json o
  local -a sampler overrides
  for name in $names; do
    trained=${name%@*}
    seed=0 recipe_name=$trained
    if [[ $trained =~ ^(.+)\+s([0-9]+)$ ]]; then
      recipe_name=${BASH_REMATCH[1]} seed=${BASH_REMATCH[2]}
    fi
    sampler=(--sampler ddim --steps "$eval_steps")
    case $name in
      *@heun) sampler=(--sampler heun --steps $((eval_steps / 2))) ;;
      *@dpmpp2m) sampler=(--sampler dpmpp2m --steps "$eval_steps") ;;
    esac
    [ -n "${recipe[$recipe_name]+set}" ] || { echo "unknown recipe $recipe_name" >&2; exit 2; }
    run=$out/x$scale-$trained
    read -r -a overrides <<<"$base ${recipe[$recipe_name]} train.seed=$seed"
    batch=16
    for o in "${overrides[@]}"; do
      case $o in train.batch_size=*) batch=${o#train.batch_size=} ;; esac
    done
    steps=$((images / (2 * batch)))
    quarter=$((steps / 4))
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
    for fraction in $fractions; do
      step=$((steps * fraction / 100))
      ckpt=$(printf '%s/checkpoints/step-%09d.ckpt' "$run" "$step")
      json=$run/eval/$(basename "$ckpt" .ckpt)-n$n-${sampler[1]}${sampler[3]}.json
      if [ ! "$json" -nt "$ckpt" ]; then  # not evaluated this way since it was trained
        "$bin" eval --checkpoint "$ckpt" --data "$data" --test-data "$test_data" \
          --classifier "$classifier" --n "$n" "${sampler[@]}" --seed 1 --out "$json" >/dev/null
      fi
      "${PYTHON:-.venv/bin/python}" - "$json" "$name" "$scale" "$fraction" "$step" "$train_s" "$batch" >>"$results" <<'PY'
import json, sys
path, name, scale, fraction, step, train_s, batch = sys.argv[1:]
r = json.load(open(path))
fd, floor = r["fd"], r["fd_floor"]
print(f"{name}\t{scale}x\t{fraction}%\t{step}\t{int(step) * 2 * int(batch)}\t{fd:.1f}\t{floor:.1f}\t"
      f"{fd / floor:.2f}\t{train_s}")
PY
    done
    cp "$(find "$run/samples" -name 'step-*.png' | sort | tail -n 1)" "$out/grid-x$scale-$trained.png"
  done
}

results=$out/results.tsv
printf 'recipe\tbudget\tfraction\tstep\timages\tfd\tfloor\tfd_over_floor\ttrain_s\n' >"$results"
if [ -n "${SCALE:-}" ]; then
  run_budget "$SCALE" "${FRACTIONS:-25 50 100}" "$names"
else
  run_budget 1 "25 50 100" "$names"
  run_budget 4 "100" "${X4_RECIPES:-ddpm $chosen}"
fi
column -t -s $'\t' "$results"
echo "results: $results; sample grids: $out/grid-x*.png"
