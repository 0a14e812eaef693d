"""Lyric alignment from the top prior's alignment attention head.

For each window of the top level (the same windows as sampling), the attention of every music position over
the window's lyric tokens at ``alignment_layer``/``alignment_head`` is placed at those tokens' positions in the
full lyrics. Earlier windows take precedence where windows overlap (as in Jukebox). The result per item is a
matrix [T_top, n_characters]; each character's time is where its attention peaks.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import torch

from .schedule import window_starts


class LyricAlignment:
    """One item's alignment matrix [T_top, n_characters] (values in [0, 1]), stored as a band: frame t holds the
    characters ``offsets[t] .. offsets[t] + W - 1`` (``band[t]``), every other entry is zero. W is what the
    windows covering a frame read of the lyrics (one window's lyric tokens, plus how far the lyrics move across
    the windows that overlap it), so memory is T_top x W whatever the length of the lyrics: the dense matrix of
    65,536 characters over one context of 8192 frames would be 2 GB per item. :meth:`dense` builds the matrix;
    ``shape``, ``len``, ``argmax`` and ``max`` (``axis`` 0 or 1) answer as the dense matrix would.
    """

    def __init__(self, band: np.ndarray, offsets: np.ndarray, n_chars: int) -> None:
        self.band = np.asarray(band, dtype=np.float32)  # [T, W]
        self.offsets = np.asarray(offsets, dtype=np.int64)  # [T]
        self.n_chars = int(n_chars)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.band.shape[0], self.n_chars)

    def __len__(self) -> int:
        return self.band.shape[0]

    def _columns(self) -> np.ndarray:
        """The character of every band entry, [T, W] (entries past the lyrics are >= n_chars)."""
        return self.offsets[:, None] + np.arange(self.band.shape[1])[None, :]

    def argmax(self, axis: int = 1) -> np.ndarray:
        """``axis=1``: per frame, the character attended most (int64 [T]); ``axis=0``: per character, the first
        frame where its weight peaks (int64 [n_chars]); 0 where all weights are 0, as for the dense matrix."""
        if axis == 0:
            return self.character_peaks()[0]
        if axis != 1:
            raise ValueError("axis must be 0 or 1")
        if self.band.shape[1] == 0:
            return np.zeros(len(self), np.int64)
        best = self.band.argmax(axis=1)
        peak = self.band[np.arange(len(self)), best]
        return np.where(peak > 0, self.offsets + best, 0)

    def max(self, axis: int = 1) -> np.ndarray:
        """Per frame (``axis=1``) or per character (``axis=0``) the largest weight, float32."""
        if axis == 0:
            return self.character_peaks()[1]
        if axis != 1:
            raise ValueError("axis must be 0 or 1")
        return self.band.max(axis=1) if self.band.shape[1] else np.zeros(len(self), np.float32)

    def character_peaks(self) -> tuple[np.ndarray, np.ndarray]:
        """Per character, the first frame where its weight peaks and that weight: (int64 [n_chars], float32
        [n_chars]); a character no frame attends to peaks at frame 0 with weight 0 (as in the dense matrix)."""
        frames = np.zeros(self.n_chars, np.int64)
        peaks = np.zeros(self.n_chars, np.float32)
        cols = self._columns().ravel()
        vals = self.band.ravel()
        keep = (cols < self.n_chars) & (vals > 0)
        if not keep.any():
            return frames, peaks
        rows = np.repeat(np.arange(len(self)), self.band.shape[1])[keep]
        cols, vals = cols[keep], vals[keep]
        order = np.lexsort((rows, -vals, cols))  # by character, then largest weight, then earliest frame
        cols, rows, vals = cols[order], rows[order], vals[order]
        first = np.ones(len(cols), bool)
        first[1:] = cols[1:] != cols[:-1]
        frames[cols[first]] = rows[first]
        peaks[cols[first]] = vals[first]
        return frames, peaks

    def dense(self) -> np.ndarray:
        """The matrix float32 [T_top, n_characters]."""
        out = np.zeros((len(self), self.n_chars + self.band.shape[1]), np.float32)
        rows = np.repeat(np.arange(len(self))[:, None], self.band.shape[1], axis=1)
        out[rows, self._columns()] = self.band
        return out[:, :self.n_chars]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:  # noqa: ANN001 - numpy's protocol
        a = self.dense()
        return a if dtype is None else a.astype(dtype)


@torch.no_grad()
def lyric_alignment(prior, z: torch.Tensor, labels, labeller, hop_fraction: float) -> list[LyricAlignment]:
    """Alignments, one per item (:class:`LyricAlignment`: the matrix [T_top, len(full lyric tokens)] with values
    in [0, 1], held as a band). Windows are read twice: once for the lyric tokens each reads (to size the band),
    then one at a time through the prior; memory stays bounded by the song's frames times the band, whatever the
    length of the lyrics."""
    n, total = z.shape
    n_ctx = prior.n_ctx
    pad = max(0, n_ctx - total)
    if pad:
        z = torch.cat([z, torch.zeros(n, pad, dtype=z.dtype, device=z.device)], dim=1)
    length = z.shape[1]
    hop = max(1, int(hop_fraction * n_ctx))
    starts = window_starts(length, n_ctx, hop)
    lo = np.full((n, length), np.iinfo(np.int64).max, np.int64)
    hi = np.full((n, length), -1, np.int64)
    for start in starts:  # the characters each frame's windows read
        _, indices = labeller.window_y(labels, start, prior.raw_to_tokens)
        for i in range(n):
            idx = np.asarray(indices[i])
            idx = idx[idx >= 0]
            if idx.size:
                lo[i, start:start + n_ctx] = np.minimum(lo[i, start:start + n_ctx], idx.min())
                hi[i, start:start + n_ctx] = np.maximum(hi[i, start:start + n_ctx], idx.max())
    seen = hi >= 0
    lo = np.where(seen, lo, 0)
    width = [int((hi[i] - lo[i] + 1)[seen[i]].max()) if seen[i].any() else 0 for i in range(n)]
    bands = [np.zeros((length, w), np.float32) for w in width]
    for start in reversed(starts):  # earlier windows written last, so they win where windows overlap
        y, indices = labeller.window_y(labels, start, prior.raw_to_tokens)
        for i in range(n):
            idx = np.asarray(indices[i])
            valid = idx >= 0
            if not valid.any():
                continue
            w = prior.alignment_weights(z[i:i + 1, start:start + n_ctx], None, y[i:i + 1])[0]  # [n_ctx, n_tokens]
            w = w.float().cpu().numpy()[:, valid]
            rows = np.arange(start, start + w.shape[0])
            bands[i][rows[:, None], idx[valid][None, :] - lo[i, rows][:, None]] = w
    return [LyricAlignment(bands[i][:total], lo[i, :total], len(info.full_tokens))
            for i, info in enumerate(labels.infos)]


def character_times(alignment: LyricAlignment | np.ndarray, seconds_per_token: float) -> list[float]:
    """Time (s) of each lyric character: where the alignment attention on it peaks."""
    if alignment.shape[0] == 0 or alignment.shape[1] == 0:
        return []
    return [float(t) * seconds_per_token for t in alignment.argmax(axis=0)]


def alignment_json(alignment: LyricAlignment | np.ndarray, lyrics: str, seconds_per_token: float) -> dict:
    """JSON-ready alignment: each character with its time, and the attention peak per character."""
    times = character_times(alignment, seconds_per_token)
    peaks = alignment.max(axis=0) if times else []
    chars = list(lyrics)
    n = min(len(chars), len(times))
    return {
        "seconds_per_token": seconds_per_token,
        "characters": [{"index": i, "char": chars[i], "time": round(times[i], 4),
                        "peak": round(float(peaks[i]), 4)} for i in range(n)],
    }


def alignment_png(alignment: LyricAlignment | np.ndarray, max_size: int = 1024) -> bytes:
    """A grayscale PNG of the alignment (time downwards, characters across), brightest = most attention; at most
    ``max_size`` pixels a side (every step-th frame and character), built without the dense matrix."""
    t, c = alignment.shape
    step_t, step_c = max(1, t // max_size), max(1, c // max_size)
    if isinstance(alignment, LyricAlignment):
        rows = np.arange(0, t, step_t)
        a = np.zeros((len(rows), -(-c // step_c)), np.float32)
        cols = alignment._columns()[rows]
        on_grid = (cols < c) & (cols % step_c == 0)
        r = np.repeat(np.arange(len(rows))[:, None], cols.shape[1], axis=1)
        a[r[on_grid], cols[on_grid] // step_c] = alignment.band[rows][on_grid]
    else:
        a = np.asarray(alignment, dtype=np.float32)[::step_t, ::step_c]
    if a.size == 0:
        a = np.zeros((1, 1), np.float32)
    peak = a.max()
    img = (255 * (a / peak if peak > 0 else a)).clip(0, 255).astype(np.uint8)
    return _png_gray(img)


def _png_gray(img: np.ndarray) -> bytes:
    h, w = img.shape
    raw = b"".join(b"\x00" + img[row].tobytes() for row in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
