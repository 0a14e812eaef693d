"""The code cache: a corpus encoded once by the frozen VQ-VAE, shared by the three priors.

Layout of a cache folder::

    index.json     {"format": "jukebox-code-cache", "version": 2, "fingerprint": <VQ-VAE hash>, "sample_rate",
                    "hop_lengths", "l_bins", "dtype", "levels_present": [levels with codes],
                    "lengths": [codes per level, 0 for absent levels], "manifest": "manifest.json" or null,
                    "tracks": {path: {"duration", "total_length", "start": [per level], "length": [per level]}}}
    level_0.bin    every track's level-0 codes, concatenated (raw little-endian int16; int32 above 32767 codes)
    level_1.bin    ... (only the levels in ``levels_present``)
    manifest.json  portable code folders only: the corpus manifest (paths, durations, labels, lyrics, splits)

The ``.bin`` files are memory-mapped, so a prior's batch reads only its windows. The cache is keyed by the
VQ-VAE's fingerprint (a hash of its config and weight files): when the VQ-VAE changes, or the corpus gains tracks
the cache lacks, :func:`ensure_code_cache` rebuilds it. The cache under a model directory stores no labels: they
come from the manifest at training time, so relabelling a corpus never needs re-encoding.

A *portable code folder* (``jukebox prepare --codes``) also stores the manifest, so priors train from it on
another machine without the audio (``jukebox train prior --data CODE_FOLDER``); it may hold only some levels
(a level-L prior needs level L, an upsampler also level L + 1). Version-1 indexes (all levels, no manifest)
still load.

Tracks are encoded in chunks with a margin of context on each side (trimmed afterwards), so long songs need
bounded memory; a track is cut to a whole number of top-level codes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import swap_in_folder
from ..audio import load_audio
from ..errors import JukeboxError
from .dataset import Manifest, Track
from .tempo import fit_grid
from .word_timing import Words

FORMAT = "jukebox-code-cache"
VERSION = 2
READABLE_VERSIONS = (1, 2)
INDEX = "index.json"
MANIFEST = "manifest.json"
#: What a window sampler's ``balance`` can even out across the training windows (``none``: uniform over starts).
BALANCE_KEYS = ("none", "genre", "artist")


def is_code_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a code cache index (of any version)."""
    index = Path(path) / INDEX
    if not index.is_file():
        return False
    try:
        return json.loads(index.read_text()).get("format") == FORMAT
    except (ValueError, UnicodeDecodeError, AttributeError):
        return False


def _weight_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix == ".safetensors" or p.name in (
        "config.json", "model.safetensors.index.json")))
    if not files:
        raise JukeboxError(f"{folder}: no VQ-VAE weights to fingerprint")
    return files


def _codes_tensor(name: str) -> bool:
    """Whether a VQ-VAE tensor decides codes: the encoders' and the codebooks' vectors (not the decoders, nor the
    codebooks' running EMA statistics, which only move the vectors while the codebooks train)."""
    return name.startswith("encoders.") or (name.startswith("codebooks.") and name.endswith(".codebook"))


