#!/usr/bin/env python3
"""How much does a tempo prior use the beat? Bits per token of real windows (those with a pulse) under the true beat
grid, the grid shifted by a half or a quarter beat, 1.5x the tempo, and no pulse.

    python research/scripts/tempo_phase_likelihood.py MODEL_DIR CODE_FOLDER [split] [windows]
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from jukebox.checkpoint.model_dir import ModelDir
from jukebox.data.code_cache import CodeCache, CodeWindowSampler
from jukebox.data.labels import Labeller, LabelVocab
from jukebox.data.tempo import load_beats


def main() -> None:
    model_dir, codes = sys.argv[1], sys.argv[2]
    split = sys.argv[3] if len(sys.argv) > 3 else "validation"
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 48
    md = ModelDir(model_dir)
    prior = md.load_prior(2).eval()
    cfg = prior.config
    cache = CodeCache(codes)
    sampler = CodeWindowSampler(cache, cache.manifest(), 2, cfg.n_ctx, split, beats=load_beats(codes))
    lab = Labeller(LabelVocab.load(md.path / "prior_level_2"), cfg.labels.max_bow_genre_size, 0, cfg.sample_length,
                   tempo=True)
    idx = np.random.default_rng(0).integers(len(sampler), size=n)
    windows = [w for w in (sampler.window(int(i)) for i in idx) if w.bpm > 0]
    z = torch.from_numpy(np.stack([w.z for w in windows]))
    sr = cfg.labels.sample_rate

    def bits(grid) -> float:
        metas = [dict(artist=w.artist, genre=w.genre, lyrics="", total_length=w.total_length, offset=w.offset,
                      **grid(w)) for w in windows]
        with torch.no_grad():
            logits = prior.logits(z, y=lab.batch_labels(metas, warn=False).y).float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), z.reshape(-1))
        return round(float(loss) / float(np.log(2)), 4)

    print(f"{len(windows)} windows with a pulse of {n}")
    print("true grid       ", bits(lambda w: dict(bpm=w.bpm, beat0=w.beat0)))
    print("half-beat shift ", bits(lambda w: dict(bpm=w.bpm, beat0=w.beat0 + int(30 * sr / w.bpm))))
    print("quarter shift   ", bits(lambda w: dict(bpm=w.bpm, beat0=w.beat0 + int(15 * sr / w.bpm))))
    print("tempo x 1.5     ", bits(lambda w: dict(bpm=w.bpm * 1.5, beat0=w.beat0)))
    print("no pulse        ", bits(lambda w: dict(bpm=0, beat0=0)))


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
