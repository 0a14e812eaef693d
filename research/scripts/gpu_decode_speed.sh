#!/usr/bin/env bash
# Decode speed of the fused Triton step on one GPU (needs torch + triton only; no audio wheels).
#   STAGE=kernels MODELS="upsampler_level_0" BATCH="1 16 64" WEIGHTS="native int8" PDL="off on" PERSISTENT="off on" CHECK=1 \
#     bash research/scripts/gpu_decode_speed.sh      # tokens/s per case -> $OUT/speed_<model>.json (+ .log)
#   STAGE=song SECONDS_=60 N=1 WEIGHTS=int8 bash research/scripts/gpu_decode_speed.sh
#                                                    # one minute of 5b_lyrics end to end -> $OUT/song_*.json
# Each model of the kernels stage is capped at CAP seconds (default 280) so that a call fits 10 minutes.
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.csv" 2>&1 || true
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" >> "$OUT/gpu.csv"
STAGE=${STAGE:-kernels}
WEIGHTS=${WEIGHTS:-native}
if [ "$STAGE" = kernels ]; then
  for m in ${MODELS:-upsampler_level_0}; do
    # shellcheck disable=SC2086
    timeout "${CAP:-280}" python3 benchmarks/bench_sampling.py --models "$m" --batch ${BATCH:-1} --dtype bfloat16 \
      --decode ${DECODE:-triton} --weights $WEIGHTS --pdl ${PDL:-on} --persistent ${PERSISTENT:-off} \
      --tokens "${TOKENS:-128}" --warmup 16 \
      ${CHECK:+--check} --json "$OUT/speed_$m.json" > "$OUT/speed_$m.log" 2>&1 || echo "$m: exit $?" >> "$OUT/errors.txt"
    grep -v '^ \|^{\|^}' "$OUT/speed_$m.log" | tail -n 30
  done
elif [ "$STAGE" = song ]; then
  for w in $WEIGHTS; do
    name="song_${HIERARCHY:-5b_lyrics}_${SECONDS_:-60}s_n${N:-1}_$w"
    timeout "${CAP:-560}" python3 benchmarks/bench_song.py --hierarchy "${HIERARCHY:-5b_lyrics}" --seconds "${SECONDS_:-60}" \
      --n-samples "${N:-1}" --device cuda --dtype bfloat16 --upsample-mode parallel --decode "${DECODE:-triton}" \
      --weights "$w" --max-windows "${MAX_WINDOWS:-16}" --json "$OUT/$name.json" > "$OUT/$name.log" 2>&1 \
      || echo "$name: exit $?" >> "$OUT/errors.txt"
    tail -n 8 "$OUT/$name.log"
  done
fi
cat "$OUT/errors.txt" 2>/dev/null || true
