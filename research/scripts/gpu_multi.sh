#!/usr/bin/env bash
# Several GPUs: one minute of 5b_lyrics end to end on 1 GPU and on N (goal: <= 45 s on 8), scaling of level-0
# windows, and FSDP fine-tuning throughput of 5b_lyrics shapes (random weights): tokens/s, MFU, memory per GPU,
# 2 -> N GPUs. NCCL's NVLink multicast stays off. Results: $OUT/multi_*.json and .log.
#   bash research/scripts/gpu_multi.sh            # every GPU of the machine (2, 4 or 8)
#   CHECK=1 bash research/scripts/gpu_multi.sh    # world-size-1 check on one GPU (a few minutes)
set -uo pipefail
source research/scripts/device_env.sh
export NCCL_NVLS_ENABLE=0
N=${N:-$(nvidia-smi -L | wc -l)}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.csv" 2>&1 || true
SONG="--hierarchy 5b_lyrics --device cuda --dtype bfloat16 --upsample-mode parallel --decode graph"
run() {  # run NAME NPROC ARGS...: torchrun of bench_multi.py, its JSON line into $OUT/multi_NAME.json
  local name=$1 n=$2; shift 2
  timeout 590 torchrun --standalone --nproc-per-node "$n" benchmarks/bench_multi.py "$@" > "$OUT/multi_$name.log" 2>&1 \
    || echo "$name: exit $?" >> "$OUT/errors.txt"
  grep '^{' "$OUT/multi_$name.log" | tail -n 1 > "$OUT/multi_$name.json"; tail -c 400 "$OUT/multi_$name.json"; echo
}
if [ "${CHECK:-0}" = 1 ]; then  # both paths at world size 1, small shapes, then the CLI under torchrun
  run check_song 1 song $SONG --seconds 8  # a level-1 window of 5b_lyrics is 5.9 s
  run check_fsdp 1 fsdp --preset 5b_lyrics --layers 4 --steps 4
  timeout 300 torchrun --standalone --nproc-per-node 1 -m jukebox sample -o "$OUT/check_run" --seconds 4 --seed 1 \
    --device cuda --quiet > "$OUT/multi_check_cli.log" 2>&1 || echo "check_cli: exit $?" >> "$OUT/errors.txt"
  exit 0
fi
# 1. one minute of 5b_lyrics end to end: 1 GPU, then 2/4/8; 2. the level-0 window scaling is the level-0 row of
# each run's per-level timings (its ~5200 windows are shared by the GPUs; the top level stays on one GPU's share)
for n in 1 2 4 8; do [ "$n" -le "$N" ] && run "song_$n" "$n" song $SONG --seconds 60; done
# 3. FSDP fine-tuning of 5b_lyrics shapes (random weights, activation checkpointing, bf16), 2..N GPUs
for n in 2 4 8; do [ "$n" -le "$N" ] && run "fsdp_$n" "$n" fsdp --preset 5b_lyrics --batch-size 1 --steps 8; done
