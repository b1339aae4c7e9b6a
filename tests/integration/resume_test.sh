#!/usr/bin/env bash
# Long runs never lose work: bit-exact resume on 1 and 2 ranks, SIGKILL while a checkpoint is
# being written, truncated and bit-flipped newest checkpoints, SIGTERM and SIGUSR1 under
# mpirun, and the non-finite-step guard.
# Usage: resume_test.sh PATH/TO/difftrain
source "$(dirname "$0")/lib.sh"
BIN=$1
start_fmnist_test "$BIN" 2
COMMON=(--config "$CONFIG" --set data.dir=data train.threads=1 train.log_interval_s=0.000001
  model.dropout=0.1 sample.n=4 sample.steps=2)

hash_of() { "$BIN" inspect checkpoint "$1" | sed -n 's/^params_sha256: //p'; }
# "step loss" pairs of a log, one per step.
losses_of() { sed -n 's/.*step \([0-9]*\)\/[0-9]* epoch [0-9.]* loss \([0-9.]*\).*/\1 \2/p' "$1"; }

# --- bit-exact resume: 8 steps straight == 4 steps, stop, resume to 8 (1 and 2 ranks; "2r":
# 2 ranks with the min-SNR / log-normal / hflip recipe, whose draws must resume too; "2e": 2
# ranks of EDM's formulation at continuous noise levels, its grid drawn by heun) ---
RECIPE=(train.loss_weighting=min_snr train.timestep_sampling=lognormal data.hflip=true)
EDM=(diffusion.formulation=edm train.timestep_sampling=lognormal sample.sampler=heun)
for ranks in 1 2 2r 2e; do
  extra=()
  if [ "$ranks" = 2r ]; then extra=("${RECIPE[@]}"); fi
  if [ "$ranks" = 2e ]; then extra=("${EDM[@]}"); fi
  run=("${MPIRUN[@]}" -np "${ranks%[re]}" "$BIN" train)
  "${run[@]}" "${COMMON[@]}" "${extra[@]}" train.steps=8 --run-dir "straight$ranks" >"straight$ranks.out"
  "${run[@]}" "${COMMON[@]}" "${extra[@]}" train.steps=4 --run-dir "split$ranks" >"split$ranks.out"
  "${run[@]}" "${COMMON[@]}" "${extra[@]}" train.steps=8 --run-dir "split$ranks" >>"split$ranks.out"
  grep -q "resumed from split$ranks/checkpoints/step-000000004.ckpt at step 4" "split$ranks.out" ||
    fail "$ranks ranks: split run did not resume at step 4"
  a=$(hash_of "straight$ranks/checkpoints/step-000000008.ckpt")
  b=$(hash_of "split$ranks/checkpoints/step-000000008.ckpt")
  if [ -z "$a" ] || [ "$a" != "$b" ]; then fail "$ranks ranks: params_sha256 straight $a != resumed $b"; fi
  diff <(losses_of "straight$ranks.out") <(losses_of "split$ranks.out") ||
    fail "$ranks ranks: logged losses differ between straight and resumed runs"
  [ "$(losses_of "straight$ranks.out" | wc -l)" -eq 8 ] || fail "$ranks ranks: expected 8 loss lines"
  echo "ok: bit-exact resume on $ranks rank(s): params_sha256 $a, 8 identical losses"
done
grep -q "objective: EDM (sigma_data 0.5), ln sigma ~ N(-1.2, 1.2)" straight2e.out ||
  fail "the EDM run did not log its objective"
[ "$(png_size straight2e/samples/step-000000008.png)" != "" ] || fail "no heun grid of the EDM run"

# --- SIGKILL while a checkpoint is being written ---
DIFFTRAIN_TEST_CHECKPOINT_DELAY_S=2 "$BIN" train "${COMMON[@]}" train.steps=1000 \
  checkpoint.every_steps=3 --run-dir killed >killed.out 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  # The second checkpoint's temporary file: the first (step 3) is complete.
  if [ -f killed/checkpoints/step-000000003.ckpt ] &&
    compgen -G "killed/checkpoints/step-000000006.ckpt.tmp-*" >/dev/null; then
    break
  fi
  sleep 0.1
done
compgen -G "killed/checkpoints/step-000000006.ckpt.tmp-*" >/dev/null || fail "never saw the step-6 write"
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
[ "$(cat killed/checkpoints/LATEST)" = "step-000000003.ckpt" ] || fail "LATEST after kill: $(cat killed/checkpoints/LATEST)"
hash_of killed/checkpoints/step-000000003.ckpt >/dev/null || fail "step-3 checkpoint unreadable after kill"
"$BIN" train "${COMMON[@]}" train.steps=5 checkpoint.every_steps=3 --run-dir killed >killed-resume.out
grep -q "resumed from killed/checkpoints/step-000000003.ckpt at step 3" killed-resume.out || fail "no resume after kill"
grep -q "removed 1 temporary file" killed-resume.out || fail "stale temp file not cleaned"
echo "ok: SIGKILL mid-checkpoint leaves LATEST on step 3, resume works"

# --- truncated and bit-flipped newest checkpoint: fall back to the previous one ---
"$BIN" train "${COMMON[@]}" train.steps=6 checkpoint.every_steps=3 --run-dir bad >/dev/null
cp -r bad bad-flip
truncate -s 5000 bad/checkpoints/step-000000006.ckpt
"$BIN" train "${COMMON[@]}" train.steps=7 checkpoint.every_steps=3 --run-dir bad >bad.out
grep -q "skipping bad checkpoint: checkpoint bad/checkpoints/step-000000006.ckpt: truncated" bad.out ||
  fail "truncated checkpoint not reported"
