#!/usr/bin/env bash
# Issue 10 on one GPU (shared with another job): lyric top priors on the sung corpus, then the sampling arms.
#   STAGE=train  bash research/scripts/gpu_lyrics.sh   # concurrently, time-boxed: the lyric top prior (default_lyrics), the
#                                             # merged-style one (default_merged), the no-lyrics control
#                                             # (default_top) and fine-tuned copies of the base model's upsamplers;
#                                             # returns int8 packs in lyrics_{a,b,c}.tar and lyrics_train.tar.gz
#   STAGE=sample bash research/scripts/gpu_lyrics.sh   # from the packs carried in $PACKS (lyrics_a.tar + lyrics_b.tar):
#                                             # per held-out song (a) right lyrics, (b) another held-out song's
#                                             # lyrics, (c) the no-lyrics model; returns codes
#                                             # (samples_<model>.npz), alignment.npz, sample_info.json
# Data: the packed sung corpus in .sung/ (research/scripts/pack_sung_audio.py). Wheels the GPU image lacks travel in .whl/.
# Results go to $OUT (or out/). Every knob is an environment variable (below); the CPU smoke test of both stages
# is in docs/lyrics.md.
set -euo pipefail
T0=$(date +%s)
cd "$(dirname "$0")/../.."
source research/scripts/device_env.sh
STAGE=${STAGE:-train}
RUN=${RUN:-runs/lyrics}
DATA=${DATA:-.sung}
PACKS=${PACKS:-.lyr}
BASE=${BASE:-src/jukebox/assets/default_model}
DEVICE=${DEVICE:-cuda}
MODELS=${MODELS:-lyrics merged control up1 up0}
TOTAL_SECONDS=${TOTAL_SECONDS:-450}   # wall budget of STAGE=train from its start (wheels, cache, training, packing)
TRAIN_SECONDS=${TRAIN_SECONDS:-}      # time box of each concurrent training process (default: what the budget leaves)
BATCH=${BATCH:-32}
LR=${LR:-3e-4}
STEPS=${STEPS:-100000}                 # the time box ends training first; STEPS only sets the (flat) schedule
SAVE_EVERY=${SAVE_EVERY:-200}
WORKERS=${WORKERS:-2}
P_LYRICS=${P_LYRICS:-default_lyrics}
P_MERGED=${P_MERGED:-default_merged}
P_CONTROL=${P_CONTROL:-default_top}
N_CTX=${N_CTX:-}                       # context of the new top priors (default: the preset's; tiny tests)
SAMPLE_SECONDS=${SAMPLE_SECONDS:-24}
SAMPLE_DEADLINE=${SAMPLE_DEADLINE:-400}  # no new upsampling arm after this many seconds of the sample stage
N_SONGS=${N_SONGS:-0}
DECODE=${DECODE:-graph}
LEVELS=${LEVELS:-2 1 0}
TEMPERATURE=${TEMPERATURE:-1.0}
nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu --format=csv,noheader 2>/dev/null || true
NCTX_ARG=(); if [ -n "$N_CTX" ]; then NCTX_ARG=(--n-ctx "$N_CTX"); fi
case "$STAGE" in
  train)
    [ -f "$DATA/metadata.csv" ] || { echo "error: $DATA/metadata.csv missing (pack the corpus first)"; exit 2; }
    rm -rf "$RUN"
    mkdir -p "$RUN/logs" "$RUN/cachebuild"
    for m in $MODELS; do
      case "$m" in lyrics|merged|control|up1|up0) ;; *) echo "error: unknown model '$m' in MODELS"; exit 2;; esac
      cp -r "$BASE" "$RUN/$m"
      rm -rf "$RUN/$m/code_cache"
    done
    # Encode the corpus once (one training step of a throw-away prior builds the code cache all jobs share).
    cp -r "$BASE/vqvae" "$BASE/model.json" "$RUN/cachebuild/"
    $J train prior --model "$RUN/cachebuild" --data "$DATA" --level 2 --preset "$P_CONTROL" "${NCTX_ARG[@]}" \
      --cache "$RUN/cache" --steps 1 --batch-size 2 --device "$DEVICE" --no-progress --log-dir none \
      --workers 1 > "$RUN/logs/cache.log" 2>&1 || { cat "$RUN/logs/cache.log"; exit 1; }
    ELAPSED=$(( $(date +%s) - T0 ))
    [ -n "$TRAIN_SECONDS" ] || TRAIN_SECONDS=$(( TOTAL_SECONDS - ELAPSED - 45 ))
    [ "$TRAIN_SECONDS" -ge 30 ] || TRAIN_SECONDS=30
    echo "code cache built at $ELAPSED s; training for $TRAIN_SECONDS s: $MODELS"
    train() {  # name level [extra args]: one time-boxed training process, log in $RUN/logs/train_<name>.log
      local name=$1 level=$2
      shift 2
      timeout "$TRAIN_SECONDS" $J train prior --model "$RUN/$name" --data "$DATA" --level "$level" \
        --cache "$RUN/cache" --batch-size "$BATCH" --steps "$STEPS" --decay none --lr "$LR" --device "$DEVICE" \
        --no-progress --log-every 50 --save-every "$SAVE_EVERY" --val-every "$SAVE_EVERY" --val-batches 4 \
        --workers "$WORKERS" --log-dir none "$@" > "$RUN/logs/train_$name.log" 2>&1 || true
    }
    for m in $MODELS; do
      case "$m" in
        lyrics)  train lyrics 2 --preset "$P_LYRICS" --restart "${NCTX_ARG[@]}" & ;;
        merged)  train merged 2 --preset "$P_MERGED" --restart "${NCTX_ARG[@]}" & ;;
        control) train control 2 --preset "$P_CONTROL" --restart "${NCTX_ARG[@]}" & ;;
        up1)     train up1 1 & ;;
        up0)     train up0 0 & ;;
      esac
    done
    wait
    echo "training done at $(( $(date +%s) - T0 )) s"
    for m in $MODELS; do echo "== $m"; grep -E "training the|validation|Error|error" "$RUN/logs/train_$m.log" | tail -4 || true; done
    # Four files back (the call's $OUT is shared with another job): lyrics_a.tar = the lyric model + the control
    # + heldout.json (what STAGE=sample needs with lyrics_b.tar = the fine-tuned upsamplers; ~20 MB together),
    # lyrics_c.tar = the merged-style model + the control + heldout.json (the alternative to lyrics_a.tar),
    # lyrics_train.tar.gz = the curves (train_summary.json) and the logs.
    mkdir -p "$RUN/packs"
    python3 research/scripts/lyrics_models.py pack "$RUN" "$RUN/packs"
    python3 research/scripts/lyrics_models.py summary "$RUN/logs" "$RUN/logs/train_summary.json"
    cp "$DATA/heldout.json" "$RUN/packs/heldout.json"
    bundle() {  # name model-pack other-files...: a tar of the model pack and those other files that exist
      local name=$1 have=()
      shift
      if [ -f "$RUN/packs/$1" ]; then
        for f in "$@"; do if [ -f "$RUN/packs/$f" ]; then have+=("$f"); fi; done
        tar cf "$OUT/$name" -C "$RUN/packs" "${have[@]}"
      fi
    }
    bundle lyrics_a.tar lyrics.q8.tar.xz control.q8.tar.xz heldout.json
    bundle lyrics_b.tar up1.q8.tar.xz up0.q8.tar.xz
    bundle lyrics_c.tar merged.q8.tar.xz control.q8.tar.xz heldout.json
    tar czf "$OUT/lyrics_train.tar.gz" -C "$RUN" logs
    ;;
  sample)
    # $PACKS holds what STAGE=train returned: lyrics_a.tar (or lyrics_c.tar) and lyrics_b.tar, or loose packs.
    rm -rf "$RUN/packs"
    mkdir -p "$RUN/packs"
    for t in "$PACKS"/lyrics_?.tar; do if [ -f "$t" ]; then tar xf "$t" -C "$RUN/packs"; fi; done
    cp "$PACKS"/*.q8.tar* "$PACKS"/heldout.json "$RUN/packs/" 2>/dev/null || true
    ls "$RUN/packs"/*.q8.tar* >/dev/null || { echo "error: no packs (lyrics_a.tar, *.q8.tar.xz) in $PACKS"; exit 2; }
    HELDOUT=${HELDOUT:-$RUN/packs/heldout.json}
    [ -f "$HELDOUT" ] || HELDOUT=$DATA/heldout.json
    python3 research/scripts/lyrics_models.py unpack "$RUN/packs" "$RUN/models" --base "$BASE"
    BF16=(); if [ "$DEVICE" = cuda ]; then BF16=(--bf16); fi
    # shellcheck disable=SC2086
    python3 research/scripts/lyrics_models.py sample --models "$RUN/models" --heldout "$HELDOUT" --out "$OUT" \
      --seconds "$SAMPLE_SECONDS" --levels $LEVELS --n-songs "$N_SONGS" --device "$DEVICE" "${BF16[@]}" \
      --decode "$DECODE" --temperature "$TEMPERATURE" --deadline "$SAMPLE_DEADLINE"
    ;;
  *) echo "error: STAGE must be train or sample, got '$STAGE'"; exit 2;;
esac
echo "stage $STAGE finished in $(( $(date +%s) - T0 )) s"
ls -la "$OUT"
