#!/usr/bin/env bash
# Sampling settings of the shipped model measured on one GPU (2026-12-03, second tempo round).
# Carry .whl (soundfile, soxr, unidecode, cffi for the GPU image's Python) and, for STAGE=final, .gpu/v3 (v3's top
# prior: config + weights). SNAP=DIR runs the code of a snapshot (src + research/scripts) instead of the tree's.
#   STAGE=sweep ARMS="base:{} w4:{\"guidance\":4} ..." CLIPS=120 SEED=0: one eval_tempo.py set per arm -> $OUT/<arm>.json
#                (KEEP=1: the clips too, as .ogg in tars of 120 -> $OUT/<arm>_{0,1}.tar)
#   STAGE=final SET='...' CLIPS=240 SEED=1000: the chosen settings and v3 (today's defaults), clips kept as .ogg in
#                tars of 120 -> $OUT/final_*.json, $OUT/{final,v3}_clips_{0,1}.tar
set -euo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
SNAP=${SNAP:-.}
export PYTHONPATH="$PWD/$SNAP/src:/tmp/site" PYTHONUNBUFFERED=1
E="$SNAP/research/scripts/eval_tempo.py"; M=src/jukebox/assets/default_model
CLIPS=${CLIPS:-120}; SEED=${SEED:-0}; BATCH=${BATCH:-120}
sets() {  # JSON object -> repeated --set key=value
  python3 -c 'import json,sys; [print(f"--set={k}={json.dumps(v)}") for k,v in json.loads(sys.argv[1]).items()]' "$1"
}
if [ "${STAGE:-sweep}" = sweep ]; then
  for arm in $ARMS; do
    name=${arm%%:*}; spec=${arm#*:}
    mapfile -t opts < <(sets "$spec")
    keep=(); [ "${KEEP:-0}" = 1 ] && keep=(--keep-dir "/tmp/clips_$name")
    python3 $E -m $M --clips $CLIPS --seconds 10 --batch $BATCH --seed $SEED --out "$OUT/$name.json" --name "$name" \
      "${keep[@]}" "${opts[@]}" 2>&1 | grep -E '"(mean_pulse|median_pulse|tempo_match|mean_harm|mean_chroma|clips_clipped)' \
      | tr -d '\n'
    echo "  <- $name $spec"
    if [ "${KEEP:-0}" = 1 ]; then
      ls /tmp/clips_$name | sort -n | split -l 120 - /tmp/list_${name}_
      i=0; for f in /tmp/list_${name}_*; do tar -C /tmp/clips_$name -cf "$OUT/${name}_$i.tar" -T $f; i=$((i+1)); done
    fi
  done
else
  mapfile -t opts < <(sets "${SET:-{\}}")
  rm -rf /tmp/v3; cp -r $M /tmp/v3; rm -f /tmp/v3/prior_level_2/*; cp .gpu/v3/* /tmp/v3/prior_level_2/
  for name in final v3; do
    model=$M; o=("${opts[@]}"); [ $name = v3 ] && { model=/tmp/v3; o=(); }
    python3 $E -m $model --clips $CLIPS --seconds 10 --batch $BATCH --seed $SEED --out "$OUT/${name}.json" \
      --name $name --keep-dir /tmp/clips_$name "${o[@]}" 2>&1 | tail -14
    ls /tmp/clips_$name | sort -n | split -l 120 - /tmp/list_${name}_
    i=0; for f in /tmp/list_${name}_*; do tar -C /tmp/clips_$name -cf "$OUT/${name}_clips_$i.tar" -T $f; i=$((i+1)); done
  done
fi
