#!/usr/bin/env bash
# The embedded model's level-0 decoder fine-tuned two ways at equal wall time, long enough to decide: `finetune`
# (--decoder-only: the VQ-VAE loss + mel L1) and `adversarial` (the same + MS-STFT and MPD discriminators), both
# from the shipped VQ-VAE, both on one GPU at once, over several calls of one warm machine (research/adversarial.md
# ran them for 3 minutes each; this runs ~27 minutes each in three calls).
#
# Carry .whl and .gpu/decpack.tar (train/: a 104-min genre-balanced Vorbis pack of the training split,
# recipes/pack_training_audio.py --minutes 100; val/: the middle 15 s of each of the 20 validation tracks, with a
# metadata.csv that recipes/eval_default_model.py reads). The tree with it is ~60 MB of the 64 MiB.
#   STAGE=train CALL_S=530 bash research/scripts/gpu_decoders.sh   # each call: both arms for CALL_S s, resumed from
#       runs/decoders/<arm> when the machine is still warm from the previous call (the trainer state, 185 MB with the
#       discriminators, cannot travel back); otherwise from weights carried in .gpu/dec_<arm>.tar (the last call's
#       $OUT/dec_<arm>.tar: decoder weights only, discriminators start over; said in the log) or the shipped VQ-VAE
#   CODES=N (with STAGE=train): also sample N clips of 10 s with the shipped model (seed 1000, v6's 240-clip row)
#       while the arms train, their codes -> $OUT/codes.npz; `eval_tempo.py --from-codes` then decodes the same codes
#       with each decoder on any machine (the paired comparison at the cost of the decode alone)
#   STAGE=eval bash research/scripts/gpu_decoders.sh   # reconstruction on the validation clips for original /
#       finetune / adversarial (eval_default_model.py), then CLIPS generated clips per decoder from the same codes
#       (eval_tempo.py, same seeds: only the decoder differs) -> $OUT/dec_results.tar (eval_<arm>.json,
#       <arm>.json), $OUT/<arm>_clips.tar for judge_clips.py
# Constant learning rate (1e-4 after 100 warm-up steps: no schedule tied to a step count that a time box cuts), batch
# 8 x 65,536 samples, checkpoints every SAVE steps (a call's time box loses at most that many).
# CPU smoke test: DEVICE=cpu CALL_S=60 BATCH=1 WINDOW=8192 SAVE=2 CLIPS=2 OUT=/tmp/dec bash research/scripts/gpu_decoders.sh
set -euo pipefail
source research/scripts/device_env.sh  # $OUT, the carried wheels, PYTHONPATH, $J
STAGE=${STAGE:-train}; CALL_S=${CALL_S:-530}; DEVICE=${DEVICE:-cuda}; BATCH=${BATCH:-8}; WINDOW=${WINDOW:-65536}
SAVE=${SAVE:-100}; LR=${LR:-1e-4}; CLIPS=${CLIPS:-120}; ARMS=${ARMS:-finetune adversarial}
RUN=${RUN:-runs/decoders}; BASE=src/jukebox/assets/default_model
[ -d .gpu/decpack ] || tar -C .gpu -xf .gpu/decpack.tar
mkdir -p "$RUN"

model_of() {  # model_of ARM: a model directory whose VQ-VAE is the arm's (the shipped one for "original")
  local arm=$1 dir=$RUN/model_$1
  if [ ! -d "$dir" ]; then
    cp -r "$BASE" "$dir"
    if [ "$arm" != original ] && [ -f ".gpu/dec_$arm.tar" ]; then
      tar -C "$dir" -xf ".gpu/dec_$arm.tar" && echo "$arm: decoder weights from .gpu/dec_$arm.tar (optimiser and discriminators start over)" >&2
    fi
  fi
  echo "$dir"
}

if [ "$STAGE" = train ]; then
  pids=()
  for arm in $ARMS; do
    dir=$(model_of "$arm" | tail -n 1)
    extra=(); [ "$arm" = adversarial ] && extra=(--adversarial --disc-channels 32)
    resume=(); [ -f "$dir/vqvae/checkpoint/trainer.json" ] && resume=(--resume)
    ( timeout "$CALL_S" $J train vqvae --out "$dir" --data .gpu/decpack/train --decoder-only --adv-levels 0 \
        "${extra[@]}" "${resume[@]}" --steps 1000000 --batch-size "$BATCH" --window "$WINDOW" --lr "$LR" --warmup 100 \
        --decay none --save-every "$SAVE" --val-every 500 --val-batches 4 --workers 4 --device "$DEVICE" \
        --no-progress --log-dir none >> "$RUN/$arm.log" 2>&1 || true ) &
    pids+=($!)
  done
  if [ -n "${CODES:-}" ]; then
    ( python3 research/scripts/eval_tempo.py -m "$BASE" --clips "$CODES" --seconds 10 --batch 120 --seed 1000 \
        --device "$DEVICE" --codes-out "$OUT/codes.npz" --out "$OUT/codes_run.json" --name v6_codes > "$RUN/codes.log" 2>&1 \
        || true; tail -n 16 "$RUN/codes.log" ) &
    pids+=($!)
  fi
  wait "${pids[@]}"
  for arm in $ARMS; do
    dir=$RUN/model_$arm
    echo "== $arm: $(grep -E 'step [0-9]+/' "$RUN/$arm.log" | tail -n 1 || true)"
    { grep -E "validation|resum|start over" "$RUN/$arm.log" || true; } | tail -n 3 | cut -c 1-300
    tar -C "$dir" -cf "$OUT/dec_$arm.tar" vqvae/model.safetensors vqvae/config.json  # the fallback if the machine goes
    cp "$RUN/$arm.log" "$OUT/$arm.log"
  done
else
  mkdir -p "$RUN/res"
  for arm in original $ARMS; do
    dir=$(model_of "$arm" | tail -n 1)
    python3 recipes/eval_default_model.py -m "$dir" --corpus .gpu/decpack/val --tracks 12 --seconds 15 \
      --out "$RUN/res/eval_$arm.json" > /dev/null 2>&1
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], 'level 0:', d['vqvae']['level_0'])" \
      "$RUN/res/eval_$arm.json" "$arm"
    rm -rf "/tmp/clips_$arm"
    python3 research/scripts/eval_tempo.py -m "$dir" --clips "$CLIPS" --seconds 10 --batch 120 --seed 1000 \
      --device "$DEVICE" --out "$RUN/res/$arm.json" --name "dec_$arm" --keep-dir "/tmp/clips_$arm" 2>&1 \
      | grep -E '"(mean_pulse|tempo_match|mean_harm|mean_chroma|clips_clipped)' | tr -d '\n'; echo "  <- $arm"
    tar -C "/tmp/clips_$arm" -cf "$OUT/${arm}_clips.tar" .
  done
  tar -C "$RUN/res" -cf "$OUT/dec_results.tar" .  # at most 8 files come back: the JSONs travel together
fi
