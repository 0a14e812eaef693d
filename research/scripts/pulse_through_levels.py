#!/usr/bin/env python3
"""How much of real music's pulse does the VQ-VAE keep at each level? The reference for generated drafts.

Generated audio is measured at the level it was sampled to (`eval_tempo.py --levels 2` drafts, `--levels 2,1`,
all levels); each level's decoder also smears the audio in its own way. This script passes real validation music
through the same VQ-VAE: each clip is encoded and decoded from level 2, 1 and 0, and measured with
:func:`jukebox.eval.rhythm.audio_measures` like generated clips (pulse clarity, harmonic frames, chroma peak ratio),
beside the original audio. Clips: 10 s at 25, 50 and 75% of every validation track of the five judged genres (the
real reference of `research/tempo.md`; silent clips skipped).

    python research/scripts/pulse_through_levels.py -m src/jukebox/assets/default_model \
        --corpus /work/data/corpus --out research/results/v6/pulse_through_levels.json
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch

import jukebox
from jukebox.audio import load_audio
from jukebox.eval.rhythm import audio_measures

GENRES = ("ambient", "classical", "electronic", "folk", "orchestral")
POSITIONS = (0.25, 0.5, 0.75)
KEYS = ("pulse_clarity", "harmonic_fraction", "chroma_peak_ratio")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--corpus", required=True, help="folder with metadata.csv")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    model = jukebox.load_model(args.model, device="cpu")
    sr = model.sample_rate
    corpus = Path(args.corpus)
    with open(corpus / "metadata.csv", newline="", encoding="utf-8") as fh:
        tracks = [r for r in csv.DictReader(fh) if r["split"] == "validation" and r["genre"].lower() in GENRES]
    n = int(args.seconds * sr) // model.hop_lengths[-1] * model.hop_lengths[-1]
    rows = []
    for t in tracks:
        audio, _ = load_audio(corpus / t["file"], sample_rate=sr)
        for f in POSITIONS:
            start = int(f * len(audio))
            x = np.ascontiguousarray(audio[start:start + n], dtype=np.float32)
            if len(x) < n or float(np.sqrt(np.mean(x ** 2))) < 1e-3:
                continue
            row = {"file": t["file"], "genre": t["genre"].lower(), "at": f, "real": audio_measures(x, sr)}
            codes = model.encode(torch.as_tensor(x)[None, None], levels=3)
            for level in (2, 1, 0):
                y = model.decode({level: codes[level]}, level)[0, 0, :n].float().numpy()
                row[f"level_{level}"] = audio_measures(y, sr)
            rows.append(row)
            print(t["file"], f, {k: round(row[k]["pulse_clarity"], 3) for k in ("real", "level_2", "level_1",
                                                                                 "level_0")}, flush=True)
    summary = {k: {m: round(float(np.mean([r[k][m] for r in rows])), 4) for m in KEYS}
               for k in ("real", "level_2", "level_1", "level_0")}
    summary["clips"] = len(rows)
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
