#!/usr/bin/env bash
# The serving load test of docs/serving.md: `bitdelta serve` on the 1.1B benchmark model with the
# 64 random users' adapters that build/serve_bench writes (run it first), and build/serve_load
# with 64 clients for 60 s against it over loopback. Arguments go to serve_load.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BENCH_DIR:-/tmp/bitdelta-decode-bench-1.1b}
[ -f "$dir/adapters/complete" ] || { echo "run build/serve_bench first (it writes $dir)" >&2; exit 1; }
log=$(mktemp)
build/bitdelta serve --model "$dir" --adapters "$dir/adapters" --port 0 --max-batch 64 \
  --kv-blocks 1024 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 600); do
  grep -q "listening on" "$log" && break
  kill -0 $server 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
port=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$log")
build/serve_load --port "$port" --clients 64 --seconds 60 "$@"
status=$?
kill -TERM $server
wait $server
exit $status
