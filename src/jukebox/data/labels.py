"""Artist / genre id tables and the prior's label vector ``y``, as the original Jukebox builds them.

Label vector layout (one row per item, ``torch.long``), width ``4 + max_bow_genre_size (+ 2) + n_tokens``::

    [total_length, offset, sample_length, artist_id, genre_id * max_bow_genre_size (padded with -1),
     (tempo priors only: bpm x 100 (0: no steady pulse), beat0,)
     lyric token * n_tokens (the window's characters; left-padded with 0 when the lyrics are shorter)]

``total_length``, ``offset``, ``sample_length`` and ``beat0`` (the time of one beat of the song's beat grid) are in
audio samples at the model rate.

Name rules (the original's two label sets):

* ``v2`` (5b, 5b_lyrics, the upsamplers): a name is lower-cased, every character outside ``[a-z0-9]``
  becomes ``_``, runs of ``_`` collapse and ``_`` is stripped at both ends. A genre string is a *bag of
  words*: its normalised form is split on ``_`` and each word has its own id.
* ``v3`` (1b_lyrics): a name is only lower-cased; a genre string is one genre.

A name missing from the table maps to ``unknown`` (id 0) with an :class:`UnknownLabelWarning` naming the
closest known names.
"""

from __future__ import annotations

import difflib
import json
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import JukeboxError, UsageError
from ..fileio import read_json
from ..prior.conditioners import UNKNOWN_ID
from ..prior.conditioners import null_labels as null_labels  # re-exported: the null label of label dropout
from .text import LyricVocab, lyric_vocab

LABELS_FILE = "labels.json"
FORMAT = "jukebox.labels"
FORMAT_VERSION = 1
VERSIONS = ("v2", "v3")
UNKNOWN = "unknown"

OPENAI_Y_BINS: dict[str, tuple[int, int]] = {"v2": (120, 4111), "v3": (604, 7898)}
"""``(genre bins, artist bins)`` of the released models' label embeddings."""
OPENAI_MAX_BOW_GENRE_SIZE: dict[str, int] = {"v2": 5, "v3": 1}
"""Genre slots in ``y`` of the released models (v2 bag of words, v3 single genre)."""

_NOT_ALNUM = re.compile(r"[^a-z0-9]")
_UNDERSCORES = re.compile(r"_+")


class UnknownLabelWarning(UserWarning):
    """An artist or genre name is not in the model's table; it was mapped to ``unknown`` (id 0)."""


def normalize_v2(name: str) -> str:
    """The original v2 normalisation: lower-case, non-``[a-z0-9]`` to ``_``, collapse and strip ``_``."""
    return _UNDERSCORES.sub("_", _NOT_ALNUM.sub("_", name.lower())).strip("_")


def _check_version(version: str) -> str:
    if version not in VERSIONS:
        raise UsageError(f"unknown label version {version!r}; expected one of {list(VERSIONS)}")
    return version


def normalize_name(name: str, version: str) -> str:
    """The lookup key of an artist name (or of one genre in v3) under the ``version`` rules."""
    return normalize_v2(name) if _check_version(version) == "v2" else name.lower()


def split_genre(genre: str, version: str) -> list[str]:
    """The lookup keys of a genre string: a bag of words in v2, the one lower-cased genre in v3."""
    return normalize_v2(genre).split("_") if _check_version(version) == "v2" else [genre.lower()]


def _read_ids_file(path: Path) -> dict[str, int]:
    """Read an original ``name;id`` table; names are lower-cased and a later duplicate wins (as the original)."""
    if not path.is_file():
        raise JukeboxError(f"id table {path} not found")
    out: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.strip().split(";")
            if len(parts) != 2:
                raise JukeboxError(f"{path}:{lineno}: expected 'name;id', got {line.strip()!r}")
            try:
                out[parts[0].lower()] = int(parts[1])
            except ValueError:
                raise JukeboxError(f"{path}:{lineno}: id {parts[1]!r} is not an integer") from None
    return out


def _reverse(ids: Mapping[str, int]) -> dict[int, str]:
    """id -> display name; several names sharing an id join sorted with ``_`` (the original's rule)."""
    names: dict[int, list[str]] = {}
    for name, i in ids.items():
        names.setdefault(i, []).append(name)
    out = {i: "_".join(sorted(ns)) for i, ns in names.items()}
    out[UNKNOWN_ID] = UNKNOWN
    return out


