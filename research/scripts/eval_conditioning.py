#!/usr/bin/env python3
"""Does genre (and artist) conditioning work? A judge trained on real clips of the corpus rates generated clips.

The judge is an evaluation tool, not part of the model:

1. Real clips: ``--clips-per-track`` clips of ``--clip-seconds`` from every track of the corpus (more from the
   genres with few tracks), features cached on disk (``--cache``) so later runs only do new work.
2. Features: hand-made (log-mel mean/std and delta spread, MFCC, spectral shape, octave-band contrast, onset
   and tempo statistics, modulation spectrum: numpy/torch only) and, optionally, musicnn embeddings computed by
   ``research/scripts/musicnn_embed.py`` in a separate Python environment (``--musicnn-python``).
3. Classifier: class-balanced multinomial logistic regression on standardised features. It is checked on real
   clips of tracks it never saw (stratified 5-fold cross-validation grouped by track), and by leaving out whole
   Debian packages (each package carries one style, so this shows it recognises the style, not the package).
   The feature set with the best grouped-by-track balanced accuracy becomes the judge.
4. Codec check: real clips passed through the model's VQ-VAE at the evaluated level (encode, decode) are judged
   too, so we know the judge still works on audio that has the codec's sound.
5. Generated clips (``--generated DIR`` from ``research/scripts/gen_conditioning_clips.py``, or ``--generate N`` to make
   them here with ``-m``): decoded with the model's VQ-VAE, judged for the requested genre (and, within a genre,
   the requested artist where the judge knows enough of that genre's artists), compared with real clips by a
   Frechet distance on the judge's embedding (with real-vs-real baselines at the same number of clips) and by
   spectral statistics, and drawn as log-mel spectrograms (``--png``).

Prints a summary and writes everything (confusion matrices included) to ``--out-json``.

    python research/scripts/eval_conditioning.py --musicnn-python /work/evalenv/bin/python              # judge only
    python research/scripts/eval_conditioning.py -m MODEL --generated OUT --musicnn-python /work/evalenv/bin/python \\
        --out-json results.json --png docs/conditioning_spectrograms.png
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gen_conditioning_clips import MAIN_GENRES, read_clips, vqvae_sha256  # noqa: E402

SR = 22050
FEATURE_VERSION = "hand-v1"
MUSICNN_VERSION = "musicnn-v1"


# ---------------------------------------------------------------------------------------------- real clips
@dataclass(frozen=True)
class Clip:
    """One real clip: ``seconds`` of ``file`` from ``start`` (corpus-relative path)."""

    file: str
    start: float
    genre: str
    artist: str
    package: str
    split: str
    index: int  # clip number within its track (0 = the one passed through the codec)

    @property
    def key(self) -> str:
        return f"{self.file}@{self.start:.2f}"


def plan_clips(rows: list[dict], seconds: float, per_track: int, small_genre_tracks: int = 10) -> list[Clip]:
    """``per_track`` evenly spaced clips from each track (twice as many for genres with few tracks)."""
    tracks_per_genre = Counter(r["genre"].lower() for r in rows)
    clips = []
    for r in rows:
        dur = float(r["seconds"])
        if dur < seconds + 1:
            continue
        genre = r["genre"].lower()
        k = per_track * (2 if tracks_per_genre[genre] < small_genre_tracks else 1)
        for j in range(k):
            start = round((j + 0.5) / k * (dur - seconds), 2)
            clips.append(Clip(r["file"], start, genre, r["artist"], r["package"], r["split"], j))
    return clips


def load_clip(corpus: Path, clip: Clip, seconds: float) -> np.ndarray:
    """A clip's mono audio [T] at 22.05 kHz (zero-padded to the full length)."""
    from jukebox.audio import load_audio

    n = int(seconds * SR)
    audio, _ = load_audio(corpus / clip.file, sample_rate=SR, offset_seconds=clip.start, duration_seconds=seconds)
    return np.pad(audio[:n], (0, max(0, n - len(audio)))).astype(np.float32)


# ---------------------------------------------------------------------------------------------- features
def _dct_matrix(n_out: int, n_in: int) -> torch.Tensor:
    k = torch.arange(n_out, dtype=torch.float64)[:, None]
    i = torch.arange(n_in, dtype=torch.float64)[None]
    return (torch.cos(math.pi / n_in * (i + 0.5) * k) * math.sqrt(2.0 / n_in)).float()


_BANDS_HZ = (0, 200, 400, 800, 1600, 3200, 6400, SR / 2)
_MOD_HZ = ((0.25, 1), (1, 2), (2, 4), (4, 8), (8, 16))


