#!/usr/bin/env bash
# Configures and builds bitdelta into build/ (Release, -Wall -Wextra).
#   scripts/build.sh           the program, the tests and the benchmarks
#   scripts/build.sh --no-tests  the program only (needs no GoogleTest or Google Benchmark)
set -euo pipefail
cd "$(dirname "$0")/.."
tests=ON
case "${1:-}" in
  "") ;;
  --no-tests) tests=OFF ;;
  *) echo "usage: scripts/build.sh [--no-tests]" >&2; exit 2 ;;
esac
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBITDELTA_TESTS=$tests \
  -DBITDELTA_BENCH=$tests >/dev/null
if [ $tests = ON ]; then ninja -C build; else ninja -C build bitdelta; fi
