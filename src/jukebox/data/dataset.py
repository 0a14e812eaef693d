"""Training corpora made of a user's own music: scan, validate, report, split and sample windows.

A corpus is a folder of audio files (wav/flac/ogg/opus/mp3, nested folders allowed) with an optional
``metadata.csv`` or ``metadata.jsonl`` at its root. Metadata columns/keys: ``file`` (path relative to the folder,
required), ``artist``, ``genre``, ``lyrics``, ``split`` (``train``/``validation``) and ``words`` (the sung words'
timings, a list of ``[word, start_seconds, end_seconds]``; a JSON string in a CSV), all optional.

Labels of a file come from, in order: its metadata row; its tags (``artist``, else ``composer``/``albumartist``;
``genre``), read with ``mutagen`` when installed and through libsndfile otherwise; the name of its top-level
folder (as artist by default, see ``folder_as``); else ``unknown``. Lyrics come from the metadata or from a
``.txt`` file of the same name beside the audio file.

:func:`scan_corpus` validates every file (header, plus a decode of its first and last second) and returns a
:class:`Manifest` (tracks + skipped files with reasons) without ever holding more than one second of audio.
:func:`split_manifest` assigns a deterministic, seeded train/validation split by track. :class:`WindowSampler`
draws random windows (uniform over the audio, so longer songs give more windows) and decodes only the window,
resampled to the model's rate, with the labels needed for timing and lyric conditioning.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ..atomic import atomic_write_text
from ..audio import load_audio
from ..errors import JukeboxError
from .word_timing import Words, parse_words

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")
METADATA_FILES = ("metadata.csv", "metadata.jsonl")
SPLITS = ("train", "validation")
UNKNOWN = "unknown"
MANIFEST_FORMAT = "jukebox-manifest"
MANIFEST_VERSION = 1
_META_KEYS = ("file", "artist", "genre", "lyrics", "split")


@dataclass(frozen=True)
class Track:
    """One validated audio file of a corpus. ``path`` is relative to the corpus root (POSIX separators)."""

    path: str
    duration: float  # seconds
    sample_rate: int  # the file's own rate
    channels: int
    artist: str = UNKNOWN
    genre: str = UNKNOWN
    lyrics: str = ""
    split: str | None = None  # "train", "validation" or None (not assigned yet)
    label_source: str = "default"  # where artist/genre came from: metadata, tags, folder, default or a mix
    words: Words = ()  # the sung words' timings ((word, start_seconds, end_seconds), ...), when known

    def length(self, sample_rate: int) -> int:
        """Length of the track in samples at ``sample_rate``."""
        return int(math.floor(self.duration * sample_rate + 1e-6))


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of the manifest and why."""

    path: str
    reason: str