def frame_stats(audio: np.ndarray, sr: int = SR) -> dict[str, torch.Tensor]:
    """Frame-level descriptors of clips [B, T]: each entry [B, ...] (see :func:`hand_features`)."""
    from jukebox.eval.metrics import mel_filterbank

    n_fft, hop = 2048, 512
    x = torch.as_tensor(audio, dtype=torch.float32)
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()  # [B, F, N]
    power = spec.square() + 1e-10
    freqs = torch.linspace(0, sr / 2, spec.shape[1])
    mel = torch.log10(mel_filterbank(sr, n_fft, 64) @ power + 1e-10)  # [B, 64, N]
    total = power.sum(1)  # [B, N]
    centroid = (freqs[None, :, None] * power).sum(1) / total
    bandwidth = (((freqs[None, :, None] - centroid[:, None]) ** 2 * power).sum(1) / total).sqrt()
    rolloff = freqs[(power.cumsum(1) < 0.85 * total[:, None]).sum(1).clamp_max(len(freqs) - 1)]
    flatness = torch.exp(torch.log(power).mean(1)) / power.mean(1)
    frames = torch.nn.functional.pad(x, (n_fft // 2, n_fft // 2)).unfold(-1, n_fft, hop)  # [B, N, n_fft]
    zcr = (frames[..., 1:].sign() != frames[..., :-1].sign()).float().mean(-1)
    contrast, valley = [], []
    for lo, hi in zip(_BANDS_HZ[:-1], _BANDS_HZ[1:]):
        band = torch.log10(power[:, (freqs >= lo) & (freqs < hi)]).sort(1).values  # [B, f, N]
        q = max(1, band.shape[1] // 10)
        peak, low = band[:, -q:].mean(1), band[:, :q].mean(1)
        contrast.append(peak - low)
        valley.append(low)
    flux = torch.relu(mel[..., 1:] - mel[..., :-1]).mean(1)  # [B, N-1] onset strength
    hf = power[:, freqs >= 4000].sum(1) / total
    return dict(mel=mel, centroid=centroid, bandwidth=bandwidth, rolloff=rolloff, flatness=flatness,
                log_energy=torch.log10(total), zcr=zcr, contrast=torch.stack(contrast, 1),
                valley=torch.stack(valley, 1), flux=flux, hf_ratio=hf, fps=torch.tensor(sr / hop))


def tempo(flux: torch.Tensor, fps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Onset strength [B, N] -> pulse clarity [B, 1] (highest normalised autocorrelation between 40 and 240
    BPM), log2 of that tempo in BPM [B, 1], and the autocorrelation at 12 lags from 0.1 to 2 s [B, 12]."""
    centred = flux - flux.mean(-1, keepdim=True)
    n = centred.shape[-1]
    ac = torch.fft.irfft(torch.fft.rfft(centred, 2 * n).abs().square(), 2 * n)[:, :n]
    ac = ac / ac[:, :1].clamp_min(1e-8)
    lo, hi = int(fps * 60 / 240), int(fps * 60 / 40)
    best = ac[:, lo:hi + 1].max(-1)
    lags = torch.logspace(math.log10(0.1 * fps), math.log10(2.0 * fps), 12).round().long().clamp_max(n - 1)
    return best.values[:, None], torch.log2(60 * fps / (best.indices[:, None] + lo).float()), ac[:, lags]


def hand_features(audio: np.ndarray, sr: int = SR) -> np.ndarray:
    """Clips [B, T] -> hand-made features [B, 322] float32.

    64 log-mel means + 64 stds + 64 delta stds, 20 MFCC means + stds, mean/std of spectral centroid, bandwidth,
    roll-off, flatness, log energy and zero-crossing rate, octave-band contrast (7 mean, 7 std, 7 valley), onset
    strength mean/std and onset rate, tempo (pulse clarity, log2 tempo, 12 autocorrelation lags), and the
    modulation spectrum of 8 mel-band groups in 5 ranges (0.25-16 Hz).
    """
    s = frame_stats(audio, sr)
    mel, fps = s["mel"], float(s["fps"])
    mfcc = torch.einsum("km,bmn->bkn", _dct_matrix(20, 64), mel)
    parts = [mel.mean(-1), mel.std(-1), (mel[..., 1:] - mel[..., :-1]).std(-1), mfcc.mean(-1), mfcc.std(-1)]
    for name in ("centroid", "bandwidth", "rolloff"):
        v = torch.log2(s[name].clamp_min(20.0))
        parts += [v.mean(-1, keepdim=True), v.std(-1, keepdim=True)]
    for name in ("flatness", "log_energy", "zcr"):
        v = torch.log10(s[name].clamp_min(1e-8)) if name != "log_energy" else s[name]
        parts += [v.mean(-1, keepdim=True), v.std(-1, keepdim=True)]
    parts += [s["contrast"].mean(-1), s["contrast"].std(-1), s["valley"].mean(-1)]
    flux = s["flux"]
    fmean, fstd = flux.mean(-1, keepdim=True), flux.std(-1, keepdim=True)
    peaks = (flux[:, 1:-1] > flux[:, :-2]) & (flux[:, 1:-1] >= flux[:, 2:]) & (flux[:, 1:-1] > fmean + 0.5 * fstd)
    parts += [torch.log(fmean + 1e-6), torch.log(fstd + 1e-6), peaks.float().sum(-1, keepdim=True) / (
        flux.shape[-1] / fps)]
    parts += list(tempo(flux, fps))
    groups = mel.reshape(mel.shape[0], 8, 8, -1).mean(2)  # [B, 8, N]
    mod = torch.fft.rfft(groups - groups.mean(-1, keepdim=True), dim=-1).abs().square()
    mfreq = torch.fft.rfftfreq(groups.shape[-1], 1 / fps)
    for a, b in _MOD_HZ:
        parts.append(torch.log10(mod[..., (mfreq >= a) & (mfreq < b)].mean(-1) + 1e-8))
    return torch.cat(parts, dim=1).float().numpy()


#: Feature set names -> the cached kind they are made from (``handlf``: ``hand`` without loudness).
KIND_OF = {"hand": "hand", "handlf": "hand", "musicnn": "musicnn"}


def level_free(x: np.ndarray) -> np.ndarray:
    """Hand features [N, 322] -> the same without loudness: the clip's mean log-mel level is subtracted from the
    64 log-mel means and the 7 band valleys, and the mean MFCC 0 and mean log energy are dropped (-> [N, 320]).
    Every other hand feature is a spread, a difference of logs or a ratio, so it does not change with gain."""
    x = x.copy()
    offset = x[:, :64].mean(1, keepdims=True)
    x[:, :64] -= offset
    x[:, 258:265] -= offset
    return np.delete(x, [192, 240], axis=1)


def spectral_summary(audio: np.ndarray, sr: int = SR) -> dict[str, np.ndarray]:
    """Readable per-clip statistics [B] for the report: centroid and roll-off (Hz), flatness, RMS (dBFS),
    share of energy above 4 kHz, onset strength and pulse clarity."""
    s = frame_stats(audio, sr)
    rms = np.sqrt(np.mean(np.square(audio), axis=-1)) + 1e-9
    clarity = tempo(s["flux"], float(s["fps"]))[0][:, 0].numpy()
    return {"centroid_hz": s["centroid"].median(-1).values.numpy(), "rolloff_hz": s["rolloff"].median(-1).values
            .numpy(), "flatness": s["flatness"].median(-1).values.numpy(), "rms_dbfs": 20 * np.log10(rms),
            "hf_ratio_4k": s["hf_ratio"].mean(-1).numpy(), "onset_strength": s["flux"].mean(-1).numpy(),
            "pulse_clarity": clarity}


def musicnn_features(audio: np.ndarray, python: str, sr: int = SR) -> np.ndarray:
    """Clips [B, T] at ``sr`` -> musicnn embeddings [B, 250] (the MSD model's 200-d penultimate layer and its 50
    tag probabilities, means over non-overlapping 3 s patches), computed by research/scripts/musicnn_embed.py with
    another Python."""
    import soxr

    x = np.stack([soxr.resample(a, sr, 16000) for a in audio]).astype(np.float16)
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "in.npz", audio=x)
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run([python, str(HERE / "musicnn_embed.py"), str(Path(tmp) / "in.npz"),
                               str(Path(tmp) / "out.npz"), "--models", "MSD_musicnn", "--patch-hop", "3"],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"error: musicnn_embed.py failed: {proc.stderr.strip().splitlines()[-1:]}")
        d = np.load(Path(tmp) / "out.npz")
        return np.concatenate([d["MSD_musicnn_penultimate"], d["MSD_musicnn_tags"]], axis=1)


class FeatureCache:
    """Features per clip key in one .npz file, saved after every chunk (interrupted runs resume)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, np.ndarray] = {}
        if path.exists():
            d = np.load(path, allow_pickle=False)
            self.data = dict(zip(d["keys"].tolist(), d["feats"]))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(list(self.data)), feats=np.stack(list(self.data.values())))
        os.replace(tmp, self.path)


def clip_features(clips: list[Clip], corpus: Path, seconds: float, kinds: list[str], cache_dir: Path,
                  variant: str = "raw", transform=None, musicnn_python: str | None = None,
                  chunk: int = 256) -> dict[str, np.ndarray]:
    """Features of real clips, kind -> [N, D], from the cache or computed (``transform``: audio [B, T] -> [B, T],
    e.g. the codec round trip of ``variant``, whose output audio is cached too: see :func:`clip_audio`)."""
    caches = {k: FeatureCache(cache_dir / f"{k}_{variant}_{seconds:g}s.npz") for k in kinds}
    missing = [c for c in clips if any(c.key not in caches[k].data for k in kinds)]
    t0 = time.perf_counter()
    for b in range(0, len(missing), chunk):
        part = missing[b:b + chunk]
        if transform is not None:
            audio = clip_audio(part, corpus, seconds, cache_dir, variant, transform)
        else:
            audio = np.stack([load_clip(corpus, c, seconds) for c in part])
        for k in kinds:
            if k == "hand":
                feats = np.concatenate([hand_features(audio[i:i + 32]) for i in range(0, len(audio), 32)])
            elif k == "musicnn":
                feats = musicnn_features(audio, musicnn_python)
            else:
                raise ValueError(k)
            caches[k].data.update(zip([c.key for c in part], feats))
            caches[k].save()
        print(f"  {variant}: {b + len(part)}/{len(missing)} clips ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return {k: np.stack([caches[k].data[c.key] for c in clips]) for k in kinds}


def clip_audio(clips: list[Clip], corpus: Path, seconds: float, cache_dir: Path, variant: str = "raw",
               transform=None) -> np.ndarray:
    """Audio [N, T] of real clips; a transformed ``variant`` is cached (float16) because it is slow to make."""
    if transform is None:
        return np.stack([load_clip(corpus, c, seconds) for c in clips])
    cache = FeatureCache(cache_dir / f"audio_{variant}_{seconds:g}s.npz")
    missing = [c for c in clips if c.key not in cache.data]
    for b in range(0, len(missing), 16):
        part = missing[b:b + 16]
        out = transform(np.stack([load_clip(corpus, c, seconds) for c in part]))
        cache.data.update(zip([c.key for c in part], out.astype(np.float16)))
        cache.save()
    return np.stack([cache.data[c.key] for c in clips]).astype(np.float32)


def codec_transform(model, level: int, batch: int = 8):
    """audio [B, T] -> the same through the model's VQ-VAE at ``level`` (encode, decode)."""
    def run(audio: np.ndarray) -> np.ndarray:
        out = []
        top = max(model.hop_lengths)
        for b in range(0, len(audio), batch):
            x = torch.from_numpy(audio[b:b + batch])[:, None]
            x = torch.nn.functional.pad(x, (0, -x.shape[-1] % top))
            codes = model.vqvae.encode(x, start_level=level, end_level=level + 1)[0]  # this level's encoder only
            out.append(model.decode({level: codes}, level)[:, 0, :audio.shape[1]].numpy())
        return np.concatenate(out)
    return run


# ---------------------------------------------------------------------------------------------- classifier
@dataclass
class LogReg:
    """Multinomial logistic regression on standardised features (fit with :func:`fit_logreg`)."""

    mu: np.ndarray
    sd: np.ndarray
    w: torch.Tensor  # [D, K]
    b: torch.Tensor  # [K]

    def logits(self, x: np.ndarray) -> np.ndarray:
        z = torch.tensor((x - self.mu) / self.sd, dtype=torch.float32)
        return (z @ self.w + self.b).numpy()

    def predict(self, x: np.ndarray, allowed: list[int] | None = None) -> np.ndarray:
        """Class ids [N]; ``allowed`` restricts the choice to some classes."""
        lg = self.logits(x)
        if allowed is not None:
            mask = np.full(lg.shape[1], -np.inf)
            mask[allowed] = 0
            lg = lg + mask
        return lg.argmax(1)


def fit_logreg(x: np.ndarray, y: np.ndarray, n_classes: int, wd: float = 1e-2) -> LogReg:
    """Class-balanced (each class weighs the same in the loss) L2-regularised logistic regression, L-BFGS."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.tensor((x - mu) / sd, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    counts = torch.bincount(yt, minlength=n_classes).float()
    weight = torch.where(counts > 0, len(y) / (n_classes * counts.clamp_min(1)), torch.zeros_like(counts))
    w = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=100, history_size=20, tolerance_change=1e-6,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt, weight=weight) + wd * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LogReg(mu, sd, w.detach(), b.detach())


def stratified_group_folds(groups: list[str], labels: list[str], k: int = 5, seed: int = 0) -> np.ndarray:
    """Fold id per clip: the tracks (groups) of each label are shuffled and dealt to the k folds in turn."""
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    by_label: dict[str, list[str]] = defaultdict(list)
    for g, lab in zip(groups, labels):
        if g not in by_label[lab]:
            by_label[lab].append(g)
    offset = 0
    for lab in sorted(by_label):
        tracks = sorted(by_label[lab])
        rng.shuffle(tracks)
        for i, t in enumerate(tracks):
            fold_of[t] = (i + offset) % k
        offset += len(tracks)
    return np.array([fold_of[g] for g in groups])


def cross_val_predict(x: np.ndarray, y: np.ndarray, folds: np.ndarray, n_classes: int, wd: float) -> np.ndarray:
    """Out-of-fold predictions (-1 where not predicted): each fold judged by a model fit on the others."""
    pred = np.full(len(y), -1)
    for f in np.unique(folds):
        test = folds == f
        clf = fit_logreg(x[folds != f], y[folds != f], n_classes, wd)
        pred[test] = clf.predict(x[test], sorted(set(y[folds != f].tolist())))
    return pred


def scores(y: np.ndarray, pred: np.ndarray, names: list[str]) -> dict:
    """Accuracy, balanced accuracy (mean recall over classes present), per-class recall, confusion (rows: true)."""
    keep = pred >= 0
    y, pred = y[keep], pred[keep]
    conf = np.zeros((len(names), len(names)), dtype=int)
    np.add.at(conf, (y, pred), 1)
    present = [i for i in range(len(names)) if conf[i].sum() > 0]
    recall = {names[i]: round(conf[i, i] / conf[i].sum(), 3) for i in present}
    return {"n": int(len(y)), "accuracy": round(float((y == pred).mean()), 3) if len(y) else None,
            "balanced_accuracy": round(float(np.mean(list(recall.values()))), 3) if recall else None,
            "chance": round(1 / len(present), 3) if present else None, "recall": recall,
            "labels": names, "confusion": conf.tolist()}


# ---------------------------------------------------------------------------------------------- distances
def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two sets of embeddings [N, D] and [M, D]."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    # tr(sqrt(s1 s2)) = sum of sqrt of the eigenvalues of s1 s2 (real, >= 0 up to rounding): numpy only, no scipy
    eig = np.linalg.eigvals(s1 @ s2)
    tr_covmean = float(np.sqrt(np.clip(np.real(eig), 0.0, None)).sum())
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2) - 2 * tr_covmean)


def matched_sample(pool_genres: np.ndarray, pool_groups: np.ndarray, want: Counter, rng) -> np.ndarray:
    """Indices into a pool with the wanted number of clips per genre, spread over as many tracks as possible."""
    out = []
    for g, n in want.items():
        idx = np.flatnonzero(pool_genres == g)
        if len(idx) == 0:
            continue
        rng.shuffle(idx)
        seen, first, rest = set(), [], []
        for i in idx:
            (rest if pool_groups[i] in seen else first).append(i)
            seen.add(pool_groups[i])
        out += (first + rest)[:n]
    return np.array(out)


# ---------------------------------------------------------------------------------------------- generated
def load_generated(path: Path, model, level: int | None) -> tuple[np.ndarray, list[dict], int, dict]:
    """Decode conditioning clips -> audio [N, T], items, level, info. ``path``: a folder with cond_clips.json and
    cond_codes.npz, or a ``PREFIX_clips.json`` file with its ``PREFIX_codes.npz`` beside it."""
    clips_file = path / "cond_clips.json" if path.is_dir() else path
    if not clips_file.name.endswith("_clips.json") or not clips_file.exists():
        raise SystemExit(f"error: {path}: expected a folder with cond_clips.json or a PREFIX_clips.json file")
    info, codes = read_clips(clips_file, model.model_dir.path)
    have = sorted(int(k.split("_")[1]) for k in codes.files)
    level = min(have) if level is None else level
    if level not in have:
        raise SystemExit(f"error: {clips_file} has codes of levels {have}, not {level}")
    z = torch.from_numpy(codes[f"level_{level}"].astype(np.int64))
    if len(z) != len(info["items"]):
        raise SystemExit(f"error: {clips_file}: {len(z)} code rows for {len(info['items'])} items")
    audio = np.concatenate([model.decode({level: z[b:b + 8]}, level)[:, 0].numpy() for b in range(0, len(z), 8)])
    return audio.astype(np.float32), info["items"], level, info


def spectrogram_png(path: Path, rows: list[tuple[str, list[tuple[str, np.ndarray]]]]) -> None:
    """A grid of log-mel spectrograms: one row per genre, columns (title, audio [T])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jukebox.eval.metrics import mel_filterbank, stft_magnitude

    fb = mel_filterbank(SR, 1024, 64)
    ncol = max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.3 * ncol, 1.25 * len(rows)), squeeze=False)
    for i, (genre, cols) in enumerate(rows):
        for j in range(ncol):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(cols):
                ax.axis("off")
                continue
            title, audio = cols[j]
            mag = stft_magnitude(torch.from_numpy(audio)[None], 1024, 256, 1024)[0]
            mel = 10 * torch.log10(fb @ mag.square() + 1e-10)
            ax.imshow(mel.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=float(mel.max()) - 80,
                      vmax=float(mel.max()))
            if i == 0:
                ax.set_title(title, fontsize=7)
            if j == 0:
                ax.set_ylabel(genre, fontsize=7)
    fig.tight_layout(pad=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)
    plt.close(fig)
    from PIL import Image

    Image.open(path).convert("RGB").quantize(colors=48).save(path, optimize=True)  # small enough to commit


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=None, help="model directory (its VQ-VAE; default: embedded model)")
    ap.add_argument("--corpus", default="/work/corpus")
    ap.add_argument("--cache", default="/work/evalcache")
    ap.add_argument("--genres", nargs="+", default=list(MAIN_GENRES), help="genres the judge knows; 'all': every "
                    "genre of the corpus (default: %(default)s)")
    ap.add_argument("--clip-seconds", type=float, default=8.0)
    ap.add_argument("--clips-per-track", type=int, default=4)
    ap.add_argument("--features", nargs="+", default=["hand", "handlf", "musicnn", "hand+musicnn", "handlf+musicnn"],
                    help="feature sets to compare: hand, handlf (hand without loudness), musicnn (needs "
                    "--musicnn-python), joined by + (default: %(default)s)")
    ap.add_argument("--musicnn-python", default=None, help="a Python with musicnn (see musicnn_embed.py)")
    ap.add_argument("--wd", type=float, nargs="+", default=[1e-2, 3e-2, 1e-1], help="L2 weights to try")
    ap.add_argument("--codec-tracks-per-genre", type=int, default=6, help="held-out tracks per genre whose clips "
                    "are also passed through the codec (slow on CPU; 0: none)")
    ap.add_argument("--codec-clip-step", type=int, default=1, help="of those tracks, every N-th clip only")
    ap.add_argument("--level", type=int, default=None, help="level to decode generated clips from and to pass "
                    "real clips through (default: the lowest level in --generated, else 0)")
    ap.add_argument("--generated", default=None, help="conditioning clips from gen_conditioning_clips.py: "
                    "their folder, or a PREFIX_clips.json file")
    ap.add_argument("--generate", type=int, default=0, help="make this many clips per genre here first (slow)")
    ap.add_argument("--gen-levels", type=int, nargs="+", default=None, help="levels for --generate")
    ap.add_argument("--min-artist-tracks", type=int, default=5, help="artists the judge learns: >= this many tracks")
    ap.add_argument("--fd-dims", type=int, default=32, help="principal components for the Frechet distance")
    ap.add_argument("--out-json", default=None)
    ap.add_argument("--png", default=None, help="spectrogram grid (real, codec, generated) to write")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    corpus, cache = Path(args.corpus), Path(args.cache)
    rows = list(csv.DictReader(open(corpus / "metadata.csv", encoding="utf-8")))
    all_genres = sorted({r["genre"].lower() for r in rows})
    genres = all_genres if args.genres == ["all"] else [g.lower() for g in args.genres]
    unknown = set(genres) - set(all_genres)
    if unknown:
        raise SystemExit(f"error: genres {sorted(unknown)} are not in the corpus (has {all_genres})")
    kinds_wanted = sorted({KIND_OF[k] for fs in args.features for k in fs.split("+")})
    if "musicnn" in kinds_wanted and not args.musicnn_python:
        print("note: no --musicnn-python: comparing hand-made features only", file=sys.stderr)
        args.features = [f for f in args.features if "musicnn" not in f]
        kinds_wanted = ["hand"]
    result: dict = {"genres": genres, "clip_seconds": args.clip_seconds}

    clips = [c for c in plan_clips(rows, args.clip_seconds, args.clips_per_track) if c.genre in genres]
    gid = {g: i for i, g in enumerate(genres)}
    y = np.array([gid[c.genre] for c in clips])
    tracks = np.array([c.file for c in clips])
    packages = np.array([c.package for c in clips])
    print(f"real clips: {len(clips)} from {len(set(tracks))} tracks", file=sys.stderr)
    feats = clip_features(clips, corpus, args.clip_seconds, kinds_wanted, cache,
                          musicnn_python=args.musicnn_python)

    def featset(name: str, parts: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([level_free(parts["hand"]) if k == "handlf" else parts[k] for k in name.split("+")],
                              axis=1)

    # --- the judge on real clips of unseen tracks: pick features and regularisation
    folds = stratified_group_folds(list(tracks), [c.genre for c in clips])
    comparison = {}
    for fs in args.features:
        x = featset(fs, feats)
        for wd in args.wd:
            s = scores(y, cross_val_predict(x, y, folds, len(genres), wd), genres)
            comparison[f"{fs} wd={wd:g}"] = {"accuracy": s["accuracy"], "balanced_accuracy": s["balanced_accuracy"]}
            print(f"  {fs:14s} wd={wd:<6g} grouped-by-track accuracy {s['accuracy']:.3f} balanced "
                  f"{s['balanced_accuracy']:.3f}", file=sys.stderr)
    best = max(comparison, key=lambda k: comparison[k]["balanced_accuracy"])
    best_fs, best_wd = best.split(" wd=")[0], float(best.split(" wd=")[1])
    x_real = featset(best_fs, feats)
    result["judge"] = {"features": best_fs, "wd": best_wd, "classifier": "class-balanced logistic regression",
                       "clips": len(clips), "tracks": int(len(set(tracks))),
                       "clips_per_genre": dict(Counter(c.genre for c in clips)),
                       "tracks_per_genre": dict(Counter(c.genre for c in {c.file: c for c in clips}.values())),
                       "comparison_grouped_by_track": comparison}
    pred_track = cross_val_predict(x_real, y, folds, len(genres), best_wd)
    result["real_grouped_by_track"] = scores(y, pred_track, genres)
    # leave one package out, for the genres that have several packages
    pk_of_genre = defaultdict(set)
    for c in clips:
        pk_of_genre[c.genre].add(c.package)
    multi = np.array([len(pk_of_genre[c.genre]) > 1 for c in clips])
    pred_pkg = np.full(len(y), -1)
    for p in sorted(set(packages)):
        test = (packages == p) & multi
        if test.any():
            clf = fit_logreg(x_real[packages != p], y[packages != p], len(genres), best_wd)
            pred_pkg[test] = clf.predict(x_real[test], sorted(set(y[packages != p].tolist())))
    result["real_leave_one_package_out"] = scores(y, pred_pkg, genres)
    result["real_leave_one_package_out"]["note"] = ("genres with one package only are not tested: "
                                                    + ", ".join(g for g in genres if len(pk_of_genre[g]) == 1))

    # --- model, level, codec check
    gen_dir = Path(args.generated) if args.generated else None
    model = None
    if args.generate:
        gen_dir = cache / f"generated_{args.generate}_per_genre"
        cmd = [sys.executable, str(HERE / "gen_conditioning_clips.py"), "--per-genre", str(args.generate),
               "--seconds", str(args.clip_seconds), "--genres", *genres, "--out", str(gen_dir)]
        cmd += (["-m", args.model] if args.model else []) + (["--levels", *map(str, args.gen_levels)]
                                                              if args.gen_levels else [])
        subprocess.run(cmd, check=True)
    if gen_dir is not None or args.codec_tracks_per_genre > 0:
        import jukebox

        model = jukebox.load_model(args.model, device="cpu")
    level = args.level
    gen_audio = None
    if gen_dir is not None:
        gen_audio, gen_items, level, gen_info = load_generated(gen_dir, model, args.level)
        result["generated_from"] = {"folder": str(gen_dir), "model": gen_info.get("model"), "level": level,
                                    "settings": gen_info.get("settings"), "levels": gen_info.get("levels")}
    level = 0 if level is None else level
    result["level"] = level
    # held-out fold 0: its tracks give the codec check and the real baselines of the distances
    heldout = folds == 0
    codec_idx = codec_subset(clips, heldout, args.codec_tracks_per_genre, args.codec_clip_step)
    x_codec = None
    variant = ""
    if model is not None and len(codec_idx):
        sha8 = vqvae_sha256(model.model_dir.path)[:8]
        variant = f"codec{level}-{sha8}"
        codec_clips = [clips[i] for i in codec_idx]
        cf = clip_features(codec_clips, corpus, args.clip_seconds, kinds_wanted, cache, variant=variant,
                           transform=codec_transform(model, level), musicnn_python=args.musicnn_python)
        x_codec = featset(best_fs, cf)
        # a judge fit on raw clips of the other folds rates the same unseen clips, raw and through the codec
        clf = fit_logreg(x_real[~heldout], y[~heldout], len(genres), best_wd)
        result["codec_check"] = {
            "level": level, "tracks": len({c.file for c in codec_clips}),
            "same_clips_raw": scores(y[codec_idx], clf.predict(x_real[codec_idx]), genres),
            "same_clips_through_codec": scores(y[codec_idx], clf.predict(x_codec), genres)}

    # --- the final judge: every real clip (raw, plus the codec'd ones as augmentation)
    x_fit, y_fit = x_real, y
    if x_codec is not None:
        x_fit, y_fit = np.concatenate([x_real, x_codec]), np.concatenate([y, y[codec_idx]])
    judge = fit_logreg(x_fit, y_fit, len(genres), best_wd)

    if gen_audio is not None:
        req = [it["genre"].lower() for it in gen_items]
        keep = np.array([g in gid for g in req])
        gparts = {"hand": hand_features(gen_audio)}
        if "musicnn" in best_fs:
            gparts["musicnn"] = musicnn_features(gen_audio, args.musicnn_python)
        xg = featset(best_fs, gparts)
        yg = np.array([gid.get(g, -1) for g in req])
        pg = judge.predict(xg[keep])
        result["generated"] = scores(yg[keep], pg, genres)
        result["generated"]["clips"] = int(keep.sum())
        # artists: within each genre, among that genre's artists with enough tracks
        result["artists"] = artist_report(clips, x_real, tracks, gen_items, xg, best_wd, args.min_artist_tracks)
        # Frechet distance on the judge's features, standardised by the reference (real) clips
        result["frechet"] = frechet_report(x_real, y, tracks, heldout, xg[keep], yg[keep], x_codec, codec_idx,
                                           args.fd_dims)
        # spectral statistics per genre: real clips of the held-out tracks, the same through the codec, generated
        stats = {}
        stat_idx = codec_idx if len(codec_idx) else np.flatnonzero(heldout)
        codec_clips = [clips[i] for i in stat_idx]
        real_audio = clip_audio(codec_clips, corpus, args.clip_seconds, cache)
        sets = {"real": (real_audio, [c.genre for c in codec_clips])}
        if len(codec_idx):
            sets[f"real_codec_level{level}"] = (clip_audio(codec_clips, corpus, args.clip_seconds, cache, variant,
                                                           codec_transform(model, level)), sets["real"][1])
        sets["generated"] = (gen_audio[keep], list(np.array(req)[keep]))
        for name, (audio, gl) in sets.items():
            summ = spectral_summary(audio)
            stats[name] = {g: {k: round(float(np.mean(v[np.array(gl) == g])), 4) for k, v in summ.items()}
                           for g in genres if g in gl}
            stats[name]["all"] = {k: round(float(np.mean(v)), 4) for k, v in summ.items()}
        result["spectral_stats"] = stats
        if args.png:
            grid = []
            for g in genres:
                ri = [i for i, gg in enumerate(sets["real"][1]) if gg == g][:1]
                gi = [i for i, gg in enumerate(sets["generated"][1]) if gg == g][:2]
                if not ri or not gi:
                    continue
                cols = [("real", sets["real"][0][ri[0]])]
                if f"real_codec_level{level}" in sets:
                    cols.append((f"real via codec L{level}", sets[f"real_codec_level{level}"][0][ri[0]]))
                cols += [(f"generated {k + 1} (L{level})", sets["generated"][0][i]) for k, i in enumerate(gi)]
                grid.append((g, cols))
            spectrogram_png(Path(args.png), grid)
            result["png"] = args.png
    elif args.min_artist_tracks:
        result["artists"] = artist_report(clips, x_real, tracks, None, None, best_wd, args.min_artist_tracks)
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    if args.out_json:
        Path(args.out_json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print_summary(result)


def artist_report(clips: list[Clip], x: np.ndarray, tracks: np.ndarray, gen_items: list[dict] | None,
                  xg: np.ndarray | None, wd: float, min_tracks: int) -> dict:
    """Per genre: grouped-by-track accuracy of an artist classifier on real clips, and on generated clips."""
    out = {}
    for genre in sorted({c.genre for c in clips}):
        n_tracks = Counter(c.artist for c in {c.file: c for c in clips if c.genre == genre}.values())
        artists = sorted(a for a, n in n_tracks.items() if n >= min_tracks)
        if len(artists) < 2:
            continue
        aid = {a: i for i, a in enumerate(artists)}
        idx = np.array([i for i, c in enumerate(clips) if c.genre == genre and c.artist in aid])
        ya = np.array([aid[clips[i].artist] for i in idx])
        folds = stratified_group_folds(list(tracks[idx]), [clips[i].artist for i in idx])
        entry = {"artists": {a: n_tracks[a] for a in artists},
                 "real_grouped_by_track": scores(ya, cross_val_predict(x[idx], ya, folds, len(artists), wd),
                                                 artists)}
        if gen_items is not None:
            gsel = [i for i, it in enumerate(gen_items) if it["genre"].lower() == genre
                    and it["artist"].lower() in {a.lower() for a in artists}]
            if gsel:
                low = {a.lower(): i for i, a in enumerate(artists)}
                clf = fit_logreg(x[idx], ya, len(artists), wd)
                yg = np.array([low[gen_items[i]["artist"].lower()] for i in gsel])
                entry["generated"] = scores(yg, clf.predict(xg[gsel]), artists)
                entry["generated"]["chance"] = round(1 / len(artists), 3)  # the judge picks among all of them
        out[genre] = entry
    return out


def codec_subset(clips: list[Clip], heldout: np.ndarray, per_genre: int, step: int = 1) -> np.ndarray:
    """Indices of the clips (every ``step``-th of a track) of up to ``per_genre`` held-out tracks per genre, the
    tracks taken from the genre's packages in turn."""
    by_genre: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for i, c in enumerate(clips):
        if heldout[i] and c.file not in by_genre[c.genre][c.package]:
            by_genre[c.genre][c.package].append(c.file)
    chosen = set()
    for pk in by_genre.values():
        queues = [sorted(v) for _, v in sorted(pk.items())]
        picked = 0
        while picked < per_genre and any(queues):
            for q in queues:
                if q and picked < per_genre:
                    chosen.add(q.pop(0))
                    picked += 1
    return np.array([i for i, c in enumerate(clips) if c.file in chosen and c.index % step == 0], dtype=int)


def frechet_report(x: np.ndarray, y: np.ndarray, tracks: np.ndarray, heldout: np.ndarray, xg: np.ndarray,
                   yg: np.ndarray, x_codec: np.ndarray | None, codec_idx: np.ndarray, dims: int,
                   draws: int = 10) -> dict:
    """Frechet distances to the real clips of the training folds (the reference) of: generated clips, real clips
    of held-out tracks, and those clips through the codec, all with the same number of clips and genre mix
    (repeated draws). Computed on the first ``dims`` principal components of the features standardised by the
    reference (few clips cannot fill a covariance of hundreds of dimensions)."""
    rng = np.random.default_rng(0)
    ref = x[~heldout]
    mu, sd = ref.mean(0), ref.std(0) + 1e-6
    _, _, vt = np.linalg.svd((ref - mu) / sd, full_matrices=False)
    proj = vt[:dims].T

    def z(a: np.ndarray) -> np.ndarray:
        return ((a - mu) / sd) @ proj

    want = Counter(yg.tolist())
    hidx = np.flatnonzero(heldout)
    pools = {"real_heldout_vs_real": (x[hidx], y[hidx], tracks[hidx])}
    if x_codec is not None:
        pools["real_heldout_codec_vs_real"] = (x_codec, y[codec_idx], tracks[codec_idx])
    # the common size: what every pool can give of each genre
    for _, (_, py, _) in pools.items():
        have = Counter(py.tolist())
        want = Counter({g: min(n, have.get(g, 0)) for g, n in want.items()})
    res: dict[str, list[float]] = defaultdict(list)
    zref = z(ref)
    for _ in range(draws):
        gpick = np.concatenate([rng.permutation(np.flatnonzero(yg == g))[:n] for g, n in want.items()])
        res["generated_vs_real"].append(frechet(z(xg[gpick]), zref))
        for name, (px, py, pt) in pools.items():
            res[name].append(frechet(z(px[matched_sample(py, pt, want, rng)]), zref))
    out = {k: {"mean": round(float(np.mean(v)), 2), "sd": round(float(np.std(v)), 2)} for k, v in res.items()}
    return out | {"clips_per_set": int(sum(want.values())), "dims": dims, "draws": draws,
                  "reference_clips": int(len(ref))}


def print_summary(r: dict) -> None:
    """The headline numbers, one per line."""
    j = r["judge"]
    print(f"judge: {j['features']} features, wd {j['wd']:g}, {j['clips']} real clips from {j['tracks']} tracks")
    for name in ("real_grouped_by_track", "real_leave_one_package_out"):
        s = r[name]
        print(f"{name}: accuracy {s['accuracy']}, balanced {s['balanced_accuracy']} (chance {s['chance']}), "
              f"recall {s['recall']}")
    if "codec_check" in r:
        c = r["codec_check"]
        print(f"codec check (level {c['level']}): raw {c['same_clips_raw']['balanced_accuracy']}, through the codec "
              f"{c['same_clips_through_codec']['balanced_accuracy']}")
    if "generated" in r:
        g = r["generated"]
        print(f"generated ({g['clips']} clips): accuracy {g['accuracy']}, balanced {g['balanced_accuracy']} (chance "
              f"{g['chance']}), recall {g['recall']}")
        print("confusion (rows: requested, columns: judged):", g["labels"])
        for lab, row in zip(g["labels"], g["confusion"]):
            print(f"  {lab:12s} {row}")
        print("frechet:", {k: v for k, v in r["frechet"].items() if isinstance(v, dict)})
    for genre, a in r.get("artists", {}).items():
        line = f"artists/{genre}: real {a['real_grouped_by_track']['balanced_accuracy']} (chance " \
               f"{a['real_grouped_by_track']['chance']})"
        if "generated" in a:
            line += f", generated {a['generated']['accuracy']} of {a['generated']['n']}"
        print(line)


if __name__ == "__main__":
    main()
