#!/usr/bin/env bash
# The embedded model's upsamplers retrained on more music, two arms side by side on one GPU, judged by what they keep
# of a pulse that is really in the top-level codes (research/tempo.md, "Where the pulse is lost"): real validation
# music through the codec keeps its pulse (level 0: 0.49, real 0.51), but the shipped upsamplers given the same real
# level-2 codes make audio of pulse 0.24. They were trained on 1.6-3.6 h for a few GPU minutes.
#   finetune: the shipped upsamplers (256 x 8, n_ctx 1,024) fine-tuned;
#   fast:     default_fast_upsampler_level_{1,0} (256 x 6, n_ctx 512: half the sequential steps on a CPU), from scratch;
#   wide:     default_wide_upsampler_level_{1,0} (the shipped transformer, a 256 x 8 conditioner), from scratch at
#             LR_FAST.
# ARMS picks them (default "finetune fast"; after the first run, whose fast arm trailed: ARMS="finetune wide").
# Four trainings at once (two arms x levels 1 and 0), the same code folder, batch BATCH x 1,024 (fast: BATCH_FAST x 512,
# the same tokens per step), linear decay from LR
# to LR/10 at PLANNED_STEPS, compiled blocks, checkpoints every SAVE steps, resumed across calls on a warm machine.
#
# Data: a genre-balanced Vorbis pack of the training split (recipes/pack_training_audio.py --minutes 420: ~7 h),
# split into ~30-MB shards (research/scripts/shard_pack.py --out .gpu/upshard) carried one per call:
#   STAGE=ingest SHARD=.gpu/upshard_0.tar   carry .whl + the shard: untar into $RUN/audio (kept while warm)
#   STAGE=ingest SHARD=.gpu/upshard_1.tar   ... one call per shard, back to back (a cold machine loses them)
#   STAGE=train SHARD=.gpu/upshard_2.tar    the last shard, then (once) `jukebox prepare --codes` of all shards on
#       the GPU (levels 0-2, no beats), then the four trainings for the rest of CALL_S; again STAGE=train (no shard)
#       on the warm machine to continue. Returns $OUT/train_logs.tar.gz (logs, validation curves) and each arm's last
#       saved upsamplers, int8, $OUT/up_<arm>.tar (evaluate them on a CPU if the machine is lost before STAGE=eval).
#   STAGE=eval   each arm: int8 export (recipes/export_model.py --weights int8-conv: the conditioners too), the
#       upsampled pulse of real validation top-level codes (pulse_through_levels.py --from-codes .gpu/upval.npz:
#       carry it), CLIPS generated 10-s clips with the shipped top prior and the arm's upsamplers (eval_tempo.py,
#       seed 1000, v6's seeds and tempos) -> $OUT/up_<arm>.tar (the arm's trained levels, int8), $OUT/up_results.tar
#       (JSONs), $OUT/clips_<arm>.tar (judge);
#       first the shipped upsamplers' pulse on the same codes (EVAL_SHIPPED=0 skips it). The generated clips pair with
#       the first CLIPS rows of v6's 240-clip set (results/v6/v6_240.json: same seeds, same top prior).
# Then on a CPU: the arms' upsamplers (up_<arm>.tar untarred into a copy of the embedded model) through
# `eval_lyrics.py roundtrip --upsample` (words kept from real sung top-level codes; shipped: recall 0.018, the codec
# 0.125), judge_clips.py on clips_<arm>.tar, and `jukebox sample --seconds 10` timed (farm-bench).
# A lost machine: the weights of the last train call come back as up_<arm>.tar; carry them (e.g. under .gpu/init/)
# and set INIT_DIR=.gpu/init on the next train call: each arm then fine-tunes from them (STEPS counted afresh).
# CPU smoke test: DEVICE=cpu COMPILE=none BATCH=2 SAVE=2 VAL_EVERY=4 CLIPS=2 PLANNED_STEPS=6 CALL_S=120 OUT=/tmp/up ...
set -euo pipefail
source research/scripts/device_env.sh  # $OUT, the carried wheels, PYTHONPATH, $J
T0=$(date +%s); elapsed() { echo $(( $(date +%s) - T0 )); }
STAGE=${STAGE:-train}; SHARD=${SHARD:-}; CALL_S=${CALL_S:-540}; DEVICE=${DEVICE:-cuda}; COMPILE=${COMPILE:-blocks}
BATCH=${BATCH:-64}; BATCH_FAST=${BATCH_FAST:-$((2 * BATCH))}; PLANNED_STEPS=${PLANNED_STEPS:-12000}; SAVE=${SAVE:-500}; VAL_EVERY=${VAL_EVERY:-1000}
LR_FINETUNE=${LR_FINETUNE:-2e-4}; LR_FAST=${LR_FAST:-3e-4}; CLIPS=${CLIPS:-120}; ARMS=${ARMS:-finetune fast}
LEVELS=${LEVELS:-1 0}; WORKERS=${WORKERS:-3}; RUN=${RUN:-runs/upsamplers}; BASE=src/jukebox/assets/default_model
VAL=${VAL:-.gpu/upval.npz}
mkdir -p "$RUN/audio" "$RUN/logs"

