"""The code cache: a corpus encoded once by the frozen VQ-VAE, shared by the three priors.

Layout of a cache folder::

    index.json     {"format": "jukebox-code-cache", "version": 1, "fingerprint": <VQ-VAE hash>, "sample_rate",
                    "hop_lengths", "l_bins", "dtype", "lengths": [codes per level],
                    "tracks": {path: {"duration", "total_length", "start": [per level], "length": [per level]}}}
    level_0.bin    every track's level-0 codes, concatenated (raw little-endian int16; int32 above 32767 codes)
    level_1.bin    ...

The ``.bin`` files are memory-mapped, so a prior's batch reads only its windows. The cache is keyed by the
VQ-VAE's fingerprint (a hash of its config and weight files): when the VQ-VAE changes, or the corpus gains tracks
the cache lacks, :func:`ensure_code_cache` rebuilds it. Labels are not stored: they come from the manifest at
training time, so relabelling a corpus never needs re-encoding.

Tracks are encoded in chunks with a margin of context on each side (trimmed afterwards), so long songs need
bounded memory; a track is cut to a whole number of top-level codes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import load_audio
from ..checkpoint.atomic import swap_in_folder
from ..errors import JukeboxError
from .dataset import Manifest, Track

FORMAT = "jukebox-code-cache"
VERSION = 1
INDEX = "index.json"


def vqvae_fingerprint(vqvae_folder: str | Path) -> str:
    """sha256 of a VQ-VAE component folder's config and weight files (what the codes depend on)."""
    folder = Path(vqvae_folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix == ".safetensors" or p.name in (
        "config.json", "model.safetensors.index.json")))
    if not files:
        raise JukeboxError(f"{folder}: no VQ-VAE weights to fingerprint")
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class CachedTrack:
    """Where one track's codes lie in the level files."""

    path: str
    duration: float
    total_length: int  # samples at the model rate (before trimming to whole top-level codes)
    start: tuple[int, ...]
    length: tuple[int, ...]


