#!/usr/bin/env bash
# Installs the Debian 12 packages bitdelta needs.
#   scripts/install-deps.sh          what the demo runs: build the program and serve (no PyTorch)
#   scripts/install-deps.sh --test   also what the tests and benchmarks use: GoogleTest, Google
#                                    Benchmark, PyTorch and numpy (reference checks), clang
#                                    (sanitizers, fuzzers), clang-format, the fortune texts,
#                                    Open MPI (multi-process soups),
#                                    Node.js and the npm client packages in tests/node
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(
  build-essential cmake ninja-build pkg-config python3 curl
  libopenblas-openmp-dev libhwy-dev nlohmann-json3-dev libsodium-dev libssl-dev libicu-dev
  libcpp-httplib-dev libsqlite3-dev libsecp256k1-dev libcrypto++-dev
)
test_packages=(
  clang-format libgtest-dev libgmock-dev libbenchmark-dev
  python3-torch python3-numpy python3-mpmath python3-regex python3-sentencepiece
  fortunes fortunes-min fortunes-bofh-excuses jargon-text
  clang libclang-rt-14-dev libomp-14-dev
  openmpi-bin libopenmpi-dev
)
with_tests=0
case "${1:-}" in
  "") ;;
  --test) with_tests=1 ;;
  *) echo "usage: scripts/install-deps.sh [--test]" >&2; exit 2 ;;
esac
[ $with_tests -eq 1 ] && packages+=("${test_packages[@]}")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js may come from elsewhere (e.g. NodeSource, which bundles npm): only a missing `node` or
# `npm` asks for Debian's.
if [ $with_tests -eq 1 ]; then
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} Debian packages present"
else
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The npm packages of tests/node (exact versions in its package-lock.json): the openai client,
# ethers, ganache (a local EVM node) and solc (the Solidity compiler), for the client and
# registry tests.
if [ $with_tests -eq 1 ]; then
  for package in openai ethers ganache solc; do
    if [ ! -d tests/node/node_modules/$package ]; then
      echo "install-deps: npm packages for the client and chain tests (tests/node)"
      npm ci --prefix tests/node --no-audit --no-fund
      break
    fi
  done
fi
