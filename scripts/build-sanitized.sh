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
# -gline-tables-only gives the sanitizers' reports their files and lines with less debug
# information to compile and link than -g. Highway compiles every kernel once per SIMD target;
# on a CPU without AVX-512 its two AVX-512 targets (HWY_AVX3 | HWY_AVX3_DL = 2^8 + 2^7,
# hwy/detect_targets.h) could never run here, so they are left out: a third less kernel code to
# compile.
flags="-O2 -gline-tables-only"
grep -qw avx512f /proc/cpuinfo || flags+=" -DHWY_DISABLED_TARGETS=384"
CC=clang CXX=clang++ cmake -S . -B build-san -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$flags" -DBITDELTA_FUZZ=ON -DBITDELTA_SANITIZE=ON \
  -DBITDELTA_BENCH=OFF -DBITDELTA_MPI=OFF >/dev/null
ninja -C build-san "$@"
