#!/usr/bin/python3
"""Regenerates docs/bitdelta-quality.md: how much of each fine-tune's gain a BitDelta keeps.

For every bundled user (data/users/*) a fine-tune of the default base (scripts/user_finetunes.py),
and for one user three fine-tune intensities (steps x learning rate). Each fine-tune is compressed
four ways (mean |delta| or distilled scales, per matrix or per row) and evaluated with
`bitdelta eval --delta` on the user's held-out text. Gain retention
  R = (NLL_base - NLL_compressed) / (NLL_base - NLL_finetune).
Fine-tunes and adapters (with their --json reports beside them) in DIR are reused when present;
delete DIR to measure from scratch.
Usage: scripts/bitdelta_quality.py [--out DIR] [--doc FILE] [--distill-steps N]
"""
import argparse
import json
import os
import platform
import subprocess
import time

from user_finetunes import BATCH, ROOT, SEQ, bitdelta, finetune, heldout_nll, users

MODES = [("mean", "matrix"), ("mean", "row"), ("distill", "matrix"), ("distill", "row")]
INTENSITY_USER = "zippy"  # the smallest fine-tune gain of the bundled users
# (steps, peak lr), lightest first. zippy's train split is 35 KB, so 150 steps of 8 × 256 tokens
# are already ~9 epochs; 300 steps at lr 1e-3 overfit (held-out NLL 2.83 against the base's
# 2.37), which leaves no gain to retain.
INTENSITIES = [(40, 2.5e-4), (75, 2.5e-4), (150, 5e-4)]
DEFAULT_RUN = (150, 5e-4)


def compress(base, tuned, out_dir, name, scale, granularity, distill_steps):
    """Compresses (or reuses an adapter made with the same arguments); returns its path and
    the --json report."""
    path = os.path.join(out_dir, f"{name}-{scale}-{granularity}.bitdelta")
    args = ["compress", "--base", base, "--finetuned", tuned, "-o", path, "--force",
            "--scale", scale, "--granularity", granularity]
    if scale == "distill":
        args += ["--steps", str(distill_steps)]
    sidecar = path + ".json"
    if os.path.exists(path) and os.path.exists(sidecar):
        with open(sidecar) as f:
            saved = json.load(f)
        if saved.get("args") == args:
            return path, saved["report"]
    report = bitdelta(*args)
    with open(sidecar, "w") as f:
        json.dump({"args": args, "report": report}, f)
    return path, report


def measure(user, steps, lr, out_dir, distill_steps, freeze_embeddings=True, modes=MODES):
    base = os.path.join(ROOT, "models", "default")
    tuned = finetune(user, out_dir, steps, lr, freeze_embeddings=freeze_embeddings)
    name = os.path.basename(tuned)
    row = {"user": user, "steps": steps, "lr": lr, "freeze_embeddings": freeze_embeddings,
           "base_nll": heldout_nll(user), "finetune_nll": heldout_nll(user, model=tuned), "modes": {}}
    for scale, granularity in modes:
        path, report = compress(base, tuned, out_dir, name, scale, granularity, distill_steps)
        nll = heldout_nll(user, delta=path)
        gain = row["base_nll"] - row["finetune_nll"]
        row["modes"][f"{scale}/{granularity}"] = {
            "nll": nll, "R": (row["base_nll"] - nll) / gain if gain else float("nan"),
            "adapter_bytes": report["adapter_bytes"],
            "ratio_changed_vs_fp16": report["ratio_changed_vs_fp16"],
            "ratio_compressed_vs_fp16": report["ratio_compressed_vs_fp16"],
            "ratio_finetune_file": report["ratio_finetune_file"],
            "distill": report["distill"]}
    return row


def table(rows):
    modes = list(rows[0]["modes"])
    lines = ["| user | steps × lr | base | fine-tune | gain | " +
             " | ".join(f"{m} NLL (R)" for m in modes) + " | best R |",
             "|---|---|---|---|---|" + "---|" * len(modes) + "---|"]
    for r in rows:
        gain = (r["base_nll"] - r["finetune_nll"]) / r["base_nll"]
        cells = [f"{m['nll']:.4f} ({m['R']:.3f})" for m in r["modes"].values()]
        best = max(m["R"] for m in r["modes"].values())
        lines.append(f"| {r['user']} | {r['steps']} × {r['lr']:g} | {r['base_nll']:.4f} | "
                     f"{r['finetune_nll']:.4f} | {100 * gain:.1f}% | " + " | ".join(cells) +
                     f" | {best:.3f} |")
    return "\n".join(lines)


