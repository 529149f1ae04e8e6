#!/usr/bin/python3
"""PyTorch twin of bench/train_bench: the same Llama (config.json), trained in float32 in eager
mode with the same step as bitdelta's Trainer: forward, cross-entropy, backward, global gradient
norm clipping at 1.0, AdamW (betas 0.9/0.95, eps 1e-8, weight decay 0.1 on matrices only).

  /usr/bin/python3 bench/torch_train.py --config FILE [--threads N] [--batch B] [--seq T]
                                        [--steps N] [--warmup W]

Trains on random tokens: W untimed steps, then N timed ones. Prints one JSON object with
tokens/s = B·T / median step time.
"""
import argparse
import json
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class Block(nn.Module):
    def __init__(self, c, cos, sin):
        super().__init__()
        C, F_ = c["hidden_size"], c["intermediate_size"]
        self.H, self.Hkv = c["num_attention_heads"], c["num_key_value_heads"]
        self.D = c.get("head_dim") or C // self.H
        self.cos, self.sin = cos, sin
        self.attn_norm = RMSNorm(C, c["rms_norm_eps"])
        self.q = nn.Linear(C, self.H * self.D, bias=False)
        self.k = nn.Linear(C, self.Hkv * self.D, bias=False)
        self.v = nn.Linear(C, self.Hkv * self.D, bias=False)
        self.o = nn.Linear(self.H * self.D, C, bias=False)
        self.mlp_norm = RMSNorm(C, c["rms_norm_eps"])
        self.gate = nn.Linear(C, F_, bias=False)
        self.up = nn.Linear(C, F_, bias=False)
        self.down = nn.Linear(F_, C, bias=False)

    def rope(self, x):  # x[B, heads, T, D], HF rotate_half convention
        T, half = x.shape[2], self.D // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * self.cos[:T] + rotated * self.sin[:T]

    def forward(self, x, mask):
        B, T, _ = x.shape
        h = self.attn_norm(x)
        q = self.rope(self.q(h).view(B, T, self.H, self.D).transpose(1, 2))
        k = self.rope(self.k(h).view(B, T, self.Hkv, self.D).transpose(1, 2))
        v = self.v(h).view(B, T, self.Hkv, self.D).transpose(1, 2)
        k = k.repeat_interleave(self.H // self.Hkv, dim=1)
        v = v.repeat_interleave(self.H // self.Hkv, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.D) + mask
        att = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, self.H * self.D)
        x = x + self.o(att)
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(nn.Module):
    def __init__(self, c, max_seq):
        super().__init__()
        C = c["hidden_size"]
        D = c.get("head_dim") or C // c["num_attention_heads"]
        inv_freq = 1.0 / (c.get("rope_theta", 10000.0) ** (torch.arange(0, D, 2).float() / D))
        angles = torch.outer(torch.arange(max_seq).float(), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        cos, sin = angles.cos(), angles.sin()
        self.embed = nn.Embedding(c["vocab_size"], C)
        self.blocks = nn.ModuleList(Block(c, cos, sin) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(C, c["rms_norm_eps"])
        self.tied = c.get("tie_word_embeddings", False)
        if not self.tied:
            self.lm_head = nn.Linear(C, c["vocab_size"], bias=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, tokens):
        T = tokens.shape[1]
        mask = torch.full((T, T), float("-inf")).triu(1)
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        return F.linear(x, self.embed.weight if self.tied else self.lm_head.weight)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    with open(args.config) as f:
        config = json.load(f)

    model = Llama(config, args.seq)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    vocab = config["vocab_size"]
    seconds = []
    for step in range(args.warmup + args.steps):
        inputs = torch.randint(vocab, (args.batch, args.seq))
        targets = torch.randint(vocab, (args.batch, args.seq))
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        logits = model(inputs)
        loss = F.cross_entropy(logits.view(-1, vocab), targets.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step >= args.warmup:
            seconds.append(time.perf_counter() - start)
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "params": params,
        "tokens_per_s": args.batch * args.seq / statistics.median(seconds),
    }))


if __name__ == "__main__":
    main()
