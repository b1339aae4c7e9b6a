#!/usr/bin/env bash
# Holes a user found by abusing difftrain: train checks the shards it reads, a resume that would
# change the model fails in one line, Ctrl-C checkpoints (twice exits at once), SIGTERM during
# the end-of-run grid stops promptly, prepare refuses label gaps, eval's --steps 0 and --out.
# Usage: reliability_test.sh PATH/TO/difftrain
source "$(dirname "$0")/lib.sh"
BIN=$1
start_fmnist_test "$BIN" 2
grep -q "labels: 10 classes, images per class: 0:1000 1:1000" prepare.out ||
  fail "prepare printed no label histogram: $(cat prepare.out)"
COMMON=(--config "$CONFIG" --set data.dir=data train.threads=1 sample.n=4 sample.steps=2)

# --- train verifies the shards it reads ---
"$BIN" train "${COMMON[@]}" train.steps=1 --run-dir verified >verified.out 2>&1 || fail "train on good data failed"
grep -q "data.verify: the images of 2 shards match index.json" verified.out || fail "no verify line: $(cat verified.out)"
cp -r data flipped
shard=flipped/shard-00000.h5
# Flip one image byte inside the HDF5 images dataset (found by its value range, not by guess):
# the file stays valid HDF5, only the pixels change.
"$PY" - "$shard" <<'EOF'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    images = f["images"]
    pixel = int(images[5, 0, 16, 16])
    images[5, 0, 16, 16] = (pixel + 1) % 256
EOF
expect_error "flipped image byte" "data.verify: shard $shard: sha256 of images is" -- \
  "$BIN" train "${COMMON[@]}" data.dir=flipped train.steps=1 --run-dir flipped-run
# On 2 ranks the shard is rank 0's or rank 1's share; either one stops the job (mpirun adds its
# own lines about the abort).
rc=0
"${MPIRUN[@]}" -np 2 "$BIN" train "${COMMON[@]}" data.dir=flipped train.steps=1 --run-dir flipped-run2 \
  >flipped2.out 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "2 ranks trained on a flipped shard"
grep -q "error: data.verify: shard $shard: sha256 of images is" flipped2.out || fail "2 ranks: $(cat flipped2.out)"
[ ! -e flipped-run2/checkpoints/step-000000001.ckpt ] || fail "2 ranks wrote a checkpoint from a flipped shard"
"$BIN" train "${COMMON[@]}" data.dir=flipped data.verify=false train.steps=1 --run-dir unverified >unverified.out 2>&1 ||
  fail "data.verify=false did not train: $(cat unverified.out)"
grep -q "data.verify is off: the 2 shards of flipped are not checked" unverified.out || fail "no 'verify off' warning"
cp -r data wrong-sum
sed -i '0,/"sha256": "[0-9a-f]*"/s//"sha256": "0000000000000000000000000000000000000000000000000000000000000000"/' wrong-sum/index.json
expect_error "wrong sha256 in index.json" "index.json says 0000000000000000" -- \
  "$BIN" train "${COMMON[@]}" data.dir=wrong-sum train.steps=1 --run-dir wrong-sum-run
echo "ok: train refuses a flipped image byte and a wrong index.json sha256, on 1 and 2 ranks"

# --- a resume that would change the model or its objective: one line, nothing written ---
"$BIN" train "${COMMON[@]}" train.steps=2 --run-dir classes >/dev/null
before=$(ls -l classes/checkpoints)
expect_error "resume with num_classes" "model.num_classes" -- \
  "$BIN" train "${COMMON[@]}" train.steps=4 model.num_classes=10 --run-dir classes
expect_error "resume with prediction" "model.prediction" -- \
  "$BIN" train "${COMMON[@]}" train.steps=4 model.prediction=v --run-dir classes
expect_error "resume with beta_end" "diffusion.beta_end" -- \
  "$BIN" train "${COMMON[@]}" train.steps=4 diffusion.beta_end=0.03 --run-dir classes
[ "$before" = "$(ls -l classes/checkpoints)" ] || fail "a refused resume changed the checkpoints"
echo "ok: resuming with another num_classes, prediction or beta_end is refused in one line"

# --- Ctrl-C (SIGINT) without the launch script: checkpoint and exit 0; twice: at once ---
"$BIN" train "${COMMON[@]}" train.steps=100000 train.log_interval_s=0.000001 --run-dir interrupted \
  >interrupted.out 2>&1 &
