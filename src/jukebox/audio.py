"""Audio input and output.

``load_audio`` decodes wav/flac/ogg/opus/mp3 (anything libsndfile reads) through ``soundfile``, mixes to mono,
resamples with ``soxr`` and returns float32 in [-1, 1]. ``save_audio`` writes wav (16-bit PCM by default,
32-bit float on request) or flac, atomically. Every failure on a user's file is a one-line
:class:`~jukebox.errors.JukeboxError` that names the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from .checkpoint.atomic import atomic_path
from .errors import JukeboxError

#: Longest input we decode in one go (hours); longer files are almost certainly a mistake.
MAX_SECONDS = 4 * 3600
_SUBTYPES = {"pcm16": "PCM_16", "pcm24": "PCM_24", "float": "FLOAT"}


def audio_info(path: str | Path) -> tuple[int, int, float]:
    """Return (sample_rate, channels, seconds) of an audio file without decoding it."""
    path = Path(path)
    _check_file(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise JukeboxError(f"{path}: not a readable audio file ({_short(e)})") from None
    return int(info.samplerate), int(info.channels), float(info.frames) / max(int(info.samplerate), 1)


def load_audio(
    path: str | Path,
    sample_rate: int | None = None,
    offset_seconds: float = 0.0,
    duration_seconds: float | None = None,
    mono: bool = True,
) -> tuple[np.ndarray, int]:
    """Decode an audio file.

    Returns ``(audio, sr)``: audio is float32 [T] when ``mono`` (channels averaged), else [C, T], in [-1, 1];
    ``sr`` is ``sample_rate`` when given (resampled with soxr), else the file's own rate.
    ``offset_seconds``/``duration_seconds`` select a part of the file (in the file's own time).
    """
    path = Path(path)
    _check_file(path)
    try:
        with sf.SoundFile(str(path)) as f:
            sr_in = int(f.samplerate)
            if sr_in <= 0 or f.channels <= 0:
                raise JukeboxError(f"{path}: invalid header (sample rate {sr_in}, {f.channels} channels)")
            start = max(0, int(round(offset_seconds * sr_in)))
            frames = f.frames if f.frames > 0 else None
            if frames is not None and frames / sr_in > MAX_SECONDS and duration_seconds is None:
                raise JukeboxError(
                    f"{path}: {frames / sr_in / 3600:.1f} hours of audio is longer than the "
                    f"{MAX_SECONDS // 3600} h limit; cut it or pass a duration"
                )
            if start:
                f.seek(start)
            n = -1 if duration_seconds is None else max(0, int(round(duration_seconds * sr_in)))
            data = f.read(frames=n, dtype="float32", always_2d=True)
    except JukeboxError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise JukeboxError(f"{path}: not a readable audio file ({_short(e)})") from None
    except MemoryError:
        raise JukeboxError(f"{path}: too large to decode in memory; pass a shorter duration") from None
    if data.shape[0] == 0:
        raise JukeboxError(f"{path}: contains no audio samples")
    audio = data.T  # [C, T]
    if not np.all(np.isfinite(audio)):
        raise JukeboxError(f"{path}: contains NaN or infinite samples")
    audio = np.clip(audio, -1.0, 1.0)
    if mono:
        audio = audio.mean(axis=0)
    sr = sr_in
    if sample_rate is not None and sample_rate != sr_in:
        audio = resample(audio, sr_in, sample_rate)
        sr = sample_rate
    return np.ascontiguousarray(audio, dtype=np.float32), sr


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample ``audio`` [T] or [C, T] from ``sr_in`` to ``sr_out`` Hz with soxr (high quality)."""
    import soxr

    if sr_in == sr_out:
        return audio.astype(np.float32, copy=False)
    if sr_in <= 0 or sr_out <= 0:
        raise JukeboxError(f"invalid sample rates for resampling: {sr_in} -> {sr_out}")
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        return soxr.resample(x, sr_in, sr_out, quality="VHQ").astype(np.float32)
    return np.ascontiguousarray(soxr.resample(x.T, sr_in, sr_out, quality="VHQ").T, dtype=np.float32)


def save_audio(
    audio: np.ndarray | object,
    path: str | Path,
    sample_rate: int = 44100,
    subtype: str = "pcm16",
    force: bool = True,
) -> Path:
    """Write ``audio`` to ``path`` (.wav or .flac), atomically.

    ``audio`` may be a numpy array or torch tensor of shape [T], [C, T] or [1, C, T] (batch of one), float in
    [-1, 1] (values outside are clipped). ``subtype``: ``pcm16`` (default), ``pcm24`` or ``float`` (wav only).
    With ``force=False`` an existing file is never overwritten.
    """
    path = Path(path)
    if not force and path.exists():
        raise JukeboxError(f"{path} already exists; pass --force to overwrite it")
    x = _to_numpy(audio)
    if x.ndim == 3:
        if x.shape[0] != 1:
            raise JukeboxError(f"save_audio takes one item at a time, got a batch of {x.shape[0]}")
        x = x[0]
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] == 0:
        raise JukeboxError(f"cannot save audio of shape {tuple(x.shape)} to {path}")
    suffix = path.suffix.lower()
    fmt = {".wav": "WAV", ".flac": "FLAC"}.get(suffix)
    if fmt is None:
        raise JukeboxError(f"{path}: unsupported output format {suffix or '(none)'}; use .wav or .flac")
    if subtype not in _SUBTYPES:
        raise JukeboxError(f"unknown audio subtype {subtype!r}; use one of {sorted(_SUBTYPES)}")
    if fmt == "FLAC" and subtype == "float":
        raise JukeboxError("flac cannot store float samples; use .wav for subtype 'float'")
    x = np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    if subtype != "float":
        x = np.clip(x, -1.0, 1.0)
    with atomic_path(path) as tmp:
        try:
            sf.write(str(tmp), x.T, int(sample_rate), subtype=_SUBTYPES[subtype], format=fmt)
        except (sf.LibsndfileError, RuntimeError) as e:  # libsndfile reports a full disk as "System error."
            raise JukeboxError(f"could not write {path} ({_short(e)}); is the disk full or the folder "
                               "read-only?") from None
    return path


def _to_numpy(audio: object) -> np.ndarray:
    if hasattr(audio, "detach"):
        return audio.detach().float().cpu().numpy()  # type: ignore[union-attr]
    return np.asarray(audio)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise JukeboxError(f"{path}: no such file")
    if path.is_dir():
        raise JukeboxError(f"{path}: is a folder, expected an audio file")
    if path.stat().st_size == 0:
        raise JukeboxError(f"{path}: file is empty")


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:200]
