#!/usr/bin/env bash
# The diffusers hand-over, checked by diffusers itself (tests/integration/diffusers_check.py):
# for four models (the demo, one with attention and the cosine schedule, a class-conditional
# v-prediction one, the DDPM CIFAR-10 layout) `export` writes a folder DDPMPipeline loads
# offline, with the same parameter count and network output (1e-5); deterministic DDIM from
# the same x_T through DDIMScheduler equals `sample`; import(export(ckpt)) keeps params_sha256;
# a random diffusers model survives import -> export; bad inputs fail in one line, writing nothing.
# Usage: diffusers_test.sh PATH/TO/difftrain
source "$(dirname "$0")/lib.sh"
BIN=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CHECK=$ROOT/tests/integration/diffusers_check.py
"$PY" -c "import diffusers, safetensors, PIL" 2>/dev/null ||
  fail "$PY lacks diffusers, safetensors or PIL (scripts/install-deps.sh installs them)"
export HF_HUB_OFFLINE=1
make_temp_dir
cd "$TMP"

# Data: Fashion-MNIST (grey) and a folder of random RGB PNGs in three classes.
"$BIN" prepare --images "$FMNIST/t10k-images-idx3-ubyte.gz" --labels "$FMNIST/t10k-labels-idx1-ubyte.gz" \
  --out grey --shards 1 --pad-to 32 >/dev/null
"$PY" - <<'PYEOF'
import os
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for label in range(3):
    os.makedirs(f"rgb-png/{label}")
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB").save(f"rgb-png/{label}/{i}.png")
PYEOF
"$BIN" prepare --images rgb-png --out rgb --shards 1 >/dev/null

# Tiny random-weight checkpoints: one training step at a high learning rate (so the output
# layer, zero at initialisation, is not), a one-image end-of-run grid, 20 timesteps (DDIM
# then visits every one: the only grid on which difftrain's DDIM and DDIMScheduler step
# between the same timesteps).
COMMON=(train.steps=1 train.batch_size=2 train.lr=0.05 train.warmup_steps=0 train.threads=2 sample.n=1
        checkpoint.every_steps=1 diffusion.timesteps=20 sample.steps=20)
declare -A CONFIG SETS
CONFIG[a-demo]=$ROOT/configs/fmnist-demo.yaml
SETS[a-demo]="data.dir=grey"
CONFIG[b-attention]=$ROOT/configs/fmnist-tiny.yaml
SETS[b-attention]="data.dir=grey model.num_res_blocks=2 model.attention_resolutions=[16] model.dropout=0.1 diffusion.schedule=cosine"
CONFIG[c-classes]=$ROOT/configs/fmnist-tiny.yaml
SETS[c-classes]="data.dir=rgb model.in_channels=3 model.num_classes=3 model.prediction=v model.attention_resolutions=[32,16] sample.ddpm_variance=posterior"
CONFIG[d-cifar10]=$ROOT/configs/ddpm-cifar10.yaml
SETS[d-cifar10]="data.dir=rgb"
CASES=(a-demo b-attention c-classes d-cifar10)
for name in "${CASES[@]}"; do
  dir=cases/$name
  mkdir -p "$dir"
  # shellcheck disable=SC2086
  "$BIN" train --config "${CONFIG[$name]}" --run-dir "$dir/run" --set ${SETS[$name]} "${COMMON[@]}" \
    >/dev/null 2>&1 || fail "$name: train failed"
  # shellcheck disable=SC2086
  printf '%s\n' ${SETS[$name]} "${COMMON[@]}" >"$dir/sets"
  ckpt=$(ls "$dir"/run/checkpoints/step-*.ckpt)
  "$BIN" export --run-dir "$dir/run" --format diffusers --out "$dir/export" >/dev/null
  "$BIN" inspect checkpoint "$ckpt" | sed -n 's/.* \([0-9]*\) parameters$/\1/p' >"$dir/parameters.txt"
  schedule=$(grep -q cosine "$dir/sets" && echo cosine || echo linear)
  "$BIN" inspect schedule --schedule "$schedule" --timesteps 20 >"$dir/schedule.csv"
  echo "$ckpt" >"$dir/ckpt"
done
"$BIN" inspect schedule --schedule linear --timesteps 1000 >linear1000.csv
"$BIN" inspect schedule --schedule cosine --timesteps 1000 >cosine1000.csv
"$PY" "$CHECK" prepare "$TMP"

