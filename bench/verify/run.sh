#!/usr/bin/env bash
# The cost of data.verify (train's start-up re-hash of every shard): `train` on one rank with
# data.verify on and off for 1 step, on Fashion-MNIST (60000 x 32 x 32) and on a synthetic
# 1 GiB data set (1,048,576 x 32 x 32 random bytes in 16 shards). Prints the "data.verify"
# line's seconds and the wall time of `inspect data --verify`.
# Usage: bench/verify/run.sh [BUILD_DIR]   (OUT=dir, default runs/bench-verify)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-build}/trainer/difftrain
out=${OUT:-runs/bench-verify}
fmnist=/usr/share/datasets/fashion-mnist
python=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }

if [ ! -f "$out/fmnist/index.json" ]; then
  "$bin" prepare --images "$fmnist/train-images-idx3-ubyte.gz" \
    --labels "$fmnist/train-labels-idx1-ubyte.gz" --out "$out/fmnist" --shards 8 --pad-to 32 >/dev/null
fi
if [ ! -f "$out/big/index.json" ]; then
  # IDX files: magic, dimensions (big-endian), then the bytes; labels 0..9.
  "$python" - "$out" <<'PY'
import os, struct, sys
out = sys.argv[1]
n, side = 1 << 20, 32
with open(f"{out}/big-images-idx3-ubyte", "wb") as f:
    f.write(struct.pack(">IIII", 0x803, n, side, side))
    for _ in range(n // 65536):
        f.write(os.urandom(65536 * side * side))
with open(f"{out}/big-labels-idx1-ubyte", "wb") as f:
    f.write(struct.pack(">II", 0x801, n))
    f.write(bytes(i % 10 for i in range(n)))
PY
  "$bin" prepare --images "$out/big-images-idx3-ubyte" --labels "$out/big-labels-idx1-ubyte" \
    --out "$out/big" --shards 16 >/dev/null
  rm -f "$out/big-images-idx3-ubyte" "$out/big-labels-idx1-ubyte"
fi

for set in fmnist big; do
  du -sh "$out/$set"
  start=$EPOCHREALTIME
  "$bin" inspect data "$out/$set" --verify >/dev/null
  echo "$set: inspect data --verify: $(since "$start") s"
  for verify in true false; do
    rm -rf "$out/run-$set-$verify"
    start=$EPOCHREALTIME
    "$bin" train --config configs/fmnist-demo.yaml --run-dir "$out/run-$set-$verify" \
      --set data.dir="$out/$set" data.verify="$verify" train.steps=1 sample.n=1 sample.steps=1 \
      train.threads=1 >"$out/run-$set-$verify.log" 2>&1
    echo "$set: train 1 step, data.verify=$verify: $(since "$start") s;" \
      "$(grep -o 'data.verify.*' "$out/run-$set-$verify.log" | head -1)"
  done
done
