#!/usr/bin/python3
"""PyTorch's side of the single-GPU comparison: difftrain's U-Net (the module of
bench/ddp_compare/ddp_unet.py, same structure and parameter count) for a difftrain config,
timed as difftrain's trainer runs it: q_sample, forward under bf16 autocast (fp32 master
weights, fp32 loss), eps-MSE, backward, grad-norm clip, AdamW, EMA. Measures training images/s
eagerly and under torch.compile, DDIM-50 sampling images/s, peak device memory of training, and
the model's FLOPs per image (forward analytically, forward + backward = 3x forward).

  /usr/bin/python3 bench/gpu_compare/unet_bench.py --config configs/ddpm-cifar10.yaml --batch 128
Prints human-readable lines and one "RESULT {json}" line per measurement for run.sh.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ddp_compare"))
from ddp_unet import AttnBlock, UNet, ema_update, linear_alphas_cumprod  # noqa: E402  (the one definition)


def build_model(config):
    m = config["model"]
    return UNet(m["in_channels"], m["image_size"], m["channels"], m["channel_mult"],
                m["num_res_blocks"], m["attention_resolutions"], m.get("dropout", 0.1))


def forward_flops_per_image(model, config):
    """Multiply-adds x 2 of convolutions, linears and the attention matmuls in one forward of one
    image (normalisations and activations are not counted, as MFU conventionally does not)."""
    m = config["model"]
    total = [0]

    def conv_hook(module, inputs, output):
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total[0] += 2 * output.numel() * k

    def linear_hook(module, inputs, output):
        total[0] += 2 * output.numel() * module.in_features

    def attn_hook(module, inputs, output):
        b, c, h, w = inputs[0].shape
        total[0] += 2 * 2 * b * c * (h * w) ** 2  # q^T k and v w^T

    hooks = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(linear_hook))
        elif isinstance(module, AttnBlock):
            hooks.append(module.register_forward_hook(attn_hook))
    x = torch.zeros(1, m["in_channels"], m["image_size"], m["image_size"])
    with torch.no_grad():
        model(x, torch.zeros(1, dtype=torch.long))
    for hook in hooks:
        hook.remove()
    counted = total[0]
    # Cross-check with PyTorch's own counter where it exists (torch >= 2.1).
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return counted, None
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, torch.zeros(1, dtype=torch.long))
    return counted, counter.get_total_flops()


def memory_format(args):
    return torch.channels_last if args.channels_last else torch.contiguous_format


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device):
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def train_rate(model, forward, config, args, device):
    """Training images/s over args.steps timed steps after args.warmup untimed ones."""
    m, train = config["model"], config.get("train", {})
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.get("lr", 2e-4),
                                  betas=(train.get("adam_beta1", 0.9),
                                         train.get("adam_beta2", 0.999)),
                                  eps=train.get("adam_eps", 1e-8),
                                  weight_decay=train.get("weight_decay", 0.0))
    ema = [p.detach().clone() for p in model.parameters()]
    abar = linear_alphas_cumprod(config).to(device)
    shape = (args.batch, m["in_channels"], m["image_size"], m["image_size"])
    clip = train.get("grad_clip", 1.0)
    bf16 = args.precision == "bf16"
    fmt = memory_format(args)

    def step(n):
        # Drawn on the device, as difftrain's sides do (its trainer copies pinned batches
        # asynchronously): a pageable copy would make the host wait for the GPU every step.
        x0 = torch.randint(0, 256, shape, dtype=torch.uint8, device=device).float() / 127.5 - 1.0
        t = torch.randint(0, abar.numel(), (args.batch,), device=device)
        eps = torch.randn(shape, device=device)
        a = abar[t].view(-1, 1, 1, 1)
        x_t = (a.sqrt() * x0 + (1.0 - a).sqrt() * eps).contiguous(memory_format=fmt)
        optimizer.zero_grad(set_to_none=False)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            eps_hat = forward(x_t, t)
        loss = F.mse_loss(eps_hat.float(), eps)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        ema_update(ema, model, n, config)

    model.train()
    reset_peak_memory(device)
    for n in range(args.warmup):
        step(n)
    synchronize(device)
    start = time.perf_counter()
    for n in range(args.steps):
        step(args.warmup + n)
    synchronize(device)
    seconds = time.perf_counter() - start
    return args.steps * args.batch / seconds, peak_memory_mib(device)


def sample_rate(model, forward, config, args, device):
    """DDIM (eta = 0, x0 clipped, as difftrain's sampler) images/s for args.sample_steps."""
    m = config["model"]
    abar = linear_alphas_cumprod(config).double()
    steps, total = args.sample_steps, abar.numel()
    grid = [round(k * (total - 1) / (steps - 1)) for k in range(steps)] if steps > 1 else [total - 1]
    shape = (args.sample_batch, m["in_channels"], m["image_size"], m["image_size"])
    bf16 = args.precision == "bf16"
    fmt = memory_format(args)
    model.eval()

    def run():
        x = torch.randn(shape, device=device)
        for i in reversed(range(len(grid))):
            a = abar[grid[i]].item()
            a_prev = abar[grid[i - 1]].item() if i > 0 else 1.0
            t = torch.full((shape[0],), grid[i], dtype=torch.long, device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                eps = forward(x.contiguous(memory_format=fmt), t)
            eps = eps.float()
            x0 = ((x - eps * math.sqrt(1.0 - a)) / math.sqrt(a)).clamp_(-1.0, 1.0)
            eps = (x - x0 * math.sqrt(a)) / math.sqrt(1.0 - a)
            x = x0 * math.sqrt(a_prev) + eps * math.sqrt(1.0 - a_prev)
        return x

    with torch.no_grad():
        run()  # warm-up (and compilation)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(args.sample_repeats):
            run()
        synchronize(device)
        seconds = time.perf_counter() - start
    return args.sample_repeats * shape[0] / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="difftrain YAML config (model.* keys)")
    parser.add_argument("--device", default="cuda", help="cuda or cpu")
    parser.add_argument("--batch", type=int, default=128, help="training images per step")
    parser.add_argument("--steps", type=int, default=50, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps (and compilation)")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--modes", default="eager,compile", help="eager and/or compile")
    parser.add_argument("--sample-steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--sample-batch", type=int, default=128)
    parser.add_argument("--sample-repeats", type=int, default=2, help="timed sampling runs")
    parser.add_argument("--threads", type=int, default=0, help="CPU intra-op threads (0: default)")
    parser.add_argument("--peak-tflops", type=float, default=790.0,
                        help="the device's dense bf16 peak for MFU (H100: ~790)")
    parser.add_argument("--channels-last", action="store_true",
                        help="NHWC weights and images (side names get -cl)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as difftrain's configure_device_math
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    with open(args.config) as f:
        config = yaml.safe_load(f)
    preset = os.path.splitext(os.path.basename(args.config))[0]

    torch.manual_seed(0)
    model = build_model(config)
    count = sum(p.numel() for p in model.parameters())
    forward_flops, counter_flops = forward_flops_per_image(model, config)
    train_flops = 3 * forward_flops
    print(f"pytorch: {preset}, {count} parameters, forward {forward_flops / 1e9:.3f} GFLOP/image"
          + (f" (torch.utils.flop_counter: {counter_flops / 1e9:.3f})" if counter_flops else "")
          + f", train 3x = {train_flops / 1e9:.3f} GFLOP/image", flush=True)
    print("RESULT " + json.dumps({"side": "flops", "config": preset, "parameters": count,
                                  "forward_flops_per_image": forward_flops,
                                  "flop_counter_forward_flops_per_image": counter_flops,
                                  "train_flops_per_image": train_flops}), flush=True)
    model.to(device)

    suffix = "-cl" if args.channels_last else ""
    for mode in args.modes.split(","):
        if mode == "compile" and not hasattr(torch, "compile"):
            print(f"pytorch-compile: skipped: torch {torch.__version__} has no torch.compile",
                  flush=True)
            print("RESULT " + json.dumps({"side": f"pytorch-compile{suffix}", "config": preset,
                                          "skipped": f"torch {torch.__version__}"}), flush=True)
            continue
        # A fresh model per mode (same seed): each mode trains from the same start.
        torch.manual_seed(0)
        model = build_model(config).to(device, memory_format=memory_format(args))
        forward = torch.compile(model) if mode == "compile" else model
        images_per_s, peak_mib = train_rate(model, forward, config, args, device)
        sample_images_per_s = sample_rate(model, forward, config, args, device)
        mfu = images_per_s * train_flops / (args.peak_tflops * 1e12)
        peak = f"{peak_mib:.0f} MiB" if peak_mib is not None else "n/a"
        print(f"pytorch-{mode}{suffix}: {preset}, {count} parameters, batch {args.batch}, "
              f"{args.precision}: train {images_per_s:.1f} img/s (MFU {100 * mfu:.2f}% of "
              f"{args.peak_tflops:g} TFLOP/s), peak memory {peak}; DDIM-{args.sample_steps} "
              f"batch {args.sample_batch}: {sample_images_per_s:.2f} img/s", flush=True)
        print("RESULT " + json.dumps({
            "side": f"pytorch-{mode}{suffix}", "config": preset, "parameters": count,
            "batch": args.batch, "precision": args.precision, "device": args.device,
            "train_images_per_s": images_per_s, "peak_memory_mib": peak_mib,
            "sample_steps": args.sample_steps, "sample_images_per_s": sample_images_per_s,
            "mfu": mfu}), flush=True)


if __name__ == "__main__":
    main()