for name in "${CASES[@]}"; do
  dir=cases/$name
  ckpt=$(cat "$dir/ckpt")
  "$BIN" inspect forward --checkpoint "$ckpt" --inputs "$dir/inputs.safetensors" \
    --out "$dir/ours_forward.safetensors"
  "$BIN" sample --checkpoint "$ckpt" --device cpu --sampler ddim --eta 0 --steps 20 \
    --x-t "$dir/xt.safetensors" --out "$dir/sample.png" --out-tensor "$dir/ours_sample.safetensors" >/dev/null
  # import(export(checkpoint)) gives back the raw weights exactly.
  "$BIN" export --checkpoint "$ckpt" --weights raw --format diffusers --out "$dir/export-raw" >/dev/null
  # shellcheck disable=SC2046
  "$BIN" import --diffusers "$dir/export-raw" --config "${CONFIG[$name]}" --set $(cat "$dir/sets") \
    --out "$dir/back.ckpt" >/dev/null
  want=$("$BIN" inspect checkpoint "$ckpt" | grep params_sha256)
  got=$("$BIN" inspect checkpoint "$dir/back.ckpt" | grep params_sha256)
  [ "$want" = "$got" ] || fail "$name: import(export) changed the weights: $want vs $got"
  echo "ok: $name: import(export(checkpoint)) has the same $want"
  # A random diffusers model: import, run, export again.
  # shellcheck disable=SC2046
  "$BIN" import --diffusers "$dir/random" --config "${CONFIG[$name]}" --set $(cat "$dir/sets") \
    --out "$dir/random.ckpt" >/dev/null
  "$BIN" inspect forward --checkpoint "$dir/random.ckpt" --inputs "$dir/inputs.safetensors" \
    --out "$dir/ours_random_forward.safetensors"
  "$BIN" export --checkpoint "$dir/random.ckpt" --format diffusers --out "$dir/random_back" >/dev/null
done
"$PY" "$CHECK" check "$TMP"

# An imported model samples, evaluates nothing new, and fine-tunes: train --resume FILE.
a=cases/a-demo
# shellcheck disable=SC2046
"$BIN" train --config "${CONFIG[a-demo]}" --run-dir tune --resume "$a/random.ckpt" \
  --set $(cat "$a/sets") train.steps=2 >/dev/null 2>&1 || fail "train --resume of an imported checkpoint failed"
[ -f tune/checkpoints/step-000000002.ckpt ] ||
  fail "fine-tuning an imported checkpoint wrote no step-2 checkpoint"
echo "ok: train --resume continues from an imported checkpoint"

# Bad inputs: one line each, nothing written.
d=cases/d-cifar10
mkdir notmodel
expect_error "not a diffusers folder" "not a diffusers model folder" -- \
  "$BIN" import --diffusers notmodel --config "${CONFIG[a-demo]}" --out bad.ckpt
# shellcheck disable=SC2046
expect_error "config does not match" "block_out_channels = [128,256,256,256]" -- \
  "$BIN" import --diffusers "$d/export" --config "${CONFIG[a-demo]}" --set $(cat "$a/sets") --out bad.ckpt
cp -r "$a/export" truncated
weights=truncated/unet/diffusion_pytorch_model.safetensors
head -c $(($(stat -c %s "$weights") - 100)) "$weights" >"$weights.part" && mv "$weights.part" "$weights"
# shellcheck disable=SC2046
expect_error "truncated safetensors" "file truncated" -- \
  "$BIN" import --diffusers truncated --config "${CONFIG[a-demo]}" --set $(cat "$a/sets") --out bad.ckpt
[ ! -e bad.ckpt ] || fail "a failed import wrote bad.ckpt"
expect_error "export into an existing folder" "already exists" -- \
  "$BIN" export --checkpoint "$(cat "$a/ckpt")" --format diffusers --out "$a/export"
"$BIN" train --config "${CONFIG[b-attention]}" --run-dir mult2 \
  --set data.dir=grey 'model.channel_mult=[2,2]' "${COMMON[@]}" >/dev/null 2>&1
expect_error "inexpressible model" "cannot express a first multiplier" -- \
  "$BIN" export --run-dir mult2 --format diffusers --out mult2-export
[ ! -e mult2-export ] || fail "a refused export left mult2-export"
compgen -G '.tmp-*' >/dev/null && fail "a temporary export folder was left behind"
echo "PASS"