def vqvae_fingerprint(vqvae_folder: str | Path) -> str:
    """sha256 of what a VQ-VAE's codes depend on: its ``config.json`` and its encoders' and codebooks' tensors
    (names, dtypes, shapes, values). Decoders are left out: a decoder-only fine-tune (``jukebox train vqvae
    --decoder-only``) gives the same codes, so code folders and caches stay valid."""
    from safetensors import safe_open

    folder = Path(vqvae_folder)
    files = _weight_files(folder)
    h = hashlib.sha256(b"jukebox-codes-fingerprint-2")
    config = folder / "config.json"
    if config.is_file():
        h.update(config.read_bytes())
    tensors: dict[str, torch.Tensor] = {}
    for p in files:
        if p.suffix == ".safetensors":
            with safe_open(p, framework="pt") as f:
                tensors.update({name: f.get_tensor(name) for name in f.keys() if _codes_tensor(name)})
    if not tensors:
        raise JukeboxError(f"{folder}: no encoder or codebook tensors to fingerprint")
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def legacy_vqvae_fingerprint(vqvae_folder: str | Path) -> str:
    """The fingerprint caches written before content fingerprints carry: sha256 of the VQ-VAE folder's config and
    weight files as they lie on disk (decoders included)."""
    h = hashlib.sha256()
    for p in _weight_files(Path(vqvae_folder)):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def made_by(fingerprint: str, vqvae_folder: str | Path) -> bool:
    """Whether codes stored with ``fingerprint`` come from the VQ-VAE in ``vqvae_folder`` (the content
    fingerprint, or the whole-file one of older caches)."""
    return fingerprint == vqvae_fingerprint(vqvae_folder) or fingerprint == legacy_vqvae_fingerprint(vqvae_folder)


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
        if self.index.get("format") != FORMAT or self.index.get("version") not in READABLE_VERSIONS:
            raise JukeboxError(f"{path}: not a {FORMAT} index of version "
                               f"{' or '.join(map(str, READABLE_VERSIONS))}")
        self.fingerprint: str = self.index["fingerprint"]
        self.sample_rate: int = int(self.index["sample_rate"])
        self.hop_lengths: tuple[int, ...] = tuple(self.index["hop_lengths"])
        self.l_bins: int = int(self.index["l_bins"])
        self.tracks: dict[str, CachedTrack] = {
            p: CachedTrack(p, float(t["duration"]), int(t["total_length"]), tuple(t["start"]), tuple(t["length"]))
            for p, t in self.index["tracks"].items()
        }
        self.present: tuple[int, ...] = tuple(int(v) for v in self.index.get(
            "levels_present", range(len(self.hop_lengths))))
        self.manifest_file: str | None = self.index.get("manifest")
        dtype = np.dtype(self.index["dtype"])
        self._levels: list[np.ndarray | None] = []
        for level, n in enumerate(self.index["lengths"]):
            if level not in self.present:
                self._levels.append(None)
                continue
            f = self.root / f"level_{level}.bin"
            if not f.is_file() or f.stat().st_size != n * dtype.itemsize:
                raise JukeboxError(f"{f}: missing or truncated (expected {n} codes); rebuild the cache")
            self._levels.append(np.memmap(f, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype))

    @property
    def levels(self) -> int:
        """The VQ-VAE's number of levels (not all of them need be present)."""
        return len(self.hop_lengths)

    def require_levels(self, *levels: int) -> None:
        """Raise a one-line :class:`JukeboxError` unless every one of ``levels`` has codes here."""
        missing = [lv for lv in levels if lv not in self.present]
        if missing:
            have = ", ".join(map(str, self.present)) or "none"
            raise JukeboxError(f"{self.root}: no level-{missing[0]} codes (it holds level(s) {have}); re-encode with "
                               f"`jukebox prepare --codes ... --levels {' '.join(map(str, sorted(set(levels))))}`")

    def codes(self, path: str, level: int) -> np.ndarray:
        """The codes of track ``path`` at ``level``: a read-only view [length] (int16 or int32)."""
        self.require_levels(level)
        t = self.tracks[path]
        return self._levels[level][t.start[level]:t.start[level] + t.length[level]]  # type: ignore[index]

    def manifest(self) -> Manifest:
        """The corpus manifest stored in a portable code folder (tracks, labels, lyrics, splits)."""
        if not self.manifest_file:
            raise JukeboxError(f"{self.root}: this code cache stores no manifest (not made by "
                               "`jukebox prepare --codes`); train with the audio folder instead")
        manifest = Manifest.load(self.root / self.manifest_file)
        missing = [t.path for t in manifest.tracks if t.path not in self.tracks]
        if missing:
            raise JukeboxError(f"{self.root}: the manifest lists {len(missing)} tracks without codes "
                               f"(e.g. {missing[0]}); re-encode the folder")
        return manifest

    def covers(self, manifest: Manifest, fingerprint: str) -> bool:
        """Whether this cache was made by the VQ-VAE ``fingerprint``, holds every level and every track of
        ``manifest``."""
        if fingerprint != self.fingerprint or manifest.sample_rate not in (None, self.sample_rate):
            return False
        if len(self.present) != self.levels:
            return False
        return all(t.path in self.tracks and abs(self.tracks[t.path].duration - t.duration) < 1e-3
                   for t in manifest.tracks)


