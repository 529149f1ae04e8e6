#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole test suite:
#   1. every CTest test of the Release build (unit, finite-difference, PyTorch parity, CLI);
#   2. the parser tests (safetensors, checkpoints, configs, tokenizers) again under
#      AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j2

sanitized_tests=(safetensors_test checkpoint_test config_test tokenizer_test)
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DBITDELTA_SANITIZE=ON \
  -DBITDELTA_BENCH=OFF >/dev/null
ninja -C build-asan bitdelta "${sanitized_tests[@]}"
for test in "${sanitized_tests[@]}"; do
  echo "== $test (ASan+UBSan)"
  ASAN_OPTIONS=detect_leaks=1 build-asan/"$test" --gtest_brief=1
done
