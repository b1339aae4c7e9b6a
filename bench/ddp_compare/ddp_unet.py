#!/usr/bin/env python3
"""PyTorch DDP's side of the comparison: the DDPM U-Net of trainer/model (same structure,
parameter names and count), trained on random data with the step difftrain's trainer takes:
q_sample, eps-MSE, backward (DDP all-reduces buckets during it), grad-norm clip, AdamW, EMA.

Run one process per rank under mpirun (ranks come from Open MPI's environment) or torchrun:
  mpirun -np 2 .venv/bin/python ddp_unet.py --config configs/fmnist-tiny.yaml --batch 8 [--compile]
Prints one line from rank 0: "pytorch-ddp[-compile]: ... <images/s> img/s ...".
"""
import argparse
import math
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import yaml

# Parameter counts of trainer/model/unet for the shipped configs (its unit test, the paper).
KNOWN_PARAMETER_COUNTS = {"fmnist-tiny": 651_041, "fmnist": 6_469_889, "ddpm-cifar10": 35_746_307}


def group_norm(channels):
    return nn.GroupNorm(32, channels, eps=1e-6)


def conv(cin, cout, kernel, stride=1, padding=0, zero=False):
    layer = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding)
    if zero:
        nn.init.zeros_(layer.weight)
    else:
        nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def linear(cin, cout):
    layer = nn.Linear(cin, cout)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device)
                      * (-math.log(10000.0) / (half - 1)))
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class TimeEmbedding(nn.Module):
    def __init__(self, ch, temb_ch):
        super().__init__()
        self.ch = ch
        self.dense = nn.ModuleList([linear(ch, temb_ch), linear(temb_ch, temb_ch)])

    def forward(self, t):
        return self.dense[1](F.silu(self.dense[0](timestep_embedding(t, self.ch))))


class ResBlock(nn.Module):
    def __init__(self, cin, cout, temb_ch, dropout):
        super().__init__()
        self.norm1 = group_norm(cin)
        self.conv1 = conv(cin, cout, 3, padding=1)
        self.temb_proj = linear(temb_ch, cout)
        self.norm2 = group_norm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(cout, cout, 3, padding=1, zero=True)
        self.nin_shortcut = conv(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(x) if self.nin_shortcut is not None else x) + h


