#!/usr/bin/env bash
# Session 6 top-level experiment (docs/default-model.md "Session 6"): do coarser (hop 512) or smaller (256 codes) top
# levels let a small top prior keep the rhythm of music it continues? On one lent GPU, calls on one warm machine:
#   STAGE=stash  carry .packA (first half of recipes/pack_training_audio.py's pack; .whl installed by an earlier call)
#   STAGE=vq     carry .packB: two VQ-VAEs from scratch on the pack (x512: hops 8/32/512; x256: 256 codes), background
#   STAGE=watch  WATCH seconds; then STAGE=prior: stop the VQ-VAEs at their last save, encode the pack's level 2 with
#                each (and the shipped VQ-VAE), train a top prior from scratch on each (default_top, TOP_STEPS x 32)
#   STAGE=eval   research/scripts/eval_continuation.py on each (2 s primes, 3.9 s judged) -> $OUT/cont_*.json
# Session 6: VQ_STEPS=1000 (stopped at 800), TOP_STEPS=1500, TRACKS=24; 2.6-2.7 M samples/s per VQ-VAE, ~320k
# tokens/s per prior (three at once). Result: continuations 0.16-0.19 pulse for all three (inconclusive).
set -uo pipefail
cd "$(dirname "$0")/../.."
source research/scripts/device_env.sh
D=${D:-/tmp/d}; DEV=${DEV:-cuda}; mkdir -p $D/logs
bg() { local name=$1; shift; setsid nohup "$@" > "$D/logs/$name.log" 2>&1 < /dev/null & }
tails() { for f in $D/logs/*.log; do echo "== $f"; grep -v "Warning\|artist_id" "$f" | tail -n ${TAILN:-3}; done; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null; }
X="python3 research/scripts/vq_presets_cli.py"
case "$STAGE" in
  stash) mkdir -p $D/pack && cp -r .packA/. $D/pack/ && du -sh $D/pack ;;
  vq)
    mkdir -p $D/pack && cp -r .packB/. $D/pack/ && ls $D/pack/audio | wc -l
    for v in x512 x256; do
      bg vq_$v $X train vqvae --data $D/pack --preset $v --window ${WINDOW:-65536} --batch-size ${VQ_BATCH:-16} --steps ${VQ_STEPS:-1200} \
        --lr 3e-4 --decay none --device $DEV --no-progress --log-every 100 --save-every 200 --workers 6 --out $D/$v
    done
    sleep ${WATCH:-60}; tails ;;
  prior)  # after the VQ-VAEs: encode the pack with each (and the shipped VQ-VAE), train a top prior from scratch on each
    pkill -f "train vqvae"; sleep 3
    mkdir -p $D/ship && cp -r src/jukebox/assets/default_model/vqvae src/jukebox/assets/default_model/model.json $D/ship/
    for v in x512 x256 ship; do
      rm -rf $D/$v/prior_level_*; $X prepare --data $D/pack --model $D/$v --codes $D/codes_$v --levels 2 --device $DEV 2>&1 | tail -n 1
      bg top_$v $X train prior --model $D/$v --data $D/codes_$v --level 2 --preset default_top --batch-size 32 --steps ${TOP_STEPS:-1500} \
        --lr 3e-4 --warmup 100 --decay cosine --val-every 100000 --save-every 250 --log-every 100 --workers 4 --device $DEV --no-progress
    done
    sleep ${WATCH:-30}; tails ;;
  watch) sleep ${WATCH:-300}; tails ;;
  eval)
    for v in x512 x256 ship; do
      python3 research/scripts/eval_continuation.py -m $D/$v --codes $D/codes_$v --tracks ${TRACKS:-24} --windows-per-track 1 --prime-seconds 2 \
        --eval-seconds 3.9 --temperature 0.98 0.7 --device $DEV --out-json $OUT/cont_$v.json 2>&1 | grep -v "Warning\|artist_id" | tail -n 22
    done
    TAILN=6 tails > $OUT/tails.txt; tar -C $D -czf $OUT/logs.tgz logs ;;
esac
