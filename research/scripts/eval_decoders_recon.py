#!/usr/bin/env python3
"""Level-0 reconstruction of held-out clips by several VQ-VAEs that share encoders and codebooks (decoder-only
fine-tunes): the clips are encoded once by the first model, then decoded by every model; per-clip metrics of
:func:`jukebox.eval.reconstruction.reconstruction_metrics` and their means.

    python research/scripts/eval_decoders_recon.py --corpus VAL_DIR --seconds 15 --out recon.json \\
        original=MODEL_DIR finetune=MODEL_DIR2 ...

``VAL_DIR`` holds audio files (every file is used: the middle ``--seconds`` of each; silent ones are skipped).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import jukebox
from jukebox.audio import load_audio
from jukebox.eval.reconstruction import reconstruction_metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="NAME=MODEL_DIR (the first one encodes)")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    named = [m.split("=", 1) for m in args.models]
    models = {name: jukebox.load_model(path, device="cpu") for name, path in named}
    first = models[named[0][0]]
    sr = first.sample_rate
    files = sorted(p for p in Path(args.corpus).iterdir() if p.suffix in (".ogg", ".flac", ".wav"))
    rows: dict[str, list[dict]] = {name: [] for name in models}
    for f in files:
        audio, _ = load_audio(f, sample_rate=sr)
        n = int(args.seconds * sr)
        start = max(0, (len(audio) - n) // 2)
        x = audio[start:start + n]
        x = x[: len(x) // first.hop_lengths[-1] * first.hop_lengths[-1]]
        if float(np.sqrt(np.mean(x**2))) < 1e-3:
            continue
        codes = first.encode(torch.as_tensor(x)[None, None], levels=1)
        ref = torch.as_tensor(x)[None, None]
        for name, model in models.items():
            y = model.decode({0: codes[0]}, 0)[..., : ref.shape[-1]]
            rows[name].append({"file": f.name, **reconstruction_metrics(ref, y, sr)})
        print(f.name, {k: round(v[-1]["mel_l1"], 4) for k, v in rows.items()}, flush=True)
    summary = {name: {k: float(np.mean([r[k] for r in rs])) for k in rs[0] if k != "file"}
               for name, rs in rows.items()}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
