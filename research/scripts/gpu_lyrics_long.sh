#!/usr/bin/env bash
# CPU smoke test (train: new / warm resume / cold from the returned packs, then eval; seconds-long boxes, python3 =
# the project's interpreter; a small pack: lyrics_codepack.py build ... --max-songs 40 --inst-hours 0.5
# --inst-val-tracks 3 --out /tmp/lyricpack_small.tar.xz):
#   export PATH=.venv/bin:$PATH DEVICE=cpu COMPILE=none PACK=/tmp/lyricpack_small.tar.xz BATCH=2 SAVE_EVERY=3 VAL_EVERY=6 VAL_BATCHES=1 WORKERS=1 OMP_NUM_THREADS=1; STAGE=train OUT=/tmp/ll_t1 RUN=/tmp/ll_run CALL_S=150 STEP_RATE=0.2 bash research/scripts/gpu_lyrics_long.sh && STAGE=train OUT=/tmp/ll_t2 RUN=/tmp/ll_run CALL_S=100 bash research/scripts/gpu_lyrics_long.sh && mkdir -p /tmp/ll_state && cp /tmp/ll_t2/*.q8.tar.xz /tmp/ll_state/ && STAGE=train OUT=/tmp/ll_t3 RUN=/tmp/ll_cold STATE=/tmp/ll_state CALL_S=100 bash research/scripts/gpu_lyrics_long.sh && STAGE=eval OUT=/tmp/ll_e RUN=/tmp/ll_cold2 STATE=/tmp/ll_state N_SONGS=2 SAMPLE_SECONDS=1 LEVELS=2 PRODUCT_SECONDS=1 PRODUCT_LEVELS=2 CALL_S=900 bash research/scripts/gpu_lyrics_long.sh
#
# Lyric top priors trained long enough to decide (research/lyrics.md, 2026-12-03): the encoder-decoder (`lyrics`,
# 5b_lyrics style) and the merged-sequence (`merged`, 1b_lyrics style) lyric priors, both grown from the embedded
# model's top prior (research/scripts/lyrics_init.py: its weights kept, lyric layers added at zero), fine-tuned on
# the sung corpus mixed with instrumental music (lyrics empty there), concurrently on the one GPU for the same wall
# time, over several calls.
#
# Carry .whl and .gpu/lyricpack.tar.xz (top-level codes only: research/scripts/lyrics_codepack.py; no audio, no
# encoding on the GPU). After a call on a machine that went cold, also carry .gpu/lyricstate/ holding the
# lyrics.q8.tar.xz and merged.q8.tar.xz the latest call returned.
#   STAGE=train bash research/scripts/gpu_lyrics_long.sh   # each call: both styles for the rest of CALL_S (530) s,
#       resumed from runs/lyrics_long/<style> when the machine is still warm (optimiser state kept), else from
#       $STATE/<style>.q8.tar.xz (int8 weights; the optimiser state starts over, said in the log), else grown fresh.
#       Returns lyrics.q8.tar.xz, merged.q8.tar.xz (~8 MB each: the next call's fallback, and what STAGE=eval and
#       lyrics_models.py unpack read) and lyrics_long_train.tar.gz (logs, train_history.json: every call's curves).
#   STAGE=eval bash research/scripts/gpu_lyrics_long.sh    # the goals on the GPU for both styles (lyrics_long.py
#       evaluate: bits/token with right / wrong / no lyrics per held-out song, best head chosen on validation and its
#       alignment on the held-out songs), then samples of the 15 goal songs for the word-recall check here
#       (lyrics_models.py sample: right / wrong lyrics per style, the base model as the no-lyrics control) and one
#       `jukebox sample --batch` run of the style chosen on validation (alignment.json, alignment_{i}.png).
#       Returns eval_results.json, samples_{lyrics,merged,control}.npz, alignment.npz, sample_info.json and
#       eval_extra.tar (the product run, the best heads' per-frame alignment of the goal songs, the logs).
# Schedule: AdamW, linear decay from LR after WARMUP steps to LR x MIN_LR_RATIO when PLANNED_S seconds of training
# (all calls together) are spent; the total step count is re-planned every call from the measured steps/s
# (lyrics_long.py prepare / account). Batch BATCH x 1,024 codes per style, label dropout 0.15 (as the shipped prior,
# so guidance keeps working), compiled blocks, checkpoints every SAVE_EVERY steps (a time box loses at most that many).
# ALIGN_LOSS=W (default 0: off): the encoder-decoder style (`lyrics`) trains with `--align-loss W`, one lyric
# cross-attention head pulled onto the word being sung where the pack's manifest has word timings; PACK then
# defaults to .gpu/lyricpack_words.tar.xz (lyrics_codepack.py build --with-words). The merged style cannot use it.
set -euo pipefail
T0=$(date +%s)
cd "$(dirname "$0")/../.."
source research/scripts/device_env.sh  # $OUT, the carried wheels, PYTHONPATH, $J
STAGE=${STAGE:-train}
RUN=${RUN:-runs/lyrics_long}
ALIGN_LOSS=${ALIGN_LOSS:-0}
if [ "$ALIGN_LOSS" = 0 ]; then PACK=${PACK:-.gpu/lyricpack.tar.xz}; else PACK=${PACK:-.gpu/lyricpack_words.tar.xz}; fi
STATE=${STATE:-.gpu/lyricstate}
BASE=${BASE:-src/jukebox/assets/default_model}
DEVICE=${DEVICE:-cuda}
STYLES=${STYLES:-lyrics merged}
CALL_S=${CALL_S:-530}               # wall budget of the call from its start
PACK_MARGIN_S=${PACK_MARGIN_S:-35}  # left at the end of STAGE=train for accounting, packing and the summary
BATCH=${BATCH:-64}
LR=${LR:-3e-4}
WARMUP=${WARMUP:-200}
MIN_LR_RATIO=${MIN_LR_RATIO:-0.1}
PLANNED_S=${PLANNED_S:-1920}        # training seconds per style over all calls (32 minutes)
PLANNED_STEPS=${PLANNED_STEPS:-0}   # new runs: end the decay at this step instead (equal-step comparisons)
STEP_RATE=${STEP_RATE:-10}          # guessed steps/s of each style until the first call measures it
SAVE_EVERY=${SAVE_EVERY:-300}
VAL_EVERY=${VAL_EVERY:-1500}
VAL_BATCHES=${VAL_BATCHES:-8}
LOG_EVERY=${LOG_EVERY:-50}
LABEL_DROPOUT=${LABEL_DROPOUT:-0.15}
WORKERS=${WORKERS:-4}
COMPILE=${COMPILE:-blocks}
N_TOKENS=${N_TOKENS:-128}
N_SONGS=${N_SONGS:-0}               # STAGE=eval: only the first N songs of each set (smoke tests)
SAMPLE_SECONDS=${SAMPLE_SECONDS:-24}
LEVELS=${LEVELS:-2 1 0}
PRODUCT_SECONDS=${PRODUCT_SECONDS:-20}
PRODUCT_LEVELS=${PRODUCT_LEVELS:-}  # e.g. 2 (smoke tests); default all levels
PY=research/scripts/lyrics_long.py
nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu --format=csv,noheader 2>/dev/null || true
for s in $STYLES; do case "$s" in lyrics|merged) ;; *) echo "error: unknown style '$s' in STYLES"; exit 2;; esac; done
[ -f "$PACK" ] || { echo "error: $PACK missing (research/scripts/lyrics_codepack.py build; carry it)"; exit 2; }
mkdir -p "$RUN/logs"
DATA=$(python3 research/scripts/lyrics_codepack.py unpack "$PACK" "$RUN/data")
echo "data: $DATA ($(python3 -c "import json,sys; i=json.load(open(sys.argv[1]))['mix']; print(i['tracks'], 'tracks,', \
i['tokens'], 'codes, sung share', i['sung_share_of_training_windows'])" "$DATA/info.json")) at $(( $(date +%s) - T0 )) s"
elapsed() { echo $(( $(date +%s) - T0 )); }
case "$STAGE" in
  train)
    BOX=$(( CALL_S - PACK_MARGIN_S - $(elapsed) - 15 ))   # 15 s: the per-style setup below
    [ "$BOX" -ge 20 ] || BOX=20
    for s in $STYLES; do
      python3 "$PY" prepare --style "$s" --run "$RUN" --state "$STATE" --base "$BASE" --lr "$LR" --warmup "$WARMUP" \
        --min-lr-ratio "$MIN_LR_RATIO" --planned-s "$PLANNED_S" --step-rate "$STEP_RATE" --call-s "$BOX" \
        --planned-steps "$PLANNED_STEPS" --n-tokens "$N_TOKENS" | tee -a "$RUN/logs/calls.log"
    done
    BOX=$(( CALL_S - PACK_MARGIN_S - $(elapsed) ))
    [ "$BOX" -ge 10 ] || BOX=10
    echo "training $STYLES for $BOX s each from $(elapsed) s" | tee -a "$RUN/logs/calls.log"
    END=$(( T0 + CALL_S - PACK_MARGIN_S ))
    train_style() {  # style compile: train until END; a failure with compiled blocks is retried once eagerly
      local s=$1 compile=$2 rc=0 left ARGS ALIGN=()
      mapfile -t ARGS < "$RUN/$s/train_args.txt"
      if [ "$s" = lyrics ]; then ALIGN=(--align-loss "$ALIGN_LOSS"); fi  # encoder-decoder only
      if [ "${#ARGS[@]}" -eq 0 ]; then echo "$s: nothing to train" >> "$RUN/logs/train_$s.log"; return 0; fi
      left=$(( END - $(date +%s) ))
      timeout "$left" $J train prior --model "$RUN/$s" --data "$DATA/mix" --level 2 "${ARGS[@]}" \
        --batch-size "$BATCH" --label-dropout "$LABEL_DROPOUT" --save-every "$SAVE_EVERY" --val-every "$VAL_EVERY" \
        --val-batches "$VAL_BATCHES" --log-every "$LOG_EVERY" --workers "$WORKERS" --compile "$compile" --device "$DEVICE" \
        "${ALIGN[@]}" --no-progress --log-dir none >> "$RUN/logs/train_$s.log" 2>&1 || rc=$?
      left=$(( END - $(date +%s) ))
      if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$compile" != none ] && [ "$left" -ge 40 ]; then
        echo "$s: training stopped with rc $rc under --compile $compile; the rest of the box ($left s) eagerly" \
          | tee -a "$RUN/logs/train_$s.log" "$RUN/logs/calls.log"
        python3 "$PY" prepare --style "$s" --run "$RUN" --state "$STATE" --base "$BASE" --lr "$LR" \
          --warmup "$WARMUP" --min-lr-ratio "$MIN_LR_RATIO" --planned-s "$PLANNED_S" --step-rate "$STEP_RATE" \
          --call-s "$left" --planned-steps "$PLANNED_STEPS" --n-tokens "$N_TOKENS" | tee -a "$RUN/logs/calls.log"
        train_style "$s" none
      fi
    }
    for s in $STYLES; do : > "$RUN/logs/train_$s.log"; train_style "$s" "$COMPILE" & done
    wait
    echo "training done at $(elapsed) s"
    for s in $STYLES; do
      python3 "$PY" account --run "$RUN" --style "$s" --seconds "$BOX" | tee -a "$RUN/logs/calls.log"
      grep -E "resuming|fine-tuning|extended|alignment loss|validation|Error|error|NaN" "$RUN/logs/train_$s.log" \
        | tail -4 || true
      python3 "$PY" pack-state --run "$RUN" --style "$s" --out "$OUT/$s.q8.tar.xz"
    done
    python3 "$PY" summary --run "$RUN" --out "$RUN/logs/train_history.json"
    for s in $STYLES; do cp "$RUN/logs/train_$s.log" "$RUN/logs/train_${s}_call$(date +%H%M%S).log"; done
    tar czf "$OUT/lyrics_long_train.tar.gz" -C "$RUN" logs
    ;;
  eval)
    MODELS=()
    for s in $STYLES; do
      if [ -f "$RUN/$s/schedule.json" ] && [ -f "$RUN/$s/prior_level_2/model.safetensors" ]; then
        echo "$s: the warm run's weights ($RUN/$s)"
      elif [ -f "$STATE/$s.q8.tar.xz" ]; then
        echo "$s: restored from $STATE/$s.q8.tar.xz: $(python3 "$PY" restore --pack "$STATE/$s.q8.tar.xz" \
          --base "$BASE" --out "$RUN/$s" | tee "$RUN/logs/restore_$s.json")"
      else
        echo "$s: no weights (neither $RUN/$s nor $STATE/$s.q8.tar.xz); skipped"; continue
      fi
      MODELS+=(--model "$s=$RUN/$s")
    done
    [ "${#MODELS[@]}" -gt 0 ] || { echo "error: no lyric model to evaluate"; exit 2; }
    EV_DEADLINE=$(( CALL_S / 2 ))  # alignment stops starting new songs after this; the samples need the rest
    python3 "$PY" evaluate "${MODELS[@]}" --base "$BASE" --data "$DATA" --out "$OUT/eval_results.json" \
      --alignment-npz "$RUN/logs/eval_alignment.npz" --device "$DEVICE" --n-songs "$N_SONGS" \
      --deadline "$EV_DEADLINE" 2>&1 | tee "$RUN/logs/evaluate.log"
    BEST=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get('chosen_on_validation', ''))" "$OUT/eval_results.json")
    echo "evaluation done at $(elapsed) s; chosen on validation: $BEST"
    if [ "${SAMPLES:-1}" = 0 ]; then  # SAMPLES=0: the goals on real codes only (no samples, no product run)
      tar cf "$OUT/eval_extra.tar" -C "$RUN" logs
      echo "stage $STAGE finished in $(elapsed) s (SAMPLES=0)"; ls -la "$OUT"; exit 0
    fi
    # samples of the goal songs (right / wrong lyrics per style, the base model as the no-lyrics control)
    rm -rf "$RUN/models" && mkdir -p "$RUN/models"
    for s in $STYLES; do
      if [ -d "$RUN/$s" ]; then ln -s "$(cd "$RUN/$s" && pwd)" "$RUN/models/$s"; fi
    done
    ln -s "$(cd "$BASE" && pwd)" "$RUN/models/control"
    BF16=(); if [ "$DEVICE" = cuda ]; then BF16=(--bf16); fi
    LEFT=$(( CALL_S - $(elapsed) - 90 ))
    [ "$LEFT" -ge 30 ] || LEFT=30
    # shellcheck disable=SC2086
    python3 research/scripts/lyrics_models.py sample --models "$RUN/models" --heldout "$DATA/heldout.json" \
      --out "$OUT" --seconds "$SAMPLE_SECONDS" --levels $LEVELS --n-songs "$N_SONGS" --device "$DEVICE" "${BF16[@]}" \
      --deadline "$LEFT" 2>&1 | tee "$RUN/logs/sample.log" || echo "sampling failed (see logs)"
    # one product run of the chosen style: jukebox sample --batch (alignment.json, alignment_{i}.png, wavs)
    if [ -n "$BEST" ] && [ $(( CALL_S - $(elapsed) )) -ge 60 ]; then
      python3 -c "
