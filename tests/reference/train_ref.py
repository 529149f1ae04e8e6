#!/usr/bin/env python3
"""Independent PyTorch references for bitdelta's training code (run with /usr/bin/python3).

  train_ref.py adamw DIR   torch.optim.AdamW + clip_grad_norm_ + a LambdaLR warm-up/cosine
                           schedule on flat random tensors: DIR/spec.json, params0.f32, grads.f32
                           in; params.f32 (params after every step) and norms.f32 out.
"""
import json
import math
import os
import sys

import numpy as np
import torch


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


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("adamw",):
        sys.exit(__doc__)
    torch.set_num_threads(1)
    globals()["run_" + sys.argv[1]](sys.argv[2])


if __name__ == "__main__":
    main()
