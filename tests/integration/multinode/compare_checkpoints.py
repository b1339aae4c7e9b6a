"""Compares the model weights of two difftrain checkpoints within an absolute tolerance.

    compare_checkpoints.py A.ckpt B.ckpt ATOL

Prints the largest absolute difference, and whether the weights are bit-identical; exits 1
when a tensor is missing, has another shape, or differs by more than ATOL anywhere.
A checkpoint is "DTCKPT01", an 8-byte payload length and a SHA-256 (48 bytes), then a
TorchScript archive whose "model" submodule holds the weights.
"""
import io
import sys
import warnings

import torch

HEADER_BYTES = 8 + 8 + 32


def model_weights(path):
    data = open(path, "rb").read()
    if data[:8] != b"DTCKPT01":
        sys.exit(f"{path}: not a difftrain checkpoint")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        archive = torch.jit.load(io.BytesIO(data[HEADER_BYTES:]), map_location="cpu")
    return dict(archive.model.state_dict())


def main():
    path_a, path_b, atol = sys.argv[1], sys.argv[2], float(sys.argv[3])
    a, b = model_weights(path_a), model_weights(path_b)
    if a.keys() != b.keys():
        sys.exit(f"FAIL: different tensors: {sorted(a.keys() ^ b.keys())[:5]}")
    worst_name, worst, identical, count = "", 0.0, True, 0
    for name, tensor in a.items():
        other = b[name]
        if tensor.shape != other.shape:
            sys.exit(f"FAIL: {name}: shape {tuple(tensor.shape)} vs {tuple(other.shape)}")
        identical = identical and torch.equal(tensor, other)
        diff = (tensor.double() - other.double()).abs().max().item() if tensor.numel() else 0.0
        count += tensor.numel()
        if diff > worst:
            worst_name, worst = name, diff
    verdict = "bit-identical" if identical else f"max |diff| {worst:.3g} in {worst_name}"
    print(f"{len(a)} tensors, {count} weights: {verdict} (tolerance {atol:g})")
    sys.exit(0 if worst <= atol else 1)


if __name__ == "__main__":
    main()