ingest() {  # untar one shard into $RUN/audio and rebuild the merged metadata.csv
  [ -n "$SHARD" ] || return 0
  [ -f "$SHARD" ] || { echo "error: $SHARD missing (carry it)"; exit 2; }
  tar -C "$RUN/audio" -xf "$SHARD"
  python3 - "$RUN/audio" <<'EOF'
import csv, sys
from pathlib import Path
root = Path(sys.argv[1])
rows, fields = [], None
for meta in sorted(root.glob("shard_*/metadata.csv")):
    with open(meta, newline="", encoding="utf-8") as fh:
        r = csv.DictReader(fh)
        fields = r.fieldnames
        rows += [dict(x, file=f"{meta.parent.name}/{x['file']}") for x in r]
with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
    w = csv.DictWriter(fh, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
print(f"{len(rows)} tracks from {len(list(root.glob('shard_*/metadata.csv')))} shards in {root}")
EOF
}

model_of() {  # model_of ARM: the arm's model directory (a copy of the shipped model; its upsamplers are trained)
  local dir=$RUN/model_$1
  if [ ! -d "$dir" ]; then
    cp -r "$BASE" "$dir"
    # a fresh machine after a lost one: start from the weights an earlier train call returned ($INIT_DIR/up_ARM.tar)
    local init=${INIT_DIR:-}/up_$1.tar
    [ -n "${INIT_DIR:-}" ] && [ -f "$init" ] && tar -C "$dir" -xf "$init" && touch "$dir/.from_init"
  fi
  echo "$dir"
}

export_arm() {  # export_arm ARM: the model in int8 (conditioners too) at $RUN/export_ARM; its levels -> $OUT/up_ARM.tar
  local x=$RUN/export_$1
  rm -rf "$x"
  python3 recipes/export_model.py "$(model_of "$1")" "$x" --weights int8-conv > /dev/null
  tar -C "$x" -cf "$OUT/up_$1.tar" $(for l in $LEVELS; do echo "prior_level_$l"; done)
}

case "$STAGE" in
  ingest)
    ingest; echo "stage ingest finished in $(elapsed) s";;
  train)
    ingest
    if [ ! -f "$RUN/codes/manifest.json" ]; then
      prep=$(for l in $LEVELS; do echo "$l $((l + 1))"; done | tr ' ' '\n' | sort -u | tr '\n' ' ')  # each upsampler: L, L+1
      $J prepare --data "$RUN/audio" --model "$BASE" --codes "$RUN/codes" --levels $prep --no-beats --device "$DEVICE" \
        > "$RUN/logs/prepare.log" 2>&1 || { tail -n 20 "$RUN/logs/prepare.log"; exit 1; }
      tail -n 3 "$RUN/logs/prepare.log"; echo "codes ready at $(elapsed) s"
    fi
    BOX=$(( CALL_S - $(elapsed) - 30 ))
    pids=()
    for arm in $ARMS; do
      dir=$(model_of "$arm")
      for level in $LEVELS; do
        log="$RUN/logs/train_${arm}_$level.log"
        if [ -f "$dir/prior_level_$level/checkpoint/trainer.json" ]; then how=(--resume)
        elif [ -f "$dir/.from_init" ]; then how=()  # fine-tune the returned weights (no optimiser state: warmup again)
        elif [ "$arm" = fast ] || [ "$arm" = wide ]; then how=(--preset "default_${arm}_upsampler_level_$level" --restart)
        else how=(); fi
        lr=$LR_FINETUNE; batch=$BATCH; [ "$arm" = fast ] && lr=$LR_FAST && batch=$BATCH_FAST
        [ "$arm" = wide ] && lr=$LR_FAST
        ( timeout "$BOX" $J train prior --model "$dir" --data "$RUN/codes" --level "$level" "${how[@]}" \
            --batch-size "$batch" --steps "$PLANNED_STEPS" --lr "$lr" --warmup 200 --decay linear --min-lr-ratio 0.1 \
            --compile "$COMPILE" --device "$DEVICE" --workers "$WORKERS" --save-every "$SAVE" --val-every "$VAL_EVERY" \
            --no-progress --log-dir none >> "$log" 2>&1 || echo "$arm level $level: stopped (exit $?)" >> "$log" ) &
        pids+=($!)
      done
    done
    wait "${pids[@]}" || true
    for f in "$RUN"/logs/train_*.log; do echo "== $f"; grep -E "validation|stopped|error|Error" "$f" | tail -n 4; \
      grep -E "^prior_level_[0-9] step" "$f" | tail -n 1; done
    tar -C "$RUN" -czf "$OUT/train_logs.tar.gz" logs
    for arm in $ARMS; do export_arm "$arm"; done  # each arm's last saved upsamplers: a lost machine loses no weights
    echo "stage train finished in $(elapsed) s";;
  eval)
    mkdir -p "$RUN/results"
    if [ "${EVAL_SHIPPED:-1}" = 1 ] && [ -f "$VAL" ]; then  # the shipped upsamplers on the same codes, same device
      python3 research/scripts/pulse_through_levels.py -m "$BASE" --from-codes "$VAL" --device "$DEVICE" \
        --out "$RUN/results/upsampled_real_shipped.json" 2>&1 | tail -n 8
    fi
    for arm in $ARMS; do
      export_arm "$arm"; x="$RUN/export_$arm"
      [ -f "$VAL" ] && python3 research/scripts/pulse_through_levels.py -m "$x" --from-codes "$VAL" --device "$DEVICE" \
        --out "$RUN/results/upsampled_real_$arm.json" 2>&1 | tail -n 8
      rm -rf "/tmp/clips_$arm"
      python3 research/scripts/eval_tempo.py -m "$x" --clips "$CLIPS" --seconds 10 --batch "$CLIPS" --seed 1000 \
        --device "$DEVICE" --out "$RUN/results/gen_$arm.json" --name "$arm" --keep-dir "/tmp/clips_$arm" 2>&1 | tail -n 14
      tar -C "/tmp/clips_$arm" -cf "$OUT/clips_$arm.tar" .
      echo "$arm evaluated at $(elapsed) s"
    done
    tar -C "$RUN" -cf "$OUT/up_results.tar" results logs
    echo "stage eval finished in $(elapsed) s";;
  *) echo "error: STAGE must be ingest, train or eval, got '$STAGE'"; exit 2;;
esac
ls -la "$OUT"
