"""Independent PyTorch reference of the Llama forward and backward, for llama_torch_parity_test.

Written from the Hugging Face Llama formulas (it does not import transformers): reads a
checkpoint folder (config.json + model.safetensors, parsed by st_io.py with numpy), runs the
model in float32 on the given token batch, and writes a safetensors file with
  logits      [B, T, V]  (training forward)
  loss        [1]        mean cross-entropy over targets >= 0
  grad.<name>            d loss / d parameter, for every tensor of the checkpoint.

usage: llama_ref.py CHECKPOINT_DIR INPUTS_JSON OUTPUT_SAFETENSORS [CHECKPOINT_DIR INPUTS_JSON ...]
(several cases per run, so torch is imported once)
train_ref.py imports forward() from here and runs it in float64.
INPUTS_JSON: {"tokens": [[...], ...], "targets": [[...], ...]}  (B lists of T ids; target -1 = ignored)
"""
import json
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

import st_io


def rope_cos_sin(config, head_dim, seq_len, dtype):
    """cos, sin [T, head_dim] of the split-half rotary embedding, computed in float64 and
    returned as `dtype`."""
    theta = config.get("rope_theta", 10000.0)
    inv_freq = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    positions = np.arange(seq_len, dtype=np.float64)
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":  # positions are interpolated: t / factor
        positions = positions / scaling["factor"]
    elif kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_context = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        smooth = (old_context / wavelen - low) / (high - low)
        blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = np.where(wavelen < old_context / high, inv_freq,
                            np.where(wavelen > old_context / low, inv_freq / factor, blended))
    elif kind is not None:
        raise SystemExit(f"unsupported rope_scaling {kind}")
    angles = np.outer(positions, inv_freq)
    angles = np.concatenate([angles, angles], axis=1)
    return torch.tensor(np.cos(angles), dtype=dtype), torch.tensor(np.sin(angles), dtype=dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def forward(config, p, tokens):
    """Logits [B, T, V] of tokens [B, T] for parameters `p` {name: tensor}, in p's dtype."""
    B, T = tokens.shape
    H = config["num_attention_heads"]
    Hkv = config.get("num_key_value_heads", H)
    D = config.get("head_dim") or config["hidden_size"] // H
    eps = config["rms_norm_eps"]
    cos, sin = rope_cos_sin(config, D, T, p["model.embed_tokens.weight"].dtype)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)

    h = p["model.embed_tokens.weight"][tokens]
    for layer in range(config["num_hidden_layers"]):
        w = lambda name: p[f"model.layers.{layer}.{name}.weight"]
        x = rms_norm(h, w("input_layernorm"), eps)
        q = (x @ w("self_attn.q_proj").T).view(B, T, H, D).transpose(1, 2)
        k = (x @ w("self_attn.k_proj").T).view(B, T, Hkv, D).transpose(1, 2)
        v = (x @ w("self_attn.v_proj").T).view(B, T, Hkv, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // Hkv, dim=1)  # query head i uses kv head i // (H / Hkv)
        v = v.repeat_interleave(H // Hkv, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        scores = scores.masked_fill(mask, float("-inf"))
        attn = torch.softmax(scores, dim=-1) @ v  # [B, H, T, D]
        h = h + attn.transpose(1, 2).reshape(B, T, H * D) @ w("self_attn.o_proj").T
        x = rms_norm(h, w("post_attention_layernorm"), eps)
        h = h + (F.silu(x @ w("mlp.gate_proj").T) * (x @ w("mlp.up_proj").T)) @ w("mlp.down_proj").T
    h = rms_norm(h, p["model.norm.weight"], eps)
    head = p["model.embed_tokens.weight"] if config.get("tie_word_embeddings") else p["lm_head.weight"]
    return h @ head.T


def run_case(checkpoint_dir, inputs_path, output_path):
    with open(f"{checkpoint_dir}/config.json") as f:
        config = json.load(f)
    with open(inputs_path) as f:
        inputs = json.load(f)
    arrays = st_io.read_arrays(f"{checkpoint_dir}/model.safetensors")
    params = {name: torch.tensor(array.astype(np.float32), requires_grad=True)
              for name, array in arrays.items()}
    tokens = torch.tensor(inputs["tokens"], dtype=torch.long)
    targets = torch.tensor(inputs["targets"], dtype=torch.long)
    logits = forward(config, params, tokens)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=-1)
    loss.backward()
    out = {"logits": logits.detach().numpy(), "loss": loss.detach().numpy().reshape(1)}
    for name, param in params.items():
        out[f"grad.{name}"] = param.grad.numpy()
    st_io.write(output_path, [(name, "F32", array.shape, st_io.encode("F32", array))
                              for name, array in out.items()])


def main():
    args = sys.argv[1:]
    if not args or len(args) % 3:
        raise SystemExit(__doc__)
    for i in range(0, len(args), 3):
        run_case(*args[i:i + 3])


if __name__ == "__main__":
    main()
