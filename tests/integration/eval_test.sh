#!/usr/bin/env bash
# `difftrain eval` end to end on real Fashion-MNIST: train the eval classifier briefly, check the
# reference distances (a set against itself ~0, train vs test small, noise vs test large),
# evaluate a tiny class-conditional checkpoint (JSON, metrics.jsonl record, per-class accuracy)
# and reject bad input with one line and no partial output.
# Usage: eval_test.sh PATH/TO/difftrain
source "$(dirname "$0")/lib.sh"
BIN=$1
CONFIG=$(cd "$(dirname "$0")/../.." && pwd)/configs/fmnist-tiny.yaml
make_temp_dir
cd "$TMP"

# json_get FILE KEY: prints a top-level number of a JSON file.
json_get() {
  "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}
# check PYTHON_EXPRESSION MESSAGE: fails unless the expression is true.
check() {
  "$PY" -c "import sys; sys.exit(0 if ($1) else 1)" || fail "$2"
}

# The 10000 test images: 9000 train, every 10th (1000) held out as the test split.
"$BIN" prepare --images "$FMNIST/t10k-images-idx3-ubyte.gz" --labels "$FMNIST/t10k-labels-idx1-ubyte.gz" \
  --out data --shards 2 --pad-to 32 >/dev/null

start=$SECONDS
"$BIN" eval --train-classifier --data data --steps 60 --threads 2 | tee classifier.out
echo "classifier trained in $((SECONDS - start)) s"
[ -f data/classifier.pt ] || fail "no data/classifier.pt"
head -c 8 data/classifier.pt | grep -q DTCLSF01 || fail "classifier file lacks its magic"
accuracy=$(sed -n 's/^classifier: test accuracy \([0-9.]*\).*/\1/p' classifier.out)
check "$accuracy > 0.6" "classifier test accuracy $accuracy, want > 0.6 after 60 steps (chance is 0.1)"

"$BIN" eval --baselines --data data --n 500 --seed 1 --threads 2 --out baselines.json
self=$(json_get baselines.json fd_self)
floor=$(json_get baselines.json fd_floor)
noise=$(json_get baselines.json fd_noise)
echo "FD self $self, train vs test $floor, noise vs test $noise"
check "$self < 1e-6 * $floor" "FD of a set against itself is $self, want ~0"
check "0 < $floor < 0.2 * $noise" "FD train vs test $floor is not small next to noise vs test $noise"
check "$noise > 10 * $floor" "FD noise vs test $noise, want > 10x train vs test ($floor)"

# A tiny class-conditional model, a few steps: checks the pipeline, not sample quality.
"$BIN" train --config "$CONFIG" --run-dir run --set data.dir=data train.steps=2 train.batch_size=4 \
  checkpoint.every_steps=2 train.threads=2 model.num_classes=10 monitoring.port=-1 sample.n=2 \
  sample.steps=2 >/dev/null
"$BIN" eval --run-dir run --n 6 --steps 2 --class 3 7 --guidance 1 --seed 2 --threads 2 | tee eval.out
json=run/eval/step-000000002.json
[ -f "$json" ] || fail "no $json"
"$PY" - "$json" run/metrics.jsonl <<'PYEOF' || fail "eval JSON or metrics record"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["n"] == 6 and r["steps"] == 2 and r["checkpoint_step"] == 2, r
assert r["sampler"] == "ddim" and r["classes"] == [3, 7], r
assert r["fd"] > 0 and r["fd_floor"] > 0 and r["fd_noise"] > 0, r
assert set(r["class_accuracy"]) == {"3", "7"}, r
assert all(0 <= a <= 1 for a in r["class_accuracy"].values()), r
assert 0 < r["classifier_test_accuracy"] <= 1, r
records = [json.loads(l) for l in open(sys.argv[2]) if '"eval"' in l]
assert any(x.get("event") == "eval" and x["fd"] == r["fd"] for x in records), records
PYEOF
grep -q "FD(generated, test)" eval.out || fail "no human summary"

# Bad input: one line naming the value, non-zero exit, nothing written.
rm -rf run/eval
expect_error "class out of range" "--class 10" -- "$BIN" eval --run-dir run --n 6 --class 10
expect_error "too few images" "--n 1" -- "$BIN" eval --run-dir run --n 1
expect_error "missing data dir" "nowhere" -- "$BIN" eval --run-dir run --data nowhere
expect_error "missing checkpoint" "missing.ckpt" -- "$BIN" eval --checkpoint missing.ckpt --out x.json
if [ -e run/eval ] || [ -e x.json ]; then fail "a rejected eval wrote output"; fi
"$BIN" prepare --images "$FMNIST/t10k-images-idx3-ubyte.gz" --labels "$FMNIST/t10k-labels-idx1-ubyte.gz" \
  --out data28 --shards 1 >/dev/null
expect_error "classifier for another shape" "[1,32,32]" -- \
  "$BIN" eval --baselines --data data28 --classifier data/classifier.pt
expect_error "no classifier" "data28/classifier.pt" -- "$BIN" eval --baselines --data data28
echo "eval: all passed"