import json, sys
songs = json.load(open(sys.argv[1]))[:3]
with open(sys.argv[2], 'w') as f:
    for s in songs:
        f.write(json.dumps({'artist': s['artist'], 'genre': s['genre'], 'lyrics': s['lyrics'],
                            'total_seconds': s['duration']}) + '\n')" "$DATA/heldout.json" "$RUN/product_items.jsonl"
      DT=(); if [ "$DEVICE" = cuda ]; then DT=(--dtype bfloat16); fi
      if [ -n "$PRODUCT_LEVELS" ]; then DT+=(--levels "$PRODUCT_LEVELS"); fi
      rm -rf "$RUN/product"
      timeout $(( CALL_S - $(elapsed) - 15 )) $J sample -m "$RUN/$BEST" --batch "$RUN/product_items.jsonl" \
        --seconds "$PRODUCT_SECONDS" --seed 1 --device "$DEVICE" "${DT[@]}" --quiet -o "$RUN/product" \
        > "$RUN/logs/product.log" 2>&1 || echo "product run failed or timed out (see logs/product.log)"
    fi
    mkdir -p "$RUN/extra" && rm -rf "$RUN/extra"/* && cp -r "$RUN/logs" "$RUN/extra/"
    if [ -d "$RUN/product" ]; then cp -r "$RUN/product" "$RUN/extra/product_$BEST"; fi
    tar cf "$OUT/eval_extra.tar" -C "$RUN/extra" .
    ;;
  *) echo "error: STAGE must be train or eval, got '$STAGE'"; exit 2;;
esac
echo "stage $STAGE finished in $(elapsed) s"
ls -la "$OUT"
