#!/usr/bin/python3
"""The privacy-utility table: held-out NLL of DP fine-tunes at several epsilons, of the non-private
fine-tune, and of their BitDelta adapters, for one bundled user.

Every fine-tune trains the default base on data/users/<user>/train.txt with one recipe (--steps,
--lr, --seq, --batch as the expected batch, embeddings frozen); the private ones add --dp with
--target-epsilon E at --delta, clipping norm --max-grad-norm, secret randomness, and spend a
scratch ledger (not the user's). Each private setting runs --repeats times (the noise differs).
The non-private recipe also runs early-stopped at --early-steps (chosen on the held-out curve).
Every model is compressed (`compress --scale mean`: a DP fine-tune's scales may only be distilled
on public text) and evaluated with `bitdelta eval` on data/users/<user>/heldout.txt. Prints a
Markdown table and writes the raw numbers as JSON. Usage:
  scripts/privacy_utility.py [--user zippy] [--epsilons 1,4,8] [--repeats 2] [--out DIR] [--json FILE]
"""
import argparse
import json
import os
import sys
import time

from user_finetunes import ROOT, bitdelta

USER_DID = "did:lux:1:0x00000000000000000000000000000000000000aa"  # the scratch ledger's user


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", default="zippy")
    parser.add_argument("--epsilons", default="1,4,8")
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--early-steps", type=int, default=80)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--out", default=os.path.join(ROOT, "out", "privacy-utility"))
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    data = os.path.join(ROOT, "data", "users", args.user)
    heldout = os.path.join(data, "heldout.txt")
    ledger = os.path.join(args.out, "ledger.sqlite")
    if os.path.exists(ledger):
        os.remove(ledger)

    def evaluate(**kwargs):
        extra = [x for k, v in kwargs.items() for x in (f"--{k}", v)]
        return bitdelta("eval", "--data", heldout, *extra)["nll"]

    def finetune(name, steps, private_args=()):
        folder = os.path.join(args.out, name)
        start = time.time()
        report = bitdelta("train", "--data", os.path.join(data, "train.txt"), "--heldout", heldout,
                          "-o", folder, "--force", "--steps", str(steps), "--lr", str(args.lr),
                          "--seq", str(args.seq), "--batch", str(args.batch), "--seed", "1",
                          "--freeze-embeddings", "--eval-every", "0", *private_args)
        adapter = folder + ".bitdelta"
        bitdelta("compress", "--base", os.path.join(ROOT, "models", "default"), "--finetuned",
                 folder, "-o", adapter, "--force")
        row = {"name": name, "steps": steps, "nll": evaluate(model=folder),
               "adapter_nll": evaluate(delta=adapter), "seconds": time.time() - start,
               "privacy": report.get("privacy")}
        print(f"  {name}: nll {row['nll']:.4f}, adapter {row['adapter_nll']:.4f} "
              f"({row['seconds']:.0f} s)", file=sys.stderr)
        return row

    base = evaluate()
    rows = [finetune("non-private", args.steps), finetune("non-private-early", args.early_steps)]
    for epsilon in [float(e) for e in args.epsilons.split(",")]:
        for repeat in range(args.repeats):
            rows.append(finetune(
                f"dp-eps{epsilon:g}-r{repeat + 1}", args.steps,
                ["--dp", "--target-epsilon", str(epsilon), "--delta", str(args.delta),
                 "--max-grad-norm", str(args.max_grad_norm), "--user", USER_DID,
                 "--ledger", ledger, "--max-epsilon", "1e9"]))
    print(f"user {args.user}: base held-out NLL {base:.4f}; recipe {args.steps} steps, lr {args.lr:g}, "
          f"seq {args.seq}, expected batch {args.batch}, embeddings frozen; delta {args.delta:g}, "
          f"C {args.max_grad_norm:g}")
    print("| fine-tune | epsilon | sigma | held-out NLL | gain over base | BitDelta NLL | gain over base |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        p = r["privacy"]
        eps = f"{p['epsilon']:.3f}" if p else "∞"
        sigma = f"{p['noise_multiplier']:.3f}" if p else "0"
        print(f"| {r['name']} ({r['steps']} steps) | {eps} | {sigma} | {r['nll']:.4f} | "
              f"{base - r['nll']:+.4f} | {r['adapter_nll']:.4f} | {base - r['adapter_nll']:+.4f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"user": args.user, "base_nll": base, "args": vars(args), "rows": rows}, f,
                      indent=2)


if __name__ == "__main__":
    main()
