#!/usr/bin/env bash
# The peer measurement: llama.cpp's decode speed on our 1.1B BF16 benchmark model, same machine,
# same thread count, for 1 and several parallel sequences.
#
#   bench/llama_cpp_peer.sh [MODEL_DIR]
#
#   MODEL_DIR  the HF-layout checkpoint that build/decode_bench or build/serve_bench writes on
#              first run (default /tmp/bitdelta-decode-bench-1.1b)
#   env WORK=/tmp/bitdelta-llama-cpp   npm tarball, llama.cpp source and build (kept for reruns)
#       GGUF=${MODEL_DIR}-gguf/model-bf16.gguf   the converted model (written once)
#       THREADS=2  NPL=1,4,16,64  FA="off on"  RUNS=2
#
# Steps: fetch llama.cpp's source (the git bundle inside the npm package node-llama-cpp, the
# one registry this machine reaches), build llama-batched-bench (Release, -march=native, no GPU,
# no network code), convert the checkpoint to a BF16 GGUF with bench/llama_cpp_gguf.py (gguf-py
# from the same tree), then run llama-batched-bench RUNS times per flash-attention setting.
# Read S_TG (aggregate generated tokens/s over B parallel sequences) and S_PP (prompt tokens/s).
# Needs: git, npm, cmake, ninja-build, g++, python3-numpy, python3-yaml (gguf-py imports yaml).
# Timings vary on a shared machine; llama.cpp's OpenMP threads spin, so any other load on the
# cores slows it down far more than the load itself would suggest: run on an idle machine.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
MODEL="${1:-/tmp/bitdelta-decode-bench-1.1b}"
WORK="${WORK:-/tmp/bitdelta-llama-cpp}"
GGUF="${GGUF:-${MODEL%/}-gguf/model-bf16.gguf}"
THREADS="${THREADS:-2}" NPL="${NPL:-1,4,16,64}" FA="${FA:-off on}" RUNS="${RUNS:-2}"
PYTHON="${PYTHON:-/usr/bin/python3}"  # Debian's, with numpy
VERSION=3.22.1                        # node-llama-cpp; it pins the llama.cpp release it ships
NPP=32 NTG=64

if [ ! -f "$MODEL/model.safetensors" ]; then
  echo "llama_cpp_peer: no checkpoint in $MODEL; run build/decode_bench (or build/serve_bench)" \
       "once first, it writes it there" >&2
  exit 1
fi
"$PYTHON" -c 'import numpy, yaml' 2>/dev/null || {
  echo "llama_cpp_peer: $PYTHON needs numpy and yaml: apt-get install python3-numpy python3-yaml" >&2
  exit 1
}
mkdir -p "$WORK"
cd "$WORK"

# 1. Source: node-llama-cpp ships llama.cpp as a git bundle (a single squashed commit).
if [ ! -d llama.cpp ]; then
  [ -f node-llama-cpp-$VERSION.tgz ] || npm pack --silent node-llama-cpp@$VERSION
  tar xzf node-llama-cpp-$VERSION.tgz package/llama/gitRelease.bundle package/llama/llama.cpp.info.json
  git -c advice.detachedHead=false clone -q package/llama/gitRelease.bundle llama.cpp
fi
echo "llama.cpp: release $(sed -n 's/.*"tag": *"\([^"]*\)".*/\1/p' package/llama/llama.cpp.info.json)," \
     "commit $(git -C llama.cpp rev-parse HEAD) (node-llama-cpp $VERSION)"

# 2. Build only the benchmark tool (static libs). GGML_NATIVE: -march=native (AVX2/FMA/F16C on
#    Zen 3). LLAMA_OPENSSL=OFF: no download code (this release ignores the old LLAMA_CURL).
cmake -S llama.cpp -B llama.cpp/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DGGML_CUDA=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF > build.log 2>&1 ||
  { tail -30 build.log >&2; exit 1; }
nice -n 10 ninja -C llama.cpp/build llama-batched-bench >> build.log 2>&1 || { tail -30 build.log >&2; exit 1; }
BENCH="$WORK/llama.cpp/build/bin/llama-batched-bench"

# llama-batched-bench does not print ggml's CPU feature list; a 3-line program does.
printf '#include "llama.h"\n#include <cstdio>\nint main() { llama_backend_init(); std::puts(llama_print_system_info()); }\n' > sysinfo.cpp
c++ sysinfo.cpp -Illama.cpp/include -Illama.cpp/ggml/include llama.cpp/build/src/libllama.a \
  llama.cpp/build/ggml/src/libggml.a llama.cpp/build/ggml/src/libggml-cpu.a \
  llama.cpp/build/ggml/src/libggml-base.a -fopenmp -lpthread -o sysinfo
echo "ggml: $(./sysinfo)"

# 3. Convert (once): BF16 weights bit for bit, see bench/llama_cpp_gguf.py.
if [ ! -f "$GGUF" ]; then
  mkdir -p "$(dirname "$GGUF")"
  PYTHONPATH="$WORK/llama.cpp/gguf-py" "$PYTHON" "$REPO/bench/llama_cpp_gguf.py" "$MODEL" "$GGUF.tmp"
  mv "$GGUF.tmp" "$GGUF"
fi

# 4. Measure. Each of B sequences gets a 32-token prompt, then 64 decode steps of B tokens; every
#    step computes full 32000-entry logits for each sequence (no sampling is timed). The KV
#    cache (f16) is split into one stream per sequence, so -c must hold max(B) * (32 + 64).
max_pl=$(tr , '\n' <<< "$NPL" | sort -n | tail -1)
for run in $(seq "$RUNS"); do
  for fa in $FA; do
    echo "== run $run, flash attention $fa, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    "$BENCH" -m "$GGUF" -t "$THREADS" -tb "$THREADS" -c $((max_pl * (NPP + NTG))) -b 2048 -ub 512 \
      -npp $NPP -ntg $NTG -npl "$NPL" -fa "$fa" 2>&1 | grep -E '^\||^llama_batched_bench'
  done
done
