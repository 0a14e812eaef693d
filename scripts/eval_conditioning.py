#!/usr/bin/env python3
"""Does genre conditioning work? A genre classifier trained on real clips judges generated clips.

Real clips of each genre are cut from the corpus and passed through the model's VQ-VAE at the evaluation level
(encode, decode from that level), so real and generated audio share the codec's sound and the classifier judges
what the prior chose, not the codec. The classifier is a multinomial logistic regression on log-mel statistics
(mean and standard deviation of 64 mel bands, plus their deltas' spread): an evaluation tool, not part of the
model. It is trained on clips of training tracks, checked on clips of held-out tracks, then applied to clips
generated for each requested genre. Also reports a Frechet distance between generated and real feature
distributions (with a real-vs-real baseline). Prints JSON (confusion matrices included).

    python scripts/eval_conditioning.py --corpus /work/corpus --per-genre 6 --clip-seconds 6 --level 2
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import jukebox
from jukebox.audio import load_audio
from jukebox.eval.metrics import mel_filterbank, stft_magnitude


def features(audio: torch.Tensor, sr: int, fb: torch.Tensor) -> np.ndarray:
    """Log-mel statistics of a clip [T] -> [3 * n_mels]."""
    mag = stft_magnitude(audio[None].float(), 1024, 256, 1024)[0]  # [F, frames]
    mel = torch.log(fb @ mag + 1e-4)  # [n_mels, frames]
    delta = mel[:, 1:] - mel[:, :-1]
    return torch.cat([mel.mean(1), mel.std(1), delta.std(1)]).numpy()


@torch.enable_grad()
def train_logreg(x: np.ndarray, y: np.ndarray, n_classes: int, steps: int = 800, wd: float = 1e-3):
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.tensor((x - mu) / sd, dtype=torch.float32)
    yt = torch.tensor(y)
    w = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + wd * (w**2).sum()
        loss.backward()
        opt.step()

    def predict(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return (torch.tensor((z - mu) / sd, dtype=torch.float32) @ w + b).argmax(1).numpy()

    return predict


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * np.real(covmean)))


def confusion(true: list[int], pred: np.ndarray, n: int) -> list[list[int]]:
    m = np.zeros((n, n), dtype=int)
    for t, p in zip(true, pred):
        m[t, p] += 1
    return m.tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("--corpus", default="/work/corpus")
    ap.add_argument("--clips-per-genre", type=int, default=40, help="real training clips per genre")
    ap.add_argument("--per-genre", type=int, default=6, help="generated clips per genre")
    ap.add_argument("--clip-seconds", type=float, default=6.0)
    ap.add_argument("--level", type=int, default=2, help="level to generate to and to reconstruct real clips at")
    ap.add_argument("--temperature", type=float, default=0.98)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    model = jukebox.load_model(args.model, device="cpu")
    sr = model.sample_rate
    vocab = model.vocab()
    genres = [g for g in vocab.list_genres() if g != "unknown"]
    rows = list(csv.DictReader(open(Path(args.corpus) / "metadata.csv", encoding="utf-8")))
    by = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["genre"].lower() in genres:
            by[r["split"]][r["genre"].lower()].append(r)
    genres = [g for g in genres if by["train"][g]]
    fb = mel_filterbank(sr, 1024, 64).float()
    rng = np.random.default_rng(0)
    n = int(args.clip_seconds * sr) // model.hop_lengths[-1] * model.hop_lengths[-1]

    def real_clips(split: str, genre: str, count: int) -> list[np.ndarray]:
        out, tracks = [], by[split][genre]
        for i in range(count * 3):
            if len(out) >= count or not tracks:
                break
            r = tracks[i % len(tracks)]
            start = rng.uniform(0, max(0.0, float(r["seconds"]) - args.clip_seconds))
            audio, _ = load_audio(Path(args.corpus) / r["file"], sample_rate=sr, offset_seconds=start,
                                  duration_seconds=args.clip_seconds)
            if len(audio) < n or np.sqrt(np.mean(audio[:n] ** 2)) < 1e-3:
                continue
            x = torch.from_numpy(audio[:n])[None, None]
            code = model.vqvae.encode(x, start_level=args.level, end_level=args.level + 1)[0]
            out.append(features(model.decode({args.level: code}, args.level)[0, 0], sr, fb))
        return out

    xs, ys, xv, yv = [], [], [], []
    for gi, g in enumerate(genres):
        f = real_clips("train", g, args.clips_per_genre)
        xs += f
        ys += [gi] * len(f)
        f = real_clips("validation", g, max(2, args.clips_per_genre // 4))
        xv += f
        yv += [gi] * len(f)
    predict = train_logreg(np.array(xs), np.array(ys), len(genres))

    xg, yg = [], []
    artists_by_genre = defaultdict(set)
    for g in genres:
        for r in by["train"][g]:
            if r["artist"].lower() in vocab.list_artists():
                artists_by_genre[g].add(r["artist"])
    for gi, g in enumerate(genres):
        artists = sorted(artists_by_genre[g]) or ["unknown"]
        gen = model.generate(items=[{"artist": artists[i % len(artists)], "genre": g, "lyrics": ""}
                                    for i in range(args.per_genre)], n_samples=args.per_genre,
                             seconds=args.clip_seconds, total_seconds=120.0, seed=gi, temperature=args.temperature,
                             levels=[lvl for lvl in model.prior_levels if lvl >= args.level], alignment=False,
                             upsample_mode="parallel")
        for i in range(gen.audio.shape[0]):
            xg.append(features(gen.audio[i, 0], sr, fb))
            yg.append(gi)
    pv, pg = predict(np.array(xv)), predict(np.array(xg))
    xs_a, xv_a, xg_a = np.array(xs), np.array(xv), np.array(xg)
    result = {
        "model": str(model.model_dir.path), "level": args.level, "genres": genres, "chance": 1 / len(genres),
        "real_train_clips": len(xs), "real_validation_clips": len(xv), "generated_clips": len(xg),
        "validation_accuracy_real": float((pv == np.array(yv)).mean()),
        "generated_accuracy": float((pg == np.array(yg)).mean()),
        "confusion_validation_real": confusion(yv, pv, len(genres)),
        "confusion_generated": confusion(yg, pg, len(genres)),
        "frechet_generated_vs_real_train": frechet(xg_a, xs_a),
        "frechet_real_validation_vs_real_train": frechet(xv_a, xs_a),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
