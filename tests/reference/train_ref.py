#!/usr/bin/env python3
"""Independent PyTorch references for bitdelta's training code (run with /usr/bin/python3).

  train_ref.py adamw DIR   torch.optim.AdamW + clip_grad_norm_ + a LambdaLR warm-up/cosine
                           schedule on flat random tensors: DIR/spec.json, params0.f32, grads.f32
                           in; params.f32 (params after every step) and norms.f32 out.
  train_ref.py train DIR   training steps of llama_ref.py's plain-torch Llama (run in float64,
                           autograd) with the same optimizer stack: DIR/spec.json,
                           DIR/model (HF folder, F32 model.safetensors) and DIR/batches.i32
                           ([steps, B, T+1] token windows) in; losses.f64, norms.f64 (per step)
                           and params.f32 (the tensors after the last step, concatenated in the
                           order of spec["names"]) out.
"""
import json
import math
import os
import sys

import numpy as np
import torch

import st_io
from llama_ref import forward as llama_forward


def lr_factor(step, warmup, total, min_ratio):
    """Multiplier of the peak rate for 0-based `step`: linear warm-up, cosine to a floor."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(groups, spec):
    """AdamW with one param group per decay choice, and the schedule as LambdaLR."""
    decayed = [p for p, d in groups if d]
    plain = [p for p, d in groups if not d]
    param_groups = []
    if decayed:
        param_groups.append({"params": decayed, "weight_decay": spec["weight_decay"]})
    if plain:
        param_groups.append({"params": plain, "weight_decay": 0.0})
    opt = torch.optim.AdamW(param_groups, lr=spec["lr"], betas=(spec["beta1"], spec["beta2"]),
                            eps=spec["eps"], foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, spec["warmup"], spec["steps"], spec["min_lr_ratio"]))
    return opt, sched


def clip(params, max_norm):
    """Returns the total gradient norm before clipping (clips only when max_norm > 0)."""
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params)))


def run_adamw(folder):
    spec = json.load(open(os.path.join(folder, "spec.json")))
    sizes = [int(np.prod(s)) for s in spec["shapes"]]
    total = sum(sizes)
    flat0 = np.fromfile(os.path.join(folder, "params0.f32"), dtype=np.float32)
    grads = np.fromfile(os.path.join(folder, "grads.f32"), dtype=np.float32)
    grads = grads.reshape(spec["steps"], total)
    params, offset = [], 0
    for shape, size in zip(spec["shapes"], sizes):
        params.append(torch.nn.Parameter(torch.from_numpy(flat0[offset:offset + size].copy()).reshape(shape)))
        offset += size
    opt, sched = make_optimizer(list(zip(params, spec["decay"])), spec)
    history, norms = [], []
    for step in range(spec["steps"]):
        offset = 0
        for p, size in zip(params, sizes):
            p.grad = torch.from_numpy(grads[step, offset:offset + size].copy()).reshape(p.shape)
            offset += size
        norms.append(clip(params, spec["clip"]))
        opt.step()
        sched.step()
        history.append(torch.cat([p.detach().reshape(-1) for p in params]).numpy())
    np.stack(history).astype(np.float32).tofile(os.path.join(folder, "params.f32"))
    np.array(norms, dtype=np.float32).tofile(os.path.join(folder, "norms.f32"))


def load_params_f64(path):
    """{name: float64 parameter} of an all-F32 safetensors file."""
    params = {}
    for name, (dtype, shape, raw) in st_io.load(path)[1].items():
        assert dtype == "F32", (name, dtype)
        values = st_io.decode(dtype, raw).astype(np.float64).reshape(shape)
        params[name] = torch.nn.Parameter(torch.from_numpy(values))
    return params


def llama_loss(p, cfg, tokens, targets):
    """Mean cross-entropy of the Llama over tokens/targets [B, T]."""
    logits = llama_forward(cfg, p, tokens)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             targets.reshape(-1))


def run_train(folder):
    spec = json.load(open(os.path.join(folder, "spec.json")))
    cfg = json.load(open(os.path.join(folder, "model", "config.json")))
    params = load_params_f64(os.path.join(folder, "model", "model.safetensors"))
    steps, B, T = spec["steps"], spec["batch"], spec["seq"]
    windows = np.fromfile(os.path.join(folder, "batches.i32"), dtype="<i4").astype(np.int64)
    windows = torch.from_numpy(windows).reshape(steps, B, T + 1)
    # Decay matrices (embedding, projections, head), not the norm vectors.
    opt, sched = make_optimizer([(p, p.dim() >= 2) for p in params.values()], spec)
    losses, norms = [], []
    for step in range(steps):
        opt.zero_grad()
        loss = llama_loss(params, cfg, windows[step, :, :T], windows[step, :, 1:])
        loss.backward()
        losses.append(loss.item())
        norms.append(clip(list(params.values()), spec["clip"]))
        opt.step()
        sched.step()
    np.array(losses, dtype=np.float64).tofile(os.path.join(folder, "losses.f64"))
    np.array(norms, dtype=np.float64).tofile(os.path.join(folder, "norms.f64"))
    final = torch.cat([params[name].detach().reshape(-1) for name in spec["names"]])
    final.numpy().astype(np.float32).tofile(os.path.join(folder, "params.f32"))


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("adamw", "train"):
        sys.exit(__doc__)
    torch.set_num_threads(2)
    globals()["run_" + sys.argv[1]](sys.argv[2])


if __name__ == "__main__":
    main()