@dataclass
class Manifest:
    """The validated contents of a corpus folder."""

    root: str
    tracks: list[Track] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    sample_rate: int | None = None  # the model rate the corpus is prepared for

    def track_path(self, track: Track) -> Path:
        """Absolute path of ``track``."""
        return Path(self.root) / track.path

    def split(self, name: str) -> list[Track]:
        """The tracks of split ``name`` (``train`` or ``validation``)."""
        if name not in SPLITS:
            raise JukeboxError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}")
        return [t for t in self.tracks if t.split == name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "root": self.root,
            "sample_rate": self.sample_rate,
            "tracks": [_track_dict(t) for t in self.tracks],
            "skipped": [dataclasses.asdict(s) for s in self.skipped],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "manifest") -> Manifest:
        if not isinstance(d, dict) or d.get("format") != MANIFEST_FORMAT:
            raise JukeboxError(f"{where}: not a jukebox manifest (written by `jukebox prepare -o`)")
        if d.get("version") != MANIFEST_VERSION:
            raise JukeboxError(f"{where}: manifest version {d.get('version')} is not supported "
                               f"(expected {MANIFEST_VERSION})")
        try:
            tracks = [_track_from_dict(t, where) for t in d["tracks"]]
            skipped = [SkippedFile(**s) for s in d.get("skipped", [])]
            return cls(root=str(d["root"]), tracks=tracks, skipped=skipped, sample_rate=d.get("sample_rate"))
        except (KeyError, TypeError) as e:
            raise JukeboxError(f"{where}: malformed manifest ({type(e).__name__}: {e})") from None

    def save(self, path: str | Path) -> Path:
        """Write the manifest as JSON, atomically."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        path = Path(path)
        if not path.is_file():
            raise JukeboxError(f"{path}: no such file")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise JukeboxError(f"{path}: not valid JSON ({str(e)[:120]})") from None
        return cls.from_dict(d, str(path))


def _track_dict(t: Track) -> dict[str, Any]:
    """A track as manifest JSON; ``words`` only when it has some (manifests without timings stay as they were)."""
    d = dataclasses.asdict(t)
    if t.words:
        d["words"] = [list(w) for w in t.words]
    else:
        del d["words"]
    return d


def _track_from_dict(t: Any, where: str) -> Track:
    if isinstance(t, dict) and "words" in t:
        t = {**t, "words": parse_words(t["words"], f"{where}: track {t.get('path')!r}")}
    return Track(**t)


# ---------------------------------------------------------------------------------------------------- metadata


def read_metadata(root: str | Path) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Read ``metadata.csv`` or ``metadata.jsonl`` at ``root``.

    Returns ``({relative posix path: {artist, genre, lyrics, split, words}}, file name or None)`` (``words`` as
    :data:`~jukebox.data.word_timing.Words`). Raises :class:`JukeboxError` on a malformed file (bad JSON line,
    missing ``file`` column, unknown split, malformed ``words``).
    """
    root = Path(root)
    found = [root / n for n in METADATA_FILES if (root / n).is_file()]
    if not found:
        return {}, None
    if len(found) > 1:
        raise JukeboxError(f"{root}: has both metadata.csv and metadata.jsonl; keep one")
    path = found[0]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise JukeboxError(f"{path}: not UTF-8 text") from None
    rows: list[tuple[int, dict[str, Any]]] = []
    if path.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is None or "file" not in [f.strip() for f in reader.fieldnames]:
            raise JukeboxError(f"{path}: needs a header row with a 'file' column (and artist, genre, lyrics)")
        for i, row in enumerate(reader, start=2):
            rows.append((i, {(k or "").strip(): v for k, v in row.items()}))
    else:
        for i, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise JukeboxError(f"{path}:{i}: not valid JSON ({str(e)[:100]})") from None
            if not isinstance(obj, dict):
                raise JukeboxError(f"{path}:{i}: each line must be a JSON object")
            rows.append((i, obj))
    out: dict[str, dict[str, Any]] = {}
    for line, row in rows:
        file = str(row.get("file") or "").strip()
        if not file:
            raise JukeboxError(f"{path}:{line}: empty 'file'")
        rel = Path(file).as_posix()
        if Path(file).is_absolute() or ".." in Path(file).parts:
            raise JukeboxError(f"{path}:{line}: 'file' must be a path inside {root}, got {file!r}")
        entry: dict[str, Any] = {k: str(row[k]).strip() if k != "lyrics" else str(row[k])
                                 for k in _META_KEYS[1:] if row.get(k) not in (None, "")}
        if row.get("words") not in (None, ""):
            words = row["words"]
            if isinstance(words, str):  # a CSV cell holds the list as JSON
                try:
                    words = json.loads(words)
                except ValueError:
                    raise JukeboxError(f"{path}:{line}: track {rel!r}: 'words' is not a JSON list") from None
            entry["words"] = parse_words(words, f"{path}:{line}: track {rel!r}")
        split = entry.get("split")
        if split is not None and split not in SPLITS:
            raise JukeboxError(f"{path}:{line}: split must be one of {', '.join(SPLITS)}, got {split!r}")
        if rel in out:
            raise JukeboxError(f"{path}:{line}: {rel} is listed twice")
        out[rel] = entry
    return out, path.name


