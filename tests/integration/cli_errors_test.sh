#!/usr/bin/env bash
# Bad input gets a one-line error naming the file or value, a non-zero exit, and nothing that
# was already written is lost.
# Usage: cli_errors_test.sh PATH/TO/difftrain
source "$(dirname "$0")/lib.sh"
BIN=$1
make_temp_dir
cd "$TMP"

# A small good dataset to break copies of.
"$BIN" prepare --images "$FMNIST/t10k-images-idx3-ubyte.gz" --labels "$FMNIST/t10k-labels-idx1-ubyte.gz" \
  --out good --shards 2 --pad-to 32 >/dev/null

expect_error "missing file" "/nonexistent/images.gz" -- \
  "$BIN" prepare --images /nonexistent/images.gz --out d1
head -c 4096 /dev/urandom >random.bin
expect_error "wrong IDX magic" "random.bin" -- "$BIN" prepare --images random.bin --out d2
gzip -dc "$FMNIST/t10k-images-idx3-ubyte.gz" >images.idx
head -c 100000 images.idx >truncated-images.idx
expect_error "truncated IDX" "truncated-images.idx" -- "$BIN" prepare --images truncated-images.idx --out d3
gzip -dc "$FMNIST/t10k-labels-idx1-ubyte.gz" >labels.idx
head -c 5000 labels.idx >short-labels.idx
expect_error "label count mismatch" "short-labels.idx" -- \
  "$BIN" prepare --images "$FMNIST/t10k-images-idx3-ubyte.gz" --labels short-labels.idx --out d4

cp -r good truncated
truncate -s 100000 truncated/shard-00001.h5
expect_error "truncated shard (inspect)" "shard-00001.h5" -- "$BIN" inspect data truncated
expect_error "truncated shard (train)" "shard-00001.h5" -- \
  "$BIN" train --config /dev/null --run-dir run-trunc --set data.dir=truncated train.steps=1

# A shard whose images are [N,28,28] (no channel axis) behind a manifest that says [1,32,32].
cp -r good wrongshape
"$PY" - <<'PYEOF'
import h5py, numpy as np
with h5py.File("wrongshape/shard-00000.h5", "w") as f:
    f.attrs["format_version"] = np.int32(1)
    f.create_dataset("images", data=np.zeros((5000, 28, 28), dtype=np.uint8))
    f.create_dataset("labels", data=np.zeros((5000,), dtype=np.int64))
PYEOF
expect_error "shard of the wrong shape" "has shape [5000,28,28]" -- "$BIN" inspect data wrongshape

cat >unknown.yaml <<'YAML'
train:
  learning_rate: 0.1
YAML
expect_error "unknown config key" "unknown key 'train.learning_rate'" -- \
  "$BIN" train --config unknown.yaml --run-dir run-unknown
expect_error "negative learning rate" "train.lr" -- \
  "$BIN" train --config /dev/null --run-dir run-neg --set train.lr=-0.5
if [ -e run-unknown ] || [ -e run-neg ]; then fail "a rejected config created a run directory"; fi
if ! "$PY" -c 'import ctypes; ctypes.CDLL("libcuda.so.1")' 2>/dev/null; then
  expect_error "NCCL backend without a GPU" "the NCCL backend needs a CUDA device, and rank 0 has cpu" -- \
    "$BIN" train --config /dev/null --run-dir run-nccl --backend nccl --set data.dir=good
fi

head -c 3000 /dev/urandom >bad.ckpt
expect_error "corrupt checkpoint" "bad.ckpt" -- "$BIN" sample --checkpoint bad.ckpt --out x.png
expect_error "missing checkpoint" "no-such-run" -- "$BIN" sample --run-dir no-such-run --out x.png

# Nothing already written is lost: preparing into an existing dataset is refused.
before=$(sha256sum good/* | sha256sum)
expect_error "existing dataset" "good" -- \
  "$BIN" prepare --images "$FMNIST/t10k-images-idx3-ubyte.gz" --out good --shards 3
[ "$before" = "$(sha256sum good/* | sha256sum)" ] || fail "existing dataset was modified"
"$BIN" inspect data good --verify >/dev/null || fail "good dataset no longer verifies"

echo "cli errors: all passed"
