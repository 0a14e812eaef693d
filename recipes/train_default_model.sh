#!/usr/bin/env bash
# The embedded default model's training recipe, as run on one lent H100 (see docs/default-model.md).
#   STAGE=calibrate|vqvae|priors|export  bash recipes/train_default_model.sh
# Data: the packed corpus subset in .pack/ (recipes/pack_training_audio.py). Wheels missing on the GPU image
# (soundfile, soxr, unidecode, cffi) travel in .whl/. Results go to $OUT (or out/ when $OUT is unset).
set -euo pipefail
cd "$(dirname "$0")/.."
source research/scripts/device_env.sh
RUN=${RUN:-runs/default}
DATA=${DATA:-.pack}
STAGE=${STAGE:-calibrate}
VQ_STEPS=${VQ_STEPS:-4000}
TOP_STEPS=${TOP_STEPS:-3000}
UP_STEPS=${UP_STEPS:-2000}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
case "$STAGE" in
  calibrate)
    rm -rf runs/calib
    $J train vqvae --data "$DATA" --preset default22k --window 65536 --batch-size 16 --steps 60 --device cuda \
      --no-progress --log-every 20 --out runs/calib --json | tee "$OUT/calib_vqvae.json"
    for L in 2 1 0; do
      P=default_top; [ "$L" != 2 ] && P=default_upsampler_level_$L
      $J train prior --model runs/calib --data "$DATA" --level $L --preset $P --batch-size 32 --steps 40 \
        --device cuda --no-progress --log-every 20 --json | tee "$OUT/calib_prior_$L.json"
    done
    ;;
  vqvae)
    # Time-boxed: constant LR after warmup; weights are exported from the last save when the box ends.
    timeout "${VQ_SECONDS:-450}" $J train vqvae --data "$DATA" --preset default22k --window 65536 --batch-size 16 \
      --steps 100000 --decay none --lr 3e-4 --device cuda --no-progress --log-every 100 --save-every 200 \
      --workers 12 --out "$RUN" --json | tee "$OUT/vqvae.log" || true
    python3 recipes/export_model.py "$RUN" "$OUT" --tar-parts-mb 15
    ;;
  priors)
    for L in ${LEVELS:-2 1 0}; do
      P=default_top; T=${TOP_SECONDS:-220}
      [ "$L" != 2 ] && P=default_upsampler_level_$L && T=${UP_SECONDS:-150}
      timeout "$T" $J train prior --model "$RUN" --data "$DATA" --level $L --preset $P --batch-size 32 \
        --steps 100000 --decay none --lr 3e-4 --device cuda --no-progress --log-every 100 --save-every 300 \
        --workers 12 --json | tee "$OUT/prior_$L.log" || true
    done
    python3 recipes/export_model.py "$RUN" "$OUT" --tar-parts-mb 15
    ;;
esac
ls -la "$OUT"