def read_tags(path: str | Path) -> dict[str, str]:
    """Artist/genre tags of an audio file (lower-case keys), or {} when it has none or cannot be read.

    Uses ``mutagen`` when installed (it also sees ``composer`` and ``albumartist``), else libsndfile's tags.
    """
    tags: dict[str, str] = {}
    try:
        import mutagen  # type: ignore[import-not-found]
    except ImportError:
        mutagen = None
    if mutagen is not None:
        try:
            f = mutagen.File(str(path), easy=True)
        except Exception:  # noqa: BLE001 - any parser failure just means "no tags"
            f = None
        if f is not None and f.tags is not None:
            for key in ("artist", "composer", "albumartist", "genre"):
                try:
                    val = f.tags.get(key)
                except (KeyError, ValueError):
                    val = None
                if val:
                    v = val[0] if isinstance(val, list) else val
                    if str(v).strip():
                        tags[key] = str(v).strip()
            return tags
    try:
        with sf.SoundFile(str(path)) as f:
            meta = f.copy_metadata()
    except Exception:  # noqa: BLE001
        return {}
    return {k: v.strip() for k, v in meta.items() if k in ("artist", "genre") and v and v.strip()}


# ---------------------------------------------------------------------------------------------------- scanning


def find_audio_files(root: str | Path) -> list[Path]:
    """All audio files under ``root`` (recursively, hidden files and folders skipped), sorted."""
    root = Path(root)
    out = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file():
            out.append(p)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def _probe(path: Path, deep: bool) -> tuple[int, int, float]:
    """Validate one file; return (sample_rate, channels, seconds) or raise JukeboxError with a reason."""
    if path.stat().st_size == 0:
        raise JukeboxError("file is empty")
    try:
        info = sf.info(str(path))
    except Exception as e:  # noqa: BLE001 - libsndfile raises several types for garbage
        raise JukeboxError(f"not a readable audio file ({_first_line(e)})") from None
    sr, ch, frames = int(info.samplerate), int(info.channels), int(info.frames)
    if sr <= 0 or ch <= 0:
        raise JukeboxError(f"invalid header (sample rate {sr}, {ch} channels)")
    if frames <= 0:
        raise JukeboxError("contains no audio samples")
    seconds = frames / sr
    try:
        if deep:
            load_audio(path, mono=False)
        else:
            load_audio(path, duration_seconds=min(1.0, seconds), mono=False)
            if seconds > 2.0:
                load_audio(path, offset_seconds=seconds - 1.0, duration_seconds=1.0, mono=False)
    except JukeboxError as e:
        msg = str(e)
        prefix = f"{path}: "
        raise JukeboxError(msg[len(prefix):] if msg.startswith(prefix) else msg) from None
    return sr, ch, seconds


def scan_corpus(
    root: str | Path,
    sample_rate: int | None = None,
    folder_as: str | None = "artist",
    min_seconds: float = 0.0,
    deep: bool = False,
    workers: int = 4,
) -> Manifest:
    """Scan and validate a corpus folder into a :class:`Manifest` (no split assigned unless the metadata has one).

    ``sample_rate``: the model rate the corpus is meant for (recorded in the manifest). ``folder_as``: label that
    the top-level folder name gives files without tags (``artist``, ``genre`` or None). ``min_seconds``: shorter
    files are skipped. ``deep``: decode every file completely (slow) instead of its first and last second.
    Unreadable, empty, too-short files and metadata rows without a file are listed in ``skipped`` with a reason.
    """
    root = Path(root)
    if not root.exists():
        raise JukeboxError(f"{root}: no such folder")
    if not root.is_dir():
        raise JukeboxError(f"{root}: is a file; --data takes a folder of audio files")
    if folder_as not in ("artist", "genre", None):
        raise JukeboxError(f"folder_as must be 'artist', 'genre' or None, got {folder_as!r}")
    meta, meta_name = read_metadata(root)
    files = find_audio_files(root)
    rels = [p.relative_to(root).as_posix() for p in files]

    def work(item: tuple[Path, str]) -> Track | SkippedFile:
        path, rel = item
        try:
            sr, ch, seconds = _probe(path, deep)
        except JukeboxError as e:
            return SkippedFile(rel, str(e))
        except OSError as e:
            return SkippedFile(rel, f"cannot read ({e.strerror or e})")
        if seconds < min_seconds:
            return SkippedFile(rel, f"too short ({seconds:.2f} s < {min_seconds:g} s)")
        return _label(root, path, rel, sr, ch, seconds, meta.get(rel), folder_as)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(work, zip(files, rels)))
    tracks = [r for r in results if isinstance(r, Track)]
    skipped = [r for r in results if isinstance(r, SkippedFile)]
    found = set(rels)
    for rel in sorted(set(meta) - found):
        p = root / rel
        why = "not an audio file type we read" if p.is_file() else "no such file"
        skipped.append(SkippedFile(rel, f"listed in {meta_name} but {why}"))
    return Manifest(root=str(root.resolve()), tracks=tracks, skipped=skipped, sample_rate=sample_rate)


