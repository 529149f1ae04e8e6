#!/usr/bin/env bash
# Reproduces the embedded default model (models/default) with `bitdelta train` itself:
# builds the base corpus from Debian's fortunes + jargon-text (scripts/make_data.py), then trains
# models/default-config.json from a seeded random init. Usage:
#   scripts/train_default.sh [OUTDIR] [STEPS]        (defaults: models/default, 1600)
# Environment: BITDELTA (the binary, default build/bitdelta), THREADS (default: all cores).
# It refuses to overwrite OUTDIR. See models/default/MODEL_CARD.md for the recorded run.
set -euo pipefail
cd "$(dirname "$0")/.."
bitdelta=${BITDELTA:-build/bitdelta}
out=${1:-models/default}
steps=${2:-1600}
[ -f data/base/train.txt ] || /usr/bin/python3 scripts/make_data.py
"$bitdelta" train --config models/default-config.json \
  --data data/base/train.txt --heldout data/base/heldout.txt -o "$out" \
  --steps "$steps" --batch 16 --seq 256 --lr 2e-3 --warmup 50 --min-lr-ratio 0.1 \
  --weight-decay 0.1 --clip 1.0 --seed 1 --eval-every 100 --eval-tokens 16384 \
  --threads "${THREADS:-0}" --json
