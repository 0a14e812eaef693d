#!/usr/bin/env bash
# Continue training the embedded default model on one lent GPU, spread over several short device calls on one warm
# machine (session 4's recipe; docs/default-model.md "v3"). Data travels in pieces of <= ~23 MiB (the tracked
# model already makes the travelling tree 39 MiB) and is gathered in /tmp/d; the three trainings run in the
# background (setsid) so they outlive the 10-minute command limit while later calls watch them.
#   STAGE=split  (here, not on the GPU) split .pack into .packA/.packB (each <= ~23.5 MiB; metadata in .packA)
#   STAGE=top    carry .whl .gpuin (level-2 code folder + earlier clip files): top prior, background
#   STAGE=stash  carry .packA: the first half of the packed audio
#   STAGE=up     carry .packB: second half; encode all levels once, then both upsamplers, background
#                (v3 itself: PACK_B=.packA carried alone, after a lost first attempt: one half of the pack)
#   STAGE=resume JOB=top|up1|up0 STEPS=N: stop that training and resume it with another step count
#   STAGE=watch  sleep WATCH seconds, print the logs' tails
#   STAGE=finish wait for the trainings, export fp16 weights, render conditioning clips, results to $OUT
set -uo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."
source scripts/device_env.sh
D=${D:-/tmp/d}
DEV=${DEV:-cuda}
PACK_A=${PACK_A:-.packA}
PACK_B=${PACK_B:-.packB}
GPUIN=${GPUIN:-.gpuin}
mkdir -p $D/logs
SRC_MODEL=src/jukebox/assets/default_model
TOP_STEPS=${TOP_STEPS:-4000}

bg() {  # bg NAME CMD...: run in its own session so it survives the end of this call
  local name=$1; shift
  setsid nohup "$@" > "$D/logs/$name.log" 2>&1 < /dev/null &
}
tails() { for f in $D/logs/*.log $D/logs/*.part; do echo "== $f"; grep -v Warning "$f" | grep -v "artist_id = " | tail -n 4; done; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; }
top_train() {  # top_train [--resume]
  bg top $J train prior --model $D/top --data $D/codes236 --level 2 --batch-size 32 --steps "$TOP_STEPS" \
    --lr 2e-4 --warmup 100 --decay cosine --label-dropout 0.15 --labels-every-position --val-every 500 \
    --save-every 250 --log-every 100 --workers 6 --device $DEV --no-progress "$@"
}
up_train() {  # up_train LEVEL STEPS [--resume]
  local L=$1 S=$2; shift 2
  bg up$L $J train prior --model $D/up --data $D/packcodes --level $L --batch-size 32 --steps "$S" \
    --lr 3e-4 --warmup 100 --decay cosine --val-every 1000 --save-every 250 --log-every 100 --workers 4 \
    --no-checkpoint-activations --device $DEV --no-progress "$@"
}
case "${STAGE:?}" in
  split)
    rm -rf .packA .packB && mkdir -p .packA/audio .packB/audio && cp .pack/metadata.csv .packA/
    half=$(( $(du -sb .pack/audio | cut -f1) / 2 )); acc=0
    for f in .pack/audio/*; do
      sz=$(stat -c %s "$f"); if [ $((acc + sz)) -le $half ]; then acc=$((acc + sz)); cp "$f" .packA/audio/; else cp "$f" .packB/audio/; fi
    done
    du -sh .packA .packB
    ;;
  top)
    cp -r $GPUIN/. $D/
    cp -r $SRC_MODEL $D/top
    top_train
    sleep "${WATCH:-60}"; tails
    ;;
  stash)
    mkdir -p $D/pack && cp -r $PACK_A/. $D/pack/ && du -sh $D/pack
    ;;
  up)
    mkdir -p $D/pack && cp -r $PACK_B/. $D/pack/ && du -sh $D/pack && ls $D/pack/audio | wc -l
    cp -r $SRC_MODEL $D/up
    # With one half of the pack, prepare skips the metadata rows whose audio did not travel (and says so).
    t0=$(date +%s)
    $J prepare --data $D/pack --model $D/up --codes $D/packcodes --device $DEV 2>&1 | tail -n 5
    echo "encoded in $(( $(date +%s) - t0 )) s"
    up_train 1 "${UP1_STEPS:-4000}"; up_train 0 "${UP0_STEPS:-4500}"
    sleep "${WATCH:-60}"; tails
    ;;
  resume)
    # Change a running training's step count (the cosine schedule follows): stop it, resume from its last save.
    # JOB=top|up1|up0 STEPS=N
    L=${JOB#up}; [ "$JOB" = top ] && L=2
    mv $D/logs/$JOB.log $D/logs/$JOB.$(date +%s).part
    pkill -f "train prior .*--level $L " ; sleep 5
    if [ "$JOB" = top ]; then TOP_STEPS=$STEPS top_train --resume; else up_train "$L" "$STEPS" --resume; fi
    sleep "${WATCH:-30}"; tails
    ;;
  watch)
    sleep "${WATCH:-500}"; tails
    ;;
  finish)
    # Wait (at most FINISH_WAIT s) for the trainings to end, then stop them; the last periodic save is exported.
    end=$(( $(date +%s) + ${FINISH_WAIT:-60} ))
    while pgrep -f "jukebox.cli.main train" > /dev/null && [ "$(date +%s)" -lt "$end" ]; do sleep 5; done
    pkill -f "jukebox.cli.main train"; sleep 3; tails
    mkdir -p $D/final
    python3 scripts/export_model.py $D/up $D/exp_up && python3 scripts/export_model.py $D/top $D/exp_top
    cp -r $D/exp_up/. $D/final/ && rm -rf $D/final/prior_level_2 && cp -r $D/exp_top/prior_level_2 $D/final/
    tar -C $D/final -cf "$OUT/top.tar" prior_level_2
    tar -C $D/final -cf "$OUT/up1.tar" prior_level_1 model.json
    tar -C $D/final -cf "$OUT/up0.tar" prior_level_0
    tar -C $D -czf "$OUT/logs.tgz" logs
    # Clip sets, most wanted first; clips.tgz is rewritten after each, so a call that runs out of time keeps some.
    G="python3 scripts/gen_conditioning_clips.py -m $D/final --per-genre ${PER_GENRE:-12} --seconds ${CLIP_SECONDS:-8} --device $DEV --out $D/clips ${GEN_OPTS:---dtype bfloat16 --decode graph}"
    pack() {  # $OUT returns files of at most 16 MiB: 60-clip sets fit (~10 MB for six), 240-clip sets do not
      tar -C $D -czf "$OUT/clips.tgz" clips
      [ "$(stat -c %s "$OUT/clips.tgz")" -le 16000000 ] || echo "WARNING: clips.tgz is over 16 MiB and will not come back"
    }
    $G --prefix v3_g3 --guidance 3 2>&1 | tail -n 1; pack
    # The new upsamplers on earlier top-level codes: the real-top control and v2's clips (W = 3).
    for C in ${UPSAMPLE_SRC-oracle_t08 ft2_g3}; do
      $G --prefix ${C}_up3 --upsample $D/${C}_clips.json --upsampler-temperature 0.8 2>&1 | tail -n 1; pack
    done
    $G --prefix v3_g3_t08 --guidance 3 --upsampler-temperature 0.8 --seed 1 2>&1 | tail -n 1; pack
    for W in 2 4; do $G --prefix v3_g$W --guidance $W --levels 2 2>&1 | tail -n 1; pack; done
    ls -la "$OUT"
    ;;
esac
