#!/usr/bin/env bash
# The on-chain registry on a local chain (docs/registry.md), end to end:
#   1. two bundled users' fine-tunes (reused from scripts/demo.sh's out/demo when there),
#      compressed into BitDeltas owned by their did:lux keys, each attested by a sim-eip191
#      attester (a software stand-in for a hardware attestation);
#   2. a local EVM node (ganache, from tests/node) with the admin, aggregator and users funded;
#   3. the contract compiled (solc) and deployed with `bitdelta registry deploy`; the attester
#      and the aggregator allowed;
#   4. both users publish their deltas; a median DeltaSoup of the two is recorded with its
#      contributors and weights; 1 ether of royalties is paid and split; a user withdraws;
#      the registry is listed.
# Every transaction is built, signed (EIP-1559) and sent by bitdelta itself over JSON-RPC; the
# same commands work against any EVM node (--rpc). Outputs go to out/registry-demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
users=(${DEMO_USER:-zippy} ${DEMO_USER2:-tao})
steps=${DEMO_STEPS:-150}
port=${REGISTRY_DEMO_PORT:-8545}
chain_id=1337

if ! command -v node >/dev/null || [ ! -d tests/node/node_modules/ganache ] ||
  [ ! -d tests/node/node_modules/solc ]; then
  scripts/install-deps.sh --test  # Node.js and the npm packages of tests/node
fi
[ -x build/bitdelta ] || scripts/build.sh --no-tests
bitdelta=build/bitdelta
out=out/registry-demo
rm -rf "$out"
mkdir -p "$out"

echo "== 1. Keys, BitDeltas owned by their users, attestations"
for name in admin attester aggregator "${users[@]}"; do
  "$bitdelta" id new -o "$out/$name.key" --chain-id $chain_id > "$out/$name.did"
  echo "$name: $(cat "$out/$name.did")"
done
echo '{"recipe": "scripts/registry_demo.sh"}' > "$out/run.json"
for user in "${users[@]}"; do
  finetune="out/demo/$user-finetune"
  if [ ! -f "$finetune/model.safetensors" ]; then
    finetune="$out/$user-finetune"
    "$bitdelta" train --data "data/users/$user/train.txt" -o "$finetune" --steps "$steps" \
      --batch 8 --seq 256 --lr 5e-4 --freeze-embeddings --seed 1 --json > /dev/null
  fi
  "$bitdelta" compress --base models/default --finetuned "$finetune" --owner "$(cat "$out/$user.did")" \
    -o "$out/$user.bitdelta" --json > /dev/null
  "$bitdelta" attest sign --format eip191 --key "$out/attester.key" --adapter "$out/$user.bitdelta" \
    --binary "$bitdelta" --config "$out/run.json" -o "$out/$user.attestation.json"
done

echo "== 2. A local chain on 127.0.0.1:$port (ganache), these keys funded with 100 ether each"
accounts=()
for name in admin aggregator "${users[@]}"; do
  key=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["private_key"])' "$out/$name.key")
  accounts+=(--wallet.accounts "$key,100000000000000000000")
done
node tests/node/node_modules/ganache/dist/node/cli.js --server.host 127.0.0.1 --server.port "$port" \
  --chain.chainId $chain_id --logging.quiet "${accounts[@]}" > "$out/ganache.log" 2>&1 &
ganache=$!
trap 'kill $ganache 2>/dev/null || true' EXIT
rpc="http://127.0.0.1:$port"
for _ in $(seq 100); do
  curl -s -X POST -H 'Content-Type: application/json' \
    -d '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' "$rpc" > /dev/null && break
  sleep 0.2
done

echo "== 3. Compile (solc) and deploy the registry; allow the attester and the aggregator"
node tests/node/compile_contracts.mjs -o "$out/BitDeltaRegistry.json"
contract=$("$bitdelta" registry deploy --rpc "$rpc" --key "$out/admin.key" \
  --artifact "$out/BitDeltaRegistry.json" --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["contract"])')
echo "registry at $contract"
"$bitdelta" registry allow --rpc "$rpc" --contract "$contract" --key "$out/admin.key" \
  --attester "$(cat "$out/attester.did")"
"$bitdelta" registry allow --rpc "$rpc" --contract "$contract" --key "$out/admin.key" \
  --aggregator "$(cat "$out/aggregator.did")"

echo "== 4. Publish both users' deltas, record their soup, pay and withdraw royalties"
for user in "${users[@]}"; do
  "$bitdelta" registry publish --rpc "$rpc" --contract "$contract" --key "$out/$user.key" \
    --adapter "$out/$user.bitdelta" --attestation "$out/$user.attestation.json" --public
done
"$bitdelta" soup --base models/default --deltas "$out/${users[0]}.bitdelta" "$out/${users[1]}.bitdelta" \
  -o "$out/soup.bitdelta" --method median
"$bitdelta" registry soup --rpc "$rpc" --contract "$contract" --key "$out/aggregator.key" \
  --soup "$out/soup.bitdelta"
"$bitdelta" registry pay --rpc "$rpc" --contract "$contract" --key "$out/admin.key" --soup 1 \
  --wei 1000000000000000000
"$bitdelta" registry withdraw --rpc "$rpc" --contract "$contract" --key "$out/${users[0]}.key"
echo "-- the registry now:"
"$bitdelta" registry list --rpc "$rpc" --contract "$contract"
