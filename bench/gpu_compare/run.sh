#!/usr/bin/env bash
# Single-GPU comparison of difftrain's U-Net training (eager, and on a GPU also captured in a
# CUDA graph as train.cuda_graph does) and sampling with PyTorch eager and torch.compile on the
# same model, batch and precision (bf16 autocast, fp32 master weights), for
# each config; prints one Markdown table: training images/s, MFU (forward+backward FLOPs = 3x the
# analytic forward count of unet_bench.py, over --peak-tflops), peak device memory of training,
# DDIM sampling images/s. Checks that both sides build the same number of parameters.
#
# usage: bench/gpu_compare/run.sh [--configs "configs/fmnist.yaml configs/ddpm-cifar10.yaml"]
#          [--device cuda] [--batch 128] [--steps 50] [--warmup 10] [--precision bf16|fp32]
#          [--sample-steps 50] [--sample-batch 128] [--sample-repeats 2] [--peak-tflops 790]
#          [--threads 0] [--modes eager,compile] [--build-dir build-bench] [--python PYTHON]
#          [--cmake-args "-DCMAKE_PREFIX_PATH=..."] [--channels-last yes|no]
# --channels-last yes (the default on a GPU) adds NHWC rows (train.channels_last): pytorch-eager-cl
# and difftrain-eager-cl.
# CPU smoke test (no GPU, torch.compile skipped on torch < 2):
#   bench/gpu_compare/run.sh --device cpu --configs configs/fmnist-tiny.yaml --batch 4 \
#     --steps 2 --warmup 1 --sample-steps 3 --sample-batch 2 --sample-repeats 1 --threads 2
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
configs="configs/fmnist.yaml configs/ddpm-cifar10.yaml" device=cuda batch=128 steps=50 warmup=10
precision="" sample_steps=50 sample_batch=128 sample_repeats=2 peak_tflops=790 threads=0
modes=eager,compile build_dir=$root/build-bench python="" cmake_args="" channels_last=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --configs) configs=$2 ;;
    --device) device=$2 ;;
    --batch) batch=$2 ;;
    --steps) steps=$2 ;;
    --warmup) warmup=$2 ;;
    --precision) precision=$2 ;;
    --sample-steps) sample_steps=$2 ;;
    --sample-batch) sample_batch=$2 ;;
    --sample-repeats) sample_repeats=$2 ;;
    --peak-tflops) peak_tflops=$2 ;;
    --threads) threads=$2 ;;
    --modes) modes=$2 ;;
    --build-dir) build_dir=$2 ;;
    --python) python=$2 ;;
    --cmake-args) cmake_args=$2 ;;
    --channels-last) channels_last=$2 ;;
    *) echo "run.sh: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift 2
done
cd "$root"
if [[ -z $precision ]]; then
  # bf16 is what the GPU comparison is for; on 2 CPU cores fp32 is faster.
  if [[ $device == cpu ]]; then precision=fp32; else precision=bf16; fi
fi
[[ -n $channels_last ]] || { [[ $device == cuda* ]] && channels_last=yes || channels_last=no; }
if [[ -z $python ]]; then
  # The first Python that has torch: the project's .venv, or the GPU machine's python3.
  for candidate in "$root/.venv/bin/python" python3; do
    if "$candidate" -c 'import torch, yaml' 2>/dev/null; then python=$candidate; break; fi
  done
  [[ -n $python ]] || { echo "run.sh: no python3 with torch and yaml (use --python)" >&2; exit 1; }
fi

echo "== building gpu_compare_difftrain in $build_dir"
# shellcheck disable=SC2086  # cmake_args is a list of options
cmake -S "$root" -B "$build_dir" -DDIFFTRAIN_BUILD_BENCH=ON $cmake_args >/dev/null
cmake --build "$build_dir" --target gpu_compare_difftrain -j "$(nproc)" >/dev/null || {
  echo "run.sh: could not build gpu_compare_difftrain in $build_dir" >&2
  exit 1
}
driver=$build_dir/bench/gpu_compare_difftrain

results=$(mktemp)
trap 'rm -f "$results"' EXIT
echo "== $(date -u +%Y-%m-%dT%H:%MZ) on $(hostname), device $device, $precision, batch $batch," \
  "$steps steps (+$warmup warm-up), DDIM-$sample_steps x $sample_batch images x $sample_repeats"
if [[ $device == cuda* ]] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
common=(--device "$device" --batch "$batch" --steps "$steps" --warmup "$warmup"
        --precision "$precision" --sample-steps "$sample_steps" --sample-batch "$sample_batch"
        --sample-repeats "$sample_repeats" --threads "$threads")
for config in $configs; do
  "$python" bench/gpu_compare/unet_bench.py --config "$config" "${common[@]}" --modes "$modes" \
    --peak-tflops "$peak_tflops" | tee -a "$results" | grep -v '^RESULT '
  "$driver" --config "$config" "${common[@]}" | tee -a "$results" | grep -v '^RESULT '
  if [[ $device == cuda* ]]; then  # train.cuda_graph's step, and train.channels_last's
    "$driver" --config "$config" "${common[@]}" --cuda-graph | tee -a "$results" |
      grep -v '^RESULT '
  fi
  if [[ $channels_last == yes ]]; then
    "$python" bench/gpu_compare/unet_bench.py --config "$config" "${common[@]}" --modes eager \
      --peak-tflops "$peak_tflops" --channels-last | tee -a "$results" |
      grep -v '^RESULT \|^pytorch: '
    "$driver" --config "$config" "${common[@]}" --channels-last | tee -a "$results" |
      grep -v '^RESULT '
  fi
done

echo
"$python" - "$results" "$peak_tflops" <<'EOF'
import json, sys

rows = [json.loads(line[len("RESULT "):]) for line in open(sys.argv[1]) if line.startswith("RESULT ")]
peak = float(sys.argv[2]) * 1e12
flops = {r["config"]: r for r in rows if r["side"] == "flops"}
print(f"| config | side | params | train img/s | vs PyTorch eager | MFU (of {sys.argv[2]} TFLOP/s) "
      "| peak memory (MiB) | DDIM img/s |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
mismatch = False
for config, f in flops.items():
    sides = [r for r in rows if r["config"] == config and r["side"] != "flops"]
    eager = next((r for r in sides if r["side"] == "pytorch-eager" and "skipped" not in r), None)
    for r in sides:
        if "skipped" in r:
            print(f"| {config} | {r['side']} | | skipped ({r['skipped']}) | | | | |")
            continue
        if r["parameters"] != f["parameters"]:
            mismatch = True
        rate = r["train_images_per_s"]
        ratio = f"{rate / eager['train_images_per_s']:.2f}x" if eager else ""
        mfu = 100 * rate * f["train_flops_per_image"] / peak
        memory = f"{r['peak_memory_mib']:.0f}" if r.get("peak_memory_mib") is not None else "n/a"
        print(f"| {config} | {r['side']} | {r['parameters']:,} | {rate:.1f} | {ratio} | {mfu:.2f}% "
              f"| {memory} | {r['sample_images_per_s']:.2f} (DDIM-{r['sample_steps']}) |")
print()
for config, f in flops.items():
    print(f"{config}: {f['train_flops_per_image'] / 1e9:.2f} GFLOP per training image "
          f"(3 x forward {f['forward_flops_per_image'] / 1e9:.2f})")
if mismatch:
    sys.exit("run.sh: difftrain and PyTorch built different parameter counts: not the same model")
EOF
