#!/usr/bin/env bash
# The same generated music rendered from each level: the shipped model samples CLIPS 10-s clips (all levels, seed
# SEED, v6's 240-clip set: research/results/v6/v6_240.json), saves every level's codes, and the VQ-VAE decodes
# levels 1 and 2 of the same clips too. Is the level-0 upsampler worth its cost, or does audio decoded from level 1
# (hop 32) keep more of the top level's pulse at an equal judge (genre heard, Frechet distance)?
# Carry .whl. Returns $OUT/render_L{0,1,2}.json (eval_tempo.py), $OUT/clips_L{0,1}_{0,1}.tar (Vorbis, for
# judge_clips.py on a CPU) and $OUT/codes_upper.npz (levels 1 and 2 of the
# clips' codes, int16, with their genres and tempos: upsampler arms can be compared on the same drafts on a CPU).
set -euo pipefail
source research/scripts/device_env.sh
CLIPS=${CLIPS:-240}; SEED=${SEED:-1000}; BATCH=${BATCH:-120}; M=${MODEL:-src/jukebox/assets/default_model}
E=research/scripts/eval_tempo.py
python3 $E -m $M --clips $CLIPS --seconds 10 --batch $BATCH --seed $SEED --out "$OUT/render_L0.json" --name render_L0 \
  --keep-dir /tmp/clips_L0 --codes-out /tmp/codes.npz 2>&1 | tail -14
for L in 1 2; do
  python3 $E -m $M --clips $CLIPS --batch $BATCH --from-codes /tmp/codes.npz --decode-level $L \
    --out "$OUT/render_L$L.json" --name render_L$L --keep-dir /tmp/clips_L$L 2>&1 | tail -14
done
for L in 0 1; do
  ls /tmp/clips_L$L | sort -n | split -l 120 - /tmp/list_L${L}_
  i=0; for f in /tmp/list_L${L}_*; do tar -C /tmp/clips_L$L -cf "$OUT/clips_L${L}_$i.tar" -T $f; i=$((i+1)); done
done
python3 - "$OUT/codes_upper.npz" <<'PY'
import sys, numpy as np
z = np.load("/tmp/codes.npz")
np.savez_compressed(sys.argv[1], **{k: z[k] for k in z.files if k not in ("codes", "codes_0", "level")}, codes=z["codes_2"], level=2)
PY
ls -la "$OUT"
