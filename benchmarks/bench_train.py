"""Training throughput of a prior through the shared loop: tokens per second and model FLOP utilisation.

Prints one JSON object. ``--size 100m`` is a ~100M-parameter top-level prior (width 1024, depth 32, Jukebox's
factorized attention, n_ctx 8192); ``--size tiny`` runs in seconds on a CPU. Batches are random codes with
labels (no corpus needed); the loop is the real one (AdamW, clipping, bf16 autocast on CUDA, DDP under torchrun).

FLOPs per token: ``6 * N`` (N = parameters outside the embeddings) plus attention ``6 * depth * n_state *
keys`` (forward + backward of QK^T and AV, with ``keys`` the average number of keys a query attends to under
the layer's pattern). MFU = achieved FLOP/s over the accelerator's peak bf16 dense FLOP/s (``--peak-tflops``,
auto-detected for H100/H200/A100).

    python benchmarks/bench_train.py --size tiny --steps 5
    python benchmarks/bench_train.py --size 100m --steps 20 --batch-size 8
    python benchmarks/bench_train.py --size 100m --steps 20 --batch-size 16 --compile blocks --warmup-steps 3
    torchrun --nproc-per-node 2 benchmarks/bench_train.py --size 100m --steps 20 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

import torch

from jukebox.prior import Prior
from jukebox.prior.config import LabelConfig, PriorConfig, TransformerConfig
from jukebox.train import TrainConfig, Trainer, cleanup_distributed, setup_distributed

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def prior_config(size: str, n_ctx: int | None, checkpoint: bool) -> PriorConfig:
    labels = LabelConfig(genre_bins=32, artist_bins=64, max_bow_genre_size=1, t_bins=64, min_duration=1.0,
                         max_duration=600.0)
    if size == "100m":
        t = TransformerConfig(width=1024, depth=32, heads=4, attn_order=2, blocks=64, checkpoint=checkpoint)
        return PriorConfig(level=2, n_ctx=n_ctx or 8192, l_bins=2048, transformer=t, labels=labels)
    t = TransformerConfig(width=64, depth=2, heads=2, attn_order=2, blocks=8, checkpoint=checkpoint)
    return PriorConfig(level=2, n_ctx=n_ctx or 256, l_bins=256, transformer=t, labels=labels)


class RandomCodes:
    """A task of random codes [B, n_ctx] with fixed labels (throughput only)."""

    name = "bench_prior"
    prefers_bf16 = True

    def __init__(self, config: PriorConfig, batch_size: int) -> None:
        self.c, self.b = config, batch_size

    def train_batch(self, step: int, micro: int, rank: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(step * 1000 + micro * 10 + rank)
        z = torch.randint(0, self.c.l_bins, (self.b, self.c.n_ctx), generator=g)
        y = torch.zeros(self.b, self.c.y_len, dtype=torch.long)
        y[:, 0], y[:, 2], y[:, 3], y[:, 4] = 44100 * 60, self.c.sample_length, 1, 1
        return {"z": z, "y": y}

    def val_batches(self) -> list[Any]:
        return []

    def loss(self, model, batch, device):
        return model(batch["z"].to(device, non_blocking=True), None, batch["y"].to(device, non_blocking=True))

    def tokens(self, batch) -> int:
        return int(batch["z"].numel())

    def describe(self, batch) -> list[str]:
        return []

    def export(self, model) -> None:
        pass

    def log_media(self, writer, model, step) -> None:
        pass


def attended_keys(pattern: str, n_ctx: int, block_ctx: int) -> float:
    """Average keys per query of a causal attention pattern (dense, blocks, transpose, prev_block, ...)."""
    if pattern in ("block", "blocks", "local"):
        return (block_ctx + 1) / 2
    if pattern in ("transpose", "transposed"):
        return (n_ctx // block_ctx + 1) / 2
    if pattern in ("prev_block", "previous"):
        return float(block_ctx)
    return (n_ctx + 1) / 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("tiny", "100m"), default="tiny")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (after --warmup-steps)")
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2, help="per process")
    ap.add_argument("--n-ctx", type=int, default=None)
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    ap.add_argument("--checkpoint-activations", action="store_true")
    ap.add_argument("--compile", choices=("none", "blocks", "model"), default="none",
                    help="torch.compile of the training step (TrainConfig.compile); the warm-up steps build it")
    ap.add_argument("--device", default=None)
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 dense TFLOP/s of one device")
    args = ap.parse_args()

    dist = setup_distributed(args.device)
    try:
        cfg = prior_config(args.size, args.n_ctx, args.checkpoint_activations)
        torch.manual_seed(0)
        model = Prior(cfg)
        n_params = sum(p.numel() for p in model.parameters())
        n_emb = sum(p.numel() for n, p in model.named_parameters() if "emb" in n)
        blocks = model.decoder.transformer.blocks
        n_state = int(cfg.transformer.m_attn * cfg.transformer.width)
        block_ctx = cfg.n_ctx // (cfg.transformer.blocks or 1)
        attn_flops = sum(6 * n_state * attended_keys(b.pattern, cfg.n_ctx, block_ctx) for b in blocks)
        flops_per_token = 6 * (n_params - n_emb) + attn_flops
        task = RandomCodes(cfg, args.batch_size)
        total = args.warmup_steps + args.steps
        times: dict[int, float] = {}

        def on_step(step: int, row: dict[str, float]) -> None:
            if dist.device.type == "cuda":
                torch.cuda.synchronize()
            times[step] = time.perf_counter()

        config = TrainConfig(steps=total, batch_size=args.batch_size, warmup_steps=1, log_every=10**9,
                             precision=args.precision, workers=1, compile=args.compile)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(model, task, config, f"{tmp}/ckpt", dist, progress=False, on_step=on_step,
                              log=lambda m: None)
            trainer._save = lambda *a, **k: None  # type: ignore[method-assign]  # time training, not disk
            if dist.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            trainer.fit()
        seconds = times[total] - times[args.warmup_steps]
        tokens = args.steps * args.batch_size * cfg.n_ctx * dist.world_size
        tps = tokens / seconds
        peak = args.peak_tflops
        name = torch.cuda.get_device_name(dist.device) if dist.device.type == "cuda" else "cpu"
        if peak is None and dist.device.type == "cuda":
            peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        mfu = tps * flops_per_token / (peak * 1e12 * dist.world_size) if peak else None
        if dist.is_main:
            print(json.dumps({
                "size": args.size, "device": name, "processes": dist.world_size, "params": n_params,
                "params_non_embedding": n_params - n_emb, "n_ctx": cfg.n_ctx, "batch_per_process": args.batch_size,
                "precision": args.precision, "checkpoint_activations": args.checkpoint_activations,
                "compile": args.compile,
                "steps_timed": args.steps, "seconds": round(seconds, 3), "tokens_per_second": round(tps, 1),
                "flops_per_token": flops_per_token, "model_tflops_per_second": round(tps * flops_per_token / 1e12, 3),
                "peak_tflops_per_device": peak, "mfu": None if mfu is None else round(mfu, 4),
                "max_memory_gib": round(torch.cuda.max_memory_allocated(dist.device) / 2**30, 2)
                if dist.device.type == "cuda" else None,
            }))
    finally:
        cleanup_distributed(dist)


if __name__ == "__main__":
    main()
