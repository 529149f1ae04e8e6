#!/usr/bin/env bash
# The main job on the embedded default model, from a fresh Debian 12 machine:
#   1. install dependencies and build;
#   2. generate text with the default base model;
#   3. fine-tune the base on one bundled user's training text (data/users/$DEMO_USER);
#   4. evaluate base vs fine-tune on that user's held-out text.
# Outputs go to out/demo/ (replaced on each run).
set -euo pipefail
cd "$(dirname "$0")/.."
user=${DEMO_USER:-zippy}
steps=${DEMO_STEPS:-150}

scripts/install-deps.sh
scripts/build.sh
bitdelta=build/bitdelta
out=out/demo
mkdir -p "$out"

echo "== 1. The default base model continues a prompt"
"$bitdelta" generate --prompt "The hacker" -n 200 --temperature 0.8 --seed 1

echo "== 2. Fine-tune on user '$user' ($steps steps)"
"$bitdelta" train --data "data/users/$user/train.txt" -o "$out/$user-finetune" --force \
  --steps "$steps" --batch 8 --seq 256 --lr 1e-3 --json > "$out/train.json"
echo "wrote $out/$user-finetune"

echo "== 3. Held-out NLL on data/users/$user/heldout.txt (nats per byte)"
heldout="data/users/$user/heldout.txt"
base_nll=$("$bitdelta" eval --data "$heldout" --json)
tuned_nll=$("$bitdelta" eval --model "$out/$user-finetune" --data "$heldout" --json)
/usr/bin/python3 - "$base_nll" "$tuned_nll" <<'PY'
import json, sys
base, tuned = (json.loads(a) for a in sys.argv[1:3])
gain = (base["nll"] - tuned["nll"]) / base["nll"]
print(f"base       nll {base['nll']:.4f}  ppl {base['ppl']:.3f}  ({base['tokens']} tokens)")
print(f"fine-tune  nll {tuned['nll']:.4f}  ppl {tuned['ppl']:.3f}  ({100 * gain:.1f}% lower NLL)")
PY

echo "== 4. The fine-tune continues the same prompt"
"$bitdelta" generate --model "$out/$user-finetune" --prompt "The hacker" -n 200 --temperature 0.8 --seed 1