def _search(table: Mapping[str, int], key: str, limit: int) -> list[tuple[str, int]]:
    names = sorted(n for n in table if n)
    if not key:
        return [(n, table[n]) for n in names[:limit]]
    exact = [n for n in names if n == key]
    prefix = [n for n in names if n != key and n.startswith(key)]
    inner = [n for n in names if key in n and not n.startswith(key)]
    found = exact + prefix + inner
    if len(found) < limit:
        seen = set(found)
        found += [n for n in difflib.get_close_matches(key, names, n=limit, cutoff=0.6) if n not in seen]
    return [(n, table[n]) for n in found[:limit]]


class LabelVocab:
    """Artist and genre name -> id tables, the name rules (``version``) and the lyric vocabulary version.

    Build one with :meth:`from_openai_ids_dir` (the released models' tables), :meth:`from_names` (a model
    trained on our own data) or :meth:`load` (``labels.json`` inside a model directory).
    """

    def __init__(
        self,
        artists: Mapping[str, int],
        genres: Mapping[str, int],
        version: str = "v3",
        lyric_version: str | None = None,
        y_bins: tuple[int, int] | None = None,
    ) -> None:
        self.version = _check_version(version)
        self.lyric_version = _check_version(lyric_version or version)
        self._artists = {str(k): int(v) for k, v in artists.items()}
        self._genres = {str(k): int(v) for k, v in genres.items()}
        for kind, table in (("artist", self._artists), ("genre", self._genres)):
            if table.get(UNKNOWN) != UNKNOWN_ID:
                raise JukeboxError(f"{kind} table must map {UNKNOWN!r} to id {UNKNOWN_ID}")
            if min(table.values()) < 0:
                raise JukeboxError(f"{kind} table has a negative id")
        need = (max(self._genres.values()) + 1, max(self._artists.values()) + 1)
        self.y_bins: tuple[int, int] = tuple(y_bins) if y_bins is not None else need  # type: ignore[assignment]
        if self.y_bins[0] < need[0] or self.y_bins[1] < need[1]:
            raise JukeboxError(f"y_bins {self.y_bins} too small for the tables (need at least {need})")
        self._artist_names = _reverse(self._artists)
        self._genre_names = _reverse(self._genres)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_openai_ids_dir(cls, ids_dir: str | Path, version: str = "v2") -> LabelVocab:
        """The original tables ``{version}_artist_ids.txt`` / ``{version}_genre_ids.txt`` from ``ids_dir``."""
        _check_version(version)
        ids_dir = Path(ids_dir)
        artists = _read_ids_file(ids_dir / f"{version}_artist_ids.txt")
        genres = _read_ids_file(ids_dir / f"{version}_genre_ids.txt")
        bins = OPENAI_Y_BINS[version]
        need = (max(genres.values()) + 1, max(artists.values()) + 1)
        return cls(artists, genres, version=version, y_bins=(max(bins[0], need[0]), max(bins[1], need[1])))

    @classmethod
    def from_names(
        cls, artists: Iterable[str], genres: Iterable[str], version: str = "v3", lyric_version: str | None = None
    ) -> LabelVocab:
        """Tables for our own training data: ``unknown`` is id 0, the other names get ids 1.. in sorted order.

        Names are normalised with the ``version`` rules first; in v2 each genre string contributes its words.
        Empty names are skipped (they look up as ``unknown``).
        """
        _check_version(version)
        artist_keys = {normalize_name(a, version) for a in artists} - {"", UNKNOWN}
        genre_keys = {w for g in genres for w in split_genre(g, version)} - {"", UNKNOWN}
        artist_ids = {UNKNOWN: UNKNOWN_ID, **{n: i for i, n in enumerate(sorted(artist_keys), 1)}}
        genre_ids = {UNKNOWN: UNKNOWN_ID, **{n: i for i, n in enumerate(sorted(genre_keys), 1)}}
        return cls(artist_ids, genre_ids, version=version, lyric_version=lyric_version)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "version": self.version,
            "lyric_version": self.lyric_version,
            "y_bins": list(self.y_bins),
            "artists": dict(self._artists),
            "genres": dict(self._genres),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = LABELS_FILE) -> LabelVocab:
        keys = {"format", "format_version", "version", "lyric_version", "y_bins", "artists", "genres"}
        if not isinstance(data, dict):
            raise JukeboxError(f"{where}: expected a JSON object")
        if set(data) != keys:
            raise JukeboxError(
                f"{where}: unexpected keys {sorted(set(data) - keys)}, missing keys {sorted(keys - set(data))}"
            )
        if data["format"] != FORMAT or data["format_version"] != FORMAT_VERSION:
            raise JukeboxError(f"{where}: not a {FORMAT} v{FORMAT_VERSION} file")
        for k in ("artists", "genres"):
            table = data[k]
            if not isinstance(table, dict) or not all(isinstance(v, int) for v in table.values()):
                raise JukeboxError(f"{where}: {k!r} must map names to integer ids")
        y_bins = data["y_bins"]
        if not (isinstance(y_bins, list) and len(y_bins) == 2 and all(isinstance(b, int) for b in y_bins)):
            raise JukeboxError(f"{where}: 'y_bins' must be [genre_bins, artist_bins]")
        try:
            return cls(data["artists"], data["genres"], data["version"], data["lyric_version"], tuple(y_bins))
        except UsageError as e:
            raise JukeboxError(f"{where}: {e}") from None

    def save(self, model_dir: str | Path) -> Path:
        """Write ``labels.json`` into ``model_dir`` atomically; return its path."""
        from ..atomic import atomic_write_text

        path = Path(model_dir) / LABELS_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> LabelVocab:
        """Read ``labels.json`` from ``model_dir`` (or the JSON file itself)."""
        path = Path(model_dir)
        if path.is_dir():
            path = path / LABELS_FILE
        if not path.exists() and not path.is_symlink():
            raise JukeboxError(f"{path} not found")
        data = read_json(path, "labels file")  # a regular file of bounded size: never a FIFO or /dev/zero
        return cls.from_dict(data, str(path))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelVocab) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"LabelVocab(version={self.version!r}, lyric_version={self.lyric_version!r}, "
            f"artists={len(self._artists)}, genres={len(self._genres)}, y_bins={self.y_bins})"
        )

    # ------------------------------------------------------------------ lookups
    @property
    def lyric_vocab(self) -> LyricVocab:
        return lyric_vocab(self.lyric_version)

    @property
    def artist_ids(self) -> dict[str, int]:
        """A copy of the normalised artist name -> id table."""
        return dict(self._artists)

    @property
    def genre_ids_table(self) -> dict[str, int]:
        """A copy of the normalised genre (word) -> id table."""
        return dict(self._genres)

    def closest_artists(self, name: str, n: int = 5) -> list[str]:
        """Up to ``n`` known artist names closest to ``name`` (difflib on the normalised key)."""
        return difflib.get_close_matches(normalize_name(name, self.version), [a for a in self._artists if a], n=n)

    def closest_genres(self, genre: str, n: int = 5) -> list[str]:
        """Up to ``n`` known genres (v2: genre words) closest to ``genre``."""
        key = genre.lower() if self.version == "v3" else normalize_v2(genre)
        return difflib.get_close_matches(key, [g for g in self._genres if g], n=n)

    def artist_id(self, artist: str | None, warn: bool = True) -> int:
        """Id of ``artist``; an unknown name is ``unknown`` (0), with an :class:`UnknownLabelWarning`."""
        if artist is None:
            return UNKNOWN_ID
        key = normalize_name(artist, self.version)
        if key in self._artists:
            return self._artists[key]
        if warn:
            close = difflib.get_close_matches(key, [a for a in self._artists if a], n=5)
            warnings.warn(
                f"artist {artist!r} (looked up as {key!r}) is not in the {self.version} artist table; using "
                f"{UNKNOWN!r} (id 0). Closest known: {', '.join(map(repr, close)) or 'none'}",
                UnknownLabelWarning,
                stacklevel=2,
            )
        return UNKNOWN_ID

    def genre_ids(self, genre: str | None, warn: bool = True) -> list[int]:
        """Ids of ``genre``: one per word in v2 (bag of genres), exactly one in v3; unknown words -> 0."""
        if genre is None:
            return [UNKNOWN_ID]
        words = split_genre(genre, self.version)
        ids = []
        for word in words:
            if word in self._genres:
                ids.append(self._genres[word])
                continue
            if warn:
                close = difflib.get_close_matches(word, [g for g in self._genres if g], n=5)
                warnings.warn(
                    f"genre {genre!r} maps to {words}; {word!r} is not in the {self.version} genre table; using "
                    f"{UNKNOWN!r} (id 0). Closest known: {', '.join(map(repr, close)) or 'none'}",
                    UnknownLabelWarning,
                    stacklevel=2,
                )
            ids.append(UNKNOWN_ID)
        return ids

    def artist_name(self, artist_id: int) -> str:
        """Display name of an artist id (names sharing an id are joined with ``_``; id 0 is ``unknown``)."""
        try:
            return self._artist_names[int(artist_id)]
        except KeyError:
            raise UsageError(f"no artist has id {int(artist_id)}") from None

    def genre_name(self, genre_ids: Iterable[int]) -> str:
        """Display name of the genre slots of ``y`` (-1 padding skipped); v2 words join with ``_``."""
        names = []
        for i in genre_ids:
            if int(i) < 0:
                continue
            try:
                names.append(self._genre_names[int(i)])
            except KeyError:
                raise UsageError(f"no genre has id {int(i)}") from None
        return ("_" if self.version == "v2" else ", ").join(names)

    def list_artists(self) -> list[str]:
        """All known artist names (normalised), sorted."""
        return sorted(a for a in self._artists if a)

    def list_genres(self) -> list[str]:
        """All known genres (v2: genre words), sorted."""
        return sorted(g for g in self._genres if g)

    def search_artists(self, query: str, limit: int = 20) -> list[tuple[str, int]]:
        """``(name, id)`` of artists matching ``query``: exact, prefix, substring, then difflib-close."""
        return _search(self._artists, normalize_name(query, self.version), limit)

    def search_genres(self, query: str, limit: int = 20) -> list[tuple[str, int]]:
        """``(genre, id)`` matching ``query``: exact, prefix, substring, then difflib-close."""
        key = query.lower() if self.version == "v3" else normalize_v2(query)
        return _search(self._genres, key, limit)


