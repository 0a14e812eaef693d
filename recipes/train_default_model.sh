#!/usr/bin/env bash
# Rebuild the embedded default model (v7, MODEL_CARD.md) from the Debian soundtrack corpus, stage by stage.
#
#   CORPUS=~/corpus bash recipes/train_default_model.sh                 # every stage, in order (one GPU)
#   CORPUS=~/corpus STAGES="v3 export" bash recipes/train_default_model.sh   # some stages (each needs the earlier)
#   DRY_RUN=1 CORPUS=~/corpus bash recipes/train_default_model.sh       # print the commands, run nothing
#
# Stages (recipes/README.md explains each):
#   data     pack a balanced 3.6-h subset (pack/), the top prior's 12.3-h subset (subset/), the pack's first half (half/)
#   v0       the VQ-VAE from scratch on the pack, then the three priors on its codes
#   v1       the top prior on the top-level codes of the subset
#   v2       the top prior with labels at every position and label dropout (what guidance needs)
#   v3       the top prior further on the subset; both upsamplers fine-tuned on the pack's first half
#   v5       the top prior with tempo and beat phase (--tempo) on a 13.5-h subset's codes and beats (tempo.json)
#   v6       the top prior on the whole corpus's codes and beats (28.4 h), windows balanced by genre
#   v7       a level-1 upsampler with a wider conditioner, from scratch on a 7-h pack's codes (pack7/); then the
#            level-1 decoder fine-tuned alone with a mel loss on the same pack (codes unchanged)
#   export   weights without training state (the priors' matrices in int8, the level-1 upsampler's convolutions too,
#            the rest fp16), with the embedded model's sampling defaults (audio from level 1) -> $OUT
#   measure  reconstruction and bits per token on the corpus's validation split -> $WORK/measure.json
# Settings (environment): CORPUS (required: python3 recipes/build_debian_corpus.py --out CORPUS), WORK (working
# folder, default runs/default_model), OUT (the exported model, default $WORK/export), DEVICE (cuda; cpu works, slowly),
# COMPILE (blocks on a GPU, none on a CPU: --compile of the training commands), PYTHON (python3), PROFILE (full: the shipped model's settings; tiny: tiny presets and a few steps, the check that
# tests/test_recipes.py runs on synthetic data), STAGES, DRY_RUN.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CORPUS:?set CORPUS to the corpus folder (python3 recipes/build_debian_corpus.py --out CORPUS)}"
PY=${PYTHON:-python3}
WORK=${WORK:-runs/default_model}
OUT=${OUT:-$WORK/export}
DEVICE=${DEVICE:-cuda}
# compiled transformer blocks and VQ-VAE levels on a GPU (docs/training.md, "The fast path"); eager on a CPU
if [ "${DEVICE#cuda}" != "$DEVICE" ]; then COMPILE=${COMPILE:-blocks}; else COMPILE=${COMPILE:-none}; fi
STAGES=${STAGES:-data v0 v1 v2 v3 v5 v6 v7 export measure}
MODEL=$WORK/model
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if [ "${PROFILE:-full}" = tiny ]; then
  VQ_PRESET=tiny; TOP_PRESET=tiny_top; UP1_PRESET=tiny_upsampler; UP0_PRESET=tiny_upsampler
  PACK_MINUTES=0.5; HOURS_PER_GENRE=0.002; WINDOW=2048; VQ_BATCH=1; BATCH=2; V2_BATCH=2; WORKERS=1
  VQ_STEPS=2; V0_TOP_STEPS=2; V0_UP_STEPS=2; V1_STEPS=2; V2_STEPS_A=2; V2_STEPS_B=1; V3_TOP_STEPS=2
  V3_UP1_STEPS=2; V3_UP0_STEPS=2; V5_BATCH=2; V5_STEPS=2
  V6_BATCH=2; V6_STEPS=3; V6_STOP=2; EVERY=1; EVAL_TRACKS=1; EVAL_SECONDS=0.5
  UP1_WIDE_PRESET=tiny_upsampler; V7_PACK_MINUTES=0.5; V7_BATCH=2; V7_STEPS=3; V7_STOP=2; V7_DEC_STEPS=2; V7_DEC_BATCH=1
  EXTRA=(--val-batches 1 --log-dir none --no-progress)
