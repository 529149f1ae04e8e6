#!/usr/bin/python3
"""PyTorch twin of bench/decode_bench: a straightforward Llama decode with a KV cache, weights and
activations in torch.bfloat16, on the checkpoint folder decode_bench wrote.

  /usr/bin/python3 bench/torch_decode.py --model DIR [--threads N] [--prompt P] [--tokens N]
                                         [--runs R] [--logits-out FILE]

Prefills P tokens, then decodes N tokens greedily, R times after one warm-up run. Prints one JSON
object: tokens/s = 1 / median time per decoded token. --logits-out writes the logits after the
prompt (float32, raw) so decode_bench can check both engines ran the same model.
"""
import argparse
import json
import math
import os
import statistics
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F


def load_safetensors(path):
    """Tensors of a safetensors file, memory-mapped (copy-on-write) rather than read."""
    with open(path, "rb") as f:
        (header_size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_size))
    data = np.memmap(path, dtype=np.uint8, mode="c", offset=8 + header_size)
    numpy_types = {"BF16": np.int16, "F16": np.float16, "F32": np.float32}
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        array = data[begin:end].view(numpy_types[info["dtype"]])
        tensor = torch.from_numpy(array)
        if info["dtype"] == "BF16":
            tensor = tensor.view(torch.bfloat16)
        tensors[name] = tensor.reshape(info["shape"]).to(torch.bfloat16)
    return tensors


class Llama:
    def __init__(self, folder, max_seq):
        with open(os.path.join(folder, "config.json")) as f:
            self.config = c = json.load(f)
        self.w = load_safetensors(os.path.join(folder, "model.safetensors"))
        self.layers = c["num_hidden_layers"]
        self.heads = c["num_attention_heads"]
        self.kv_heads = c.get("num_key_value_heads", self.heads)
        self.head_dim = c.get("head_dim", c["hidden_size"] // self.heads)
        self.eps = c["rms_norm_eps"]
        self.lm_head = self.w["model.embed_tokens.weight" if c.get("tie_word_embeddings") else "lm_head.weight"]
        # HF RoPE (rotate_half convention): cos/sin tables for every position.
        d = self.head_dim
        inv_freq = 1.0 / (c.get("rope_theta", 10000.0) ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        angles = torch.outer(torch.arange(max_seq, dtype=torch.float32), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        self.cos = angles.cos().to(torch.bfloat16)
        self.sin = angles.sin().to(torch.bfloat16)
        self.k_cache = torch.zeros(self.layers, max_seq, self.kv_heads, d, dtype=torch.bfloat16)
        self.v_cache = torch.zeros_like(self.k_cache)

    def layer(self, i, name):
        return self.w[f"model.layers.{i}.{name}.weight"]

    def rmsnorm(self, x, weight):
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * x32.to(torch.bfloat16)

    def rope(self, x, pos):  # x[n, heads, D]
        n, half = x.shape[0], self.head_dim // 2
        cos = self.cos[pos : pos + n].unsqueeze(1)
        sin = self.sin[pos : pos + n].unsqueeze(1)
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    def attention(self, i, x, pos):
        n, H, Hkv, D = x.shape[0], self.heads, self.kv_heads, self.head_dim
        q = F.linear(x, self.layer(i, "self_attn.q_proj")).view(n, H, D)
        k = F.linear(x, self.layer(i, "self_attn.k_proj")).view(n, Hkv, D)
        v = F.linear(x, self.layer(i, "self_attn.v_proj")).view(n, Hkv, D)
        q, k = self.rope(q, pos), self.rope(k, pos)
        self.k_cache[i, pos : pos + n] = k
        self.v_cache[i, pos : pos + n] = v
        S = pos + n
        keys = self.k_cache[i, :S].repeat_interleave(H // Hkv, dim=1)  # [S, H, D]
        values = self.v_cache[i, :S].repeat_interleave(H // Hkv, dim=1)
        scores = torch.einsum("nhd,shd->hns", q, keys) / math.sqrt(D)
        causal = torch.arange(S).unsqueeze(0) > (pos + torch.arange(n)).unsqueeze(1)  # [n, S]
        scores = scores.masked_fill(causal, float("-inf"))
        out = torch.einsum("hns,shd->nhd", scores.softmax(-1), values).reshape(n, H * D)
        return F.linear(out, self.layer(i, "self_attn.o_proj"))

    def mlp(self, i, x):
        gate = F.linear(x, self.layer(i, "mlp.gate_proj"))
        up = F.linear(x, self.layer(i, "mlp.up_proj"))
        return F.linear(F.silu(gate) * up, self.layer(i, "mlp.down_proj"))

    def forward(self, tokens, pos):
        """Logits of the last of `tokens` (a list of ids at positions pos, pos+1, ...)."""
        h = self.w["model.embed_tokens.weight"][torch.tensor(tokens)]
        for i in range(self.layers):
            h = h + self.attention(i, self.rmsnorm(h, self.layer(i, "input_layernorm")), pos)
            h = h + self.mlp(i, self.rmsnorm(h, self.layer(i, "post_attention_layernorm")))
        h = self.rmsnorm(h[-1:], self.w["model.norm.weight"])
        return F.linear(h, self.lm_head)[0].float()


def prompt_ids(n, vocab):
    """The same prompt as decode_bench: id 1, then fixed pseudo-random ids."""
    return [1 if i == 0 else (i * 7919) % vocab for i in range(n)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--prompt", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--logits-out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = Llama(args.model, args.prompt + args.tokens)
    prompt = prompt_ids(args.prompt, model.config["vocab_size"])
    token_seconds, run_tokens_per_s = [], []
    with torch.inference_mode():
        for run in range(-1, args.runs):  # run -1: warm-up
            logits = model.forward(prompt, 0)
            if run == -1 and args.logits_out:
                logits.numpy().astype(np.float32).tofile(args.logits_out)
            token = int(logits.argmax())
            start = time.perf_counter()
            for i in range(args.tokens):
                t0 = time.perf_counter()
                token = int(model.forward([token], args.prompt + i).argmax())
                if run >= 0:
                    token_seconds.append(time.perf_counter() - t0)
            if run >= 0:
                run_tokens_per_s.append(args.tokens / (time.perf_counter() - start))
    print(json.dumps({
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "tokens_per_s": 1.0 / statistics.median(token_seconds),
        "run_tokens_per_s": run_tokens_per_s,
    }))


if __name__ == "__main__":
    main()
