#!/usr/bin/env bash
# Continue training the embedded default model on one lent GPU, spread over several short device calls on one warm
# machine (session 4's recipe; docs/default-model.md "v3"). Data travels in pieces of <= ~23 MiB (the tracked
# model already makes the travelling tree 39 MiB) and is gathered in /tmp/d; the three trainings run in the
# background (setsid) so they outlive the 10-minute command limit while later calls watch them.
#   STAGE=split  (here, not on the GPU) split .pack into .packA/.packB (each <= ~23.5 MiB; metadata in .packA)
#   STAGE=top    carry .whl .gpuin (level-2 code folder TOP_DATA + earlier clip files): top prior(s), background;
#                TOPS="top:keep topd:0" trains one variant per NAME:ATTN_ORDER (keep = the prior's own attention
#                pattern, 0 = dense; v4 compared the two), each in $D/NAME
#   STAGE=stash  carry .packA: the first half of the packed audio
#   STAGE=up     carry .packB: second half; encode all levels once, then both upsamplers, background
#                (v3 itself: PACK_B=.packA carried alone, after a lost first attempt: one half of the pack)
#   STAGE=resume RESUME="NAME=N ..." (NAME: a top variant, up1 or up0): stop those trainings and resume each
#                with another step count (or JOB=NAME STEPS=N)
#   STAGE=watch  sleep WATCH seconds, print the logs' tails
#   STAGE=finish wait for the trainings, export fp16 weights, render conditioning clips, results to $OUT
#                (FIN_IN=DIR: a carried folder of earlier clip files to upsample, e.g. the real-top control)
# Session 5 (v4, not shipped; docs/default-model.md "v4"), every call with the same exports:
#   export TOPS="top:keep topd:0" TOP_DATA=codes337 TOP_BATCH=64 TOP_LR=3e-4 TOP_WARMUP=200 UP_LEVELS=0 \
#     UP_BATCH=64 UP_LR=2e-4 SAVE_EVERY=100
#   TOP_STEPS=6000 STAGE=top (carry .whl .gpuin); STAGE=stash (.packA); UP0_STEPS=8000 STAGE=up (.packB);
#   RESUME="top=8000 topd=8000 up0=8400" STAGE=resume; a watch; TOPS=top:keep PER_GENRE=48 FIN_IN=.gpuin2
#   STAGE=finish (.gpuin2: the real-top control's clip files). Three trainings at batch 64: 1.2 M tokens/s in all.
# Session 6 (guided upsamplers, not shipped): TOPS=ship:keep (no top training: the shipped top prior), UP_BATCH=64
#   UP_LR=2e-4 SAVE_EVERY=100 UP_OPTS="--label-dropout 0.15 --labels-every-position" UP0_STEPS=4000 UP1_STEPS=4000;
#   a call carrying .whl only (install), STAGE=stash (.packA), STAGE=up (.packB), one 320-s watch, then
#   UP_GUIDES="1 2 4" PER_GENRE=48 FIN_IN=.gpuin2 L2_DRAFTS="" STAGE=finish: one 240-clip set per upsampler guidance
#   (same top-level codes) and the real-top control at each. Two trainings at batch 64: 685k tokens/s each.
# Session 7 (scheduled sampling, not shipped; docs/default-model.md "Session 7"), exports for every call:
#   TOPS="nz:keep ss:keep" TOP_DATA=codes337 TOP_BATCH=64 TOP_LR=3e-4 TOP_WARMUP=200 SAVE_EVERY=250
#   TOP_OPTS_nz="--input-noise 0.3" TOP_OPTS_ss="--scheduled-sampling 0.3"; TOP_STEPS=8000 TOP_ALSO=.gpuin3/elec12
#   WATCH=520 STAGE=top (carry .whl .gpuin .gpuin3), RESUME="nz=7000 ss=5200" WATCH=510 STAGE=resume,
#   PER_GENRE=48 UPSAMPLE_SRC="" L2_DRAFTS="" CONT_CODES=/tmp/d/elec12 FINISH_WAIT=100 STAGE=finish. Then ss3, on a
#   machine holding the code folder: SRC_MODEL=<v3 with ss's prior_level_2> TOPS=ss3:keep TOP_LR=2e-4 TOP_STEPS=7000
#   TOP_OPTS="--scheduled-sampling 0.3" STAGE=top, then STAGE=finish. One SS training alone: 635k tokens/s.
# Next (docs/default-model.md "What the next model needs"): TOP_OPTS="--input-noise 0.2" passes options to the
#   top-prior trainings (TOP_OPTS_<NAME> to one variant only); CONT_CODES=/tmp/d/elec12 at STAGE=finish (carried at
#   STAGE=top with TOP_ALSO=.gpuin3/elec12) adds a continuation-rhythm report per top variant. Without STAGE=up the
#   finish stage pairs each top prior with the shipped upsamplers.
set -uo pipefail
shopt -s nullglob
cd "$(dirname "$0")/../.."
source research/scripts/device_env.sh
D=${D:-/tmp/d}
DEV=${DEV:-cuda}
PACK_A=${PACK_A:-.packA}
PACK_B=${PACK_B:-.packB}
GPUIN=${GPUIN:-.gpuin}
mkdir -p $D/logs
SRC_MODEL=${SRC_MODEL:-src/jukebox/assets/default_model}  # the model the top variants start from
TOP_STEPS=${TOP_STEPS:-4000}
TOP_DATA=${TOP_DATA:-codes236}
TOPS=${TOPS:-top:keep}
TOP_BATCH=${TOP_BATCH:-32}
UP_BATCH=${UP_BATCH:-32}
UP_LEVELS=${UP_LEVELS:-1 0}

