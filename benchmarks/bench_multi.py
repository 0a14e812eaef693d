"""Several GPUs: a song sampled by N processes, and FSDP fine-tuning throughput. Run under torchrun:

    torchrun --nproc-per-node 8 benchmarks/bench_multi.py song --hierarchy 5b_lyrics --seconds 60 --device cuda \\
        --dtype bfloat16 --upsample-mode parallel --decode graph          # bench_song.py's flags, rows shared
    torchrun --nproc-per-node 8 benchmarks/bench_multi.py fsdp --preset 5b_lyrics --batch-size 1 --steps 8

``song``: :mod:`bench_song` with every level's rows shared by the processes (:mod:`jukebox.distributed`); rank 0
prints its JSON (``world_size`` added). ``fsdp``: random weights of a prior preset trained with the shared loop's
FSDP2 path (:mod:`jukebox.train.fsdp`) on synthetic codes: tokens/s, model FLOPs utilisation against the bf16 dense
peak (``--peak-tflops``, default the H100/H200 989), peak memory per GPU. One JSON line from rank 0 (``--json``
writes it too). Without torchrun both run as one process.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def song(argv: list[str]) -> dict:
    import bench_song

    from jukebox.distributed import current_ranks, init_from_env

    init_from_env(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    ranks = current_ranks()
    bench_song.sample_levels = functools.partial(bench_song.sample_levels, ranks=ranks)
    out = bench_song.main(argv)
    out["world_size"] = 1 if ranks is None else ranks.world
    if ranks is not None:
        out["rows_per_rank"] = ranks.gather_work()
    return out


def fsdp(argv: list[str]) -> dict:
    from jukebox.prior import Prior
    from jukebox.prior.config import prior_preset
    from jukebox.train import TrainConfig
    from jukebox.train.distributed import setup_distributed
    from jukebox.train.fsdp import FSDPTrainer, ensure_process_group
    from jukebox.train.synthetic import SyntheticPriorTask

    ap = argparse.ArgumentParser(prog="bench_multi.py fsdp")
    ap.add_argument("--preset", default="5b_lyrics")
    ap.add_argument("--layers", type=int, default=None, help="keep only the first N decoder layers (quick checks)")
    ap.add_argument("--batch-size", type=int, default=1, help="windows per process per step")
    ap.add_argument("--steps", type=int, default=8, help="steps (the first 2 are not timed)")
    ap.add_argument("--no-checkpoint-activations", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    dist = ensure_process_group(setup_distributed(None))
    cfg = prior_preset(args.preset)
    if args.layers:
        t = cfg.transformer
        cfg = cfg.replace(transformer=t.replace(depth=args.layers))
    torch.manual_seed(0)
    with torch.device(dist.device):
        model = Prior(cfg)
    for m in model.modules():
        if hasattr(m, "checkpoint") and isinstance(m.checkpoint, bool):
            m.checkpoint = not args.no_checkpoint_activations
    n_params = sum(p.numel() for p in model.parameters())
    task = SyntheticPriorTask(cfg, args.batch_size, "random", stream_tokens=1 << 16)
    times: list[float] = []

    class Timed(FSDPTrainer):
        def _save(self, run, step):  # a benchmark writes no checkpoint
            pass

    def on_step(step: int, row: dict) -> None:
        if dist.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter())

    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, warmup_steps=1, log_every=10 ** 6,
                         workers=1, val_batches=0, fsdp=True)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Timed(model, task, config, tmp, dist, progress=False, on_step=on_step, log=lambda m: None)
        trainer.fit()
    timed = times[2:] if len(times) > 3 else times
    seconds = (timed[-1] - timed[0]) / max(1, len(timed) - 1)
    tokens = args.batch_size * cfg.n_ctx * dist.world_size
    tps = tokens / seconds
    out = {"preset": args.preset, "parameters": n_params, "world_size": dist.world_size,
           "batch_per_gpu": args.batch_size, "n_ctx": cfg.n_ctx, "seconds_per_step": round(seconds, 4),
           "tokens_per_second": round(tps, 1),
           "mfu": round(6 * n_params * tps / (args.peak_tflops * 1e12 * dist.world_size), 4),
           "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if dist.device.type == "cuda"
           else None}
    if args.json is not None and dist.is_main:
        args.json.write_text(json.dumps(out) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("song", "fsdp"):
        print(__doc__, file=sys.stderr)
        return 2
    out = (song if argv[0] == "song" else fsdp)(argv[1:])
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