def size_table(rows):
    lines = ["| user | steps × lr | mode | adapter bytes | vs fp16 of compressed tensors | "
             "vs fp16 of all that differs | vs fine-tuned checkpoint file |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        for mode, m in r["modes"].items():
            if mode.startswith("mean"):
                lines.append(f"| {r['user']} | {r['steps']} × {r['lr']:g} | {mode} | "
                             f"{m['adapter_bytes']:,} | {m['ratio_compressed_vs_fp16']:.2f}× | "
                             f"{m['ratio_changed_vs_fp16']:.2f}× | {m['ratio_finetune_file']:.2f}× |")
    return "\n".join(lines)


def distill_table(rows):
    lines = ["| user | steps × lr | granularity | held-out KL before | after |", "|---|---|---|---|---|"]
    for r in rows:
        for mode, m in r["modes"].items():
            if m["distill"]:
                d = m["distill"]
                lines.append(f"| {r['user']} | {r['steps']} × {r['lr']:g} | {mode.split('/')[1]} | "
                             f"{d['heldout_before']:.5f} | {d['heldout_after']:.5f} |")
    return "\n".join(lines)


def targets(rows, intensity_rows):
    """The issue's targets, checked against this run's numbers."""
    every = rows + [r for r in intensity_rows if r not in rows]
    gains = [(r["base_nll"] - r["finetune_nll"]) / r["base_nll"] for r in rows]
    best = [max(m["R"] for m in r["modes"].values()) for r in every]
    worst = min(range(len(every)), key=lambda i: best[i])
    ratios = [m["ratio_changed_vs_fp16"] for r in every for k, m in r["modes"].items()]
    def verdict(ok):
        return "met" if ok else "**missed**"
    return "\n".join([
        f"- Every bundled user's fine-tune lowers its held-out NLL by ≥ 10%: smallest gain "
        f"{100 * min(gains):.1f}% — {verdict(min(gains) >= 0.10)}.",
        f"- Gain retention R ≥ 0.90 with the best sign-only mode, for every fine-tune above: "
        f"lowest best-mode R {best[worst]:.3f} ({every[worst]['user']}, {every[worst]['steps']} "
        f"steps) — {verdict(best[worst] >= 0.90)}.",
        f"- Adapter ≥ 10× smaller than the fp16 size of everything that differs from the base: "
        f"{min(ratios):.2f}× to {max(ratios):.2f}× — {verdict(min(ratios) >= 10)}. (On the "
        f"1.1B-shaped benchmark pair the ratio is 15.97×, measured by `bench/compress_bench`: "
        f"[benchmarks.md](benchmarks.md#compression-bitdelta-compress-on-a-11b-bf16-pair).)",
    ])


def epochs(row, batch=BATCH, seq=SEQ):
    """Passes over the user's train split that the fine-tune made (byte-level: 1 token a byte)."""
    size = os.path.getsize(os.path.join(ROOT, "data", "users", row["user"], "train.txt"))
    return row["steps"] * batch * seq / size


def observations(rows, intensity_rows):
    """What the tables show, counted from this run."""
    every = rows + [r for r in intensity_rows if r not in rows]
    mean_r = {id(r): r["modes"]["mean/matrix"]["R"] for r in every}
    above = [r for r in every if mean_r[id(r)] > 1]
    below = [r for r in every if mean_r[id(r)] <= 1]
    distill_r = [m["R"] for r in every for k, m in r["modes"].items() if k.startswith("distill")]
    kl = [(m["distill"]["heldout_before"], m["distill"]["heldout_after"])
          for r in rows for m in r["modes"].values() if m["distill"]]
    row_extra = (rows[0]["modes"]["mean/row"]["adapter_bytes"] -
                 rows[0]["modes"]["mean/matrix"]["adapter_bytes"])
    lines = [
        f"- Mean-scale adapters beat their own fine-tune on held-out text (R > 1) for "
        f"{len(above)} of the {len(every)} fine-tunes, those of "
        f"{min(epochs(r) for r in above):.1f}–{max(epochs(r) for r in above):.1f} epochs over "
        "the user's train split. The likely reason: replacing each weight's delta by its sign "
        "times the mean |δ| "
        "shrinks the delta, which acts as regularisation on a fine-tune that has begun to "
        "overfit." if above else "- No mean-scale adapter beats its own fine-tune (R > 1).",
    ]
    if below:
        lines.append(
            f"- On the other {len(below)} ({min(epochs(r) for r in below):.1f}–"
            f"{max(epochs(r) for r in below):.1f} epochs) mean scales keep "
            f"{100 * min(mean_r[id(r)] for r in below):.0f}–"
            f"{100 * max(mean_r[id(r)] for r in below):.0f}% of the gain per matrix, "
            f"{100 * min(r['modes']['mean/row']['R'] for r in below):.0f}–"
            f"{100 * max(r['modes']['mean/row']['R'] for r in below):.0f}% per row.")
    lines += [
        f"- Distillation fits the compressed model to the fine-tune's own distributions on its "
        f"training text, so it brings R close to 1 in every case ({min(distill_r):.3f} to "
        f"{max(distill_r):.3f}): the best mode when the fine-tune itself is the target, not "
        "when the fine-tune overfits. It lowered the held-out calibration KL for "
        f"{sum(a < b for b, a in kl)} of {len(kl)} user × granularity runs, by "
        f"{100 * min(1 - a / b for b, a in kl):.0f}% to {100 * max(1 - a / b for b, a in kl):.0f}%.",
        f"- Per-row scales cost {row_extra:,} bytes more than per-matrix ones here (one F32 scale "
        "per output row instead of one per matrix); the sizes table gives both.",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "out", "quality"))
    parser.add_argument("--doc", default=os.path.join(ROOT, "docs", "bitdelta-quality.md"))
    parser.add_argument("--distill-steps", type=int, default=200)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    start = time.time()
    rows = [measure(u, *DEFAULT_RUN, args.out, args.distill_steps) for u in users()]
    default_row = next(r for r in rows if r["user"] == INTENSITY_USER)
    intensity_rows = [default_row if (s, lr) == DEFAULT_RUN else
                      measure(INTENSITY_USER, s, lr, args.out, args.distill_steps)
                      for s, lr in INTENSITIES]
    # The same fine-tune of the intensity user, but with the token embedding trained too.
    embedding_row = measure(INTENSITY_USER, *DEFAULT_RUN, args.out, args.distill_steps,
                            freeze_embeddings=False, modes=MODES[:2])
    with open(os.path.join(args.out, "quality.json"), "w") as f:
        json.dump({"users": rows, "intensities": intensity_rows, "embedding_trained": embedding_row},
                  f, indent=2)
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "?")
    doc = f"""# BitDelta quality and size on the default model

Generated by `scripts/bitdelta_quality.py` (do not edit by hand) on {time.strftime('%Y-%m-%d')},
{model}, {os.cpu_count()} cores, {platform.system()}; this run took {time.time() - start:.0f} s
(fine-tunes and adapters already in `{os.path.relpath(args.out, ROOT)}` are reused).

Base: the embedded default model (`models/default`). Each fine-tune trains every block weight
and norm with `bitdelta train --freeze-embeddings` (batch {BATCH}, sequence {SEQ}, no weight decay,
seed 1) on the user's train split. Each adapter is made
by `bitdelta compress` and evaluated without merging by `bitdelta eval --delta` on the user's
held-out split (NLL in nats per byte). Modes: scales = mean |δ| or distilled
(KL(fine-tune ‖ compressed), {args.distill_steps} steps, calibration = the fine-tune's own
training text); one scale per matrix or per output row. Every mode stores 1 sign bit per
compressed weight. R = (NLL_base − NLL_compressed) / (NLL_base − NLL_fine-tune): 1 keeps the
whole gain of the fine-tune, 0 keeps none.

## Targets

{targets(rows, intensity_rows)}

## Reading the numbers

{observations(rows, intensity_rows)}

## Every bundled user ({DEFAULT_RUN[0]} steps, lr {DEFAULT_RUN[1]:g})

{table(rows)}

## One user at three fine-tune intensities ({INTENSITY_USER})

{table(intensity_rows)}

## Sizes

Adapter size against (a) the fp16 size of the compressed weights, (b) the fp16 size of
everything that differs from the base (compressed weights plus the tensors kept exactly:
embeddings and norms, stored exactly in the checkpoint's dtype, F32 here), (c) the fine-tuned
checkpoint file (F32). Distilled adapters have the same size as mean ones.

{size_table(rows + [r for r in intensity_rows if r is not default_row])}

## Distillation: held-out calibration KL before and after

{distill_table(rows)}

## When the fine-tune also trains the embedding

The same {INTENSITY_USER} fine-tune ({DEFAULT_RUN[0]} steps, lr {DEFAULT_RUN[1]:g}) without
`--freeze-embeddings`: the tied embedding (258 × 256) then differs from the base and the adapter
carries it exactly, in the checkpoint's dtype (F32), next to the 1-bit block matrices.

{table([embedding_row])}

{size_table([embedding_row])}
"""
    with open(args.doc, "w") as f:
        f.write(doc)
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
