"""Benchmark VQ-VAE encode / decode speed per level (seconds of audio per second of wall time).

Builds a VQ-VAE preset with random weights (codebooks filled with random vectors), encodes ``--seconds`` of
random audio at each level and decodes that level's codes back. Prints one JSON object, then a table.

    python benchmarks/bench_codec.py --preset openai --seconds 10 --device cpu
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import torch

from jukebox.config import vqvae_preset
from jukebox.vqvae import VQVAE


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeats: int) -> float:
    """Best wall time of ``repeats`` calls, after one warm-up call."""
    fn()
    _sync(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="openai")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--levels", type=int, nargs="*", default=None, help="levels to time (default: all)")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = vqvae_preset(args.preset)
    model = VQVAE(cfg).to(device).eval()
    with torch.no_grad():
        for cb in model.codebooks:
            cb.codebook.normal_()
    top = max(cfg.hop_lengths)
    n = math.ceil(args.seconds * cfg.sample_rate / top) * top
    x = (torch.rand(args.batch, 1, n, device=device) * 2 - 1) * 0.5
    audio_seconds = args.batch * n / cfg.sample_rate

    rows = []
    levels = args.levels if args.levels is not None else list(range(cfg.levels))
    with torch.inference_mode():
        for level in levels:
            codes = model.encode(x, level, level + 1)[0]
            enc = _time(lambda lv=level: model.encode(x, lv, lv + 1), device, args.repeats)
            dec = _time(lambda lv=level, c=codes: model.decode_level(c, lv), device, args.repeats)
            rows.append({
                "level": level,
                "hop": cfg.hop_lengths[level],
                "tokens": int(codes.shape[-1]),
                "encode_s": round(enc, 4),
                "decode_s": round(dec, 4),
                "encode_x_realtime": round(audio_seconds / enc, 2),
                "decode_x_realtime": round(audio_seconds / dec, 2),
            })

    result = {
        "benchmark": "vqvae_codec",
        "preset": args.preset,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "batch": args.batch,
        "audio_seconds": round(audio_seconds, 3),
        "params": sum(q.numel() for q in model.parameters()),
        "levels": rows,
    }
    print(json.dumps(result))
    print(f"\n{'level':>5} {'hop':>4} {'tokens':>7} {'encode s':>9} {'enc x RT':>9} {'decode s':>9} {'dec x RT':>9}")
    for r in rows:
        print(f"{r['level']:>5} {r['hop']:>4} {r['tokens']:>7} {r['encode_s']:>9.3f} {r['encode_x_realtime']:>9.2f} "
              f"{r['decode_s']:>9.3f} {r['decode_x_realtime']:>9.2f}")
    return result


if __name__ == "__main__":
    main()
