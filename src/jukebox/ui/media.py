"""Pictures for the web page: a log-magnitude spectrogram of a clip as a colour PNG (numpy only)."""

from __future__ import annotations

import struct
import zlib

import numpy as np

#: A perceptually ordered dark-to-bright colour ramp (close to matplotlib's "magma"), interpolated linearly.
_RAMP = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
                  [250, 193, 39], [252, 255, 164]], dtype=np.float32)


def spectrogram(audio: np.ndarray, n_fft: int = 512, hop: int | None = None, floor_db: float = -80.0) -> np.ndarray:
    """Log-magnitude spectrogram of mono ``audio`` [T]: float32 [n_fft // 2 + 1, frames] scaled to [0, 1].

    0 is ``floor_db`` below the loudest bin (or silence), 1 the loudest bin.
    """
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    hop = hop or max(1, n_fft // 4)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    frames = 1 + (x.size - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    mag = np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft).astype(np.float32), axis=1)).T  # [F, frames]
    db = 20.0 * np.log10(np.maximum(mag, 1e-10))
    top = db.max()
    if not np.isfinite(top) or top <= -199.0:
        return np.zeros_like(db, dtype=np.float32)
    return np.clip((db - top - floor_db) / -floor_db, 0.0, 1.0).astype(np.float32)


def colorize(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] of shape [H, W] to uint8 RGB [H, W, 3] along the colour ramp."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0.0, 1.0) * (len(_RAMP) - 1)
    lo = np.floor(v).astype(np.int64).clip(0, len(_RAMP) - 2)
    frac = (v - lo)[..., None]
    rgb = _RAMP[lo] * (1.0 - frac) + _RAMP[lo + 1] * frac
    return rgb.round().clip(0, 255).astype(np.uint8)


def png_rgb(img: np.ndarray) -> bytes:
    """Encode uint8 RGB [H, W, 3] as a PNG file's bytes."""
    h, w, c = img.shape
    if c != 3 or h == 0 or w == 0:
        raise ValueError(f"expected a non-empty [H, W, 3] image, got shape {img.shape}")
    raw = b"".join(b"\x00" + np.ascontiguousarray(img[row]).tobytes() for row in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def spectrogram_png(audio: np.ndarray, sample_rate: int, width: int = 800, height: int = 200) -> bytes:
    """A colour spectrogram PNG of mono ``audio`` (time across, low frequencies at the bottom).

    The STFT hop is chosen so the image is about ``width`` columns wide; frequency bins are resampled to
    ``height`` rows. ``sample_rate`` only sets the FFT size (about 23 ms windows).
    """
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    n_fft = int(2 ** np.clip(round(np.log2(max(sample_rate, 1) * 0.023)), 7, 12))
    hop = max(1, x.size // max(width, 1), n_fft // 8)
    spec = spectrogram(x, n_fft=n_fft, hop=hop)
    rows = np.linspace(0, spec.shape[0] - 1, num=min(height, spec.shape[0])).round().astype(np.int64)
    spec = spec[rows][::-1]
    return png_rgb(colorize(spec))
