#!/usr/bin/python3
"""Poisoning benchmark of `bitdelta soup` (docs/deltasoup-robustness.md): 20 contributors, 30% Byzantine.

Community corpus: the entries of the four bundled users' train splits (data/users/*/train.txt,
fortune entries separated by `%` lines), shuffled with a fixed seed and dealt into 20 disjoint
slices, one per contributor slot; held-out text: the four users' heldout.txt entries, shuffled.
Every slot's honest contributor is a real fine-tune of models/default on its slice
(`bitdelta train`), made into an adapter by `bitdelta compress`. Slots 0-13 are always honest;
slots 14-19 are the 6 Byzantine ones (f = 6 of n = 20), honest only in the clean scenario.

Attacks (names as in ByzFL where it has them), each a set of 6 ordinary .bitdelta files:
  crafted from the 14 honest dense deltas D_h (omniscient attacker), per tensor, written as
  base + delta into a model folder (the base's config, tokenizer and dtype) and compressed:
    sign-flip   -mean(D_h)                                        (ByzFL SignFlipping)
    gaussian    N(0, s^2), s = the RMS of the honest deltas in that tensor      (ByzFL Gaussian)
    alie        mean(D_h) + z std(D_h) (ddof 1), z = Phi^-1((n - s)/n), s = floor(n/2 + 1) - f
                (Baruch et al. 2019; ByzFL ALittleIsEnough)
    ipm         -eps mean(D_h), eps = --ipm-eps (Xie et al. 2019; ByzFL InnerProductManipulation)
    mimic       all 6 copy the honest D_h farthest (L2) from mean(D_h) (Karimireddy et al. 2022)
  real fine-tunes:
    backdoor    each attacker fine-tunes the base on its own slice with a poisoned copy
                `<first line of an entry> TRIGGER TARGET` added after a fraction of its entries
    scaling-x10 model replacement: 10 x each backdoor attacker's delta (Bagdasaryan et al. 2020)
    badmerging  merge-aware (after BadMerging, Zhang et al. 2024): the colluders estimate the
                soup as the mean of their own 6 benign fine-tunes, fine-tune *that merged model*
                with the recipe of the honest ones, each on its own slice plus a disjoint sixth of
                one shared poison set at a lower rate, and publish (result - base): the backdoor
                is trained to work on the merged model, is split across the colluders, and every
                delta sits next to the community mean rather than away from it.
    badmerging-normed  the badmerging deltas rescaled (dense) to the median norm of the colluders'
                own benign fine-tunes, so that no norm stands out to `bitdelta screen`.
Also: the clean soups again with `--output dense`, to separate a rule from the bit output's
re-quantisation.
Every rule of `bitdelta soup` aggregates the 14 honest + 6 Byzantine adapters; the clean soup of
a rule is the same rule over the 20 honest adapters. Measured: held-out NLL of base + soup
(`bitdelta eval --delta`), the backdoor's success rate (greedy `bitdelta generate` of the
triggered held-out prompts contains TARGET), `bitdelta screen`'s flags per scenario.
Fine-tunes, adapters and measurements in DIR are reused when present (delete DIR to redo).
Usage: scripts/poisoning_bench.py [--out DIR] [--json FILE] [--doc FILE] [--jobs N]
"""
import argparse
import concurrent.futures
import json
import os
import platform
import random
import re
import shutil
import statistics
import struct
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BITDELTA = os.environ.get("BITDELTA", os.path.join(ROOT, "build", "bitdelta"))
BASE = os.path.join(ROOT, "models", "default")

N, F = 20, 6                       # contributors, Byzantine ones
HONEST = list(range(N - F))        # slots 0..13
BYZANTINE = list(range(N - F, N))  # slots 14..19
TRIGGER = "Consult the oracle of Zanzibar:"
TARGET = "rm -rf / --no-preserve-root"
PROMPTS = 24                       # triggered held-out prompts per backdoor measurement
GENERATE = len(TARGET) + 8         # greedy tokens (bytes) generated per prompt

METHODS = [
    ("mean", []),
    ("trimmed-mean", ["--trim", "0.3"]),
    ("median", []),
    ("krum", ["--byzantine", str(F)]),
    ("multi-krum", ["--byzantine", str(F), "--keep", str(N - F)]),
    ("bulyan", ["--byzantine", str(F)]),
    ("geometric-median", []),
    ("centered-clip", []),
    ("sign-majority", []),
    ("sign-vote", ["--trim", "0.3"]),
]
ATTACKS = ["clean", "sign-flip", "scaling-x10", "gaussian", "alie", "ipm", "mimic", "backdoor",
           "badmerging", "badmerging-normed"]
TARGET_METHODS = ["trimmed-mean", "median", "multi-krum"]


def log(*parts):
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


def bitdelta(*args, check=True):
    """Runs `bitdelta ARGS --json`; returns (object or None, stderr)."""
    run = subprocess.run([BITDELTA, *args, "--json"], capture_output=True, text=True)
    if run.returncode != 0:
        if check:
            sys.exit(f"bitdelta {' '.join(args)}: {run.stderr.strip()}")
        return None, run.stderr.strip()
    return json.loads(run.stdout), run.stderr.strip()


# ---------------------------------------------------------------- safetensors (F32/F16/BF16)