class CodeCache:
    """An opened cache: per-level memory maps and the track table."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / INDEX
        if not path.is_file():
            raise JukeboxError(f"{self.root}: not a code cache (no {INDEX})")
        try:
            self.index: dict[str, Any] = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise JukeboxError(f"{path}: corrupt code cache index ({e})") from None
        if self.index.get("format") != FORMAT or self.index.get("version") != VERSION:
            raise JukeboxError(f"{path}: not a {FORMAT} v{VERSION} index")
        self.fingerprint: str = self.index["fingerprint"]
        self.sample_rate: int = int(self.index["sample_rate"])
        self.hop_lengths: tuple[int, ...] = tuple(self.index["hop_lengths"])
        self.l_bins: int = int(self.index["l_bins"])
        self.tracks: dict[str, CachedTrack] = {
            p: CachedTrack(p, float(t["duration"]), int(t["total_length"]), tuple(t["start"]), tuple(t["length"]))
            for p, t in self.index["tracks"].items()
        }
        dtype = np.dtype(self.index["dtype"])
        self._levels = []
        for level, n in enumerate(self.index["lengths"]):
            f = self.root / f"level_{level}.bin"
            if not f.is_file() or f.stat().st_size != n * dtype.itemsize:
                raise JukeboxError(f"{f}: missing or truncated (expected {n} codes); rebuild the cache")
            self._levels.append(np.memmap(f, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype))

    @property
    def levels(self) -> int:
        return len(self.hop_lengths)

    def codes(self, path: str, level: int) -> np.ndarray:
        """The codes of track ``path`` at ``level``: a read-only view [length] (int16 or int32)."""
        t = self.tracks[path]
        return self._levels[level][t.start[level]:t.start[level] + t.length[level]]

    def covers(self, manifest: Manifest, fingerprint: str) -> bool:
        """Whether this cache was made by the VQ-VAE ``fingerprint`` and holds every track of ``manifest``."""
        if fingerprint != self.fingerprint or manifest.sample_rate not in (None, self.sample_rate):
            return False
        return all(t.path in self.tracks and abs(self.tracks[t.path].duration - t.duration) < 1e-3
                   for t in manifest.tracks)


def _segments(n: int, chunk: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + chunk)) for s in range(0, n, chunk)]


@torch.no_grad()
def encode_track(vqvae: Any, audio: np.ndarray, chunk: int = 1 << 19, margin: int = 1 << 15,
                 batch_size: int = 4) -> list[np.ndarray]:
    """Codes of every level for mono ``audio`` [T] (cut to a whole number of top-level codes).

    The track is cut into ``chunk`` samples, each encoded with ``margin`` samples of context on both sides
    (zeros beyond the ends) whose codes are then dropped. ``chunk`` and ``margin`` are rounded to multiples of
    the top hop length. Returns one int64 array [T // hop_l] per level.
    """
    hops = vqvae.config.hop_lengths
    top = hops[-1]
    chunk = max(top, chunk // top * top)
    margin = margin // top * top
    n = len(audio) // top * top
    if n == 0:
        return [np.zeros(0, np.int64) for _ in hops]
    if chunk >= n:  # one piece: the convolutions' own zero padding is exactly what a margin of zeros would give
        chunk, margin = n, 0
    device = next(vqvae.parameters()).device
    padded = np.zeros(n + 2 * margin + chunk, np.float32)
    padded[margin:margin + n] = audio[:n]
    segs = _segments(n, chunk)
    out: list[list[np.ndarray]] = [[] for _ in hops]
    for b in range(0, len(segs), batch_size):
        group = segs[b:b + batch_size]
        x = np.stack([padded[s:s + chunk + 2 * margin] for s, _ in group])
        codes = vqvae.encode(torch.from_numpy(x).to(device)[:, None])
        for level, hop in enumerate(hops):
            c = codes[level].cpu().numpy()
            for i, (s, e) in enumerate(group):
                out[level].append(c[i, margin // hop:(margin + e - s) // hop])
    return [np.concatenate(parts).astype(np.int64) for parts in out]


def build_code_cache(manifest: Manifest, vqvae: Any, root: str | Path, fingerprint: str,
                     tracks: Sequence[Track] | None = None, chunk: int = 1 << 19, margin: int = 1 << 15,
                     progress: Callable[[int, int, str], None] | None = None) -> CodeCache:
    """Encode ``tracks`` (default: all of ``manifest``) with ``vqvae`` into a new cache at ``root``.

    Written into a temporary folder that replaces ``root`` only when complete.
    """
    root = Path(root)
    tracks = list(manifest.tracks if tracks is None else tracks)
    sr = vqvae.config.sample_rate
    l_bins = vqvae.config.l_bins
    dtype = np.dtype("<i2") if l_bins <= 32767 else np.dtype("<i4")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        files = [open(tmp / f"level_{lvl}.bin", "wb") for lvl in range(len(vqvae.config.hop_lengths))]
        lengths = [0] * len(files)
        table: dict[str, Any] = {}
        was_training = vqvae.training
        vqvae.eval()
        try:
            for i, track in enumerate(tracks):
                if progress is not None:
                    progress(i, len(tracks), track.path)
                audio, _ = load_audio(manifest.track_path(track), sample_rate=sr)
                codes = encode_track(vqvae, audio, chunk=chunk, margin=margin)
                table[track.path] = {"duration": track.duration, "total_length": int(len(audio)),
                                     "start": list(lengths), "length": [len(c) for c in codes]}
                for lvl, c in enumerate(codes):
                    files[lvl].write(c.astype(dtype).tobytes())
                    lengths[lvl] += len(c)
        finally:
            vqvae.train(was_training)
            for f in files:
                f.flush()
                os.fsync(f.fileno())
                f.close()
        index = {"format": FORMAT, "version": VERSION, "fingerprint": fingerprint, "sample_rate": sr,
                 "hop_lengths": list(vqvae.config.hop_lengths), "l_bins": l_bins, "dtype": dtype.str,
                 "lengths": lengths, "tracks": table}
        (tmp / INDEX).write_text(json.dumps(index, indent=1) + "\n")
        swap_in_folder(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CodeCache(root)


def ensure_code_cache(manifest: Manifest, vqvae: Any, vqvae_folder: str | Path, root: str | Path,
                      rebuild: bool = False, log: Callable[[str], None] | None = None,
                      progress: Callable[[int, int, str], None] | None = None) -> CodeCache:
    """Open the cache at ``root`` if it matches the VQ-VAE in ``vqvae_folder`` and covers ``manifest``;
    otherwise (or with ``rebuild``) encode the corpus anew."""
    fingerprint = vqvae_fingerprint(vqvae_folder)
    root = Path(root)
    if not rebuild and (root / INDEX).is_file():
        try:
            cache = CodeCache(root)
            if cache.covers(manifest, fingerprint):
                return cache
            why = "the VQ-VAE changed" if cache.fingerprint != fingerprint else "the corpus changed"
        except JukeboxError as e:
            why = str(e)
        if log is not None:
            log(f"code cache {root} is stale ({why}); re-encoding")
    elif log is not None:
        log(f"encoding {len(manifest.tracks)} tracks into the code cache {root}")
    return build_code_cache(manifest, vqvae, root, fingerprint, progress=progress)


@dataclass(frozen=True)
class CodeWindow:
    """One prior training example: codes ``z`` [n_ctx], upper codes ``z_cond`` [n_ctx // down] (upsamplers) and
    what the labels need (the window's offset and the song's total length in samples)."""

    z: np.ndarray
    z_cond: np.ndarray | None
    artist: str
    genre: str
    lyrics: str
    offset: int
    total_length: int
    path: str


class CodeWindowSampler:
    """Windows of ``n_ctx`` codes at ``level`` from the tracks of one split, at offsets that are whole top-level
    codes (so the upper level's codes line up). Windows are chosen by index, uniformly over all valid starts."""

    def __init__(self, cache: CodeCache, manifest: Manifest, level: int, n_ctx: int, split: str | None = "train",
                 cond_downsample: int | None = None) -> None:
        if not 0 <= level < cache.levels:
            raise JukeboxError(f"level {level} outside the cache's levels 0..{cache.levels - 1}")
        self.cache, self.level, self.n_ctx, self.down = cache, level, int(n_ctx), cond_downsample
        self.hop = cache.hop_lengths[level]
        self.align = cache.hop_lengths[-1] // self.hop
        if self.down is not None and (self.n_ctx % self.down or self.align % self.down):
            raise JukeboxError(f"n_ctx {n_ctx} must be a multiple of the upsampling factor {self.down}")
        tracks = manifest.tracks if split is None else manifest.split(split)
        missing = [t.path for t in tracks if t.path not in cache.tracks]
        if missing:
            raise JukeboxError(f"the code cache lacks {len(missing)} tracks (e.g. {missing[0]}); rebuild it")
        self.tracks = [t for t in tracks if cache.tracks[t.path].length[level] >= self.n_ctx]
        self.dropped = len(tracks) - len(self.tracks)
        if not self.tracks:
            what = f"the {split} split" if split else "the corpus"
            seconds = self.n_ctx * self.hop / cache.sample_rate
            raise JukeboxError(f"{what} has no track of at least {seconds:.2f} s (one level-{level} window of "
                               f"{self.n_ctx} codes; {len(tracks)} tracks)")
        counts = [(cache.tracks[t.path].length[level] - self.n_ctx) // self.align + 1 for t in self.tracks]
        self._cum = np.cumsum(np.array(counts, np.int64))

    def __len__(self) -> int:
        return int(self._cum[-1])

    def window(self, index: int) -> CodeWindow:
        """The window of global start ``index`` in [0, len)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        i = int(np.searchsorted(self._cum, index, side="right"))
        start = (index - (int(self._cum[i - 1]) if i else 0)) * self.align
        track = self.tracks[i]
        z = np.asarray(self.cache.codes(track.path, self.level)[start:start + self.n_ctx], dtype=np.int64)
        z_cond = None
        if self.down is not None:
            upper = self.cache.codes(track.path, self.level + 1)
            n_up = self.n_ctx // self.down
            z_cond = np.asarray(upper[start // self.down:start // self.down + n_up], dtype=np.int64)
            if len(z_cond) != n_up:
                raise JukeboxError(f"{track.path}: level {self.level + 1} codes too short for window at {start}")
        return CodeWindow(z=z, z_cond=z_cond, artist=track.artist, genre=track.genre, lyrics=track.lyrics,
                          offset=start * self.hop, total_length=self.cache.tracks[track.path].total_length,
                          path=track.path)
