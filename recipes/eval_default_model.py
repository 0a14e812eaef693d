#!/usr/bin/env python3
"""Measure a model on the corpus's validation split: VQ-VAE reconstruction per level and each prior's bits per
token (with the track's real artist, genre, offset and length as conditioning). Prints JSON (and writes it to
``--out``). The model card's numbers: ``--tracks 12 --seconds 15``.

    python recipes/eval_default_model.py --corpus CORPUS --tracks 12 --seconds 15 [-m MODEL_DIR] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch

import jukebox
from jukebox.audio import load_audio
from jukebox.cli.score import score_codes
from jukebox.eval.reconstruction import reconstruction_metrics

REPO = Path(__file__).resolve().parents[1]


def _shown(path: Path) -> str:
    """A model's path as recorded in the results: relative to the repository when inside it, else its name."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=None, help="model directory (default: the embedded model)")
    ap.add_argument("--corpus", required=True, help="corpus folder with metadata.csv (its validation split is used)")
    ap.add_argument("--tracks", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    model = jukebox.load_model(args.model, device="cpu")
    sr = model.sample_rate
    rows = [r for r in csv.DictReader(open(Path(args.corpus) / "metadata.csv", encoding="utf-8"))
            if r["split"] == "validation"]
    rng = np.random.default_rng(0)
    rows = [rows[i] for i in sorted(rng.choice(len(rows), size=min(args.tracks, len(rows)), replace=False))]
    recon: dict[int, list[dict]] = {lvl: [] for lvl in range(len(model.hop_lengths))}
    bits: dict[int, list[float]] = {lvl: [] for lvl in model.prior_levels}
    t0 = time.perf_counter()
    skipped: list[str] = []
    for r in rows:
        total = float(r["seconds"])
        offset = max(0.0, total / 2 - args.seconds / 2)
        audio, _ = load_audio(Path(args.corpus) / r["file"], sample_rate=sr, offset_seconds=offset,
                              duration_seconds=args.seconds)
        top = model.hop_lengths[-1]
        audio = audio[: len(audio) // top * top]
        if float(np.sqrt(np.mean(audio**2))) < 1e-3:  # a silent stretch says nothing about reconstruction
            skipped.append(r["file"])
            continue
        x = torch.from_numpy(audio)[None, None]
        codes = model.encode(x)
        for lvl in recon:
            y = model.decode(codes, lvl)
            recon[lvl].append(reconstruction_metrics(x, y[..., : x.shape[-1]], sr))
        meta = dict(artist=r["artist"], genre=r["genre"], lyrics=r.get("lyrics", ""),
                    total_length=int(total * sr), offset=int(offset * sr))
        for lvl in bits:
            bits[lvl].append(score_codes(model, lvl, codes, [meta])[0]["bits_per_token"])
    out = {
        "model": _shown(model.model_dir.path), "tracks": [r["file"] for r in rows], "seconds_each": args.seconds,
        "skipped_silent": skipped,
        # Means over clips; spectral convergence in dB is taken of the mean ratio (as Jukebox reports it).
        "vqvae": {f"level_{lvl}": {
            **{k: float(np.mean([m[k] for m in ms])) for k in ms[0] if k not in ("seconds", "spectral_convergence_db")},
            "spectral_convergence_db": float(20 * np.log10(np.mean([m["spectral_convergence"] for m in ms]))),
        } for lvl, ms in recon.items()},
        "prior_bits_per_token": {f"level_{lvl}": float(np.mean(b)) for lvl, b in bits.items()},
        "uniform_bits_per_token": float(np.log2(model.vqvae.config.l_bins)),
        "eval_seconds": round(time.perf_counter() - t0, 1),
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
