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


@torch.no_grad()
def lyric_alignment(prior, z: torch.Tensor, labels, labeller, hop_fraction: float) -> list[np.ndarray]:
    """Alignment matrices, one per item: float32 [T_top, len(full lyric tokens)] with values in [0, 1]."""
    n, total = z.shape
    n_ctx = prior.n_ctx
    pad = max(0, n_ctx - total)
    if pad:
        z = torch.cat([z, torch.zeros(n, pad, dtype=z.dtype, device=z.device)], dim=1)
    length = z.shape[1]
    hop = max(1, int(hop_fraction * n_ctx))
    starts = window_starts(length, n_ctx, hop)
    out = [np.zeros((length, len(info.full_tokens) + 1), dtype=np.float32) for info in labels.infos]
    for start in reversed(starts):  # earlier windows written last, so they win where windows overlap
        y, indices = labeller.window_y(labels, start, prior.raw_to_tokens)
        for i in range(n):
            w = prior.alignment_weights(z[i:i + 1, start:start + n_ctx], None, y[i:i + 1])[0]  # [n_ctx, n_tokens]
            cols = np.asarray(indices[i])  # -1 (padding) lands in the spare last column
            out[i][start:start + n_ctx, cols] = w.float().cpu().numpy()
    return [a[:total, :-1] for a in out]


def character_times(alignment: np.ndarray, seconds_per_token: float) -> list[float]:
    """Time (s) of each lyric character: where the alignment attention on it peaks."""
    if alignment.size == 0:
        return []
    return [float(t) * seconds_per_token for t in alignment.argmax(axis=0)]


def alignment_json(alignment: np.ndarray, lyrics: str, seconds_per_token: float) -> dict:
    """JSON-ready alignment: each character with its time, and the attention peak per character."""
    times = character_times(alignment, seconds_per_token)
    chars = list(lyrics)
    n = min(len(chars), len(times))
    return {
        "seconds_per_token": seconds_per_token,
        "characters": [{"index": i, "char": chars[i], "time": round(times[i], 4),
                        "peak": round(float(alignment[:, i].max()), 4)} for i in range(n)],
    }


def alignment_png(alignment: np.ndarray, max_size: int = 1024) -> bytes:
    """A grayscale PNG of the alignment (time downwards, characters across), brightest = most attention."""
    a = np.asarray(alignment, dtype=np.float32)
    if a.size == 0:
        a = np.zeros((1, 1), np.float32)
    step_t = max(1, a.shape[0] // max_size)
    step_c = max(1, a.shape[1] // max_size)
    a = a[::step_t, ::step_c]
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
