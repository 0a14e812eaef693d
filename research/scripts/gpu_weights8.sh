#!/usr/bin/env bash
# 8-bit weights on one GPU: decode tokens/s of weights=int8|fp8 against native bf16 (graph and triton), weight
# bytes per step and share of the bandwidth limit, KL against native at full released depth, and on-device checks
# (GEMV vs dequantised matmul, 8-bit graph decode vs the module path). Needs torch + triton only (no audio wheels).
# One JSON per prior -> $OUT/weights_<prior>.json; each prior is capped at 190 s so the whole run fits 10 minutes.
#   bash research/scripts/gpu_weights8.sh
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.csv" 2>&1 || true
for m in upsampler_level_0 1b_lyrics 5b_lyrics; do
  timeout 190 python3 benchmarks/bench_weights.py --models "$m" --check --json "$OUT/weights_$m.json" \
    > "$OUT/weights_$m.log" 2>&1 || echo "$m: exit $?" >> "$OUT/errors.txt"
  tail -n 3 "$OUT/weights_$m.log"
done
