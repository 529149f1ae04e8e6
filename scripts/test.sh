#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole test suite (docs/testing.md):
#   1. every CTest test of the Release build (unit, finite-difference, PyTorch parity, CLI, end to
#      end);
#   2. the same suite again under AddressSanitizer + UndefinedBehaviorSanitizer (clang, build-san/),
#      except the slow end-to-end cases matched by `unsanitized` below, which step 1 runs;
#   3. every libFuzzer target for 45 s in the same sanitized build (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
scripts/build.sh
# Two tests at a time on two cores, each with two OpenMP threads: threads that spin while they
# wait (libgomp's and libomp's default) take the cores from the other test's threads. Waiting
# passively ran the four bundled users' end-to-end tests in 59 s instead of 179 s.
export OMP_WAIT_POLICY=passive
ctest --test-dir build --output-on-failure -j2

# The bundled users' fine-tune + distillation runs take minutes each even unsanitized; their code
# paths (train, compress --scale distill, eval) run under the sanitizers in the CLI and unit tests.
# The registry's EVM test exercises the contract; the C++ signing it uses runs sanitized in
# attestation_test and identity_test. The safety CLI's gate on the example suites took 333 s
# sanitized (6 s in Release) in the clean-clone run of 2026-12-06; its scoring runs sanitized in
# the Safety.* unit tests.
unsanitized='^Users/BundledUser\.|^registry_evm_test$|^SafetyCli\.ExampleSuitesWithAnAdapterGiveTheGate$'
scripts/build-sanitized.sh
# The server tests' two user adapters (tests/serve_util.h: a 30-step fine-tune each, about 165 s
# under the sanitizers) are their input, not what they test; the Release suite made them, and
# train and compress run sanitized in their own tests.
mkdir -p build-san/test-cache
[ -e build-san/test-cache/serve-user-adapters-v1/complete ] ||
  cp -rT build/test-cache/serve-user-adapters-v1 build-san/test-cache/serve-user-adapters-v1
echo "== the test suite under ASan + UBSan (all but: $unsanitized)"
# clang's OpenMP runtime (libomp) copies the calling thread's MXCSR into every parallel region
# unless told not to, which would undo the flush-to-zero the forward sets on the pool's threads
# (LlamaForward.SetsFlushToZeroOnEveryPoolThread); the Release build's libgomp leaves it alone.
KMP_INHERIT_FP_CONTROL=false ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-san --output-on-failure -j2 -E "$unsanitized"

# 45 s per target keeps the whole run within CI's 45 minutes; longer runs: docs/testing.md.
scripts/fuzz.sh 45
