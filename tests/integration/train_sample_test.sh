#!/usr/bin/env bash
# End to end on real files and real MPI ranks: prepare Fashion-MNIST shards, train the tiny
# config on 2 ranks, check checkpoints, samples PNG and the log; sample with DDPM and DDIM;
# inspect the checkpoint; resume the run for more steps.
# Usage: train_sample_test.sh PATH/TO/difftrain
source "$(dirname "$0")/lib.sh"
BIN=$1
start_fmnist_test "$BIN" 3
"$BIN" inspect data data --verify | grep -q "10000 x \[1,32,32\]" || fail "inspect data summary"

"${MPIRUN[@]}" -np 2 "$BIN" train --config "$CONFIG" --run-dir run \
  --set data.dir=data train.steps=12 checkpoint.every_steps=5 train.threads=1 \
  sample.every_steps=6 | tee train.out
grep -q "\[rank 0/2\] difftrain on" train.out || fail "rank 0 did not log"
grep -q "\[rank 1/2\] difftrain on" train.out || fail "rank 1 did not log"
grep -q "step 12/12" run/train.log || fail "train.log lacks the final progress line"
grep -q "ETA" run/train.log || fail "train.log lacks ETA"
[ -f run/config.yaml ] || fail "no resolved config in the run dir"
for s in 5 10 12; do
  [ -f "run/checkpoints/step-$(printf %09d $s).ckpt" ] || fail "no checkpoint at step $s"
done
[ "$(cat run/checkpoints/LATEST)" = "step-000000012.ckpt" ] || fail "LATEST is $(cat run/checkpoints/LATEST)"
# In-training grid every 6 steps (both ranks draw it), and the end-of-run grid.
grep -q "samples run/samples/step-000000006.png (16 images, ddim 10 steps, EMA weights, 2 ranks)" \
  run/train.log || fail "no in-training grid at step 6 in train.log"
[ "$(png_size run/samples/step-000000006.png)" = "266x266" ] || fail "step-6 grid size"
grids=(run/samples/*.png)
[ "${#grids[@]}" = 2 ] || fail "want 2 grids, got: ${grids[*]}"
size=$(png_size run/samples/step-000000012.png)
# 16 images of 32x32, upscaled x2, 4 per row, 2-pixel borders: 4*(64+2)+2 = 266.
[ "$size" = "266x266" ] || fail "sample grid is $size, want 266x266"

"$BIN" inspect checkpoint run/checkpoints/step-000000012.ckpt >inspect.out
grep -q "^step: 12$" inspect.out || fail "inspect checkpoint step"
grep -q "^world_size: 2$" inspect.out || fail "inspect checkpoint world size"
grep -Eq "^params_sha256: [0-9a-f]{64}$" inspect.out || fail "inspect checkpoint hash"

"$BIN" sample --run-dir run --sampler ddim --steps 10 --eta 0 --n 9 --seed 3 --out ddim.png \
  --progression strip.png
"$BIN" sample --run-dir run --sampler ddim --steps 10 --eta 0 --n 9 --seed 3 --out ddim-again.png
cmp -s ddim.png ddim-again.png || fail "DDIM eta=0 with the same seed gave different images"
"$BIN" sample --run-dir run --sampler ddpm --steps 20 --variance posterior --n 4 --out ddpm.png
[ "$(png_size ddim.png)" = "200x200" ] || fail "ddim grid is $(png_size ddim.png)"
png_size strip.png >/dev/null
png_size ddpm.png >/dev/null

# Resume: the same command with more steps continues from the last checkpoint; here with bf16
# autocast of the forward (CPU autocast), which must train with finite losses, NHWC weights
# (train.channels_last) resumed from NCHW ones, and a CUDA graph asked for, which a CPU run
# declines, saying why.
"${MPIRUN[@]}" -np 2 "$BIN" train --config "$CONFIG" --run-dir run \
  --set data.dir=data train.steps=15 checkpoint.every_steps=5 train.threads=1 \
  train.precision=bf16 train.cuda_graph=true train.channels_last=true | tee resume.out
grep -q "resumed from run/checkpoints/step-000000012.ckpt at step 12" resume.out || fail "did not resume"
grep -q "train.cuda_graph: not used: the device is cpu, not a GPU; training without a CUDA graph" \
  run/train.log || fail "no reason logged for declining train.cuda_graph"
grep -Eq "step 15/15 epoch [0-9.]+ loss [0-9]+\.[0-9]+ " run/train.log || fail "bf16 steps: no finite loss"
[ "$(cat run/checkpoints/LATEST)" = "step-000000015.ckpt" ] || fail "LATEST after resume"
grep -q "train.channels_last: weights, gradients" run/train.log || fail "channels-last not logged"
# The NHWC run's checkpoint samples like any other.
"$BIN" sample --run-dir run --sampler ddim --steps 10 --n 4 --out after-nhwc.png
[ "$(png_size after-nhwc.png)" = "134x134" ] || fail "after-nhwc grid is $(png_size after-nhwc.png)"
echo "train/sample: all passed"