# ---------------------------------------------------------------------- lyric window
def lyric_window(
    full_tokens: Sequence[int],
    n_tokens: int,
    total_length: int,
    offset: int,
    duration: int,
    *,
    float32: bool = False,
) -> tuple[list[int], list[int]]:
    """The ``n_tokens`` lyric tokens of the window ``[offset, offset + duration)`` of a ``total_length`` song.

    Returns ``(tokens, indices)``: ``indices[i]`` is the position in ``full_tokens`` of ``tokens[i]`` or -1
    for padding. Lyrics shorter than ``n_tokens`` are all used, left-padded with 0. Otherwise the original's
    linear heuristic: the window's centre ``offset + duration / 2`` maps to character
    ``int(len * centre / total_length)``, clamped so the window stays inside the lyrics.

    ``float32=True`` computes that midpoint in float32 tensor arithmetic, as the original does when it
    re-windows ``y`` during sampling (``set_y_lyric_tokens`` reads the numbers from the LongTensor ``y``);
    the default is Python float (float64) arithmetic, as the original's ``get_label`` (dataset, first ``y``).
    """
    if n_tokens < 0:
        raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
    full = [int(t) for t in full_tokens]
    n = len(full)
    if n < n_tokens:
        pad = n_tokens - n
        return [0] * pad + full, [-1] * pad + list(range(n))
    if not 0 <= offset < total_length:
        raise UsageError(f"offset {offset} is outside the song [0, {total_length})")
    if float32:
        centre = torch.tensor(int(offset)) + torch.tensor(int(duration)) / 2.0
        midpoint = int(n * centre / torch.tensor(int(total_length)))
    else:
        midpoint = int(n * (offset + duration / 2.0) / total_length)
    half = n_tokens // 2
    midpoint = min(max(midpoint, half), n - (n_tokens - half))
    start = midpoint - half
    indices = list(range(start, start + n_tokens))
    return full[start : start + n_tokens], indices