def _segments(n: int, chunk: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + chunk)) for s in range(0, n, chunk)]


def _level_runs(levels: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted ``levels`` as runs of consecutive levels [(start, end)), one VQ-VAE encode call each."""
    runs: list[tuple[int, int]] = []
    for lv in sorted(set(levels)):
        if runs and runs[-1][1] == lv:
            runs[-1] = (runs[-1][0], lv + 1)
        else:
            runs.append((lv, lv + 1))
    return runs


@torch.no_grad()
def encode_track(vqvae: Any, audio: np.ndarray, chunk: int = 1 << 19, margin: int = 1 << 15,
                 batch_size: int = 4, levels: Sequence[int] | None = None) -> list[np.ndarray]:
    """Codes of every level for mono ``audio`` [T] (cut to a whole number of top-level codes).

    The track is cut into ``chunk`` samples, each encoded with ``margin`` samples of context on both sides
    (zeros beyond the ends) whose codes are then dropped. ``chunk`` and ``margin`` are rounded to multiples of
    the top hop length. Returns one int64 array [T // hop_l] per level; with ``levels``, only those levels are
    encoded (each level has its own encoder) and the others are empty arrays.
    """
    hops = vqvae.config.hop_lengths
    wanted = set(range(len(hops)) if levels is None else levels)
    if not wanted or not wanted <= set(range(len(hops))):
        raise JukeboxError(f"levels {sorted(wanted)} outside the VQ-VAE's levels 0..{len(hops) - 1}")
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
    runs = _level_runs(sorted(wanted))
    for b in range(0, len(segs), batch_size):
        group = segs[b:b + batch_size]
        x = torch.from_numpy(np.stack([padded[s:s + chunk + 2 * margin] for s, _ in group])).to(device)[:, None]
        for lo, hi in runs:
            codes = vqvae.encode(x, start_level=lo, end_level=hi)
            for level in range(lo, hi):
                hop = hops[level]
                c = codes[level - lo].cpu().numpy()
                for i, (s, e) in enumerate(group):
                    out[level].append(c[i, margin // hop:(margin + e - s) // hop])
    return [np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64) for parts in out]


class CodeFolderWriter:
    """Writes a code cache folder track by track into a temporary folder, swapped in by :meth:`commit`.

    ``levels``: the levels whose codes are stored (default all). Use as a context manager: leaving it with an
    error (or without :meth:`commit`) removes the temporary folder and leaves ``root`` as it was.
    """

    def __init__(self, root: str | Path, fingerprint: str, sample_rate: int, hop_lengths: Sequence[int],
                 l_bins: int, levels: Sequence[int] | None = None) -> None:
        self.root = Path(root)
        self.fingerprint, self.sample_rate, self.l_bins = fingerprint, int(sample_rate), int(l_bins)
        self.hop_lengths = [int(h) for h in hop_lengths]
        n_levels = len(self.hop_lengths)
        self.levels = sorted(set(range(n_levels) if levels is None else (int(v) for v in levels)))
        if not self.levels or not set(self.levels) <= set(range(n_levels)):
            raise JukeboxError(f"levels {self.levels} outside the VQ-VAE's levels 0..{n_levels - 1}")
        self.dtype = np.dtype("<i2") if self.l_bins <= 32767 else np.dtype("<i4")
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.", suffix=".tmp", dir=self.root.parent))
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)  # the usual folder permissions, not mkdtemp's 0700 (carried elsewhere)
        self._files = {lv: open(self.tmp / f"level_{lv}.bin", "wb") for lv in self.levels}
        self.lengths = [0] * n_levels
        self.table: dict[str, Any] = {}

    def __enter__(self) -> CodeFolderWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)

    def add(self, path: str, duration: float, total_length: int, codes: Sequence[np.ndarray]) -> None:
        """Append one track: ``codes`` holds one array per VQ-VAE level (only the stored levels are read)."""
        if path in self.table:
            raise JukeboxError(f"{path}: track added twice to the code folder")
        entry = {"duration": float(duration), "total_length": int(total_length), "start": [0] * len(self.lengths),
                 "length": [0] * len(self.lengths)}
        for lv in self.levels:
            c = np.asarray(codes[lv])
            if c.size and (c.min() < 0 or c.max() >= self.l_bins):
                raise JukeboxError(f"{path}: level-{lv} codes outside 0..{self.l_bins - 1}")
            entry["start"][lv], entry["length"][lv] = self.lengths[lv], len(c)
            self._files[lv].write(c.astype(self.dtype).tobytes())
            self.lengths[lv] += len(c)
        self.table[path] = entry

    def close(self) -> None:
        for f in self._files.values():
            if not f.closed:
                f.flush()
                os.fsync(f.fileno())
                f.close()

    def commit(self, manifest: Manifest | None = None) -> CodeCache:
        """Write the index (and, for a portable folder, ``manifest``) and swap the folder in; returns it opened."""
        self.close()
        if manifest is not None:
            missing = [t.path for t in manifest.tracks if t.path not in self.table]
            if missing:
                raise JukeboxError(f"the manifest lists {len(missing)} tracks without codes (e.g. {missing[0]})")
            manifest.save(self.tmp / MANIFEST)
        index = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint,
                 "sample_rate": self.sample_rate, "hop_lengths": self.hop_lengths, "l_bins": self.l_bins,
                 "dtype": self.dtype.str, "levels_present": self.levels, "lengths": self.lengths,
                 "manifest": MANIFEST if manifest is not None else None, "tracks": self.table}
        (self.tmp / INDEX).write_text(json.dumps(index, indent=1) + "\n")
        swap_in_folder(self.tmp, self.root)
        return CodeCache(self.root)


def build_code_cache(manifest: Manifest, vqvae: Any, root: str | Path, fingerprint: str,
                     tracks: Sequence[Track] | None = None, chunk: int = 1 << 19, margin: int = 1 << 15,
                     progress: Callable[[int, int, str], None] | None = None, levels: Sequence[int] | None = None,
                     portable: bool = False, batch_size: int = 4) -> CodeCache:
    """Encode ``tracks`` (default: all of ``manifest``) with ``vqvae`` into a new cache at ``root``.

    ``levels``: the levels to encode and store (default all). ``portable``: also store the manifest of the
    encoded tracks, so priors can train from the folder without the audio. ``batch_size``: chunks encoded
    together. ``progress(i, total, path)`` is called before each track and once more at the end (``i == total``).
    Written into a temporary folder that replaces ``root`` only when complete.
    """
    tracks = list(manifest.tracks if tracks is None else tracks)
    cfg = vqvae.config
    sr = cfg.sample_rate
    was_training = vqvae.training
    vqvae.eval()
    try:
        with CodeFolderWriter(root, fingerprint, sr, cfg.hop_lengths, cfg.l_bins, levels) as writer:
            for i, track in enumerate(tracks):
                if progress is not None:
                    progress(i, len(tracks), track.path)
                audio, _ = load_audio(manifest.track_path(track), sample_rate=sr)
                codes = encode_track(vqvae, audio, chunk=chunk, margin=margin, batch_size=batch_size,
                                     levels=writer.levels)
                writer.add(track.path, track.duration, len(audio), codes)
            if progress is not None:
                progress(len(tracks), len(tracks), "")
            if portable:
                kept = {t.path for t in tracks}
                stored = dataclasses.replace(manifest, tracks=[t for t in manifest.tracks if t.path in kept],
                                             sample_rate=sr)
                return writer.commit(stored)
            return writer.commit()
    finally:
        vqvae.train(was_training)


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
            if cache.fingerprint != fingerprint and cache.fingerprint == legacy_vqvae_fingerprint(vqvae_folder):
                fingerprint = cache.fingerprint  # an older cache of this very VQ-VAE
            if cache.covers(manifest, fingerprint):
                return cache
            why = ("the VQ-VAE changed" if cache.fingerprint != fingerprint else
                   "it lacks levels" if len(cache.present) != cache.levels else "the corpus changed")
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
    what the labels need (the window's offset and the song's total length in samples; with beats, the constant
    beat grid fitted to the window's beats: ``bpm`` (0: no steady pulse) and ``beat0``, a beat's time in samples;
    ``words``: the whole track's word timings, when it has them (:mod:`jukebox.data.word_timing`))."""

    z: np.ndarray
    z_cond: np.ndarray | None
    artist: str
    genre: str
    lyrics: str
    offset: int
    total_length: int
    path: str
    bpm: float = 0.0
    beat0: int = 0
    words: Words = ()


class CodeWindowSampler:
    """Windows of ``n_ctx`` codes at ``level`` from the tracks of one split, at offsets that are whole top-level
    codes (so the upper level's codes line up). Windows are chosen by index, uniformly over all valid starts, or
    with ``balance`` (``genre`` or ``artist``) so that each group's share of the draws goes as its number of
    window starts to the power ``balance_power`` (0: equal shares), uniformly within a group (:meth:`draw`).
    ``beats``: each track's beat times (``jukebox.data.tempo.load_beats``), for tempo labels; a track without an
    entry has no steady pulse."""

    def __init__(self, cache: CodeCache, manifest: Manifest, level: int, n_ctx: int, split: str | None = "train",
                 cond_downsample: int | None = None, beats: Mapping[str, Any] | None = None,
                 balance: str = "none", balance_power: float = 0.0) -> None:
        self.beats = beats
        if not 0 <= level < cache.levels:
            raise JukeboxError(f"level {level} outside the cache's levels 0..{cache.levels - 1}")
        cache.require_levels(level, *((level + 1,) if cond_downsample is not None else ()))
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
        counts = np.array([(cache.tracks[t.path].length[level] - self.n_ctx) // self.align + 1
                           for t in self.tracks], np.int64)
        self._cum = np.cumsum(counts)
        self._starts = counts  # window starts per track
        self._p: np.ndarray | None = None  # per-window-start weights of a balanced draw, by track
        if balance != "none":
            if balance not in BALANCE_KEYS:
                raise JukeboxError(f"balance must be one of {', '.join(BALANCE_KEYS)}, got {balance!r}")
            keys = [t.genre if balance == "genre" else t.artist for t in self.tracks]
            group: dict[str, int] = {}
            for k, n in zip(keys, counts):
                group[k] = group.get(k, 0) + int(n)
            share = {k: float(n) ** balance_power for k, n in group.items()}
            total = sum(share.values())
            self._p = np.array([share[k] / total * n / group[k] for k, n in zip(keys, counts)], np.float64)
            self._p /= self._p.sum()
            self.shares = {k: share[k] / total for k in sorted(share)}

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` window indices (int64 [n]) for a batch: uniform over all starts, or balanced (a track with the
        balanced weights, then a start within it)."""
        if self._p is None:
            return rng.integers(len(self), size=n)
        tracks = rng.choice(len(self.tracks), size=n, p=self._p)
        first = self._cum[tracks] - self._starts[tracks]  # each chosen track's first global start index
        return first + rng.integers(0, self._starts[tracks])

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
        bpm, beat0 = 0.0, 0
        offset = start * self.hop
        if self.beats is not None and track.path in self.beats:
            sr = self.cache.sample_rate
            bpm, first = fit_grid(self.beats[track.path].beats, offset / sr, (offset + self.n_ctx * self.hop) / sr)
            beat0 = int(round(first * sr)) if bpm else 0
        return CodeWindow(z=z, z_cond=z_cond, artist=track.artist, genre=track.genre, lyrics=track.lyrics,
                          offset=offset, total_length=self.cache.tracks[track.path].total_length,
                          path=track.path, bpm=float(bpm), beat0=beat0, words=track.words)
