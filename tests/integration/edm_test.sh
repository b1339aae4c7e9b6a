#!/usr/bin/env bash
# EDM's formulation end to end: a 2-rank run at continuous noise levels, every sampler drawing
# from it (heun deterministic and stochastic, the same on 1 and 2 ranks; ddim, dpmpp2m, ddpm;
# denoise; inpainting), and one-line refusals where a part cannot take it (export to diffusers,
# heun from a timestep or on a DDPM model, a resume that changes the formulation, EDM with
# v-prediction).
# Usage: edm_test.sh PATH/TO/difftrain
source "$(dirname "$0")/lib.sh"
BIN=$1
start_fmnist_test "$BIN" 1
EDM=(diffusion.formulation=edm train.timestep_sampling=lognormal)
"${MPIRUN[@]}" -np 2 "$BIN" train --config "$CONFIG" --run-dir edm --set data.dir=data \
  train.threads=1 train.steps=4 checkpoint.every_steps=4 sample.sampler=heun sample.steps=3 \
  sample.n=4 "${EDM[@]}" >edm.out 2>&1 || fail "EDM training failed: $(tail -n 3 edm.out)"
grep -q "objective: EDM" edm.out || fail "EDM run did not log its objective"

# heun, deterministic and with churn (its noise per image: 1 rank == 2 ranks), and the timestep
# samplers through EDM's denoiser.
for churn in 0 30; do
  "$BIN" sample --run-dir edm --sampler heun --churn "$churn" --steps 4 --n 6 --seed 3 \
    --out "heun$churn-one.png" >/dev/null
  "${MPIRUN[@]}" -np 2 "$BIN" sample --run-dir edm --sampler heun --churn "$churn" --steps 4 \
    --n 6 --seed 3 --batch-size 2 --out "heun$churn-two.png" >/dev/null
  cmp -s "heun$churn-one.png" "heun$churn-two.png" ||
    fail "heun --churn $churn on 2 ranks differs from 1 rank"
done
cmp -s heun0-one.png heun30-one.png && fail "--churn 30 drew the same images as --churn 0"
for sampler in ddim dpmpp2m ddpm; do
  "$BIN" sample --run-dir edm --sampler "$sampler" --steps 5 --n 4 --out "$sampler.png" >/dev/null
  png_size "$sampler.png" >/dev/null || fail "no $sampler grid from the EDM model"
done
"$PY" - <<'PYEOF' || fail "EDM samples are not images of distinct pixels"
import numpy as np
from PIL import Image
for name in ["heun0-one.png", "heun30-one.png", "ddim.png", "dpmpp2m.png", "ddpm.png"]:
    a = np.asarray(Image.open(name).convert("L"), dtype=np.float64)
    assert a.std() > 1.0, (name, a.std())
PYEOF
"$PY" -c "from PIL import Image; Image.new('L', (32, 32), 128).save('grey.png')"
"$BIN" denoise --run-dir edm --input grey.png --strength 0.5 --sampler ddim --steps 5 \
  --out denoised.png >/dev/null || fail "denoise with ddim failed on the EDM model"
[ "$(png_size denoised.png)" = 32x32 ] || fail "denoise wrote $(png_size denoised.png), want 32x32"
"$PY" -c "from PIL import Image; Image.new('L', (32, 32), 0).save('keep.png')"
"$BIN" sample --run-dir edm --sampler ddim --steps 4 --n 2 --inpaint grey.png --mask keep.png \
  --out inpaint.png >/dev/null || fail "inpainting with ddim failed on the EDM model"
"$PY" - <<'PYEOF' || fail "inpainting an EDM model did not keep the masked pixels"
import numpy as np
from PIL import Image
a = np.asarray(Image.open("inpaint.png").convert("L"), dtype=np.int64)
assert abs(a[4:60, 4:60].mean() - 128) < 1, a[4:60, 4:60].mean()
PYEOF
echo "ok: heun (churn 0 and 30, 1 == 2 ranks), ddim, dpmpp2m, ddpm, denoise and inpainting on an EDM model"

expect_error "export of an EDM model" "diffusion.formulation = edm: diffusers' UNet2DModel" -- \
  "$BIN" export --run-dir edm --format diffusers --out exported
[ ! -e exported ] || fail "a refused export left a folder"
expect_error "denoise with heun" "heun: starts from pure noise only" -- \
  "$BIN" denoise --run-dir edm --input grey.png --strength 0.5 --sampler heun --out x.png
expect_error "inpainting with heun" "heun: starts from pure noise only" -- \
  "$BIN" sample --run-dir edm --sampler heun --inpaint grey.png --mask keep.png --out z.png
expect_error "resume changing the formulation" "diffusion.formulation" -- \
  "$BIN" train --config "$CONFIG" --run-dir edm --set data.dir=data train.steps=6 \
  train.timestep_sampling=lognormal
expect_error "EDM with v-prediction" "needs model.prediction = eps" -- \
  "$BIN" train --config "$CONFIG" --run-dir v --set data.dir=data "${EDM[@]}" model.prediction=v
"$BIN" train --config "$CONFIG" --run-dir ddpm --set data.dir=data train.threads=1 \
  train.steps=1 sample.n=1 sample.steps=1 >/dev/null 2>&1 || fail "DDPM training failed"
expect_error "heun on a DDPM model" "needs a model trained with diffusion.formulation = edm" -- \
  "$BIN" sample --run-dir ddpm --sampler heun --steps 3 --n 2 --out y.png
echo "ok: EDM refusals"