else
  VQ_PRESET=default22k; TOP_PRESET=default_top; UP1_PRESET=default_upsampler_level_1; UP0_PRESET=default_upsampler_level_0
  PACK_MINUTES=210; HOURS_PER_GENRE=2.5; WINDOW=65536; VQ_BATCH=16; BATCH=32; V2_BATCH=8; WORKERS=12
  # v0 was time-boxed (the VQ-VAE 430 s = 2,100 steps; the top prior 200 s, each upsampler 130 s on an H100, whose
  # step counts were not recorded): the prior step counts here are estimates of what those boxes held.
  VQ_STEPS=2100; V0_TOP_STEPS=1200; V0_UP_STEPS=2000; V1_STEPS=1600; V2_STEPS_A=600; V2_STEPS_B=400
  V3_TOP_STEPS=4000; V3_UP1_STEPS=4000; V3_UP0_STEPS=4500; V5_BATCH=64; V5_STEPS=2400; EVERY=250
  V6_BATCH=128; V6_STEPS=4000; V6_STOP=3000  # v6: the first 3,000 steps of a 4,000-step cosine schedule
  # v7: the first 15,250 steps of a 16,000-step linear decay (three calls on one card, the last one cut short)
  UP1_WIDE_PRESET=default_wide_upsampler_level_1; V7_PACK_MINUTES=420; V7_BATCH=64; V7_STEPS=16000; V7_STOP=15250
  V7_DEC_STEPS=1600; V7_DEC_BATCH=4  # the level-1 decoder: 1,600 steps of 4 x 3 s (it ran on 2 CPU cores)
  EVAL_TRACKS=12; EVAL_SECONDS=15
  EXTRA=(--no-progress)
fi

run() {  # print the command; run it unless DRY_RUN is set
  printf '+'; printf ' %q' "$@"; printf '\n'
  [ -n "${DRY_RUN:-}" ] || "$@"
}
jukebox() { run "$PY" -m jukebox "$@"; }
train_prior() {  # train_prior LEVEL DATA ARGS...: one prior of $MODEL
  local level=$1 data=$2; shift 2
  jukebox train prior --model "$MODEL" --data "$data" --level "$level" --device "$DEVICE" --workers "$WORKERS" \
    --save-every "$EVERY" --compile "$COMPILE" "${EXTRA[@]}" "$@"
}

