#!/usr/bin/env bash
# difftrain vs PyTorch DDP on the same U-Net, batch, ranks and threads, in one run: builds
# difftrain's driver, then alternates difftrain runs and PyTorch DDP runs (gloo on CPU, NCCL with
# --device cuda). Each difftrain run interleaves steps with buckets launched during backward
# (overlap) and after it; then the same DDP model under torch.compile. Prints the median images/s of each, the ratios and difftrain's wait
# share (time in reduce() after backward: communication not hidden, plus waiting for slower
# ranks), and the median of each repeat's own difftrain/DDP ratio (robust to load that changes
# between repeats). Each mode gets --steps timed steps (difftrain runs 2 x --steps, alternating).
#
# usage: bench/ddp_compare/run.sh [--ranks 2] [--threads 1] [--config configs/fmnist-tiny.yaml]
#                                 [--batch 8] [--steps 20] [--warmup 3] [--repeats 3]
#                                 [--device cpu] [--build-dir build-bench] [--compile yes|no]
# --compile yes (the default) adds a PyTorch DDP run under torch.compile (inductor) per repeat.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
ranks=2 threads=1 config=configs/fmnist-tiny.yaml batch=8 steps=20 warmup=3 repeats=3 compile=yes
device=cpu build_dir=$root/build-bench
while [[ $# -gt 0 ]]; do
  case $1 in
    --ranks) ranks=$2 ;;
    --threads) threads=$2 ;;
    --config) config=$2 ;;
    --batch) batch=$2 ;;
    --steps) steps=$2 ;;
    --warmup) warmup=$2 ;;
    --repeats) repeats=$2 ;;
    --device) device=$2 ;;
    --build-dir) build_dir=$2 ;;
    --compile) compile=$2 ;;
    *) echo "run.sh: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift 2
done
cd "$root"
python=$root/.venv/bin/python  # the torch difftrain builds against (scripts/install-deps.sh)

echo "== building ddp_compare_difftrain in $build_dir"
cmake -S "$root" -B "$build_dir" -DDIFFTRAIN_BUILD_BENCH=ON >/dev/null
cmake --build "$build_dir" --target ddp_compare_difftrain -j2 >/dev/null || {
  echo "run.sh: could not build ddp_compare_difftrain in $build_dir" >&2
  exit 1
}
driver=$build_dir/bench/ddp_compare_difftrain

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun=(mpirun --oversubscribe --bind-to none -np "$ranks" -x OMP_NUM_THREADS="$threads")
common=(--config "$config" --batch "$batch" --warmup "$warmup" --threads "$threads" --device "$device")

# images/s and the parameter count from a driver's result line.
rate() { sed -nE 's/.* ([0-9.]+) img\/s.*/\1/p' <<<"$1" | tail -1; }
parameters() { sed -nE 's/^[a-z-]+: [^,]*, ([0-9]+) parameters,.*/\1/p' <<<"$1" | head -1; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "== $(date -u +%Y-%m-%dT%H:%MZ) on $(hostname): $(nproc) CPUs, $ranks ranks x $threads threads, $config, batch $batch/rank, $steps steps x $repeats repeats"
overlap_rates=() plain_rates=() ddp_rates=() compile_rates=() wait_shares=() ratios=()
for ((r = 1; r <= repeats; ++r)); do
  echo "-- repeat $r/$repeats, load average $(load)"
  # One difftrain run alternates steps with and without overlap (same load for both).
  out=$("${mpirun[@]}" "$driver" "${common[@]}" --steps $((2 * steps)) --overlap alternate |
          grep '^difftrain:')
  echo "$out"
  on=$(grep 'overlap on:' <<<"$out")
  overlap_rates+=("$(rate "$on")")
  wait_shares+=("$(sed -nE 's/.*\(([0-9.]+)% of step\).*/\1/p' <<<"$on")")
  plain_rates+=("$(rate "$(grep 'overlap off:' <<<"$out")")")
  port=$((20000 + RANDOM % 20000))
  line=$("${mpirun[@]}" -x MASTER_PORT="$port" "$python" bench/ddp_compare/ddp_unet.py \
           "${common[@]}" --steps "$steps" 2>&1 | grep '^pytorch-ddp:')
  echo "$line"
  ddp_rates+=("$(rate "$line")")
  if [[ $compile == yes ]]; then
    port=$((20000 + RANDOM % 20000))
    compiled=$("${mpirun[@]}" -x MASTER_PORT="$port" "$python" bench/ddp_compare/ddp_unet.py \
                 "${common[@]}" --steps "$steps" --compile 2>&1 | grep '^pytorch-ddp-compile:')
    echo "$compiled"
    compile_rates+=("$(rate "$compiled")")
  fi
  # Each repeat's own ratio: its two runs are seconds apart, so they saw much the same load.
  ratios+=("$(awk -v a="${overlap_rates[-1]}" -v b="${ddp_rates[-1]}" 'BEGIN { print a / b }')")
  echo "-- repeat $r: difftrain (overlap) / DDP = ${ratios[-1]}"
  # The same model on both sides, or the comparison means nothing.
  if [[ -z $(parameters "$on") || $(parameters "$on") != "$(parameters "$line")" ]]; then
    echo "run.sh: difftrain has $(parameters "$on") parameters, the PyTorch model" \
         "$(parameters "$line"): not the same U-Net" >&2
    exit 1
  fi
done
echo "-- done, load average $(load)"

overlap=$(printf '%s\n' "${overlap_rates[@]}" | median)
plain=$(printf '%s\n' "${plain_rates[@]}" | median)
ddp=$(printf '%s\n' "${ddp_rates[@]}" | median)
wait_share=$(printf '%s\n' "${wait_shares[@]}" | median)
echo "== medians over $repeats runs"
printf 'difftrain (overlap)     %8.1f img/s   wait %s%% of step\n' "$overlap" "$wait_share"
printf 'difftrain (no overlap)  %8.1f img/s\n' "$plain"
printf 'pytorch DDP             %8.1f img/s\n' "$ddp"
if [[ $compile == yes ]]; then
  compiled=$(printf '%s\n' "${compile_rates[@]}" | median)
  printf 'pytorch DDP + compile   %8.1f img/s\n' "$compiled"
  awk -v a="$overlap" -v b="$compiled" 'BEGIN { printf "difftrain / (DDP + torch.compile) = %.2fx\n", a / b }'
fi
awk -v a="$overlap" -v b="$ddp" -v c="$plain" -v r="$(printf '%s\n' "${ratios[@]}" | median)" 'BEGIN {
  printf "difftrain / DDP = %.2fx (median of per-repeat ratios: %.2fx); overlap / no overlap" \
         " = %.2fx\n", a / b, r, a / c }'
