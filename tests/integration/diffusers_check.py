"""diffusers' side of tests/integration/diffusers_test.sh: diffusers itself loads what
`difftrain export` wrote and must compute what difftrain computes.

  prepare WORK  per case: random inputs, starting noise x_T, and a random-weight diffusers
                UNet2DModel built from the exported config (case/random)
  check WORK    per case: the pipeline loads offline, parameter counts, network outputs (1e-5),
                deterministic DDIM through DDIMScheduler, betas, random model round trip

A case folder holds export/ (difftrain export) and what the shell script wrote beside it.
"""
import csv
import json
import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

FORWARD_TOL = 1e-5
# DDIM: difftrain keeps the schedule in float64, diffusers in float32 (alphas_cumprod is a
# float32 cumulative product, ~1e-7 relative per factor), and the two attention kernels round
# differently (~1e-7). Each of the T steps re-feeds the state into the network, so the
# differences compound; 2e-4 on images in [-1, 1] is ~50 float32 ulps of 1 per step of 20 and
# still three orders of magnitude below one 8-bit grey level (2/255).
DDIM_TOL = 2e-4


def fail(message):
    sys.exit(f"FAIL: {message}")


def cases(work):
    return sorted(p for p in (pathlib.Path(work) / "cases").iterdir() if p.is_dir())


def unet_config(case):
    return json.loads((case / "export" / "unet" / "config.json").read_text())


def scheduler_config(case):
    return json.loads((case / "export" / "scheduler" / "scheduler_config.json").read_text())


def class_count(config):
    return config.get("num_class_embeds") or 0


def prepare(work):
    from diffusers import UNet2DModel

    for index, case in enumerate(cases(work)):
        config = unet_config(case)
        steps = scheduler_config(case)["num_train_timesteps"]
        torch.manual_seed(100 + index)
        c, s = config["in_channels"], config["sample_size"]
        inputs = {"x": torch.randn(2, c, s, s), "t": torch.tensor([0, steps - 1], dtype=torch.int64)}
        if class_count(config):
            inputs["labels"] = torch.tensor([0, class_count(config) - 1], dtype=torch.int64)
        save_file(inputs, str(case / "inputs.safetensors"))
        save_file({"x_t": torch.randn(2, c, s, s)}, str(case / "xt.safetensors"))
        # A model as diffusers makes it (nothing zero-initialised), then every weight moved, so
        # that norms and embeddings are not at their identity values either.
        model = UNet2DModel.from_config(config)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        model.save_pretrained(str(case / "random"), safe_serialization=True)


def forward(model, path):
    inputs = load_file(str(path))
    with torch.no_grad():
        return model(inputs["x"], inputs["t"], class_labels=inputs.get("labels")).sample


def max_diff(a, b):
    if a.shape != b.shape:
        fail(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a - b).abs().max().item()


def read_betas(path):
    with open(path) as f:
        return torch.tensor([float(row["beta_t"]) for row in csv.DictReader(f)], dtype=torch.float64)


def check_betas(name, scheduler, csv_path):
    ours = read_betas(csv_path)
    theirs = scheduler.betas.to(torch.float64)
    if ours.shape != theirs.shape:
        fail(f"{name}: {len(theirs)} betas in diffusers, {len(ours)} in difftrain")
    # diffusers stores float32 betas; ours are float64 printed to 12 digits.
    rel = ((theirs - ours).abs() / ours).max().item()
    if rel > 1e-6:
        fail(f"{name}: diffusers' betas differ from difftrain's by {rel:.2e} (relative)")
    print(f"ok: {name}: {len(ours)} betas equal to float32 rounding (max relative {rel:.1e})")


def ddim(unet, scheduler_dir, x_t, labels):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_pretrained(str(scheduler_dir), subfolder="scheduler")
    scheduler.set_timesteps(scheduler.config.num_train_timesteps)
    x = x_t
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = unet(x, t, class_labels=labels).sample
            # difftrain's DDIM recomputes eps from the clipped x0 (use_clipped_model_output).
            x = scheduler.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    return x


def check(work):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    for case in cases(work):
        name = case.name
        pipe = DDPMPipeline.from_pretrained(str(case / "export"), local_files_only=True)
        unet = pipe.unet.eval()
        count = sum(p.numel() for p in unet.parameters())
        want = int((case / "parameters.txt").read_text())
        if count != want:
            fail(f"{name}: diffusers' UNet2DModel has {count} parameters, difftrain's U-Net {want}")
        print(f"ok: {name}: DDPMPipeline loads offline; UNet2DModel has {count} parameters")

        diff = max_diff(forward(unet, case / "inputs.safetensors"),
                        load_file(str(case / "ours_forward.safetensors"))["output"])
        if diff > FORWARD_TOL:
            fail(f"{name}: exported network output differs from difftrain's by {diff:.2e}")
        print(f"ok: {name}: exported UNet2DModel output = difftrain's (max diff {diff:.1e})")

        random_model = UNet2DModel.from_pretrained(str(case / "random"), local_files_only=True).eval()
        theirs = forward(random_model, case / "inputs.safetensors")
        diff = max_diff(theirs, load_file(str(case / "ours_random_forward.safetensors"))["output"])
        # Random weights moved by 0.05 give outputs of scale ~3-30: float32 rounding (attention
        # through SDPA there, bmm here) then grows with the scale, so the bound is relative.
        if diff > FORWARD_TOL * max(1.0, theirs.abs().max().item()):
            fail(f"{name}: imported random model's output differs from diffusers' by {diff:.2e}")
        print(f"ok: {name}: imported random model output = diffusers' (max diff {diff:.1e}, "
              f"output scale {theirs.abs().max().item():.2f})")

        original = load_file(str(case / "random" / "diffusion_pytorch_model.safetensors"))
        back = load_file(str(case / "random_back" / "unet" / "diffusion_pytorch_model.safetensors"))
        if original.keys() != back.keys():
            fail(f"{name}: import -> export changed the tensor names: {sorted(original.keys() ^ back.keys())[:3]}")
        changed = [k for k in original if not torch.equal(original[k], back[k])]
        if changed:
            fail(f"{name}: import -> export changed {len(changed)} tensors, e.g. {changed[0]}")
        print(f"ok: {name}: random diffusers model survives import -> export unchanged "
              f"({len(original)} tensors)")

        xt = load_file(str(case / "xt.safetensors"))["x_t"]
        conditional = class_count(unet.config)
        labels = torch.full((xt.shape[0],), conditional - 1) if conditional else None
        theirs = ddim(unet, case / "export", xt, labels)
        diff = max_diff(theirs, load_file(str(case / "ours_sample.safetensors"))["images"])
        if diff > DDIM_TOL:
            fail(f"{name}: DDIM through DDIMScheduler differs from difftrain sample by {diff:.2e}")
        print(f"ok: {name}: DDIMScheduler (eta 0, {pipe.scheduler.config.num_train_timesteps} steps) "
              f"= difftrain sample (max diff {diff:.1e})")

        check_betas(f"{name} scheduler", pipe.scheduler, case / "schedule.csv")
        if name.startswith("a-"):
            images = pipe(batch_size=1, num_inference_steps=2, output_type="np").images
            print(f"ok: {name}: DDPMPipeline runs ({images.shape})")

    for kind, schedule in (("linear", "linear"), ("cosine", "squaredcos_cap_v2")):
        scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=schedule)
        check_betas(f"{kind} T=1000", scheduler, pathlib.Path(work) / f"{kind}1000.csv")


if __name__ == "__main__":
    {"prepare": prepare, "check": check}[sys.argv[1]](sys.argv[2])
