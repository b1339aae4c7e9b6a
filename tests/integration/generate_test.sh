#!/usr/bin/env bash
# Generating from a trained checkpoint: `sample` on 2 MPI ranks writes the same grid (and strip)
# as on one, `sample --inpaint/--mask` keeps the known pixels, `denoise` writes an image, and bad
# inputs fail with one line naming the file or value, writing nothing.
# Usage: generate_test.sh PATH/TO/difftrain
source "$(dirname "$0")/lib.sh"
BIN=$1
CONFIG=$(cd "$(dirname "$0")/../.." && pwd)/configs/fmnist-tiny.yaml
"$PY" -c "import numpy, PIL" 2>/dev/null || { echo "skip: $PY lacks numpy or PIL"; exit 77; }
make_temp_dir
cd "$TMP"

"$BIN" prepare --images "$FMNIST/t10k-images-idx3-ubyte.gz" --labels "$FMNIST/t10k-labels-idx1-ubyte.gz" \
  --out data --shards 1 --pad-to 32 >/dev/null
"$BIN" train --config "$CONFIG" --run-dir run --set data.dir=data train.steps=3 \
  checkpoint.every_steps=3 train.threads=2 sample.n=2 sample.steps=2 >/dev/null

# Split-invariant noise: 2 ranks draw the same images as 1 (12 images in the default chunks of
# 8 on a CPU: rank 0 draws [0, 8), rank 1 [8, 12)).
"$BIN" sample --run-dir run --sampler ddpm --steps 6 --n 12 --seed 7 --out one.png \
  --progression strip-one.png
"${MPIRUN[@]}" -np 2 "$BIN" sample --run-dir run --sampler ddpm --steps 6 --n 12 --seed 7 \
  --out two.png --progression strip-two.png | tee two.out
grep -q "on 2 rank(s)" two.out || fail "sample under mpirun did not use 2 ranks"
cmp -s one.png two.png || fail "sample on 2 ranks differs from 1 rank"
cmp -s strip-one.png strip-two.png || fail "progression strip on 2 ranks differs from 1 rank"
# --batch-size 3: rank 0 draws [0, 3) and [3, 6), rank 1 [6, 9) and [9, 12); the strip's 8
# images come from both ranks.
"$BIN" sample --run-dir run --sampler ddpm --steps 6 --n 12 --seed 7 --batch-size 3   --out one3.png --progression strip-one3.png
"${MPIRUN[@]}" -np 2 "$BIN" sample --run-dir run --sampler ddpm --steps 6 --n 12 --seed 7   --batch-size 3 --out two3.png --progression strip-two3.png >/dev/null
cmp -s one3.png two3.png || fail "sample --batch-size 3 on 2 ranks differs from 1 rank"
cmp -s strip-one3.png strip-two3.png || fail "strip of --batch-size 3 on 2 ranks differs from 1"

# Inpainting: a 32x32 grey image and a mask with a white square to fill.
"$PY" - <<'PYEOF'
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), "L").save("in.png")
mask = np.zeros((32, 32), dtype=np.uint8)
mask[8:24, 10:26] = 255
Image.fromarray(mask, "L").save("mask.png")
Image.fromarray(mask[:16, :16], "L").save("mask16.png")
Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8), "RGB").save("rgb.png")
PYEOF
"$BIN" sample --run-dir run --sampler ddim --eta 0.5 --steps 6 --n 4 --seed 1 --inpaint in.png \
  --mask mask.png --out inpaint.png
"${MPIRUN[@]}" -np 2 "$BIN" sample --run-dir run --sampler ddim --eta 0.5 --steps 6 --n 4 \
  --seed 1 --inpaint in.png --mask mask.png --out inpaint-two.png >/dev/null
cmp -s inpaint.png inpaint-two.png || fail "inpainting on 2 ranks differs from 1 rank"
# The grid: 2x2 tiles of 32x32 upscaled x2, 2-pixel borders.
"$PY" - <<'PYEOF' || fail "inpainting changed kept pixels"
import numpy as np
from PIL import Image
known = np.asarray(Image.open("in.png").convert("L"))
keep = np.asarray(Image.open("mask.png").convert("L")) < 128
grid = np.asarray(Image.open("inpaint.png").convert("L"))
filled = 0
for i in range(4):
    r, c = divmod(i, 2)
    tile = grid[2 + r * 66:2 + r * 66 + 64:2, 2 + c * 66:2 + c * 66 + 64:2]
    if not np.array_equal(tile[keep], known[keep]):
        raise SystemExit(f"image {i}: {np.count_nonzero(tile[keep] != known[keep])} kept pixels differ")
    filled += np.count_nonzero(tile[~keep] != known[~keep])
if filled == 0:
    raise SystemExit("the masked region was not generated")
print("ok: inpainting kept every unmasked pixel")
PYEOF

# Denoising.
"$BIN" denoise --run-dir run --input in.png --strength 0.3 --steps 10 --out clean.png \
  --compare compare.png
[ "$(png_size clean.png)" = "32x32" ] || fail "denoised image is $(png_size clean.png)"
[ "$(png_size compare.png)" = "134x68" ] || fail "compare strip is $(png_size compare.png)"

# Bad inputs: one line naming the file or value, non-zero exit, nothing written.
expect_error "missing inpaint file" "nope.png" -- \
  "$BIN" sample --run-dir run --steps 2 --n 1 --inpaint nope.png --mask mask.png --out bad1.png
expect_error "mask of the wrong size" "mask16.png: 16x16" -- \
  "$BIN" sample --run-dir run --steps 2 --n 1 --inpaint in.png --mask mask16.png --out bad2.png
expect_error "RGB image for a grey model" "rgb.png: 32x32x3" -- \
  "$BIN" sample --run-dir run --steps 2 --n 1 --inpaint rgb.png --mask mask.png --out bad3.png
expect_error "inpaint without mask" "needs --mask" -- \
  "$BIN" sample --run-dir run --steps 2 --n 1 --inpaint in.png --out bad4.png
expect_error "strength 0" "--strength 0:" -- \
  "$BIN" denoise --run-dir run --input in.png --strength 0 --out bad5.png
expect_error "strength 1.5" "--strength 1.5:" -- \
  "$BIN" denoise --run-dir run --input in.png --strength 1.5 --out bad6.png
expect_error "missing denoise input" "gone.png" -- \
  "$BIN" denoise --run-dir run --input gone.png --strength 0.5 --out bad7.png
for i in 1 2 3 4 5 6 7; do
  [ ! -e "bad$i.png" ] || fail "bad$i.png was written by a failing command"
done
echo "generate: all passed"