pid=$!
for _ in $(seq 600); do grep -q "step [0-9]*/" interrupted.out && break; sleep 0.1; done
kill -INT "$pid"
rc=0
wait "$pid" || rc=$?
[ "$rc" -eq 0 ] || fail "SIGINT: exit $rc: $(tail -3 interrupted.out)"
grep -q "stopping at step [0-9]* (SIGINT): checkpoint written" interrupted.out || fail "SIGINT wrote no checkpoint"
ls interrupted/checkpoints/step-*.ckpt >/dev/null || fail "no checkpoint after SIGINT"
# The checkpoint of the first Ctrl-C is slowed to 10 s, so the second one comes during it.
DIFFTRAIN_TEST_CHECKPOINT_DELAY_S=10 "$BIN" train "${COMMON[@]}" train.steps=100000 \
  train.log_interval_s=0.000001 --run-dir twice >twice.out 2>&1 &
pid=$!
for _ in $(seq 600); do grep -q "step [0-9]*/" twice.out && break; sleep 0.1; done
kill -INT "$pid"
sleep 1
start_s=$(date +%s)
kill -INT "$pid"
rc=0
wait "$pid" || rc=$?
[ "$rc" -eq 130 ] || fail "a second SIGINT: exit $rc, want 130 (killed by SIGINT)"
[ $(($(date +%s) - start_s)) -le 3 ] || fail "a second SIGINT took $(($(date +%s) - start_s)) s"
echo "ok: Ctrl-C checkpoints and exits 0; a second Ctrl-C exits at once"

# --- SIGTERM during the end-of-run grid: the grid stops, the run exits 0 within seconds ---
"$BIN" train "${COMMON[@]}" train.steps=2 sample.n=64 sample.steps=1000 sample.sampler=ddpm \
  --run-dir grid >grid.out 2>&1 &
pid=$!
for _ in $(seq 600); do grep -q "step-000000002.ckpt written" grid.out && break; sleep 0.1; done
grep -q "step-000000002.ckpt written" grid.out || fail "the final checkpoint was not written: $(cat grid.out)"
sleep 1
start_s=$(date +%s)
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
took=$(($(date +%s) - start_s))
[ "$rc" -eq 0 ] || fail "SIGTERM during the grid: exit $rc: $(tail -3 grid.out)"
[ "$took" -le 5 ] || fail "SIGTERM during the grid took $took s"
grep -q "sample grid of step 2 not drawn: stopping (SIGTERM)" grid.out || fail "no 'not drawn' line: $(tail -5 grid.out)"
echo "ok: SIGTERM during the end-of-run grid stops it in $took s, exit 0"

# --- prepare: a corrupt label byte makes label gaps: refused unless asked ---
"$PY" - "$FMNIST/t10k-labels-idx1-ubyte.gz" <<'EOF'
import gzip, sys
raw = bytearray(gzip.open(sys.argv[1]).read())
raw[8 + 17] = 200  # one label byte: class 200 of 201, 190 classes without an image
open("bad-labels-idx1-ubyte", "wb").write(raw)
EOF
expect_error "label gaps" "bad-labels-idx1-ubyte: labels 10, 11, 12, 13, 14, ... (190 in all) have no image among 201 classes" -- \
  "$BIN" prepare --images "$FMNIST/t10k-images-idx3-ubyte.gz" --labels bad-labels-idx1-ubyte --out gaps
[ ! -e gaps ] || fail "a refused prepare wrote gaps/"
"$BIN" prepare --images "$FMNIST/t10k-images-idx3-ubyte.gz" --labels bad-labels-idx1-ubyte --out gaps \
  --allow-label-gaps >gaps.out || fail "--allow-label-gaps refused"
grep -q "201 classes, images per class from 0 (class 10) to 1000 (class [0-9]), 190 empty" gaps.out ||
  fail "no histogram summary: $(cat gaps.out)"
echo "ok: prepare prints the label histogram and refuses label gaps unless --allow-label-gaps"

# --- eval: --steps 0 is an error; --out into a missing folder is refused like sample's ---
expect_error "eval --steps 0" "--steps 0: want >= 1 optimizer steps" -- \
  "$BIN" eval --train-classifier --data data --steps 0 --out classifier.pt
expect_error "eval --out missing folder" "--out nowhere/classifier.pt: folder nowhere does not exist" -- \
  "$BIN" eval --train-classifier --data data --steps 1 --out nowhere/classifier.pt
expect_error "eval --baselines --out missing folder" "folder nowhere does not exist" -- \
  "$BIN" eval --baselines --data data --out nowhere/b.json
expect_error "eval --run-dir --out missing folder" "folder nowhere does not exist" -- \
  "$BIN" eval --run-dir verified --out nowhere/e.json
expect_error "sample --out missing folder" "--out nowhere/grid.png: folder nowhere does not exist" -- \
  "$BIN" sample --run-dir verified --n 4 --steps 2 --out nowhere/grid.png
[ ! -e nowhere ] || fail "a refused command made nowhere/"
echo "reliability: all passed"
