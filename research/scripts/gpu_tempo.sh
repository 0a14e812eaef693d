#!/usr/bin/env bash
# Tempo conditioning of the embedded model's top prior, on one GPU (2026-12-03).
# Carry .whl (soundfile, soxr, unidecode, cffi for the GPU image's Python) and .gpu/codes (a level-2 code folder
# with tempo.json, from `jukebox prepare --codes ... --levels 2`). Arms run at once on the one GPU:
#   ARMS="tempo ctrl" STEPS=1800 TOTAL=1800 FROM=ship TIMEBOX=420 (s per training; the last save is kept)   (FROM=.gpu/top_<arm> to start from carried weights)
# Each arm: fine-tune the top prior (tempo: with --tempo), export fp16 to $OUT/<arm>_top.tar, then EVAL clips of
# 10 s at all levels measured by research/scripts/eval_tempo.py -> $OUT/<arm>.json.
set -euo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="$PWD/src:/tmp/site" PYTHONUNBUFFERED=1
J="python3 -m jukebox.cli.main"
ARMS=${ARMS:-"tempo ctrl"}; STEPS=${STEPS:-1800}; TOTAL=${TOTAL:-$STEPS}; EVAL=${EVAL:-120}; LR=${LR:-2e-4}
BATCH=${BATCH:-64}; FROM=${FROM:-ship}; TIMEBOX=${TIMEBOX:-420}; SAVE=${SAVE:-400}
W=/tmp/w; mkdir -p $W
for arm in $ARMS; do
  rm -rf $W/$arm; cp -r src/jukebox/assets/default_model $W/$arm
  if [ "$FROM" != ship ]; then cp "$FROM"_$arm/* $W/$arm/prior_level_2/; fi
  opts="--label-dropout 0.15"; [ "${arm#tempo}" != "$arm" ] && opts="$opts --tempo"
  timeout $TIMEBOX $J train prior --model $W/$arm --data .gpu/codes --level 2 --steps $TOTAL --stop-at $STEPS --batch-size $BATCH \
     --lr $LR --warmup 100 --val-every $SAVE --save-every $SAVE --log-every 100 --no-progress --log-dir none \
     --workers 4 $opts > "$OUT/train_$arm.log" 2>&1 || echo "$arm stopped by the time box" >> "$OUT/train_$arm.log" &
done
wait
nvidia-smi --query-gpu=memory.used --format=csv >> "$OUT/train_tempo.log" || true
for arm in $ARMS; do
  tail -4 "$OUT/train_$arm.log"
  python3 recipes/export_model.py $W/$arm $W/export_$arm >/dev/null
  tar -C $W/export_$arm/prior_level_2 -cf "$OUT/${arm}_top.tar" .
  python3 research/scripts/eval_tempo.py -m $W/export_$arm --clips $EVAL --seconds 10 --batch 60 \
     --out "$OUT/$arm.json" --keep ${KEEP:-0} --name $arm 2>&1 | tail -12
  if [ "${L2EVAL:-0}" -gt 0 ]; then
    python3 research/scripts/eval_tempo.py -m $W/export_$arm --clips $L2EVAL --seconds 10 --batch 60 --levels 2 \
       --out "$OUT/${arm}_l2.json" --name ${arm}_l2 2>&1 | tail -12
  fi
done
