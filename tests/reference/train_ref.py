#!/usr/bin/env python3
"""Independent PyTorch references for bitdelta's training code (run with /usr/bin/python3).

  train_ref.py adamw DIR   torch.optim.AdamW + clip_grad_norm_ + a LambdaLR warm-up/cosine
                           schedule on flat random tensors: DIR/spec.json, params0.f32, grads.f32
                           in; params.f32 (params after every step) and norms.f32 out.
  train_ref.py train DIR   training steps of a Llama model written here in plain torch
                           (float64, autograd) with the same optimizer stack: DIR/spec.json,
                           DIR/model (HF folder, F32 model.safetensors) and DIR/batches.i32
                           ([steps, B, T+1] token windows) in; losses.f64, norms.f64 (per step)
                           and params.f32 (the tensors after the last step, concatenated in the
                           order of spec["names"]) out.
"""
import json
import math
import os
import struct
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


def load_safetensors_f32(path):
    """{name: float64 tensor} of an all-F32 safetensors file, in file order."""
    blob = open(path, "rb").read()
    (header_size,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + header_size])
    header.pop("__metadata__", None)
    data = blob[8 + header_size:]
    tensors = {}
    for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
        assert entry["dtype"] == "F32", (name, entry["dtype"])
        begin, end = entry["data_offsets"]
        values = np.frombuffer(data[begin:end], dtype="<f4").astype(np.float64)
        tensors[name] = torch.from_numpy(values.copy()).reshape(entry["shape"])
    return tensors


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotate_half_rope(x, cos, sin):
    """HF split-half RoPE: pairs (i, i + D/2). x [B, heads, T, D]."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def llama_loss(p, cfg, tokens, targets):
    """Mean cross-entropy of a Llama (HF semantics) over tokens/targets [B, T]."""
    B, T = tokens.shape
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim") or cfg["hidden_size"] // H
    eps = cfg["rms_norm_eps"]
    assert cfg.get("rope_scaling") is None
    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    angles = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)  # [T, D/2]
    cos = torch.cat([angles, angles], dim=-1).cos()
    sin = torch.cat([angles, angles], dim=-1).sin()
    causal = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    h = p["model.embed_tokens.weight"][tokens]  # [B, T, C]
    for layer in range(cfg["num_hidden_layers"]):
        w = lambda name: p[f"model.layers.{layer}.{name}.weight"]
        x = rms_norm(h, w("input_layernorm"), eps)
        q = (x @ w("self_attn.q_proj").T).view(B, T, H, D).transpose(1, 2)
        k = (x @ w("self_attn.k_proj").T).view(B, T, Hkv, D).transpose(1, 2)
        v = (x @ w("self_attn.v_proj").T).view(B, T, Hkv, D).transpose(1, 2)
        q, k = rotate_half_rope(q, cos, sin), rotate_half_rope(k, cos, sin)
        k = k.repeat_interleave(H // Hkv, dim=1)  # query head i reads kv head i // (H / Hkv)
        v = v.repeat_interleave(H // Hkv, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(D) + causal
        att = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * D)
        h = h + att @ w("self_attn.o_proj").T
        x = rms_norm(h, w("post_attention_layernorm"), eps)
        mlp = torch.nn.functional.silu(x @ w("mlp.gate_proj").T) * (x @ w("mlp.up_proj").T)
        h = h + mlp @ w("mlp.down_proj").T
    h = rms_norm(h, p["model.norm.weight"], eps)
    head = p["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else p["lm_head.weight"]
    logits = h @ head.T
    return torch.nn.functional.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1))


def run_train(folder):
    spec = json.load(open(os.path.join(folder, "spec.json")))
    cfg = json.load(open(os.path.join(folder, "model", "config.json")))
    tensors = load_safetensors_f32(os.path.join(folder, "model", "model.safetensors"))
    params = {name: torch.nn.Parameter(t) for name, t in tensors.items()}
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