for stage in $STAGES; do
  echo "== $stage"
  case "$stage" in
    data)
      run "$PY" recipes/pack_training_audio.py --corpus "$CORPUS" --out "$WORK/pack" --minutes "$PACK_MINUTES"
      run "$PY" recipes/select_training_subset.py --corpus "$CORPUS" --pack "$WORK/pack" --out "$WORK/subset" \
        --hours-per-genre "$HOURS_PER_GENRE"
      run "$PY" recipes/split_pack.py "$WORK/pack" "$WORK/half"
      ;;
    v0)
      jukebox train vqvae --data "$WORK/pack" --preset "$VQ_PRESET" --out "$MODEL" --window "$WINDOW" \
        --batch-size "$VQ_BATCH" --steps "$VQ_STEPS" --lr 3e-4 --decay none --device "$DEVICE" --workers "$WORKERS" \
        --compile "$COMPILE" \
        --save-every "$EVERY" "${EXTRA[@]}"
      train_prior 2 "$WORK/pack" --preset "$TOP_PRESET" --batch-size "$BATCH" --steps "$V0_TOP_STEPS" --lr 3e-4 --decay none
      train_prior 1 "$WORK/pack" --preset "$UP1_PRESET" --batch-size "$BATCH" --steps "$V0_UP_STEPS" --lr 3e-4 --decay none
      train_prior 0 "$WORK/pack" --preset "$UP0_PRESET" --batch-size "$BATCH" --steps "$V0_UP_STEPS" --lr 3e-4 --decay none
      ;;
    v1)
      jukebox prepare --data "$WORK/subset" --model "$MODEL" --codes "$WORK/codes_top" --levels 2 --device "$DEVICE"
      train_prior 2 "$WORK/codes_top" --batch-size "$BATCH" --steps "$V1_STEPS"
      ;;
    v2)
      train_prior 2 "$WORK/codes_top" --batch-size "$V2_BATCH" --steps "$V2_STEPS_A" --lr 3e-4 --warmup 20 \
        --label-dropout 0.15 --labels-every-position --precision bf16
      train_prior 2 "$WORK/codes_top" --batch-size "$V2_BATCH" --steps "$V2_STEPS_B" --lr 2e-4 --warmup 20 \
        --label-dropout 0.15 --precision bf16 --seed 1
      ;;
    v3)
      train_prior 2 "$WORK/codes_top" --batch-size "$BATCH" --steps "$V3_TOP_STEPS" --lr 2e-4 --decay cosine \
        --label-dropout 0.15 --labels-every-position
      jukebox prepare --data "$WORK/half" --model "$MODEL" --codes "$WORK/codes_half" --device "$DEVICE"
      train_prior 1 "$WORK/codes_half" --batch-size "$BATCH" --steps "$V3_UP1_STEPS" --lr 3e-4 --decay cosine \
        --no-checkpoint-activations
      train_prior 0 "$WORK/codes_half" --batch-size "$BATCH" --steps "$V3_UP0_STEPS" --lr 3e-4 --decay cosine \
        --no-checkpoint-activations
      ;;
    v5)
      run "$PY" recipes/select_training_subset.py --corpus "$CORPUS" --pack none --with-validation \
        --out "$WORK/subset5" --hours-per-genre "$HOURS_PER_GENRE"
      jukebox prepare --data "$WORK/subset5" --model "$MODEL" --codes "$WORK/codes_v5" --levels 2 --device "$DEVICE"
      train_prior 2 "$WORK/codes_v5" --batch-size "$V5_BATCH" --steps "$V5_STEPS" --lr 2e-4 --warmup 100 \
        --decay cosine --label-dropout 0.15 --tempo
      ;;
    v6)
      run "$PY" recipes/select_training_subset.py --corpus "$CORPUS" --pack none --with-validation \
        --out "$WORK/full" --hours-per-genre 1000
      jukebox prepare --data "$WORK/full" --model "$MODEL" --codes "$WORK/codes_full" --levels 2 --device "$DEVICE"
      train_prior 2 "$WORK/codes_full" --batch-size "$V6_BATCH" --steps "$V6_STEPS" --stop-at "$V6_STOP" --lr 2e-4 \
        --warmup 100 --decay cosine --label-dropout 0.15 --tempo --balance genre --balance-power 0.5
      ;;
    v7)
      run "$PY" recipes/pack_training_audio.py --corpus "$CORPUS" --out "$WORK/pack7" --minutes "$V7_PACK_MINUTES"
      jukebox prepare --data "$WORK/pack7" --model "$MODEL" --codes "$WORK/codes_v7" --levels 1 2 --no-beats \
        --device "$DEVICE"
      train_prior 1 "$WORK/codes_v7" --preset "$UP1_WIDE_PRESET" --restart --batch-size "$V7_BATCH" \
        --steps "$V7_STEPS" --stop-at "$V7_STOP" --lr 3e-4 --warmup 200 --decay linear --min-lr-ratio 0.1
      jukebox train vqvae --out "$MODEL" --data "$WORK/pack7" --decoder-only --adv-levels 1 --window "$WINDOW" \
        --batch-size "$V7_DEC_BATCH" --steps "$V7_DEC_STEPS" --lr 3e-4 --warmup 50 --decay cosine --device "$DEVICE" \
        --workers "$WORKERS" --save-every "$EVERY" "${EXTRA[@]}"
      ;;
    export)
      run "$PY" recipes/export_model.py "$MODEL" "$OUT" --weights int8 --conv-levels 1
      ;;
    measure)
      run "$PY" recipes/eval_default_model.py -m "$OUT" --corpus "$CORPUS" --tracks "$EVAL_TRACKS" \
        --seconds "$EVAL_SECONDS" --out "$WORK/measure.json"
      ;;
    *)
      echo "unknown stage '$stage' (stages: data v0 v1 v2 v3 v5 v6 v7 export measure)" >&2
      exit 2
      ;;
  esac
done
