#!/usr/bin/env python3
"""Genre conditioning of the top prior, judged on its codes: a classifier trained on the top-level codes of real
clips rates the top-level codes of generated clips.

`research/scripts/eval_conditioning.py` judges audio, so its verdict on generated music mixes the top prior with the
upsamplers and the decoder (real top-level codes rendered by the v0 upsamplers are themselves judged near chance).
This script isolates the top prior: both the real clips and the generated clips are top-level codes of the same
VQ-VAE, so a generated clip is recognised only if its codes carry what real codes of the requested genre carry.

1. Real clips: ``--clips-per-track`` windows of the generated clips' length from every track of ``--codes`` (code
   folders made by `jukebox prepare --codes` or recipes/codes_from_npy.py; genre from their manifest).
2. Features of a clip of codes z [T]: mean and spread of its codebook vectors, the mean step between consecutive
   vectors, a histogram over 64 clusters of the codebook (k-means, weighted by use), and how often codes repeat.
3. Class-balanced logistic regression (shared with eval_conditioning.py), checked by 5-fold cross-validation
   grouped by track, then fitted on all real clips and applied to each ``--generated`` file's top-level codes.
   Also reported: a Frechet distance between generated and real clips on the top 32 principal components of the
   judge's standardised features (with real subsets of the same size against all real clips as the baseline).

    python research/scripts/eval_conditioning_codes.py --codes /work/s3/codes157 --generated OUT/v1_clips.json \\
        OUT/v2_clips.json --out-json results.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_conditioning import cross_val_predict, fit_logreg, frechet, scores, stratified_group_folds  # noqa: E402
from gen_conditioning_clips import MAIN_GENRES, read_clips  # noqa: E402


def kmeans(x: torch.Tensor, k: int, weights: torch.Tensor, iters: int = 30, seed: int = 0) -> torch.Tensor:
    """Weighted k-means of rows of x [N, D]; returns the cluster of each row [N]."""
    g = torch.Generator().manual_seed(seed)
    centres = x[torch.multinomial(weights + 1e-6, k, replacement=False, generator=g)].clone()
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(1)
        for c in range(k):
            m = assign == c
            if m.any():
                w = weights[m][:, None] + 1e-6
                centres[c] = (x[m] * w).sum(0) / w.sum()
    return torch.cdist(x, centres).argmin(1)


class CodeFeatures:
    """Clip features from top-level codes; ``codebook`` [bins, D], ``usage`` [bins] (code counts of real data)."""

    def __init__(self, codebook: torch.Tensor, usage: torch.Tensor, clusters: int = 64) -> None:
        self.codebook = codebook.float()
        self.cluster = kmeans(self.codebook, clusters, usage.float())
        self.clusters = clusters

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """z [N, T] int -> features [N, 3 D + clusters + 2]."""
        zt = torch.as_tensor(z, dtype=torch.long)
        e = self.codebook[zt]  # [N, T, D]
        step = (e[:, 1:] - e[:, :-1]).abs().mean(1)
        c = self.cluster[zt]
        hist = torch.zeros(zt.shape[0], self.clusters).scatter_add_(1, c, torch.ones_like(c, dtype=torch.float))
        hist = torch.log(hist / zt.shape[1] + 1e-3)
        repeat = (zt[:, 1:] == zt[:, :-1]).float().mean(1, keepdim=True)
        unique = torch.tensor([[len(np.unique(r)) / zt.shape[1]] for r in z], dtype=torch.float)
        return torch.cat([e.mean(1), e.std(1), step, hist, repeat, unique], 1).numpy()


def real_clips(folders: list[str], level: int, length: int, per_track: int, genres: list[str]
               ) -> tuple[np.ndarray, list[str], list[str], list[str]]:
    """Windows [N, length] of every track of the code folders (evenly spaced), with genre, artist, track."""
    from jukebox.data.code_cache import CodeCache

    zs, gs, arts, tracks = [], [], [], []
    for folder in folders:
        cache = CodeCache(folder)
        for t in cache.manifest().tracks:
            g = (t.genre or "").lower()
            if g not in genres:
                continue
            codes = cache.codes(t.path, level)
            if len(codes) < length:
                continue
            n = min(per_track, max(1, len(codes) // length))
            for s in np.linspace(0, len(codes) - length, n).astype(int):
                zs.append(np.asarray(codes[s:s + length], dtype=np.int64))
                gs.append(g)
                arts.append(t.artist or "unknown")
                tracks.append(f"{folder}:{t.path}")
    return np.stack(zs), gs, arts, tracks


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=None, help="model directory whose VQ-VAE made the codes "
                    "(default: the embedded model)")
    ap.add_argument("--codes", nargs="+", required=True, help="code folders of real music with genres")
    ap.add_argument("--generated", nargs="*", default=[], help="PREFIX_clips.json files of gen_conditioning_clips.py")
    ap.add_argument("--genres", nargs="+", default=list(MAIN_GENRES))
    ap.add_argument("--clip-seconds", type=float, default=None, help="clip length (default: the generated clips')")
    ap.add_argument("--clips-per-track", type=int, default=8)
    ap.add_argument("--wd", type=float, default=0.03, help="weight decay of the logistic regression")
    ap.add_argument("--fd-dims", type=int, default=32, help="principal components for the Frechet distance")
    ap.add_argument("--out-json", default=None)
    args = ap.parse_args(argv)

    from jukebox.api import default_model_path
    from jukebox.checkpoint.format import load_weights
    from jukebox.checkpoint.model_dir import ModelDir

    md = ModelDir(args.model or default_model_path())
    vq = md.vqvae_config()
    level = vq.levels - 1
    genres = [g.lower() for g in args.genres]
    gens = []
    for path in args.generated:
        info, codes = read_clips(Path(path), md.path)
        if f"level_{level}" not in codes.files:
            raise SystemExit(f"error: {path} has no level-{level} codes")
        gens.append((path, info, codes[f"level_{level}"].astype(np.int64)))
    seconds = args.clip_seconds or (gens[0][1]["seconds"] if gens else 8.0)
    length = int(seconds * vq.sample_rate) // vq.hop_lengths[level]
    z, g, artists, tracks = real_clips(args.codes, level, length, args.clips_per_track, genres)
    sd = load_weights(md.path / "vqvae")
    usage = torch.bincount(torch.as_tensor(z).reshape(-1), minlength=vq.l_bins)
    feats = CodeFeatures(sd[f"codebooks.{level}.codebook"], usage)
    x = feats(z)
    mu, sdev = x.mean(0), x.std(0) + 1e-6
    xs = (x - mu) / sdev
    y = np.array([genres.index(v) for v in g])
    folds = stratified_group_folds(tracks, g, k=5)
    pred = cross_val_predict(xs, y, folds, len(genres), args.wd)
    real = scores(y, pred, genres)
    result = {"level": level, "clip_tokens": length, "clip_seconds": seconds, "genres": genres,
              "real": {"clips": len(z), "tracks": len(set(tracks)), "per_genre_tracks":
                       dict(Counter(gg for gg, _ in set(zip(g, tracks)))), "grouped_by_track": real},
              "generated": {}}
    print(f"judge on real top-level codes: {len(z)} clips of {len(set(tracks))} tracks, grouped-by-track accuracy "
          f"{real['accuracy']:.3f}, balanced {real['balanced_accuracy']:.3f} (chance {1 / len(genres):.2f})")
    clf = fit_logreg(xs, y, len(genres), args.wd)
    rng = np.random.default_rng(0)
    pcs = np.linalg.svd(xs - xs.mean(0), full_matrices=False)[2][:args.fd_dims].T  # Frechet in the top PCs
    for path, info, zg in gens:
        req = [it["genre"].lower() for it in info["items"]]
        keep = np.array([r in genres for r in req])
        if zg.shape[1] < length:
            raise SystemExit(f"error: {path}: clips of {zg.shape[1]} tokens are shorter than {length}")
        xg = (feats(zg[keep][:, :length]) - mu) / sdev
        yg = np.array([genres.index(r) for r in np.array(req)[keep]])
        pg = clf.predict(xg)
        r = scores(yg, pg, genres)
        n = len(xg)
        fd_gen = frechet(xg @ pcs, xs @ pcs)
        fd_real = [frechet(xs[rng.choice(len(xs), n, replace=False)] @ pcs, xs @ pcs) for _ in range(5)]
        r["frechet_vs_real"] = round(fd_gen, 2)
        r["frechet_real_subset_vs_real"] = round(float(np.mean(fd_real)), 2)
        r["settings"] = info.get("settings", {})
        r["model"] = info.get("model")
        result["generated"][path] = r
        print(f"{path}: {n} clips, accuracy {r['accuracy']:.3f}, balanced {r['balanced_accuracy']:.3f}; "
              f"Frechet {fd_gen:.1f} (real subsets {np.mean(fd_real):.1f}); guidance "
              f"{info.get('settings', {}).get('guidance', 1.0)}")
        print("  confusion (rows requested, columns judged):", genres)
        for gname, row in zip(genres, r["confusion"]):
            print(f"    {gname:12s} {row}")
    if args.out_json:
        Path(args.out_json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
