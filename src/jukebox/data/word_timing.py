"""Word timings of sung tracks, and the lyric-alignment targets a prior's training derives from them.

A track may carry ``words``: the sung words in order, each ``(word, start_seconds, end_seconds)`` (in
``metadata.jsonl`` / a manifest a list of ``[word, start, end]`` lists). They are optional: most music has none.

:func:`word_char_spans` finds each word in the cleaned lyric text (an in-order match on letters and digits, so
punctuation and case do not matter; a word that cannot be found near where the previous one ended is skipped),
and :func:`alignment_targets` turns a window of codes into, per code position, the range of lyric-window columns
of the word being sung then.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import JukeboxError

__all__ = ["Words", "parse_words", "word_char_spans", "alignment_targets", "NO_TARGET"]

#: A track's word timings: ``((word, start_seconds, end_seconds), ...)`` in sung order.
Words = tuple[tuple[str, float, float], ...]

#: The target of a position where nothing is sung (or the word's characters are outside the window).
NO_TARGET = (-1, -1)

_PIECE = re.compile(r"[A-Za-z0-9]+")
_LOOKAHEAD = 64  # pieces of text searched past the previous match for the next word


def parse_words(value: Any, where: str) -> Words:
    """``value`` (a list of ``[word, start_seconds, end_seconds]``) as :data:`Words`, checked once; ``where``
    names the file and track in the one-line :class:`JukeboxError` of a malformed value."""
    if value is None or value == "":
        return ()
    if not isinstance(value, (list, tuple)):
        raise JukeboxError(f"{where}: 'words' must be a list of [word, start_seconds, end_seconds], "
                           f"got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        ok = isinstance(item, (list, tuple)) and len(item) == 3 and isinstance(item[0], str)
        if ok:
            try:
                start, end = float(item[1]), float(item[2])
            except (TypeError, ValueError):
                ok = False
            else:
                ok = bool(np.isfinite(start) and np.isfinite(end)) and 0.0 <= start <= end and not (
                    isinstance(item[1], bool) or isinstance(item[2], bool))
        if not ok:
            raise JukeboxError(f"{where}: 'words' item {i} must be [word, start_seconds, end_seconds] with "
                               f"0 <= start <= end, got {str(item)[:80]}")
        out.append((item[0], start, end))
    return tuple(out)


def _pieces(text: str) -> list[tuple[str, int, int]]:
    """Lower-cased runs of letters and digits of ``text`` with their character spans [start, end)."""
    return [(m.group().lower(), m.start(), m.end()) for m in _PIECE.finditer(text)]


def word_char_spans(words: Sequence[tuple[str, float, float]], text: str,
                    clean: Any = None) -> list[tuple[int, int] | None]:
    """Per word, its character span ``(a, b)`` in the cleaned lyrics ``text`` (positions of the full lyric token
    sequence), or None where it was not found.

    Each word is cleaned with ``clean`` (the labeller's cleaning, e.g. ``LyricVocab.clean``; default none) and cut
    into runs of letters and digits; those runs are looked for in order, among the next few runs of the text after
    the previous match, case-insensitively. A word without letters or digits, or not found there, is skipped (the
    next word is looked for from the same place)."""
    pieces = _pieces(text)
    keys = [p[0] for p in pieces]
    out: list[tuple[int, int] | None] = []
    cursor = 0
    for word, _, _ in words:
        want = [p[0] for p in _pieces(clean(word) if clean is not None else word)]
        found = None
        if want:
            n = len(want)
            for i in range(cursor, min(len(keys) - n + 1, cursor + _LOOKAHEAD)):
                if keys[i:i + n] == want:
                    found = i
                    break
        if found is None:
            out.append(None)
            continue
        out.append((pieces[found][1], pieces[found + len(want) - 1][2]))
        cursor = found + len(want)
    return out


def alignment_targets(words: Sequence[tuple[str, float, float]], spans: Sequence[tuple[int, int] | None],
                      indices: Sequence[int], offset: int, n_ctx: int, raw_to_tokens: int,
                      sample_rate: int) -> np.ndarray:
    """Target columns of each code position of one window: int64 [n_ctx, 2] of ``[c0, c1)``.

    Position t is at ``(offset + t * raw_to_tokens) / sample_rate`` seconds; the word sung then (``start <= time <
    end``; the later word where two overlap) has the character span ``spans[i]`` (from :func:`word_char_spans`),
    and its target is the window columns whose lyric index (``indices[c]``, as :func:`~jukebox.data.labels.
    lyric_window` returns them, -1 for padding) falls inside that span. :data:`NO_TARGET` ``(-1, -1)`` where nothing
    is sung, the word was not matched, or none of its characters is in the window (a word cut by the window's edge
    keeps the columns it has)."""
    out = np.full((n_ctx, 2), -1, np.int64)
    kept = [(float(w[1]), float(w[2]), s) for w, s in zip(words, spans) if s is not None]
    if not kept or not len(indices):
        return out
    kept.sort(key=lambda k: k[0])
    starts = np.array([k[0] for k in kept])
    ends = np.array([k[1] for k in kept])
    idx = np.asarray(indices, np.int64)
    times = (offset + np.arange(n_ctx, dtype=np.float64) * raw_to_tokens) / sample_rate
    cols = np.full((len(kept), 2), -1, np.int64)  # each word's columns in this window
    for i, (_, _, (a, b)) in enumerate(kept):
        inside = np.nonzero((idx >= a) & (idx < b))[0]
        if len(inside):
            cols[i] = (inside[0], inside[-1] + 1)
    which = np.searchsorted(starts, times, side="right") - 1
    sung = (which >= 0) & (times < ends[np.maximum(which, 0)])
    out[sung] = cols[which[sung]]
    return out
