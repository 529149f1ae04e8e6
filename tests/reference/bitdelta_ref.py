"""Independent reference for BitDelta compression and reconstruction, in numpy and PyTorch.

Reads checkpoints and adapters with st_io.py's safetensors reader (not bitdelta's) and recomputes
everything from the definitions in docs/format.md:

  δ            = f32(W_finetune) − f32(W_base), one float32 subtraction per element
  sign bits    = δ >= 0, packed LSB first along the input dimension, each row padded with zero
                 bits to whole bytes: numpy.packbits(bitorder="little") row by row
  scale        = mean |δ| over the row (granularity "row") or the matrix ("matrix"), in float64;
                 the adapter's float32 must agree to 2e-6 relative (its own summation order)
  W.delta      = δ rounded to the tensor's dtype (torch's float32 → bfloat16 / float16
                 conversion: round to nearest even)
  reconstruction (apply), for an output dtype T, rounding once with torch's conversion:
      compressed W:  T(f32(W_base) + s·γ)   with s·γ = ±γ, added in float32
      exact W:       T(f32(W_base) + f32(W.delta))
      other W:       T(f32(W_base))

  bitdelta_ref.py check BASE_DIR FINETUNE_DIR ADAPTER [OUT_DIR ...]

checks the adapter against the two checkpoints, and each OUT_DIR (written by `bitdelta apply`,
in any dtype) against the reconstruction from the base and the adapter. Prints one JSON object
{"compress": REPORT, "apply": {OUT_DIR: REPORT, ...}}, each REPORT being
{"tensors": {name: {"kind": ..., "mismatches": N, ...}}, "problems": [...]}: mismatches count
elements (or sign bits) that differ bit for bit from the reference, and problems lists anything
missing or unexpected.
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_io import decode, load  # noqa: E402

LINEARS = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
           "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
           "mlp.down_proj.weight")
TORCH_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
BIT_VIEWS = {"F32": np.uint32, "BF16": np.uint16, "F16": np.uint16}


def is_compressed_weight(name):
    parts = name.split(".", 3)
    return (len(parts) == 4 and parts[0] == "model" and parts[1] == "layers"
            and parts[2].isdigit() and parts[3] in LINEARS)


def load_model(folder):
    return load(os.path.join(folder, "model.safetensors"))[1]


def as_f32(tensor):
    dtype, shape, raw = tensor
    return decode(dtype, raw).astype(np.float32).reshape(shape)


def round_to(values_f32, dtype):
    """float32 values rounded to dtype; returns the stored bits as unsigned integers."""
    rounded = torch.from_numpy(np.ascontiguousarray(values_f32)).to(TORCH_DTYPES[dtype])
    signed = {"F32": torch.int32, "BF16": torch.int16, "F16": torch.int16}[dtype]
    return rounded.view(signed).numpy().view(BIT_VIEWS[dtype])


def stored_bits(tensor):
    dtype, shape, raw = tensor
    return np.frombuffer(raw, dtype=BIT_VIEWS[dtype]).reshape(shape)


def check_compress(base, tuned, metadata, adapter):
    shapes = json.loads(metadata["bitdelta.shapes"])
    per_row = metadata["bitdelta.granularity"] == "row"
    report, problems, seen = {}, [], set()
    for name in sorted(base):
        delta = as_f32(tuned[name]) - as_f32(base[name])
        if not np.any(delta != 0):  # unchanged: must be left out
            if any(name + suffix in adapter for suffix in (".sign", ".scale", ".delta")):
                problems.append(name + ": unchanged but present in the adapter")
            continue
        if is_compressed_weight(name):
            seen.update((name + ".sign", name + ".scale"))
            if name + ".sign" not in adapter or shapes.get(name) != list(delta.shape):
                problems.append(name + ": compressed weight missing or mis-shaped")
                continue
            bits = np.packbits(delta >= 0, axis=1, bitorder="little")
            got = np.frombuffer(adapter[name + ".sign"][2], np.uint8).reshape(bits.shape)
            mismatched_bits = int(np.unpackbits(bits ^ got).sum())
            magnitude = np.abs(delta.astype(np.float64))
            want = magnitude.mean(axis=1) if per_row else np.array([magnitude.mean()])
            scale = decode("F32", adapter[name + ".scale"][2]).astype(np.float64)
            error = np.abs(scale - want) / np.maximum(want, 1e-30)
            report[name] = {"kind": "compressed", "mismatches": mismatched_bits,
                            "scale_max_rel_error": float(error.max()) if scale.shape == want.shape
                            else float("inf")}
        else:
            seen.add(name + ".delta")
            if name + ".delta" not in adapter:
                problems.append(name + ": changed but has no exact delta")
                continue
            dtype = base[name][0]
            want = round_to(delta, dtype)
            got = stored_bits(adapter[name + ".delta"])
            report[name] = {"kind": "exact", "mismatches": int((want != got).sum())}
    for name in adapter:
        if name not in seen:
            problems.append(name + ": unexpected tensor in the adapter")
    return {"tensors": report, "problems": problems}


def check_apply(base, adapter, rebuilt):
    report, problems = {}, []
    for name in sorted(base):
        if name not in rebuilt:
            problems.append(name + ": missing from the output")
            continue
        out_dtype = rebuilt[name][0]
        values = as_f32(base[name])
        kind = "base"
        if name + ".sign" in adapter:
            kind = "compressed"
            rows, cols = values.shape
            signs = np.unpackbits(np.frombuffer(adapter[name + ".sign"][2], np.uint8)
                                  .reshape(rows, -1), axis=1, bitorder="little")[:, :cols]
            scale = decode("F32", adapter[name + ".scale"][2]).astype(np.float32)
            gamma = scale.reshape(-1, 1) if scale.size == rows and rows > 1 else scale[0]
            step = np.where(signs == 1, np.float32(1), np.float32(-1)) * np.float32(gamma)
            values = (values + step.astype(np.float32)).astype(np.float32)
        elif name + ".delta" in adapter:
            kind = "exact"
            values = (values + as_f32(adapter[name + ".delta"])).astype(np.float32)
        want = round_to(values, out_dtype)
        got = stored_bits(rebuilt[name])
        report[name] = {"kind": kind, "dtype": out_dtype,
                        "mismatches": int((want != got).sum()) if want.shape == got.shape
                        else int(want.size)}
    for name in rebuilt:
        if name not in base:
            problems.append(name + ": in the output but not in the base")
    return {"tensors": report, "problems": problems}


def check(base_dir, finetune_dir, adapter_path, *out_dirs):
    base = load_model(base_dir)
    metadata, adapter = load(adapter_path)
    print(json.dumps({
        "compress": check_compress(base, load_model(finetune_dir), metadata, adapter),
        "apply": {out: check_apply(base, adapter, load_model(out)) for out in out_dirs}}))


if __name__ == "__main__":
    assert sys.argv[1] == "check", __doc__
    check(*sys.argv[2:])
