#!/usr/bin/env bash
# Fuzzes every libFuzzer target in fuzz/ under ASan + UBSan (docs/testing.md, "Fuzzing"):
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60; CI runs scripts/fuzz.sh 45)
#
# 1. builds the fuzz targets in build-san/ (scripts/build-sanitized.sh: clang, ASan + UBSan);
# 2. makes the seeds with the project's own tools: a tiny model (`bitdelta train --config`), a
#    fine-tune of it and two adapters (`bitdelta compress`), packed per target by make_fuzz_seeds;
# 3. runs the targets one after another, each for SECONDS_PER_TARGET on build-san/fuzz-corpus/
#    (the seeds and fuzz/regressions/ added to what earlier runs kept), one process each, logs in
#    build-san/fuzz-logs/.
# Prints each target's executions, exec/s and coverage, and exits 1 if any target found something,
# printing the input that triggers it (build-san/fuzz-findings/<target>/) and the end of its log.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
targets=(safetensors checkpoint adapter tokenizer_json tokenize abi)
build=build-san  # shared with the sanitized test suite (scripts/build-sanitized.sh)

scripts/build-sanitized.sh bitdelta make_fuzz_seeds "${targets[@]/%/_fuzz}"

export OMP_NUM_THREADS=1 BITDELTA_CACHE_DIR="$PWD/$build/fuzz-cache"
export UBSAN_OPTIONS=print_stacktrace=1

# Seeds: a one-layer model of 8 hidden units (12 KB of weights) keeps every seed under 64 KiB.
make_seeds() {
  local dir=$build/fuzz-seeds bitdelta=$build/bitdelta
  rm -rf "$dir" && mkdir -p "$dir"
  cat >"$dir/tiny_config.json" <<'EOF'
{"vocab_size": 258, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
 "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 32,
 "rms_norm_eps": 1e-5, "tie_word_embeddings": true}
EOF
  local common=(--steps 2 --batch 1 --seq 16 --threads 1 --json)
  "$bitdelta" train --config "$dir/tiny_config.json" --data data/users/tao/train.txt \
    -o "$dir/base" "${common[@]}" >/dev/null
  "$bitdelta" train --model "$dir/base" --data data/users/zippy/train.txt --lr 1e-2 \
    -o "$dir/tuned" "${common[@]}" >/dev/null
  "$bitdelta" compress --base "$dir/base" --finetuned "$dir/tuned" -o "$dir/matrix.bitdelta" \
    --threads 1 --json >/dev/null
  "$bitdelta" compress --base "$dir/base" --finetuned "$dir/tuned" -o "$dir/row.bitdelta" \
    --granularity row --owner did:lux:fuzz --threads 1 --json >/dev/null
  "$build/fuzz/make_fuzz_seeds" "$dir/corpus" "$dir/base" models/default/tokenizer.json \
    models/default/config.json "$dir/matrix.bitdelta" "$dir/row.bitdelta"
}

# Runs one target; prints its summary line, and on a finding the input and the log's end.
run_target() {
  local target=$1 corpus=$build/fuzz-corpus/$1 findings=$build/fuzz-findings/$1
  local log=$build/fuzz-logs/$1.log
  mkdir -p "$corpus" "$build/fuzz-logs" && rm -rf "$findings" && mkdir -p "$findings"
  cp "$build/fuzz-seeds/corpus/$target"/* "$corpus"/
  # Inputs of past findings (fuzz/regressions/<target>/) run first, with the seeds.
  if [ -d "fuzz/regressions/$target" ]; then cp "fuzz/regressions/$target"/* "$corpus"/; fi
  local status=0
  "$build/fuzz/${target}_fuzz" "$corpus" -max_total_time="$seconds" -timeout=10 \
    -report_slow_units=2 -rss_limit_mb=2048 -malloc_limit_mb=512 -max_len=65536 \
    -dict="fuzz/$target.dict" -print_final_stats=1 -artifact_prefix="$findings/" \
    >"$log" 2>&1 || status=$?
  local executions rate coverage slowest
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  slowest=$(sed -n 's/^stat::slowest_unit_time_sec: *//p' "$log")
  coverage=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1 || true)
  printf '%-15s %4ss  %10s execs  %6s exec/s  %-20s slowest %ss\n' "$target" "$seconds" \
    "${executions:-?}" "${rate:-?}" "${coverage:-cov: ?}" "${slowest:-?}"
  # Inputs slower than 2 s (but under the 10 s timeout) are reported, not failed: a loaded CI
  # machine can be that slow.
  local slow
  slow=$(ls "$findings"/slow-unit-* 2>/dev/null | tr '\n' ' ' || true)
  if [ -n "$slow" ]; then echo "  slow inputs (> 2 s): $slow"; fi
  if [ "$status" -ne 0 ]; then
    local inputs
    inputs=$(ls "$findings"/* 2>/dev/null | grep -v /slow-unit- | tr '\n' ' ' || true)
    echo "FINDING in $target (exit $status): $inputs"
    echo "  reproduce: $build/fuzz/${target}_fuzz <that file>;  log: $log"
    grep -v '^    #\|Uses: [0-9]' "$log" | tail -40 | sed 's/^/  | /'
    return 1
  fi
}

make_seeds
failed=()
echo "== fuzzing ${#targets[@]} targets, ${seconds}s each (ASan + UBSan)"
for target in "${targets[@]}"; do run_target "$target" || failed+=("$target"); done
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz: findings in ${failed[*]}"
  exit 1
fi
echo "fuzz: no findings"
