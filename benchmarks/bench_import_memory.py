#!/usr/bin/env python3
"""Peak host memory of `jukebox import-openai` on a full-size, upsampler-shaped checkpoint (random weights).

Writes an original-layout folder (``vqvae.pth.tar`` + ``prior_level_0.pth.tar``, the latter ~3.9 GB of fp32
weights in the released upsampler's exact key names and shapes), imports it in a child process and reports
that process's peak resident memory against the checkpoint size; then loads the imported prior the way
sampling does (meta device + streamed safetensors) in another child and reports its peak too. With
``--sample-seconds`` it also samples with the imported upsampler on the available device (GPU memory is
reported via torch.cuda.max_memory_allocated). Prints JSON.

    python benchmarks/bench_import_memory.py --workdir /tmp/imp [--preset upsampler_level_0] [--sample-seconds 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

LOAD_SNIPPET = r"""
import resource, sys, json, time, torch
from jukebox.checkpoint.model_dir import ModelDir
t = time.perf_counter()
prior = ModelDir(sys.argv[1]).load_prior(int(sys.argv[2]), "cpu")
n = sum(p.numel() for p in prior.parameters())
checksum = float(sum(p.float().sum() for p in prior.parameters()))  # touch every weight page
print(json.dumps({"load_seconds": time.perf_counter() - t, "params": n, "checksum": checksum,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

SAMPLE_SNIPPET = r"""
import sys, json, time, torch
from jukebox.checkpoint.model_dir import ModelDir
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
prior = ModelDir(sys.argv[1]).load_prior(int(sys.argv[2]), dev, dtype)
tokens = int(sys.argv[3])
n_ctx = prior.n_ctx
z_cond = torch.randint(0, prior.config.l_bins, (1, n_ctx // prior.cond_downsample), device=dev)
y = torch.zeros(1, prior.config.y_len, dtype=torch.long, device=dev)
y[:, 0], y[:, 2] = 44100 * 60, prior.sample_length
if dev.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
t = time.perf_counter()
out = prior.sample(1, z_cond=z_cond, y=y, sample_tokens=tokens, temperature=0.99)
if dev.type == "cuda":
    torch.cuda.synchronize()
el = time.perf_counter() - t
print(json.dumps({"device": str(dev), "dtype": str(dtype), "tokens": tokens, "seconds": el,
                  "tokens_per_second": tokens / el,
                  "peak_gpu_bytes": torch.cuda.max_memory_allocated() if dev.type == "cuda" else None}))
"""


def write_checkpoint(folder: Path, preset: str) -> int:
    import torch

    from jukebox.config import vqvae_preset
    from jukebox.hparams import Hyperparams
    from jukebox.prior.config import prior_preset
    from jukebox.prior.openai import (
        _expected_shapes,  # noqa: PLC2701 - shapes of our layout
        openai_key_table,
    )
    from jukebox.vqvae import VQVAE
    from jukebox.vqvae.openai import openai_key_table as vq_table

    folder.mkdir(parents=True, exist_ok=True)
    vq = VQVAE(vqvae_preset("openai"))
    vsd = vq.state_dict()
    torch.save({"model": {theirs: vsd[ours] for ours, theirs in vq_table(vq.config).items()}},
               folder / "vqvae.pth.tar")
    config = prior_preset(preset)
    shapes = _expected_shapes(config)
    sd = {}
    g = torch.Generator().manual_seed(0)
    for ours, (theirs, transpose) in openai_key_table(config).items():
        shape = shapes[ours][::-1] if transpose else shapes[ours]
        sd[theirs] = torch.randn(shape, generator=g) * 0.02
    level = config.level
    path = folder / f"prior_level_{level}.pth.tar"
    torch.save({"model": sd, "hps": Hyperparams(level=level)}, path)
    return path.stat().st_size


def child_peak(cmd: list[str]) -> tuple[dict | None, int, float]:
    """Run ``cmd``; return (its last stdout line as JSON, its own peak RSS in bytes, wall seconds)."""
    import os
    import tempfile

    t = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        el = time.perf_counter() - t
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{stderr[-2000:]}")
    last = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    try:
        data = json.loads(last)
    except json.JSONDecodeError:
        data = None
    return data, usage.ru_maxrss * 1024, el


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/jukebox_import_bench")
    ap.add_argument("--preset", default="upsampler_level_0")
    ap.add_argument("--sample-tokens", type=int, default=0, help="also sample this many tokens with the prior")
    ap.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.workdir)
    src, dst = work / "src", work / "model"
    if args.write_only:
        print(json.dumps({"checkpoint_bytes": write_checkpoint(src, args.preset)}))
        return
    # Every step runs in its own child: a child's peak RSS starts from its parent's at fork time.
    t = time.perf_counter()
    written, _, _ = child_peak([sys.executable, __file__, "--workdir", str(work), "--preset", args.preset,
                                "--write-only"])
    size = written["checkpoint_bytes"]
    write_s = time.perf_counter() - t
    if dst.exists():
        import shutil

        shutil.rmtree(dst)
    _, import_peak, import_s = child_peak([sys.executable, "-m", "jukebox.cli.main", "import-openai", str(src),
                                          "-o", str(dst)])
    level = int(args.preset[-1]) if args.preset.startswith("upsampler") else 2
    load, load_peak, _ = child_peak([sys.executable, "-c", LOAD_SNIPPET, str(dst), str(level)])
    result = {
        "preset": args.preset, "checkpoint_bytes": size, "write_seconds": round(write_s, 1),
        "import_seconds": round(import_s, 1), "import_peak_rss_bytes": import_peak,
        "import_peak_over_checkpoint": round(import_peak / size, 3),
        "load_peak_rss_bytes": load_peak, "load_seconds": round(load["load_seconds"], 1),
        "load_peak_over_checkpoint": round(load_peak / size, 3), "params": load["params"],
    }
    if args.sample_tokens:
        sample, _, _ = child_peak([sys.executable, "-c", SAMPLE_SNIPPET, str(dst), str(level),
                                   str(args.sample_tokens)])
        result["sample"] = sample
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
