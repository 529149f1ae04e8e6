#!/usr/bin/env bash
# Configures and builds build-san/ with clang under AddressSanitizer + UndefinedBehaviorSanitizer
# (every check fatal) and libFuzzer's coverage instrumentation: the library, the bitdelta binary,
# (without Open MPI, whose own allocations LeakSanitizer would report: the multi-process soup
# test runs in the Release suite),
# every test program and the fuzz targets (docs/testing.md). One build serves both the sanitized
# test suite (scripts/test.sh) and the fuzzers (scripts/fuzz.sh). Arguments are ninja targets
# (default: everything).
set -euo pipefail
cd "$(dirname "$0")/.."
CC=clang CXX=clang++ cmake -S . -B build-san -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g" -DBITDELTA_FUZZ=ON -DBITDELTA_SANITIZE=ON \
  -DBITDELTA_BENCH=OFF -DBITDELTA_MPI=OFF >/dev/null
ninja -C build-san "$@"