class AttnBlock(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.norm = group_norm(ch)
        self.q, self.k, self.v = conv(ch, ch, 1), conv(ch, ch, 1), conv(ch, ch, 1)
        self.proj_out = conv(ch, ch, 1, zero=True)

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q = (self.q(h) * (1.0 / math.sqrt(c))).reshape(b, c, hh * ww)
        k = self.k(h).reshape(b, c, hh * ww)
        v = self.v(h).reshape(b, c, hh * ww)
        weights = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)
        out = torch.bmm(v, weights.transpose(1, 2)).reshape(x.shape)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = conv(ch, ch, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = conv(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    def __init__(self, ins, cout, attention, resample, temb_ch, dropout):
        super().__init__()
        self.block = nn.ModuleList([ResBlock(cin, cout, temb_ch, dropout) for cin in ins])
        self.attn = nn.ModuleList([AttnBlock(cout) for _ in ins] if attention else [])
        if resample == "down":
            self.downsample = Downsample(cout)
        elif resample == "up":
            self.upsample = Upsample(cout)

    def forward_block(self, i, h, temb):
        h = self.block[i](h, temb)
        return self.attn[i](h) if len(self.attn) else h


class Middle(nn.Module):
    def __init__(self, ch, temb_ch, dropout):
        super().__init__()
        self.block_1 = ResBlock(ch, ch, temb_ch, dropout)
        self.attn_1 = AttnBlock(ch)
        self.block_2 = ResBlock(ch, ch, temb_ch, dropout)

    def forward(self, h, temb):
        return self.block_2(self.attn_1(self.block_1(h, temb)), temb)


class UNet(nn.Module):
    """trainer/model/unet.cpp, module for module (registration order included)."""

    def __init__(self, in_channels, image_size, ch, channel_mult, num_res_blocks,
                 attention_resolutions, dropout):
        super().__init__()
        temb_ch = 4 * ch
        levels = len(channel_mult)
        self.temb = TimeEmbedding(ch, temb_ch)
        self.conv_in = conv(in_channels, ch, 3, padding=1)
        size = image_size
        skips, block_in, down = [ch], ch, []
        for level, mult in enumerate(channel_mult):
            out = ch * mult
            last = level == levels - 1
            ins = [block_in if i == 0 else out for i in range(num_res_blocks)]
            skips += [out] * num_res_blocks
            down.append(Level(ins, out, size in attention_resolutions, None if last else "down",
                              temb_ch, dropout))
            if not last:
                skips.append(out)
                size //= 2
            block_in = out
        self.down = nn.ModuleList(down)
        self.mid = Middle(block_in, temb_ch, dropout)
        up = [None] * levels
        for level in reversed(range(levels)):
            out = ch * channel_mult[level]
            ins = []
            for _ in range(num_res_blocks + 1):
                ins.append(block_in + skips.pop())
                block_in = out
            up[level] = Level(ins, out, size in attention_resolutions,
                              None if level == 0 else "up", temb_ch, dropout)
            if level != 0:
                size *= 2
        self.up = nn.ModuleList(up)
        self.norm_out = group_norm(block_in)
        self.conv_out = conv(block_in, in_channels, 3, padding=1, zero=True)

    def forward(self, x, t):
        temb = self.temb(t)
        hs = [self.conv_in(x)]
        levels = len(self.down)
        for level, down in enumerate(self.down):
            for i in range(len(down.block)):
                hs.append(down.forward_block(i, hs[-1], temb))
            if level != levels - 1:
                hs.append(down.downsample(hs[-1]))
        h = self.mid(hs[-1], temb)
        for level in reversed(range(levels)):
            up = self.up[level]
            for i in range(len(up.block)):
                h = up.forward_block(i, torch.cat([h, hs.pop()], dim=1), temb)
            if level != 0:
                h = up.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def linear_alphas_cumprod(config):
    diffusion = config.get("diffusion", {})
    steps = diffusion.get("timesteps", 1000)
    betas = torch.linspace(diffusion.get("beta_start", 1e-4), diffusion.get("beta_end", 0.02),
                           steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0).float()


@torch.no_grad()
def ema_update(ema, model, n, config):
    """difftrain's EMA: decay min(ema.decay, (1 + n') / (10 + n')) for update n' = n + 1."""
    d = min(config.get("ema", {}).get("decay", 0.9999), (2.0 + n) / (11.0 + n))
    params = [p.detach() for p in model.parameters()]
    torch._foreach_mul_(ema, d)
    torch._foreach_add_(ema, params, alpha=1.0 - d)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="difftrain YAML config (model.* keys)")
    parser.add_argument("--batch", type=int, required=True, help="images per rank per step")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    parser.add_argument("--bucket-mb", type=float, default=None,
                        help="DDP bucket size (default: the config's dist.bucket_mb, else 25)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the DDP model (inductor; compiled during the warm-up)")
    args = parser.parse_args()

    # Ranks from Open MPI's environment when started by mpirun; torchrun sets these itself.
    env = os.environ
    if "OMPI_COMM_WORLD_RANK" in env:
        env.setdefault("RANK", env["OMPI_COMM_WORLD_RANK"])
        env.setdefault("WORLD_SIZE", env["OMPI_COMM_WORLD_SIZE"])
        env.setdefault("LOCAL_RANK", env["OMPI_COMM_WORLD_LOCAL_RANK"])
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", "29517")
    torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(env.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)

    with open(args.config) as f:
        config = yaml.safe_load(f)
    m = config["model"]
    torch.manual_seed(0)
    model = UNet(m["in_channels"], m["image_size"], m["channels"], m["channel_mult"],
                 m["num_res_blocks"], m["attention_resolutions"], m.get("dropout", 0.1)).to(device)
    count = sum(p.numel() for p in model.parameters())
    preset = os.path.splitext(os.path.basename(args.config))[0]
    if preset in KNOWN_PARAMETER_COUNTS:
        assert count == KNOWN_PARAMETER_COUNTS[preset], \
            f"{preset}: {count} parameters, difftrain's U-Net has {KNOWN_PARAMETER_COUNTS[preset]}"
    train = config.get("train", {})
    # The same bucket size as difftrain's GradientReducer (both put ~1 MB in the first bucket).
    bucket_mb = args.bucket_mb or config.get("dist", {}).get("bucket_mb", 25.0)
    ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=bucket_mb,
                                              gradient_as_bucket_view=True)
    # DDP under torch.compile: the compiled graph is split at bucket boundaries so that the
    # all-reduces still overlap backward.
    network = torch.compile(ddp) if args.compile else ddp
    # AdamW with the train.* keys and the defaults of trainer/config.h.
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.get("lr", 2e-4),
                                  betas=(train.get("adam_beta1", 0.9),
                                         train.get("adam_beta2", 0.999)),
                                  eps=train.get("adam_eps", 1e-8),
                                  weight_decay=train.get("weight_decay", 0.0))
    ema = [p.detach().clone() for p in model.parameters()]
    abar = linear_alphas_cumprod(config).to(device)
    steps_total = abar.numel()
    shape = (args.batch, m["in_channels"], m["image_size"], m["image_size"])
    clip = train.get("grad_clip", 1.0)

    timings = {"forward_backward": 0.0, "rest": 0.0}

    def step(n):
        start = time.perf_counter()
        images = torch.randint(0, 256, shape, dtype=torch.uint8)
        x0 = images.to(device).float().div_(127.5).sub_(1.0)
        t = torch.randint(0, steps_total, (args.batch,), device=device)
        eps = torch.randn(shape, device=device)
        a = abar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1.0 - a).sqrt() * eps
        optimizer.zero_grad(set_to_none=False)
        loss = F.mse_loss(network(x_t, t), eps)
        loss.backward()
        backward_end = time.perf_counter()
        timings["forward_backward"] += backward_end - start
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        ema_update(ema, model, n, config)
        timings["rest"] += time.perf_counter() - backward_end
        return loss

    model.train()
    for n in range(args.warmup):
        step(n)
    if cuda:
        torch.cuda.synchronize()
    dist.barrier()
    timings.update(forward_backward=0.0, rest=0.0)
    start = time.perf_counter()
    for n in range(args.steps):
        loss = step(args.warmup + n)
    loss.item()
    if cuda:
        torch.cuda.synchronize()
    elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    seconds = elapsed.item()
    if rank == 0:
        images_per_s = args.steps * args.batch * world / seconds
        side = "pytorch-ddp-compile" if args.compile else "pytorch-ddp"
        print(f"{side}: {preset}, {count} parameters, {world} ranks x {args.batch} images, "
              f"{args.threads} threads/rank, {args.steps} steps: {images_per_s:.1f} img/s, "
              f"{1000 * seconds / args.steps:.0f} ms/step | rank 0: data+fwd+bwd "
              f"{1000 * timings['forward_backward'] / args.steps:.0f} ms (DDP's all-reduce runs "
              f"inside), clip+opt+ema {1000 * timings['rest'] / args.steps:.0f} ms", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