grep -q "at step 3" bad.out || fail "did not fall back to step 3 after truncation"
"$PY" - <<'PYEOF'
path = "bad-flip/checkpoints/step-000000006.ckpt"
data = bytearray(open(path, "rb").read())
data[len(data) // 2] ^= 0x01
open(path, "wb").write(bytes(data))
PYEOF
"$BIN" train "${COMMON[@]}" train.steps=7 checkpoint.every_steps=3 --run-dir bad-flip >flip.out
grep -q "step-000000006.ckpt: checksum mismatch" flip.out || fail "bit flip not reported"
grep -q "at step 3" flip.out || fail "did not fall back to step 3 after a bit flip"
echo "ok: truncated and bit-flipped newest checkpoints are detected and skipped"

# --- SIGUSR1 to mpirun (forwarded) and SIGTERM to the ranks (as Slurm sends it) ---
for sig in USR1 TERM; do
  "${MPIRUN[@]}" -np 2 "$BIN" train "${COMMON[@]}" train.steps=100000 train.log_interval_s=1 \
    --run-dir "sig$sig" >"sig$sig.out" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    grep -q "step [0-9]*/100000" "sig$sig.out" && break
    sleep 0.1
  done
  if [ "$sig" = USR1 ]; then
    kill -USR1 "$pid"
  else
    pkill -TERM -f "difftrain train .*--run-dir sig$sig" -P "$pid"
  fi
  rc=0
  wait "$pid" || rc=$?
  [ "$rc" -eq 0 ] || { cat "sig$sig.out"; fail "SIG$sig: exit code $rc, want 0"; }
  step=$(sed -n "s/.*stopping at step \([0-9]*\) (SIG$sig).*/\1/p" "sig$sig.out" | head -n 1)
  [ -n "$step" ] || fail "SIG$sig: no 'stopping at step' line"
  [ "$(grep -c "stopping at step $step" "sig$sig.out")" -eq 2 ] || fail "SIG$sig: not both ranks stopped"
  [ -f "sig$sig/checkpoints/step-$(printf %09d "$step").ckpt" ] || fail "SIG$sig: no checkpoint at $step"
  "${MPIRUN[@]}" -np 2 "$BIN" train "${COMMON[@]}" "train.steps=$((step + 2))" --run-dir "sig$sig" >"sig$sig-resume.out"
  grep -q "at step $step " "sig$sig-resume.out" || fail "SIG$sig: resume did not start at $step"
  echo "ok: SIG$sig -> checkpoint at step $step, exit 0, resumed from it"
done

# --- non-finite steps: skipped, counted, then a clear stop that keeps the last checkpoint ---
"$BIN" train "${COMMON[@]}" train.steps=2 --run-dir nan >/dev/null
before=$(sha256sum nan/checkpoints/*.ckpt)
rc=0
"$BIN" train "${COMMON[@]}" train.steps=40 train.lr=1e30 train.warmup_steps=0 train.max_bad_steps=3 \
  --run-dir nan >nan.out 2>nan.err || rc=$?
[ "$rc" -ne 0 ] || fail "non-finite run exited 0"
grep -q "non-finite steps in a row (train.max_bad_steps) on rank 0" nan.err || fail "no max_bad_steps error: $(cat nan.err)"
[ "$before" = "$(sha256sum nan/checkpoints/*.ckpt)" ] || fail "checkpoints changed by the failed run"
echo "ok: non-finite steps skipped, run stopped with a message, checkpoint untouched"

# --- an overflowing learning rate never replaces good checkpoints (checkpoint.keep=2) ---
# Good steps to 4 (checkpoints 2 and 4), then lr 1e30 with checkpoints every 2 steps: no
# checkpoint holds non-finite or rejected state, the good ones survive rotation, and a resumed
# run that ends in a bad streak shorter than train.max_bad_steps does not exit 0.
BAD=(checkpoint.every_steps=2 checkpoint.keep=2 train.warmup_steps=0)
"$BIN" train "${COMMON[@]}" "${BAD[@]}" train.steps=4 --run-dir overflow >/dev/null
good=$(sha256sum overflow/checkpoints/step-000000004.ckpt)
rc=0
"$BIN" train "${COMMON[@]}" "${BAD[@]}" train.steps=12 train.lr=1e30 train.max_bad_steps=5 \
  --run-dir overflow >overflow.out 2>overflow.err || rc=$?
[ "$rc" -ne 0 ] || fail "overflowing run exited 0"
[ "$good" = "$(sha256sum overflow/checkpoints/step-000000004.ckpt)" ] ||
  fail "the good step-4 checkpoint was deleted or changed: $(ls overflow/checkpoints)"
for f in overflow/checkpoints/*.ckpt; do
  "$BIN" inspect checkpoint "$f" >/dev/null 2>"$TMP/inspect.err" ||
    fail "$f does not load after the overflowing run: $(cat "$TMP/inspect.err")"
done
grep -q "checkpoint not written" overflow.err overflow.out || fail "no 'checkpoint not written' warning"
grep -q "newest is .*step-0000000" overflow.err || fail "the stop message names no checkpoint: $(cat overflow.err)"
rc=0
"$BIN" train "${COMMON[@]}" "${BAD[@]}" train.steps=6 train.lr=1e30 train.max_bad_steps=5 \
  --run-dir overflow >overflow2.out 2>overflow2.err || rc=$?
[ "$rc" -ne 0 ] || fail "a resumed run that ends in non-finite steps exited 0"
grep -q "ended with .* non-finite steps in a row" overflow2.err || fail "no bad-ending message: $(cat overflow2.err)"
echo "ok: an overflowing learning rate keeps the good checkpoints, and its runs fail"
echo "resume: all passed"