def _label(root: Path, path: Path, rel: str, sr: int, ch: int, seconds: float,
           row: dict[str, Any] | None, folder_as: str | None) -> Track:
    row = row or {}
    found: dict[str, tuple[str, str]] = {k: (row[k], "metadata") for k in ("artist", "genre") if row.get(k)}
    if len(found) < 2:
        tags = read_tags(path)
        tag_artist = tags.get("artist") or tags.get("composer") or tags.get("albumartist")
        if tag_artist:
            found.setdefault("artist", (tag_artist, "tags"))
        if tags.get("genre"):
            found.setdefault("genre", (tags["genre"], "tags"))
    parts = Path(rel).parts
    if folder_as and len(parts) > 1:
        found.setdefault(folder_as, (parts[0], "folder"))
    artist, a_src = found.get("artist", (UNKNOWN, "default"))
    genre, g_src = found.get("genre", (UNKNOWN, "default"))
    lyrics = row.get("lyrics", "")
    if not lyrics:
        side = path.with_suffix(".txt")
        if side.is_file():
            try:
                lyrics = side.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                lyrics = ""
    source = a_src if a_src == g_src else f"artist {a_src}, genre {g_src}"
    return Track(path=rel, duration=seconds, sample_rate=sr, channels=ch, artist=artist, genre=genre,
                 lyrics=lyrics, split=row.get("split"), label_source=source, words=row.get("words", ()))


# ---------------------------------------------------------------------------------------------------- split