bg() {  # bg NAME CMD...: run in its own session so it survives the end of this call
  local name=$1; shift
  setsid nohup "$@" > "$D/logs/$name.log" 2>&1 < /dev/null &
}
tails() { for f in $D/logs/*.log $D/logs/*.part; do echo "== $f"; grep -v Warning "$f" | grep -v "artist_id = " | tail -n 4; done; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; }
top_train() {  # top_train NAME [--resume]
  local name=$1; shift
  bg $name $J train prior --model $D/$name --data $D/$TOP_DATA --level 2 --batch-size $TOP_BATCH --steps "$TOP_STEPS" \
    --lr ${TOP_LR:-2e-4} --warmup ${TOP_WARMUP:-100} --decay cosine --label-dropout 0.15 --labels-every-position --val-every ${TOP_VAL_EVERY:-500} \
    --save-every ${SAVE_EVERY:-250} --log-every 100 --workers 6 --device $DEV --no-progress ${TOP_OPTS:-} $(own_opts $name) "$@"
}
own_opts() { local v="TOP_OPTS_$1"; echo "${!v:-}"; }  # TOP_OPTS_<NAME>: options for one top variant only
up_train() {  # up_train LEVEL STEPS [--resume]
  local L=$1 S=$2; shift 2
  bg up$L $J train prior --model $D/up --data $D/packcodes --level $L --batch-size $UP_BATCH --steps "$S" \
    --lr ${UP_LR:-3e-4} --warmup 100 --decay cosine --val-every 1000 --save-every ${SAVE_EVERY:-250} --log-every 100 --workers 4 \
    --no-checkpoint-activations --device $DEV --no-progress ${UP_OPTS:-} "$@"
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
    for extra in ${TOP_ALSO:-}; do cp -r "$extra" $D/; done  # e.g. TOP_ALSO=.gpuin3/elec12 for CONT_CODES later
    for v in $TOPS; do
      name=${v%%:*}; order=${v#*:}
      mkdir -p $D/$name && cp -r $SRC_MODEL/. $D/$name/ && rm -rf $D/$name/prior_level_[01]
      if [ "$order" != keep ]; then  # another attention pattern for the same weights (same parameter shapes)
        python3 -c "import json,sys; p=sys.argv[1]; c=json.load(open(p)); c['transformer']['attn_order']=int(sys.argv[2]); json.dump(c, open(p, 'w'), indent=1)" \
          $D/$name/prior_level_2/config.json "$order"
      fi
      top_train $name
    done
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
    for L in $UP_LEVELS; do S=UP${L}_STEPS; up_train $L "${!S:-$([ $L = 1 ] && echo 4000 || echo 4500)}"; done
    sleep "${WATCH:-60}"; tails
    ;;
  resume)
    # Change running trainings' step counts (the cosine schedule follows): stop each, resume from its last save.
    # RESUME="NAME=STEPS ..." (NAME: a top variant of TOPS, up1 or up0), or JOB=NAME STEPS=N for one
    for js in ${RESUME:-$JOB=$STEPS}; do
      job=${js%%=*}; n=${js#*=}
      mv $D/logs/$job.log $D/logs/$job.$(date +%s).part
      case "$job" in
        up[01]) L=${job#up}; pkill -f "train prior --model $D/up .*--level $L "; sleep 3; up_train "$L" "$n" --resume ;;
        *) pkill -f "train prior --model $D/$job "; sleep 3; TOP_STEPS=$n top_train "$job" --resume ;;
      esac
    done
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
    if [ -n "${FIN_IN:-}" ]; then cp -r "$FIN_IN"/. $D/; fi  # e.g. the real-top control's clip files
    # One model per top-prior variant: the (fine-tuned) upsamplers + that top prior, in $D/final_NAME.
    if [ -d $D/up ]; then  # upsamplers trained in this run
      python3 recipes/export_model.py $D/up $D/exp_up
      for L in $UP_LEVELS; do tar -C $D/exp_up -cf "$OUT/up$L.tar" prior_level_$L; done
    else  # top priors only: the shipped VQ-VAE and upsamplers
      rm -rf $D/exp_up && cp -r $SRC_MODEL $D/exp_up
    fi
    names=""
    for v in $TOPS; do
      name=${v%%:*}; names="$names $name"
      rm -rf $D/final_$name && cp -r $D/exp_up $D/final_$name && rm -rf $D/final_$name/prior_level_2
      if [ -d $D/$name ]; then  # a top prior trained in this run
        python3 recipes/export_model.py $D/$name $D/exp_$name
        cp -r $D/exp_$name/prior_level_2 $D/final_$name/
        tar -C $D/final_$name -cf "$OUT/$name.tar" prior_level_2
      else  # no top-prior training (e.g. TOPS=ship:keep): the shipped top prior with the new upsamplers
        cp -r $SRC_MODEL/prior_level_2 $D/final_$name/
      fi
    done
    tar -C $D -czf "$OUT/logs.tgz" logs
    # Clip sets (PER_GENRE=48: 240 clips, the size the judges need), one file per set: $OUT returns files of at
    # most 16 MiB, and a 240-clip set with level-0 codes is ~10 MB.
    G="python3 research/scripts/gen_conditioning_clips.py --per-genre ${PER_GENRE:-12} --seconds ${CLIP_SECONDS:-8} --device $DEV ${GEN_OPTS:---dtype bfloat16 --decode graph}"
    pack() {  # pack FILE PREFIX...: the clip files of those sets into $OUT/FILE
      local f=$1; shift; local files=()
      for p in "$@"; do files+=("${p}_clips.json" "${p}_codes.npz"); done
      tar -C $D/clips -czf "$OUT/$f" "${files[@]}"
      [ "$(stat -c %s "$OUT/$f")" -le 16000000 ] || echo "WARNING: $f is over 16 MiB and will not come back"
    }
    for name in $names; do
      if [ -n "${UP_GUIDES:-}" ]; then  # upsamplers trained with label dropout: one set per upsampler guidance
        for w in $UP_GUIDES; do
          $G -m $D/final_$name --out $D/clips --prefix ${name}_g3_ug$w --guidance 3 --upsampler-guidance $w \
            --upsampler-temperature 0.8 2>&1 | tail -n 1
          pack clips_${name}_ug$w.tgz ${name}_g3_ug$w
        done
        continue
      fi
      $G -m $D/final_$name --out $D/clips --prefix ${name}_g3 --guidance 3 --upsampler-temperature 0.8 2>&1 | tail -n 1
      pack clips_$name.tgz ${name}_g3
    done
    # Small sets together: the new upsamplers on earlier top-level codes (the real-top control), level-2 drafts.
    extra=()
    first=${TOPS%%:*}  # the first variant's name
    for C in ${UPSAMPLE_SRC-oracle_t08}; do
      for w in ${UP_GUIDES:-1}; do
        $G -m $D/final_$first --out $D/clips --prefix ${C}_up_ug$w --upsample $D/${C}_clips.json --upsampler-guidance $w \
          --upsampler-temperature 0.8 2>&1 | tail -n 1
        extra+=(${C}_up_ug$w)
      done
    done
    for name in ${L2_DRAFTS-$names}; do
      $G -m $D/final_$name --out $D/clips --prefix ${name}_g5 --guidance 5 --levels 2 2>&1 | tail -n 1; extra+=(${name}_g5)
    done
    [ ${#extra[@]} -gt 0 ] && pack clips_extra.tgz "${extra[@]}"
    # CONT_CODES=FOLDER (a carried code folder, e.g. 12 training tracks): does each top prior keep the rhythm of
    # music it continues? (research/scripts/eval_continuation.py; session 6: real 0.39, v3 0.20)
    if [ -n "${CONT_CODES:-}" ]; then
      for name in $names; do
        python3 research/scripts/eval_continuation.py -m $D/final_$name --codes "$CONT_CODES" --tracks 12 --device $DEV \
          --out-json "$OUT/cont_$name.json" 2>&1 | grep -v "Warning\|artist_id" | tr -d '\n ' | cut -c 1-400; echo
      done
    fi
    ls -la "$OUT"
    ;;
esac
