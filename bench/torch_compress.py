#!/usr/bin/python3
"""PyTorch twin of `bitdelta compress` for bench/compress_bench: the same compression written the
straightforward way, on the checkpoint folders compress_bench wrote.

  /usr/bin/python3 bench/torch_compress.py --base DIR --finetuned DIR -o FILE [--threads N]

For every tensor in name order: both models' fingerprints (hashlib SHA-256 over name, dtype,
shape, byte length and bytes, as docs/formats.md defines), then for a block linear
δ = f32(fine-tune) − f32(base), its signs packed LSB-first (bit set where δ >= 0) and the
per-matrix scale mean |δ|, and for any other tensor that differs the delta rounded to its dtype.
Writes the tensors as a safetensors file (the same names as a .bitdelta adapter) and prints one
JSON object with the time and both fingerprints.
"""
import argparse
import hashlib
import json
import os
import struct
import time

import numpy as np
import torch

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TORCH_TYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
NUMPY_TYPES = {"BF16": np.int16, "F16": np.float16, "F32": np.float32}


def load_safetensors(path):
    """{name: (dtype, shape, uint8 array)} memory-mapped from a safetensors file."""
    with open(path, "rb") as f:
        (header_size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_size))
    data = np.memmap(path, dtype=np.uint8, mode="c", offset=8 + header_size)  # torch wants writable
    header.pop("__metadata__", None)
    return {name: (info["dtype"], info["shape"], data[info["data_offsets"][0]:info["data_offsets"][1]])
            for name, info in header.items()}


def as_tensor(dtype, shape, raw):
    return torch.from_numpy(np.asarray(raw).view(NUMPY_TYPES[dtype])).view(TORCH_TYPES[dtype]).reshape(shape)


def hash_tensor(digest, name, dtype, shape, raw):
    for field in (name, dtype, ",".join(str(d) for d in shape), str(raw.nbytes)):
        digest.update(field.encode() + b"\0")
    digest.update(memoryview(raw))


def pack_signs(delta):
    """bits[O, ceil(I/8)]: bit j of byte b is delta[:, 8b + j] >= 0."""
    rows, cols = delta.shape
    positive = (delta >= 0).to(torch.uint8)
    if cols % 8:
        positive = torch.nn.functional.pad(positive, (0, 8 - cols % 8))
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)
    return (positive.view(rows, -1, 8) * weights).sum(dim=2, dtype=torch.uint8)


def is_block_linear(name):
    return name.startswith("model.layers.") and any(name.endswith(f".{p}.weight") for p in LINEARS)


def write_safetensors(path, tensors):
    header, offset = {}, 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)) + text)
        for _, _, raw in tensors.values():
            out.write(raw)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--finetuned", required=True)
    parser.add_argument("-o", required=True)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    base = load_safetensors(os.path.join(args.base, "model.safetensors"))
    tuned = load_safetensors(os.path.join(args.finetuned, "model.safetensors"))
    base_hash, tuned_hash = hashlib.sha256(), hashlib.sha256()
    out = {}
    for name in sorted(base, key=lambda n: n.encode()):
        dtype, shape, base_raw = base[name]
        tuned_raw = tuned[name][2]
        hash_tensor(base_hash, name, dtype, shape, base_raw)
        hash_tensor(tuned_hash, name, dtype, shape, tuned_raw)
        delta = as_tensor(dtype, shape, tuned_raw).float() - as_tensor(dtype, shape, base_raw).float()
        if not bool(delta.any()):
            continue
        if is_block_linear(name):
            signs = pack_signs(delta)
            scale = delta.abs().mean(dtype=torch.float64).float().reshape(1)
            out[name + ".scale"] = ("F32", [1], scale.numpy().tobytes())
            out[name + ".sign"] = ("U8", list(signs.shape), signs.numpy().tobytes())
        else:
            stored = delta.to(TORCH_TYPES[dtype])
            raw = stored.view(torch.int16 if dtype != "F32" else torch.float32).numpy().tobytes()
            out[name + ".delta"] = (dtype, shape, raw)
    write_safetensors(args.o, out)
    print(json.dumps({"seconds": time.perf_counter() - start, "version": torch.__version__,
                      "threads": torch.get_num_threads(), "tensors": len(out),
                      "base_fingerprint": base_hash.hexdigest(),
                      "finetune_fingerprint": tuned_hash.hexdigest()}))


if __name__ == "__main__":
    main()