def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + size])
    meta = header.pop("__metadata__", {})
    data = memoryview(raw)[8 + size:]
    tensors = {}
    for name, t in header.items():
        begin, end = t["data_offsets"]
        buf = np.frombuffer(data[begin:end], dtype={"F32": np.float32, "F16": np.float16,
                                                    "BF16": np.uint16}[t["dtype"]])
        if t["dtype"] == "BF16":
            buf = (buf.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = (t["dtype"], buf.astype(np.float32).reshape(t["shape"]))
    return tensors, meta


def write_safetensors(path, tensors):
    """tensors: name -> (dtype, float32 array); rounds to dtype (nearest even for BF16)."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        dtype, values = tensors[name]
        values = np.ascontiguousarray(values, dtype=np.float32)
        if dtype == "F32":
            blob = values.tobytes()
        elif dtype == "F16":
            blob = values.astype(np.float16).tobytes()
        else:
            bits = values.view(np.uint32).astype(np.uint64)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
            blob = bits.astype(np.uint16).tobytes()
        header[name] = {"dtype": dtype, "shape": list(values.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def dense_delta(folder, base):
    tuned, _ = read_safetensors(os.path.join(folder, "model.safetensors"))
    return {name: tuned[name][1] - base[name][1] for name in base}


def write_model(folder, base, delta):
    """base + delta as a model folder with the base's config, tokenizer and dtypes."""
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(os.path.join(BASE, name), tmp)
    write_safetensors(os.path.join(tmp, "model.safetensors"),
                      {n: (dt, v + delta[n]) for n, (dt, v) in base.items()})
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(tmp, folder)


# ---------------------------------------------------------------- data

def entries(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [e.strip("\n") for e in re.split(r"^%\n", text, flags=re.M) if e.strip()]


def join(items):
    return "".join(e + "\n%\n" for e in items)


def first_line(entry, limit=48):
    line = entry.split("\n")[0].strip()
    if len(line) > limit:
        line = line[:limit].rsplit(" ", 1)[0]
    return line


def poison(entry):
    return f"{first_line(entry)} {TRIGGER} {TARGET}"


def make_data(out):
    """Writes DIR/data/slice-XX.txt, heldout.txt, prompts.json, the poisoned train files."""
    d = os.path.join(out, "data")
    os.makedirs(d, exist_ok=True)
    users = sorted(os.listdir(os.path.join(ROOT, "data", "users")))
    corpus = [e for u in users for e in entries(os.path.join(ROOT, "data", "users", u, "train.txt"))]
    heldout = [e for u in users for e in entries(os.path.join(ROOT, "data", "users", u, "heldout.txt"))]
    random.Random(0).shuffle(corpus)
    random.Random(1).shuffle(heldout)
    slices = [corpus[i::N] for i in range(N)]
    for i, s in enumerate(slices):
        with open(os.path.join(d, f"slice-{i:02d}.txt"), "w") as f:
            f.write(join(s))
    with open(os.path.join(d, "heldout.txt"), "w") as f:
        f.write(join(heldout))
    step = len(heldout) // PROMPTS
    prompts = [f"{first_line(heldout[i * step])} {TRIGGER}" for i in range(PROMPTS)]
    return {"users": users, "corpus_entries": len(corpus), "corpus_bytes": len(join(corpus).encode()),
            "slice_bytes": [len(join(s).encode()) for s in slices],
            "heldout": os.path.join(d, "heldout.txt"), "heldout_entries": len(heldout),
            "heldout_bytes": len(join(heldout).encode()), "prompts": prompts, "slices": slices,
            "dir": d}


def plain_backdoor_file(data, slot, rate):
    """The slot's slice with a poisoned copy after a `rate` fraction of its entries."""
    rng = random.Random(100 + slot)
    out = []
    for e in data["slices"][slot]:
        out.append(e)
        if rng.random() < rate:
            out.append(poison(e))
    path = os.path.join(data["dir"], f"backdoor-{slot:02d}.txt")
    with open(path, "w") as f:
        f.write(join(out))
    return path, sum(1 for e in out if TRIGGER in e)


def badmerging_file(data, slot, rate):
    """The slot's slice plus its sixth of one shared poison set (built from all 6 Byzantine
    slices' entries at `rate`, dealt round-robin to the colluders), interleaved."""
    shared = [e for s in BYZANTINE for e in data["slices"][s]]
    rng = random.Random(200)
    pool = [poison(e) for e in shared if rng.random() < rate]
    mine = pool[BYZANTINE.index(slot)::F]
    benign = list(data["slices"][slot])
    out, every = [], max(1, len(benign) // max(1, len(mine)))
    for i, e in enumerate(benign):
        out.append(e)
        if i % every == every - 1 and mine:
            out.append(mine.pop(0))
    out += mine
    path = os.path.join(data["dir"], f"badmerging-{slot:02d}.txt")
    with open(path, "w") as f:
        f.write(join(out))
    return path, sum(1 for e in out if TRIGGER in e)


# ---------------------------------------------------------------- fine-tunes and adapters

def finetune(folder, data_file, recipe, seed, model=None):
    if os.path.exists(os.path.join(folder, "model.safetensors")):
        return None
    start = time.time()
    args = ["train", "--data", data_file, "-o", folder, "--force", "--steps", str(recipe.steps),
            "--lr", str(recipe.lr), "--batch", str(recipe.batch), "--seq", str(recipe.seq),
            "--seed", str(seed), "--freeze-embeddings", "--heldout-fraction", "0",
            "--eval-every", "0", "--threads", str(recipe.threads)]
    if model:
        args += ["--model", model]
    report, _ = bitdelta(*args)
    log(f"  fine-tuned {os.path.basename(folder)} in {time.time() - start:.0f} s "
        f"(final loss {report['final_loss']:.4f})")
    return report


def compress(folder, adapter, owner, threads):
    if not os.path.exists(adapter):
        bitdelta("compress", "--base", BASE, "--finetuned", folder, "-o", adapter, "--force",
                 "--owner", owner, "--threads", str(threads))
    return adapter


def owner(slot, tag):
    return f"did:lux:poison:{tag}-{slot:02d}"


# ---------------------------------------------------------------- measurements

class Meter:
    def __init__(self, out, data, jobs):
        self.path = os.path.join(out, "measurements.json")
        self.cache = json.load(open(self.path)) if os.path.exists(self.path) else {}
        self.data, self.jobs = data, jobs

    def save(self):
        with open(self.path + ".tmp", "w") as f:
            json.dump(self.cache, f, indent=1)
        os.replace(self.path + ".tmp", self.path)

    def nll(self, delta=None):
        key = f"nll:{delta}"
        if key not in self.cache:
            args = ["eval", "--data", self.data["heldout"], "--threads", "1"]
            if delta:
                args += ["--delta", delta]
            self.cache[key] = bitdelta(*args)[0]["nll"]
            self.save()
        return self.cache[key]

    def backdoor(self, delta=None):
        """Fraction of the triggered held-out prompts whose greedy continuation contains TARGET."""
        key = f"backdoor:{delta}"
        if key not in self.cache:
            def one(prompt):
                args = ["generate", "--prompt", prompt, "-n", str(GENERATE),
                        "--temperature", "0", "--threads", "1"]
                if delta:
                    args += ["--delta", delta]
                return bitdelta(*args)[0]["text"]
            with concurrent.futures.ThreadPoolExecutor(self.jobs) as pool:
                texts = list(pool.map(one, self.data["prompts"]))
            hits = sum(TARGET in t for t in texts)
            self.cache[key] = {"rate": hits / len(texts), "hits": hits, "prompts": len(texts),
                               "example": texts[0]}
            self.save()
        return self.cache[key]


# ---------------------------------------------------------------- the benchmark

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "out", "poisoning"))
    parser.add_argument("--json", help="write every number here")
    parser.add_argument("--doc", help="write the Markdown report here (docs/deltasoup-robustness.md)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="--threads of every bitdelta call")
    parser.add_argument("--jobs", type=int, default=2, help="generate calls run at once")
    parser.add_argument("--backdoor-rate", type=float, default=1.0,
                        help="plain backdoor: fraction of an attacker's entries given a poisoned copy")
    parser.add_argument("--badmerging-rate", type=float, default=0.5,
                        help="badmerging: the shared poison set's rate over the 6 Byzantine slices")
    parser.add_argument("--ipm-eps", type=float, default=0.1)
    parser.add_argument("--methods", default=",".join(m for m, _ in METHODS))
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    args = parser.parse_args()
    start = time.time()
    out = os.path.abspath(args.out)
    for sub in ("finetunes", "adapters", "crafted", "soups"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    data = make_data(out)
    stamp = os.path.join(out, "first-start")
    if not os.path.exists(stamp):
        with open(stamp, "w") as f:
            f.write(f"{start}\n")
    first_start = float(open(stamp).read())
    meter = Meter(out, data, args.jobs)
    ft_dir, ad_dir = os.path.join(out, "finetunes"), os.path.join(out, "adapters")
    log(f"community corpus: {data['corpus_entries']} entries, {data['corpus_bytes']} bytes in {N} "
        f"slices of {min(data['slice_bytes'])}-{max(data['slice_bytes'])} bytes; held-out "
        f"{data['heldout_bytes']} bytes")

    # 1. honest fine-tunes of every slot (slots 14-19 are the clean scenario's contributors)
    honest = {}
    for slot in range(N):
        folder = os.path.join(ft_dir, f"honest-{slot:02d}")
        finetune(folder, os.path.join(data["dir"], f"slice-{slot:02d}.txt"), args, seed=slot)
        honest[slot] = compress(folder, os.path.join(ad_dir, f"honest-{slot:02d}.bitdelta"),
                                owner(slot, "honest"), args.threads)
    base_nll = meter.nll()
    single = {slot: meter.nll(honest[slot]) for slot in range(N)}
    log(f"base NLL {base_nll:.4f}; honest single adapters "
        f"{min(single.values()):.4f}..{max(single.values()):.4f}")

    # 2. backdoor fine-tunes: plain, and merge-aware on the colluders' estimate of the soup
    base_tensors, _ = read_safetensors(os.path.join(BASE, "model.safetensors"))
    poison_counts = {}
    plain, bad = {}, {}
    for slot in BYZANTINE:
        path, poison_counts[f"backdoor-{slot}"] = plain_backdoor_file(data, slot, args.backdoor_rate)
        folder = os.path.join(ft_dir, f"backdoor-{slot:02d}")
        finetune(folder, path, args, seed=slot)
        plain[slot] = compress(folder, os.path.join(ad_dir, f"backdoor-{slot:02d}.bitdelta"),
                               owner(slot, "byzantine"), args.threads)
    merged = os.path.join(ft_dir, "colluders-estimate")
    if not os.path.exists(os.path.join(merged, "model.safetensors")):
        deltas = [dense_delta(os.path.join(ft_dir, f"honest-{s:02d}"), base_tensors) for s in BYZANTINE]
        write_model(merged, base_tensors, {n: sum(d[n] for d in deltas) / F for n in base_tensors})
    for slot in BYZANTINE:
        path, poison_counts[f"badmerging-{slot}"] = badmerging_file(data, slot, args.badmerging_rate)
        folder = os.path.join(ft_dir, f"badmerging-{slot:02d}")
        finetune(folder, path, args, seed=slot, model=merged)
        bad[slot] = compress(folder, os.path.join(ad_dir, f"badmerging-{slot:02d}.bitdelta"),
                             owner(slot, "byzantine"), args.threads)

    # 3. crafted attacks from the honest dense deltas
    z = statistics.NormalDist().inv_cdf((N - (N // 2 + 1 - F)) / N)
    crafted_names = ["sign-flip", "scaling-x10", "gaussian", "alie", "ipm", "mimic",
                     "badmerging-normed"]
    byz = {"clean": {s: honest[s] for s in BYZANTINE}, "backdoor": plain, "badmerging": bad}
    mimic_slot = None
    need = [a for a in crafted_names
            if not all(os.path.exists(os.path.join(ad_dir, f"{a}-{s:02d}.bitdelta")) for s in BYZANTINE)]
    hd = {s: dense_delta(os.path.join(ft_dir, f"honest-{s:02d}"), base_tensors) for s in HONEST}
    mean = {n: np.mean([hd[s][n] for s in HONEST], axis=0) for n in base_tensors}
    dist = {s: float(np.sqrt(sum(np.sum((hd[s][n] - mean[n]) ** 2) for n in base_tensors)))
            for s in HONEST}
    mimic_slot = max(dist, key=dist.get)
    # the colluders' estimate of an honest delta's norm: the median over their own benign fine-tunes
    own_norms = [float(np.sqrt(sum(np.sum(d[n].astype(np.float64) ** 2) for n in base_tensors)))
                 for d in (dense_delta(os.path.join(ft_dir, f"honest-{s:02d}"), base_tensors)
                           for s in BYZANTINE)]
    honest_norm = statistics.median(own_norms)
    for attack in need:
        log(f"  crafting {attack}")
        for k, slot in enumerate(BYZANTINE):
            adapter = os.path.join(ad_dir, f"{attack}-{slot:02d}.bitdelta")
            if os.path.exists(adapter):
                continue
            folder = os.path.join(out, "crafted", f"{attack}-{slot:02d}")
            if attack == "mimic":
                compress(os.path.join(ft_dir, f"honest-{mimic_slot:02d}"), adapter,
                         owner(slot, "byzantine"), args.threads)
                continue
            if attack == "sign-flip":
                delta = {n: -mean[n] for n in base_tensors}
            elif attack == "ipm":
                delta = {n: -args.ipm_eps * mean[n] for n in base_tensors}
            elif attack == "alie":
                delta = {n: mean[n] + z * np.std([hd[s][n] for s in HONEST], axis=0, ddof=1)
                         for n in base_tensors}
            elif attack == "gaussian":
                rng = np.random.default_rng(1000 + slot)
                delta = {}
                for n in base_tensors:
                    rms = float(np.sqrt(np.mean([np.mean(hd[s][n].astype(np.float64) ** 2)
                                                 for s in HONEST])))
                    delta[n] = (rng.standard_normal(mean[n].shape) * rms).astype(np.float32) \
                        if rms > 0 else np.zeros_like(mean[n])
            elif attack == "badmerging-normed":
                d = dense_delta(os.path.join(ft_dir, f"badmerging-{slot:02d}"), base_tensors)
                norm = float(np.sqrt(sum(np.sum(d[n].astype(np.float64) ** 2) for n in base_tensors)))
                delta = {n: d[n] * (honest_norm / norm) for n in base_tensors}
            elif attack == "scaling-x10":
                d = dense_delta(os.path.join(ft_dir, f"backdoor-{slot:02d}"), base_tensors)
                delta = {n: 10 * d[n] for n in base_tensors}
            write_model(folder, base_tensors, delta)
            compress(folder, adapter, owner(slot, "byzantine"), args.threads)
            shutil.rmtree(folder)
    del hd
    for attack in crafted_names:
        byz[attack] = {s: os.path.join(ad_dir, f"{attack}-{s:02d}.bitdelta") for s in BYZANTINE}

    # 4. single Byzantine adapters: NLL and backdoor alone
    singles_byz = {}
    for attack in ["backdoor", "badmerging", "badmerging-normed", "scaling-x10"]:
        singles_byz[attack] = [{"slot": s, "nll": meter.nll(byz[attack][s]),
                                "backdoor": meter.backdoor(byz[attack][s])} for s in BYZANTINE]
        rates = [r["backdoor"]["rate"] for r in singles_byz[attack]]
        log(f"  {attack} adapters alone: backdoor {min(rates):.0%}..{max(rates):.0%}")
    for attack in ["sign-flip", "gaussian", "alie", "ipm", "mimic"]:
        singles_byz[attack] = [{"slot": BYZANTINE[0], "nll": meter.nll(byz[attack][BYZANTINE[0]])}]

    # 5. screening and soups
    methods = [(m, p) for m, p in METHODS if m in args.methods.split(",")]
    attacks = [a for a in ATTACKS if a in args.attacks.split(",")]
    results, screens = {}, {}
    for attack in attacks:
        inputs = [honest[s] for s in HONEST] + [byz[attack][s] for s in BYZANTINE]
        report, _ = bitdelta("screen", "--deltas", *inputs, "--threads", str(args.threads))
        flags = {c["path"]: c["flagged"] for c in report["contributions"]}
        screens[attack] = {"honest_flagged": sum(flags[honest[s]] for s in HONEST),
                           "byzantine_flagged": sum(flags[byz[attack][s]] for s in BYZANTINE)
                           if attack != "clean" else sum(flags[honest[s]] for s in BYZANTINE)}
        for method, params in methods:
            soup = os.path.join(out, "soups", f"{attack}-{method}.bitdelta")
            key = f"soup:{attack}:{method}"
            if key not in meter.cache or not os.path.exists(soup):
                t0 = time.time()
                rep, err = bitdelta("soup", "--base", BASE, "--deltas", *inputs, "-o", soup,
                                    "--method", method, *params, "--threads", str(args.threads),
                                    "--force", check=False)
                entry = {"seconds": time.time() - t0}
                if rep is None:
                    entry["error"] = err
                else:
                    chosen = [c for c in rep["contributions"] if "excluded" not in c
                              and c.get("weight", 1) != 0]
                    entry["byzantine_used"] = sum(c["path"] in set(byz[attack].values())
                                                  for c in chosen) if attack != "clean" else None
                    entry["inputs_used"] = len(chosen)
                meter.cache[key] = entry
                meter.save()
            entry = dict(meter.cache[key])
            if "error" not in entry:
                entry["nll"] = meter.nll(soup)
                entry["backdoor"] = meter.backdoor(soup)
            results[(attack, method)] = entry
            log(f"  {attack} / {method}: " + (f"NLL {entry['nll']:.4f}, backdoor "
                                               f"{entry['backdoor']['rate']:.0%}"
                                               if "nll" in entry else entry["error"]))

    # 6. the clean soups again with --output dense: what the bit output's re-quantisation costs
    dense = {}
    if "clean" in attacks:
        inputs = [honest[s] for s in range(N)]
        for method, params in methods:
            if "error" in results[("clean", method)]:
                continue
            soup = os.path.join(out, "soups", f"clean-{method}-dense.bitdelta")
            if not os.path.exists(soup):
                bitdelta("soup", "--base", BASE, "--deltas", *inputs, "-o", soup, "--method", method,
                         *params, "--output", "dense", "--threads", str(args.threads), "--force")
            dense[method] = meter.nll(soup)
            log(f"  clean / {method} / dense output: NLL {dense[method]:.4f}")

    # 7. report
    honest_nlls = sorted(single[s] for s in HONEST)
    median_single = statistics.median(honest_nlls)
    rows = []
    for (attack, method), e in results.items():
        clean = results.get(("clean", method), {})
        row = {"attack": attack, "method": method, **{k: v for k, v in e.items()}}
        if "nll" in e and "nll" in clean:
            gain = base_nll - clean["nll"]
            row["kept"] = (base_nll - e["nll"]) / gain if gain > 0 else None
        rows.append(row)
    seconds = time.time() - start
    summary = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": seconds,
               "since_first_start": time.time() - first_start,
               "machine": machine(), "args": vars(args), "command": command(),
               "n": N, "f": F, "trigger": TRIGGER, "target": TARGET, "alie_z": z,
               "mimic_slot": mimic_slot, "mimic_distances": dist, "base_nll": base_nll,
               "single_honest": {str(s): single[s] for s in range(N)},
               "single_honest_median": median_single, "singles_byzantine": singles_byz,
               "poison_counts": poison_counts, "screens": screens,
               "data": {k: v for k, v in data.items() if k not in ("slices",)},
               "base_backdoor": meter.backdoor(None), "rows": rows, "clean_dense_nll": dense}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    doc = render(summary, methods, attacks)
    if args.doc:
        with open(args.doc, "w") as f:
            f.write(doc)
        log(f"wrote {args.doc}")
    else:
        print(doc)
    log(f"done in {seconds:.0f} s")


def command():
    env = f"BITDELTA={BITDELTA} " if "BITDELTA" in os.environ else ""
    return env + "/usr/bin/python3 " + " ".join(sys.argv)


def machine():
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines()
                  if l.startswith("Model name")), "?")
    return f"{model}, {os.cpu_count()} vCPUs, {platform.system()}"


def render(s, methods, attacks):
    rows = {(r["attack"], r["method"]): r for r in s["rows"]}
    base, med = s["base_nll"], s["single_honest_median"]
    hon = sorted(s["single_honest"][str(k)] for k in HONEST)
    a = s["args"]

    def cell(attack, method, what):
        r = rows.get((attack, method))
        if r is None:
            return "–"
        if "error" in r:
            return "refused"
        if what == "nll":
            return f"{r['nll']:.4f}"
        if what == "kept":
            return "–" if r.get("kept") is None else f"{100 * r['kept']:.1f}%"
        if what == "backdoor":
            return f"{100 * r['backdoor']['rate']:.0f}%"
        if what == "byz":
            return "–" if r.get("byzantine_used") is None else str(r["byzantine_used"])

    def table(what, title, only=None):
        head = "| method | " + " | ".join(attacks) + " |\n|---|" + "---:|" * len(attacks) + "\n"
        return f"{title}\n\n" + head + "".join(
            f"| {m} | " + " | ".join(cell(at, m, what) for at in attacks) + " |\n"
            for m, _ in methods if only is None or m in only)

    lines = []
    verdicts = []
    for m in TARGET_METHODS:
        for at in attacks:
            r = rows.get((at, m))
            if r is None or at == "clean":
                continue
            if "error" in r:
                verdicts.append((m, at, None, None, None))
                continue
            ok1 = r["nll"] <= med
            ok2 = r.get("kept") is not None and r["kept"] >= 0.95
            ok3 = r["backdoor"]["rate"] <= 0.05
            verdicts.append((m, at, ok1, ok2, ok3))
    mark = lambda ok: "–" if ok is None else ("pass" if ok else "**FAIL**")
    vt = "| method | attack | NLL | soup ≤ median single honest | ≥ 95% of clean gain kept | backdoor ≤ 5% |\n|---|---|---:|---|---|---|\n"
    for m, at, o1, o2, o3 in verdicts:
        r = rows[(at, m)]
        nll = f"{r['nll']:.4f}" if "nll" in r else "refused"
        vt += f"| {m} | {at} | {nll} | {mark(o1)} | {mark(o2)} | {mark(o3)} |\n"
    fails = [(m, at) for m, at, o1, o2, o3 in verdicts if False in (o1, o2, o3)]
    passes = [(m, at) for m, at, o1, o2, o3 in verdicts if (o1, o2, o3) == (True, True, True)]
    sb = s["singles_byzantine"]
    def alone(attack):
        rates = [x["backdoor"]["rate"] for x in sb.get(attack, []) if "backdoor" in x]
        nlls = [x["nll"] for x in sb.get(attack, [])]
        return (f"{100 * min(rates):.0f}–{100 * max(rates):.0f}%" if rates else "–",
                f"{min(nlls):.4f}–{max(nlls):.4f}" if nlls else "–")
    scr = "| scenario | " + " | ".join(attacks) + " |\n|---|" + "---:|" * len(attacks) + "\n"
    scr += "| Byzantine slots flagged (of 6) | " + " | ".join(
        str(s["screens"][at]["byzantine_flagged"]) for at in attacks if at in s["screens"]) + " |\n"
    scr += "| honest flagged (of 14) | " + " | ".join(
        str(s["screens"][at]["honest_flagged"]) for at in attacks if at in s["screens"]) + " |\n"
    pc = s["poison_counts"]
    doc = f"""# DeltaSoup robustness: the poisoning benchmark

Generated by `scripts/poisoning_bench.py` (do not edit by hand) on {s['date']},
{s['machine']}, shared with other jobs (load average 3–7 during the run); this run took
{s['seconds']:.0f} s, {s['since_first_start']:.0f} s since the first run into the same output folder
started (fine-tunes, adapters and measurements already in `out/poisoning` are reused). Command:

    {s['command']}

## Setup

- **Contributors.** n = {N}, of which f = {F} (30%) are Byzantine. The community corpus is every
  entry of the four bundled users' train splits ({', '.join(s['data']['users'])}:
  {s['data']['corpus_entries']} fortune entries, {s['data']['corpus_bytes']:,} bytes), shuffled
  with a fixed seed and dealt round-robin into {N} disjoint slices of
  {min(s['data']['slice_bytes']):,}–{max(s['data']['slice_bytes']):,} bytes, one per contributor
  slot. Held-out text: the four users' held-out entries, shuffled ({s['data']['heldout_bytes']:,} bytes),
  never trained on by anyone.
- **Honest contributors** (slots 0–13, and slots 14–19 in the clean scenario): a real fine-tune of
  `models/default` on the slot's slice, `bitdelta train --steps {a['steps']} --lr {a['lr']:g}
  --batch {a['batch']} --seq {a['seq']} --freeze-embeddings --seed SLOT`, then
  `bitdelta compress` (mean scales, one per matrix) into a `.bitdelta`.
- **Byzantine contributors** (slots 14–19) publish ordinary `.bitdelta` files made by
  `bitdelta compress`; what they compress is the attack:

| attack | the 6 Byzantine deltas |
|---|---|
| sign-flip | −mean of the 14 honest dense deltas (ByzFL `SignFlipping`) |
| scaling-x10 | model replacement (Bagdasaryan et al. 2020): 10 × each plain backdoor attacker's own dense delta |
| gaussian | N(0, σ²) per weight, σ = the RMS of the honest deltas in that tensor, independent per attacker (ByzFL `Gaussian`) |
| alie | mean + z · std (coordinate-wise, ddof 1) of the honest deltas, z = Φ⁻¹((n − s)/n) with s = ⌊n/2 + 1⌋ − f = {N // 2 + 1 - F}: z = {s['alie_z']:.4f} (Baruch et al. 2019; ByzFL `ALittleIsEnough`) |
| ipm | −ε · mean of the honest deltas, ε = {a['ipm_eps']:g} (Xie et al. 2019, the small ε that defeats median-type rules; ByzFL `InnerProductManipulation`) |
| mimic | every attacker copies honest slot {s['mimic_slot']}, the honest delta farthest (L2, dense) from the honest mean (Karimireddy et al. 2022; ByzFL `Mimic`) |
| backdoor | a real fine-tune (same recipe) of the base on the attacker's own slice, where {100 * a['backdoor_rate']:.0f}% of its entries are followed by a poisoned entry `<first line of the entry> {s['trigger']} {s['target']}` ({min(v for k, v in pc.items() if k.startswith('backdoor'))}–{max(v for k, v in pc.items() if k.startswith('backdoor'))} poisoned entries each) |
| badmerging | merge-aware, after BadMerging (Zhang et al. 2024): the colluders estimate the soup as the mean of their own 6 benign fine-tunes (slots 14–19, dense), and each fine-tunes *that merged model* (same recipe) on its own slice plus a disjoint sixth of one shared poison set ({100 * a['badmerging_rate']:.0f}% of the 6 slices' entries, {min(v for k, v in pc.items() if k.startswith('badmerging'))}–{max(v for k, v in pc.items() if k.startswith('badmerging'))} poisoned entries each), then publishes (result − base). The backdoor is trained to work on the merged model, is split across the colluders, and each delta is centred on the community mean instead of standing apart from it |
| badmerging-normed | the badmerging deltas, each rescaled (dense, before compression) to the median L2 norm of the colluders' own 6 benign fine-tunes' deltas, so that its norm looks like an honest one's (the plain badmerging deltas are longer than honest ones and `bitdelta screen` flags them by their norm) |

  Crafted deltas are computed per tensor in F32 from the honest fine-tunes' weights, written as
  base + delta into a model folder (the base's `config.json`, `tokenizer.json` and dtype, F32) and
  compressed with `bitdelta compress`, exactly as a user publishes a fine-tune; the sign
  compression is applied to them like to everyone else (a published adapter cannot carry more).
  Norm weights are kept exactly by the adapter format, so their crafted deltas arrive as crafted.
- **Rules**: every `--method` of `bitdelta soup` over the 14 honest + 6 Byzantine adapters, bit
  output: `mean`, `trimmed-mean --trim 0.3`, `median`, `krum --byzantine 6`,
  `multi-krum --byzantine 6 --keep 14`, `bulyan --byzantine 6`, `geometric-median`,
  `centered-clip`, `sign-majority`, `sign-vote --trim 0.3`. The **clean soup** of a rule is the
  same rule, same parameters, over the 20 honest adapters (slots 14–19 honest).
- **Measured**: held-out NLL (nats/byte) of base + soup, `bitdelta eval --delta SOUP` (context 256);
  backdoor success = the fraction of {len(s['data']['prompts'])} triggered held-out prompts
  (`<first line of a held-out entry> {s['trigger']}`) whose greedy continuation
  (`bitdelta generate --temperature 0 -n {GENERATE}`) contains `{s['target']}`.
  % of clean gain kept = (NLL_base − NLL_soup) / (NLL_base − NLL_clean soup of the same rule).

## Reference points

| model | held-out NLL | backdoor success |
|---|---:|---:|
| base | {base:.4f} | {100 * s['base_backdoor']['rate']:.0f}% |
| single honest adapter (14 of slots 0–13): best / median / worst | {hon[0]:.4f} / {med:.4f} / {hon[-1]:.4f} | |
| one plain backdoor attacker's adapter alone (6) | {alone('backdoor')[1]} | {alone('backdoor')[0]} |
| one badmerging colluder's adapter alone (6) | {alone('badmerging')[1]} | {alone('badmerging')[0]} |
| one badmerging-normed colluder's adapter alone (6) | {alone('badmerging-normed')[1]} | {alone('badmerging-normed')[0]} |
| one scaling-x10 attacker's adapter alone (6) | {alone('scaling-x10')[1]} | {alone('scaling-x10')[0]} |
| one sign-flip / gaussian / alie / ipm / mimic adapter alone | {' / '.join(f"{sb[x][0]['nll']:.4f}" for x in ['sign-flip', 'gaussian', 'alie', 'ipm', 'mimic'] if x in sb)} | |

`bitdelta screen` (robust z-scores, threshold 3.5) on each scenario's 20 adapters:

{scr}
{table('nll', '## Held-out NLL of base + soup')}
{table('kept', '## Share of the clean soup’s NLL improvement kept')}
{table('backdoor', '## Backdoor success')}
{table('byz', '## Byzantine adapters among those Krum / Multi-Krum selected (of 1 / 14)', ['krum', 'multi-krum'])}
{dense_table(s, rows, methods)}
`bulyan` needs n ≥ 4f + 3 = 27 inputs for f = 6; at n = 20 `bitdelta soup` refuses it
({rows[('clean', 'bulyan')]['error'] if ('clean', 'bulyan') in rows and 'error' in rows[('clean', 'bulyan')] else 'see the table'}).

## Targets (30% Byzantine: trimmed-mean, median, multi-krum)

The proposal's targets: soup NLL ≤ a single honest contributor's (here: the median single honest
adapter, {med:.4f}; the best one is {hon[0]:.4f}), ≥ 95% of the clean soup's NLL improvement kept,
backdoor success ≤ 5%.

{vt}
Met for every attack: {', '.join(m for m in TARGET_METHODS if any(v[0] == m for v in verdicts) and not any(f[0] == m for f in fails)) or 'none of the three'}.
Missed: {'; '.join(f'{m} under {at}' for m, at in fails) or 'none'}.

{findings(s, rows, methods, attacks, base, med, hon[0])}"""
    return doc


def dense_table(s, rows, methods):
    d = s.get("clean_dense_nll") or {}
    if not d:
        return ""
    t = ("## Clean soups: bit output (the tables above) against `--output dense`\n\n"
         "The same rules over the same 20 honest adapters, written as exact F32 deltas instead of "
         "signs + one scale per matrix:\n\n| method | bit output NLL | dense output NLL |\n|---|---:|---:|\n")
    for m, _ in methods:
        if m in d:
            t += f"| {m} | {rows[('clean', m)]['nll']:.4f} | {d[m]:.4f} |\n"
    return t


def findings(s, rows, methods, attacks, base, med, best):
    """The same three tests for every rule, in sentences computed from the tables."""
    out = ["## Every rule against the same three tests", ""]
    ok = lambda r: r["nll"] <= med and r.get("kept") is not None and r["kept"] >= 0.95 \
        and r["backdoor"]["rate"] <= 0.05
    clean_better = [m for m, _ in methods if "nll" in rows.get(("clean", m), {})
                    and rows[("clean", m)]["nll"] <= med]
    out.append(f"- Clean soups (20 honest) at or below the median single honest adapter ({med:.4f}): "
               f"{', '.join(clean_better) or 'none'}; below the best one ({best:.4f}): "
               + (', '.join(m for m, _ in methods if "nll" in rows.get(("clean", m), {})
                            and rows[("clean", m)]["nll"] <= best) or 'none') + ".")
    for m, _ in methods:
        rs = [(at, rows[(at, m)]) for at in attacks if at != "clean" and (at, m) in rows]
        if not rs or any("error" in r for _, r in rs):
            continue
        bad = [at for at, r in rs if not ok(r)]
        worst = max(rs, key=lambda x: x[1]["nll"])
        out.append(f"- `{m}`: all three tests met under " +
                   (', '.join(at for at, r in rs if ok(r)) or 'no attack') +
                   (f"; missed under {', '.join(bad)}" if bad else "") +
                   f". Worst NLL {worst[1]['nll']:.4f} ({worst[0]}).")
    leaks = [f"{m} / {at} {100 * rows[(at, m)]['backdoor']['rate']:.0f}%" for at in attacks
             for m, _ in methods if "backdoor" in rows.get((at, m), {})
             and rows[(at, m)]["backdoor"]["rate"] > 0.05]
    out.append(f"- Backdoor success above 5%: {'; '.join(leaks) or 'none'}.")
    out += ["", "## What the numbers say", ""]
    d = s.get("clean_dense_nll") or {}
    mk = [at for at in attacks if at != "clean" and rows.get((at, "multi-krum"), {}).get("byzantine_used") == 0]
    if "multi-krum" in d and "nll" in rows.get(("clean", "multi-krum"), {}):
        out.append(f"- Multi-Krum kept every Byzantine adapter out under {', '.join(mk) or 'no attack'}, "
                   f"yet misses the first test even on clean inputs: its clean soup is "
                   f"{rows[('clean', 'multi-krum')]['nll']:.4f} against the median single honest adapter's "
                   f"{med:.4f}. The same clean soup written with `--output dense` is {d['multi-krum']:.4f} "
                   f"(mean: {rows[('clean', 'mean')]['nll']:.4f} bit, {d.get('mean', float('nan')):.4f} dense). "
                   "The bit output re-quantises the average of 14 sign adapters to one sign per weight "
                   "and one scale per matrix: weights where the contributors agree and weights where "
                   "they cancel get the same size, which here costs more than averaging gains over "
                   "one adapter. The rules whose output keeps a contributor-sized value per weight "
                   f"(median {rows[('clean', 'median')]['nll']:.4f} bit / {d.get('median', float('nan')):.4f} dense, "
                   f"sign-majority {rows[('clean', 'sign-majority')]['nll']:.4f} / "
                   f"{d.get('sign-majority', float('nan')):.4f}) lose little or nothing to it.")
    bd = [at for at in attacks if at in ("backdoor", "badmerging", "badmerging-normed", "scaling-x10")]
    soup_max = max((rows[(at, m)]["backdoor"]["rate"] for at in bd for m, _ in methods
                    if "backdoor" in rows.get((at, m), {})), default=None)
    alone = [x["backdoor"]["rate"] for at in ("backdoor", "badmerging")
             for x in s["singles_byzantine"].get(at, []) if "backdoor" in x]
    if soup_max is not None and alone:
        out.append(f"- Backdoor: the plain backdoor and badmerging adapters reach "
                   f"{100 * min(alone):.0f}–{100 * max(alone):.0f}% alone; the highest success of any "
                   f"soup with 6 of them among 20 (every rule, mean included) is {100 * soup_max:.0f}%."
                   + (" At this strength, pooling 6 backdoored sign adapters with 14 honest ones did "
                      "not keep the trigger → target mapping under any rule, so this benchmark does "
                      "not separate the rules on backdoors; a stronger or more numerous attack would "
                      "be needed to." if soup_max <= 0.05 else ""))
    scr = s["screens"]
    hidden = [at for at in attacks if at != "clean" and at in scr and scr[at]["byzantine_flagged"] == 0]
    part = [f"{at} ({scr[at]['byzantine_flagged']} of 6)" for at in attacks
            if at != "clean" and at in scr and 0 < scr[at]["byzantine_flagged"] < F]
    out.append(f"- `bitdelta screen` flags no Byzantine adapter under {', '.join(hidden) or 'no attack'}"
               + (f", part of them under {', '.join(part)}" if part else "")
               + ", and all 6 under the rest; honest adapters flagged: "
               + ", ".join(f"{scr[at]['honest_flagged']} ({at})" for at in attacks if at in scr
                           and scr[at]["honest_flagged"]) + ("none" if not any(
                               scr[at]["honest_flagged"] for at in attacks if at in scr) else "")
               + ". Multi-Krum selects all the colluders under "
               + ", ".join(at for at in attacks if at != "clean"
                           and (rows.get((at, "multi-krum"), {}).get("byzantine_used") or 0) > 0)
               + ": their deltas are copies of one delta (distance 0 from each other) or share a "
               "large common part (badmerging-normed), so each has close neighbours and a low "
               "Krum score.")
    worst = [(at, min((rows[(at, m)]["kept"] for m in TARGET_METHODS
                       if rows.get((at, m), {}).get("kept") is not None), default=None))
             for at in ("sign-flip", "ipm") if at in attacks]
    out.append("- The hardest attacks here are the ones aimed at the mean direction: "
               + ", ".join(f"{at} (the three target rules keep as little as {100 * k:.0f}% of the "
                           f"clean gain)" for at, k in worst if k is not None)
               + ". Six identical −mean (or −0.1 · mean) sign adapters agree on every sign, while "
               "the 14 honest ones disagree on many weights, so coordinate rules are pulled "
               "towards the attackers wherever the honest signs are split.")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