def split_manifest(manifest: Manifest, val_fraction: float = 0.1, seed: int = 0,
                   keep_existing: bool = True) -> Manifest:
    """Return a copy of ``manifest`` with every track assigned to ``train`` or ``validation``.

    The split is by track and deterministic: tracks are ordered by a seeded hash of their path and the first
    ``round(val_fraction * n)`` become validation (at least one when ``val_fraction > 0`` and there are two or
    more tracks). Reordering files or rescanning gives the same split. With ``keep_existing``, splits given in
    the metadata are kept and the rest are filled up towards the fraction.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise JukeboxError(f"validation fraction must be in [0, 1), got {val_fraction}")
    tracks = list(manifest.tracks)
    fixed = {t.path: t.split for t in tracks if keep_existing and t.split in SPLITS}
    n = len(tracks)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    n_val = max(0, n_val - sum(1 for s in fixed.values() if s == "validation"))
    free = sorted((t.path for t in tracks if t.path not in fixed), key=lambda p: _hash(seed, p))
    val = set(free[:n_val])
    new = [dataclasses.replace(t, split=fixed.get(t.path) or ("validation" if t.path in val else "train"))
           for t in tracks]
    return dataclasses.replace(manifest, tracks=new)


def _hash(seed: int, path: str) -> str:
    return hashlib.sha256(f"{seed}:{path}".encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------- report


def corpus_report(manifest: Manifest) -> dict[str, Any]:
    """Summary numbers of a manifest, JSON-ready.

    Keys: root, files (tracks + skipped), tracks, hours, sample_rate (target), sample_rates {rate: count},
    channels {n: count}, artists/genres {name: count} (most common first), label_sources, splits
    {split: {tracks, hours}}, folders {top-level folder: {tracks, hours, artists, genres}}, shortest/longest
    seconds, skipped [{path, reason}].
    """
    tr = manifest.tracks
    secs = [t.duration for t in tr]
    folders: dict[str, dict[str, Any]] = {}
    for t in tr:
        top = t.path.split("/", 1)[0] if "/" in t.path else "."
        f = folders.setdefault(top, {"tracks": 0, "hours": 0.0, "artists": Counter(), "genres": Counter()})
        f["tracks"] += 1
        f["hours"] += t.duration / 3600
        f["artists"][t.artist] += 1
        f["genres"][t.genre] += 1
    splits: dict[str, dict[str, Any]] = {}
    for t in tr:
        s = splits.setdefault(t.split or "unassigned", {"tracks": 0, "hours": 0.0})
        s["tracks"] += 1
        s["hours"] += t.duration / 3600
    return {
        "root": manifest.root,
        "files": len(tr) + len(manifest.skipped),
        "tracks": len(tr),
        "hours": round(sum(secs) / 3600, 4),
        "sample_rate": manifest.sample_rate,
        "sample_rates": {str(k): v for k, v in sorted(Counter(t.sample_rate for t in tr).items())},
        "channels": {str(k): v for k, v in sorted(Counter(t.channels for t in tr).items())},
        "artists": dict(Counter(t.artist for t in tr).most_common()),
        "genres": dict(Counter(t.genre for t in tr).most_common()),
        "label_sources": dict(Counter(t.label_source for t in tr).most_common()),
        "splits": {k: {"tracks": v["tracks"], "hours": round(v["hours"], 4)} for k, v in sorted(splits.items())},
        "folders": {k: {"tracks": v["tracks"], "hours": round(v["hours"], 4), "artists": len(v["artists"]),
                        "genres": dict(v["genres"].most_common())} for k, v in sorted(folders.items())},
        "shortest_seconds": round(min(secs), 3) if secs else None,
        "longest_seconds": round(max(secs), 3) if secs else None,
        "skipped": [dataclasses.asdict(s) for s in manifest.skipped],
    }


def format_report(report: dict[str, Any], max_items: int = 12) -> str:
    """Human-readable text of :func:`corpus_report`."""

    def top(d: dict[str, Any]) -> str:
        items = list(d.items())
        s = ", ".join(f"{k} ({v})" for k, v in items[:max_items])
        return s + (f", ... {len(items) - max_items} more" if len(items) > max_items else "")

    lines = [
        f"corpus {report['root']}",
        f"  {report['tracks']} tracks of {report['files']} files, {report['hours']:.2f} hours"
        + (f" (shortest {report['shortest_seconds']:.1f} s, longest {report['longest_seconds']:.1f} s)"
           if report["tracks"] else ""),
        f"  sample rates: {top(report['sample_rates'])}; channels: {top(report['channels'])}"
        + (f"; resampled to {report['sample_rate']} Hz" if report.get("sample_rate") else ""),
        f"  artists ({len(report['artists'])}): {top(report['artists'])}",
        f"  genres ({len(report['genres'])}): {top(report['genres'])}",
        f"  labels from: {top(report['label_sources'])}",
        "  split: " + ", ".join(f"{k} {v['tracks']} tracks / {v['hours']:.2f} h" for k, v in report["splits"].items()),
    ]
    if len(report["folders"]) > 1:
        lines.append("  folders:")
        for name, f in report["folders"].items():
            lines.append(f"    {name}: {f['tracks']} tracks, {f['hours']:.2f} h, {f['artists']} artists, "
                         f"genres {top(f['genres'])}")
    if report["skipped"]:
        lines.append(f"  skipped {len(report['skipped'])} files:")
        lines += [f"    {s['path']}: {s['reason']}" for s in report["skipped"]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """One training example: ``audio`` float32 [1, T] at the sampler's rate plus its labels.

    ``offset_samples`` is where the window starts in the song and ``total_length_samples`` the song's length,
    both at the sampler's rate: together they give Jukebox's timing labels and choose the lyric window.
    """

    audio: np.ndarray
    artist: str
    genre: str
    lyrics: str
    offset_samples: int
    total_length_samples: int
    path: str


class WindowSampler:
    """Random fixed-length windows from the tracks of a manifest, decoded one window at a time.

    A window's start is uniform over all valid starts of the corpus, so each track is drawn in proportion to
    ``length - window + 1`` (as Jukebox's dataset does). Tracks shorter than the window are left out, unless
    ``pad_short`` (then they start at 0 and are padded with silence at the end).
    """

    def __init__(self, manifest: Manifest, sample_rate: int, window_samples: int, split: str | None = "train",
                 seed: int = 0, pad_short: bool = False) -> None:
        if sample_rate <= 0 or window_samples <= 0:
            raise JukeboxError(f"sample rate and window must be positive, got {sample_rate} and {window_samples}")
        self.manifest = manifest
        self.sample_rate = int(sample_rate)
        self.window = int(window_samples)
        self.pad_short = pad_short
        tracks = manifest.tracks if split is None else manifest.split(split)
        self.tracks: list[Track] = [t for t in tracks if pad_short or t.length(self.sample_rate) >= self.window]
        self.dropped = len(tracks) - len(self.tracks)
        if not self.tracks:
            what = f"the {split} split" if split else "the manifest"
            raise JukeboxError(f"{what} has no track at least {self.window / self.sample_rate:.2f} s long "
                               f"({len(tracks)} tracks); use shorter windows or pad_short")
        starts = np.array([max(1, t.length(self.sample_rate) - self.window + 1) for t in self.tracks], np.int64)
        self._cum = np.cumsum(starts)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        """Number of distinct window starts (an epoch's worth of windows)."""
        return int(self._cum[-1])

    def locate(self, index: int) -> tuple[Track, int]:
        """The track and start offset (samples) of global start ``index`` in [0, len)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        i = int(np.searchsorted(self._cum, index, side="right"))
        before = int(self._cum[i - 1]) if i else 0
        return self.tracks[i], index - before

    def window_at(self, track: Track, offset_samples: int) -> Window:
        """Decode the window of ``track`` starting at ``offset_samples`` (at the sampler's rate)."""
        sr, n = self.sample_rate, self.window
        total = track.length(sr)
        margin = 0.02 if track.sample_rate != sr else 0.0  # decode a little extra so resampling edges fall outside
        start_s = offset_samples / sr
        lead = min(margin, start_s)
        audio, _ = load_audio(self.manifest.track_path(track), sample_rate=sr, offset_seconds=start_s - lead,
                              duration_seconds=n / sr + lead + margin)
        skip = int(round(lead * sr))
        x = audio[skip:skip + n]
        if x.shape[0] < n:
            x = np.pad(x, (0, n - x.shape[0]))
        return Window(audio=x[None].astype(np.float32, copy=False), artist=track.artist, genre=track.genre,
                      lyrics=track.lyrics, offset_samples=int(offset_samples), total_length_samples=total,
                      path=track.path)

    def sample(self) -> Window:
        """One random window."""
        track, offset = self.locate(int(self.rng.integers(len(self))))
        return self.window_at(track, offset)

    def __iter__(self) -> Iterator[Window]:
        while True:
            yield self.sample()

    def batch(self, batch_size: int) -> list[Window]:
        """``batch_size`` random windows."""
        return [self.sample() for _ in range(batch_size)]


def windows_to_batch(windows: Sequence[Window]) -> dict[str, Any]:
    """Stack windows into arrays: audio [B, 1, T], offsets/total lengths [B] int64, and label lists."""
    return {
        "audio": np.stack([w.audio for w in windows]),
        "offset_samples": np.array([w.offset_samples for w in windows], np.int64),
        "total_length_samples": np.array([w.total_length_samples for w in windows], np.int64),
        "artist": [w.artist for w in windows],
        "genre": [w.genre for w in windows],
        "lyrics": [w.lyrics for w in windows],
        "path": [w.path for w in windows],
    }


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:200]
