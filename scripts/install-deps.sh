#!/usr/bin/env bash
# Installs every Debian 12 package bitdelta needs to build, test and benchmark.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config clang-format
  libopenblas-openmp-dev libhwy-dev nlohmann-json3-dev libsodium-dev libssl-dev libicu-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-torch python3-numpy python3-regex python3-sentencepiece
  fortunes fortunes-min fortunes-bofh-excuses jargon-text
  clang libclang-rt-14-dev libomp-14-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
