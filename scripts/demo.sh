#!/usr/bin/env bash
# The main job on the embedded default model, from a fresh Debian 12 machine:
#   1. install dependencies and build;
#   2. generate text with the default base model;
#   3. fine-tune the base on one bundled user's training text (data/users/$DEMO_USER; block
#      weights and norms train, the token embedding stays frozen);
#   4. compress the fine-tune into a BitDelta (1 sign bit per weight + one scale per matrix);
#   5. evaluate base vs fine-tune vs BitDelta (run inside the forward, never merged) on that
#      user's held-out text, and compare sizes;
#   6. do the same fine-tune and compression for a second user ($DEMO_USER2), start
#      `bitdelta serve` with both adapters, and ask the base and each user's model for the same
#      prompt over the OpenAI-compatible API (curl), all served by one process, one base model;
#   7. fine-tune and compress the other bundled users too, pool all four BitDeltas into one
#      community DeltaSoup (`bitdelta soup`, coordinate-wise median) and compare base, soup and
#      each user's own BitDelta on every user's held-out text.
# Outputs go to out/demo/ (replaced on each run).
set -euo pipefail
cd "$(dirname "$0")/.."
user=${DEMO_USER:-zippy}
user2=${DEMO_USER2:-tao}
steps=${DEMO_STEPS:-150}

scripts/install-deps.sh
scripts/build.sh --no-tests
bitdelta=build/bitdelta
out=out/demo
mkdir -p "$out"

echo "== 1. The default base model continues a prompt"
"$bitdelta" generate --prompt "The computer" -n 200 --seed 2

echo "== 2. Fine-tune on user '$user' ($steps steps)"
"$bitdelta" train --data "data/users/$user/train.txt" -o "$out/$user-finetune" --force \
  --steps "$steps" --batch 8 --seq 256 --lr 5e-4 --freeze-embeddings --seed 1 --json > "$out/train.json"
echo "wrote $out/$user-finetune"

echo "== 3. Compress the fine-tune into a BitDelta"
"$bitdelta" compress --base models/default --finetuned "$out/$user-finetune" \
  -o "$out/$user.bitdelta" --force --scale mean --granularity matrix --json > "$out/compress.json"
echo "wrote $out/$user.bitdelta"

echo "== 4. Held-out NLL on data/users/$user/heldout.txt (nats per byte)"
heldout="data/users/$user/heldout.txt"
base=$("$bitdelta" eval --data "$heldout" --json)
tuned=$("$bitdelta" eval --model "$out/$user-finetune" --data "$heldout" --json)
compressed=$("$bitdelta" eval --delta "$out/$user.bitdelta" --data "$heldout" --json)
/usr/bin/python3 - "$base" "$tuned" "$compressed" "$out/compress.json" <<'PY'
import json, sys
base, tuned, bd = (json.loads(a) for a in sys.argv[1:4])
sizes = json.load(open(sys.argv[4]))
gain = base["nll"] - tuned["nll"]
print(f"base       nll {base['nll']:.4f}")
print(f"fine-tune  nll {tuned['nll']:.4f}  ({100 * gain / base['nll']:.1f}% lower than the base)")
print(f"BitDelta   nll {bd['nll']:.4f}  (keeps {100 * (base['nll'] - bd['nll']) / gain:.0f}% of the gain)")
print(f"sizes: fine-tune file {sizes['finetune_file_bytes']:,} B; BitDelta {sizes['adapter_bytes']:,} B "
      f"({sizes['ratio_changed_vs_fp16']:.1f}x smaller than the fp16 delta of everything that changed)")
PY

echo "== 5. The BitDelta (base + 1-bit delta, unmerged) continues the same prompt"
"$bitdelta" generate --delta "$out/$user.bitdelta" --prompt "The computer" -n 200 --seed 2

echo "== 6. Serve the base and two users' BitDeltas from one process (OpenAI-compatible API)"
"$bitdelta" train --data "data/users/$user2/train.txt" -o "$out/$user2-finetune" --force \
  --steps "$steps" --batch 8 --seq 256 --lr 5e-4 --freeze-embeddings --seed 1 --json > /dev/null
"$bitdelta" compress --base models/default --finetuned "$out/$user2-finetune" \
  -o "$out/$user2.bitdelta" --force --scale mean --granularity matrix --json > /dev/null
mkdir -p "$out/adapters"
cp "$out/$user.bitdelta" "$out/$user2.bitdelta" "$out/adapters/"
"$bitdelta" serve --adapters "$out/adapters" --port 0 2> "$out/serve.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
until grep -q "listening on" "$out/serve.log"; do
  kill -0 $server 2>/dev/null || { cat "$out/serve.log"; exit 1; }
  sleep 0.2
done
url=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$out/serve.log")
echo "server: $url"
curl -s "$url/v1/models" | /usr/bin/python3 -c 'import json,sys; print("models:", ", ".join(m["id"] for m in json.load(sys.stdin)["data"]))'
for model in base "$user" "$user2"; do
  echo "-- $model"
  curl -s "$url/v1/completions" -H 'Content-Type: application/json' \
    -d "{\"model\": \"$model\", \"prompt\": \"The computer\", \"max_tokens\": 120, \"temperature\": 0}" |
    /usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin); print("The computer" + r["choices"][0]["text"]); print("  usage:", r["usage"])'
done
kill -TERM $server
wait $server
trap - EXIT
echo "server stopped"

echo "== 7. A DeltaSoup of every bundled user's BitDelta"
users=()
for dir in data/users/*/; do users+=("$(basename "$dir")"); done
deltas=()
for u in "${users[@]}"; do
  if [ ! -f "$out/$u.bitdelta" ]; then
    "$bitdelta" train --data "data/users/$u/train.txt" -o "$out/$u-finetune" --force \
      --steps "$steps" --batch 8 --seq 256 --lr 5e-4 --freeze-embeddings --seed 1 --json > /dev/null
    "$bitdelta" compress --base models/default --finetuned "$out/$u-finetune" \
      -o "$out/$u.bitdelta" --force --owner "did:lux:demo-$u" --json > /dev/null
  fi
  deltas+=("$out/$u.bitdelta")
done
"$bitdelta" soup --base models/default --deltas "${deltas[@]}" -o "$out/soup.bitdelta" --force \
  --method median
nll() { "$bitdelta" eval "$@" --json | /usr/bin/python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["nll"])'; }
printf "%-14s %8s %8s %8s\n" "held-out of" base soup own
for u in "${users[@]}"; do
  held="data/users/$u/heldout.txt"
  printf "%-14s %8s %8s %8s\n" "$u" "$(nll --data "$held")" \
    "$(nll --data "$held" --delta "$out/soup.bitdelta")" "$(nll --data "$held" --delta "$out/$u.bitdelta")"
done
