#!/usr/bin/python3
"""Fine-tunes the default base on every bundled user domain and measures held-out NLL.

For each data/users/<user>: `bitdelta train` on train.txt (fine-tuning the default model), then
`bitdelta eval` of the base and of the fine-tune on heldout.txt. Prints a Markdown table and
writes the raw numbers as JSON. Usage:
  scripts/user_finetunes.py [--out DIR] [--steps N] [--lr X] [--users a,b,...] [--json FILE]
Fine-tunes go to DIR/<user>-s<steps>-lr<lr> and are reused when present (delete to redo).
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BITDELTA = os.environ.get("BITDELTA", os.path.join(ROOT, "build", "bitdelta"))


def bitdelta(*args):
    """Runs `bitdelta ARGS --json` and returns the parsed object; exits with its stderr on failure."""
    run = subprocess.run([BITDELTA, *args, "--json"], capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"bitdelta {' '.join(args)}: {run.stderr.strip()}")
    return json.loads(run.stdout)


def users():
    return sorted(os.listdir(os.path.join(ROOT, "data", "users")))


BATCH, SEQ = 8, 256  # windows per step, tokens per window of every bundled-user fine-tune


def finetune(user, out_dir, steps, lr, batch=BATCH, seq=SEQ, freeze_embeddings=True):
    """Fine-tunes the base on one user's train split (reusing an existing folder).

    Every block weight and norm trains; the token embedding (the tied head) stays frozen unless
    freeze_embeddings is False: frozen does as well on held-out text (models/default/MODEL_CARD.md)
    and leaves the BitDelta no exact F32 embedding delta to carry. No weight decay (the
    fine-tuning default)."""
    folder = os.path.join(out_dir, f"{user}-s{steps}-lr{lr:g}" + ("" if freeze_embeddings else "-emb"))
    if not os.path.exists(os.path.join(folder, "model.safetensors")):
        start = time.time()
        bitdelta("train", "--data", os.path.join(ROOT, "data", "users", user, "train.txt"),
                 "-o", folder, "--steps", str(steps), "--lr", str(lr), "--batch", str(batch),
                 "--seq", str(seq), "--seed", "1",
                 *(["--freeze-embeddings"] if freeze_embeddings else []))
        print(f"  fine-tuned {user}: {steps} steps at lr {lr:g} in {time.time() - start:.0f} s",
              file=sys.stderr)
    return folder


def heldout_nll(user, model=None, delta=None):
    args = ["eval", "--data", os.path.join(ROOT, "data", "users", user, "heldout.txt")]
    if model:
        args += ["--model", model]
    if delta:
        args += ["--delta", delta]
    return bitdelta(*args)["nll"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "out", "finetunes"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--users", default=",".join(users()))
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()
    rows = []
    for user in args.users.split(","):
        folder = finetune(user, args.out, args.steps, args.lr)
        base, tuned = heldout_nll(user), heldout_nll(user, model=folder)
        rows.append({"user": user, "base_nll": base, "finetune_nll": tuned,
                     "gain": (base - tuned) / base, "steps": args.steps, "lr": args.lr})
    print("| user | base NLL | fine-tune NLL | NLL lower by |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['user']} | {r['base_nll']:.4f} | {r['finetune_nll']:.4f} | {100 * r['gain']:.1f}% |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