# ---------------------------------------------------------------------- y construction
@dataclass(frozen=True)
class LabelInfo:
    """What ``y`` was built from, per item: the names as given, the cleaned lyrics and all their tokens; ``window``:
    the position in ``full_tokens`` of each lyric token of ``y``'s window (-1: padding), as :func:`lyric_window`
    returns them."""

    artist: str
    genre: str
    lyrics: str
    full_tokens: tuple[int, ...]
    window: tuple[int, ...] = ()


@dataclass(frozen=True)
class Labels:
    """A batch of label vectors ``y`` [B, label_width] (long) and the per-item :class:`LabelInfo`."""

    y: torch.Tensor
    infos: tuple[LabelInfo, ...]


_META_KEYS = ("artist", "genre", "lyrics", "total_length", "offset")
_TEMPO_KEYS = ("bpm", "beat0")  # optional: a tempo in BPM (0 or None: no steady pulse) and a beat's time (samples)


@dataclass(frozen=True, eq=False)
class Labeller:
    """Builds ``y`` for one prior: its tables, genre slots, lyric window size and window length (samples)."""

    vocab: LabelVocab
    max_bow_genre_size: int
    n_tokens: int
    sample_length: int
    #: the prior takes a tempo label and beat phase (:attr:`jukebox.prior.config.LabelConfig.tempo`)
    tempo: bool = False

    def __post_init__(self) -> None:
        if self.max_bow_genre_size < 1 or self.n_tokens < 0 or self.sample_length < 1:
            raise ValueError(
                f"invalid Labeller sizes: max_bow_genre_size={self.max_bow_genre_size}, "
                f"n_tokens={self.n_tokens}, sample_length={self.sample_length}"
            )

    @property
    def label_width(self) -> int:
        """Width of ``y``: ``4 + max_bow_genre_size (+ 2 with tempo) + n_tokens``."""
        return 4 + self.max_bow_genre_size + self._n_tempo + self.n_tokens

    @property
    def _n_tempo(self) -> int:
        return 2 if self.tempo else 0

    def _tempo_entries(self, bpm: float | None, beat0: int | None) -> list[int]:
        if not self.tempo:
            return []
        bpm = 0.0 if bpm is None else float(bpm)
        if not (bpm == 0.0 or 1.0 <= bpm <= 1000.0):
            raise UsageError(f"bpm must be between 1 and 1000 (or 0 for no steady pulse), got {bpm}")
        return [int(round(bpm * 100)), int(beat0 or 0) if bpm else 0]

    def _pad_genres(self, genre_ids: Sequence[int], genre: object = None) -> list[int]:
        ids = [int(g) for g in genre_ids]
        if len(ids) > self.max_bow_genre_size:
            what = f"genre {genre!r}" if genre is not None else "genre ids"
            raise UsageError(f"{what} has {len(ids)} genre words; this model takes at most {self.max_bow_genre_size}")
        return ids + [-1] * (self.max_bow_genre_size - len(ids))

    def label(
        self, artist: str | None, genre: str | None, lyrics: str | None, total_length: int, offset: int,
        warn: bool = True, bpm: float | None = None, beat0: int | None = None,
    ) -> tuple[list[int], LabelInfo]:
        """``y`` (a list of ints) for the window at ``offset`` of a song, and its :class:`LabelInfo`. ``warn``:
        warn about names the vocabulary lacks (they map to ``unknown`` either way). ``bpm``/``beat0``: the song's
        beat grid, for tempo priors (ignored by others; None or 0: no steady pulse)."""
        artist_id = self.vocab.artist_id(artist, warn=warn)
        genre_ids = self._pad_genres(self.vocab.genre_ids(genre, warn=warn), genre)
        text = self.vocab.lyric_vocab.clean(lyrics or "")
        full_tokens = self.vocab.lyric_vocab.tokenise(text)
        tokens, window = lyric_window(full_tokens, self.n_tokens, int(total_length), int(offset), self.sample_length)
        y = [int(total_length), int(offset), self.sample_length, artist_id, *genre_ids,
             *self._tempo_entries(bpm, beat0), *tokens]
        info = LabelInfo(artist or UNKNOWN, genre or UNKNOWN, text, tuple(full_tokens), tuple(window))
        return y, info

    def y_from_ids(
        self, artist_id: int, genre_ids: Sequence[int], lyric_tokens: Sequence[int], total_length: int, offset: int,
        bpm: float | None = None, beat0: int | None = None,
    ) -> list[int]:
        """``y`` from ids directly (the original's ``get_y_from_ids``); ``lyric_tokens`` must be ``n_tokens`` long."""
        if self.n_tokens > 0 and len(lyric_tokens) != self.n_tokens:
            raise UsageError(f"expected {self.n_tokens} lyric tokens, got {len(lyric_tokens)}")
        tokens = [int(t) for t in lyric_tokens] if self.n_tokens > 0 else []
        genres = self._pad_genres(genre_ids)
        return [int(total_length), int(offset), self.sample_length, int(artist_id), *genres,
                *self._tempo_entries(bpm, beat0), *tokens]

    def batch_labels(self, metas: Sequence[Mapping[str, Any]], device: torch.device | str | None = None,
                     warn: bool = True) -> Labels:
        """``y`` [B, label_width] for items given as mappings with keys artist, genre, lyrics, total_length, offset
        and, optionally, bpm and beat0 (tempo priors)."""
        ys, infos = [], []
        for i, meta in enumerate(metas):
            missing = [k for k in _META_KEYS if k not in meta]
            if missing:
                raise UsageError(f"label item {i} lacks {missing}")
            y, info = self.label(*(meta[k] for k in _META_KEYS), warn=warn,
                                 **{k: meta.get(k) for k in _TEMPO_KEYS})
            ys.append(y)
            infos.append(info)
        y = torch.tensor(ys, dtype=torch.long, device=device).reshape(len(ys), self.label_width)
        return Labels(y, tuple(infos))

    def window_y(self, labels: Labels, start: int, raw_to_tokens: int) -> tuple[torch.Tensor, list[list[int]]]:
        """``y`` for the window starting at token ``start`` of this prior's level (the original's ``get_y``).

        Sets ``sample_length`` to this labeller's, adds ``start * raw_to_tokens`` to each offset and re-chooses
        the lyric window (float32 midpoint, as the original). Returns the new ``y`` and, per item, the indices
        of its lyric tokens in the full lyrics (-1 for padding; empty lists when ``n_tokens == 0``).
        """
        y = labels.y.clone()
        if y.shape != (len(labels.infos), self.label_width):
            raise UsageError(f"y has shape {tuple(y.shape)}, expected {(len(labels.infos), self.label_width)}")
        y[:, 2] = int(self.sample_length)
        y[:, 1] += int(start * raw_to_tokens)
        if self.n_tokens == 0:
            return y, [[] for _ in labels.infos]
        rows, indices = [], []
        for i, info in enumerate(labels.infos):
            total_length, offset, duration = (int(v) for v in y[i, :3].tolist())
            tokens, idx = lyric_window(info.full_tokens, self.n_tokens, total_length, offset, duration, float32=True)
            rows.append(tokens)
            indices.append(idx)
        y[:, -self.n_tokens :] = torch.tensor(rows, dtype=torch.long, device=y.device)
        return y, indices

    def describe(self, y: torch.Tensor | Sequence[int]) -> dict[str, Any]:
        """Human-readable fields of one label vector."""
        values = [int(v) for v in (y.tolist() if isinstance(y, torch.Tensor) else y)]
        if len(values) != self.label_width:
            raise UsageError(f"label vector has {len(values)} entries, expected {self.label_width}")
        g = 4 + self.max_bow_genre_size
        out = {
            "total_length": values[0],
            "offset": values[1],
            "sample_length": values[2],
            "artist": self.vocab.artist_name(values[3]),
            "genre": self.vocab.genre_name(values[4:g]),
            "lyrics": self.vocab.lyric_vocab.detokenise(values[g + self._n_tempo:]),
        }
        if self.tempo:
            out["bpm"], out["beat0"] = values[g] / 100.0, values[g + 1]
        return out


def build_y(
    vocab: LabelVocab,
    metas: Sequence[Mapping[str, Any]],
    *,
    sample_length: int,
    n_tokens: int,
    max_bow_genre_size: int,
    device: torch.device | str | None = None,
) -> Labels:
    """``y`` [B, 4 + max_bow_genre_size + n_tokens] for a batch of items (artist, genre, lyrics, total_length,
    offset), each a window of ``sample_length`` samples; see :meth:`Labeller.batch_labels`."""
    return Labeller(vocab, max_bow_genre_size, n_tokens, sample_length).batch_labels(metas, device=device)
