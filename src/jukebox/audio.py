"""Audio input and output.

``load_audio`` decodes wav/flac/ogg/opus/mp3 (anything libsndfile reads) through ``soundfile``, mixes to mono,
resamples with ``soxr`` and returns float32 in [-1, 1]. ``save_audio`` writes wav (16-bit PCM by default,
32-bit float on request) or flac, atomically. Every failure on a user's file is a one-line
:class:`~jukebox.errors.JukeboxError` that names the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from .atomic import atomic_path
from .errors import JukeboxError
from .fileio import check_regular, display

#: Longest input we decode in one go (hours); longer files are almost certainly a mistake.
MAX_SECONDS = 4 * 3600
#: A frame count at or above this is libsndfile's "length unknown" (SF_COUNT_MAX), not a length.
UNKNOWN_FRAMES = 2**62
#: Most samples (frames x channels, at the file's own rate) one file may decode to: 3.1 h of 96 kHz stereo.
MAX_DECODE_SAMPLES = 2**31
#: Most values one decode may return (1 GiB of float32): 101 min of mono at 44.1 kHz, 3.4 h at 22.05 kHz.
MAX_OUTPUT_SAMPLES = 2**28
#: Samples (frames x channels) decoded per block (4 MiB of float32).
BLOCK_SAMPLES = 2**20
_SUBTYPES = {"pcm16": "PCM_16", "pcm24": "PCM_24", "float": "FLOAT"}


def audio_info(path: str | Path) -> tuple[int, int, float]:
    """Return (sample_rate, channels, seconds) of an audio file without decoding it."""
    path = Path(path)
    _check_file(path)
    try:
        info = sf.info(os.fsencode(path))  # bytes: a name that is not UTF-8 opens too
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise JukeboxError(f"{display(path)}: not a readable audio file ({_short(e)})") from None
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

    The header's frames x channels and the size of the result are checked against :data:`MAX_DECODE_SAMPLES` and
    :data:`MAX_OUTPUT_SAMPLES` before anything is decoded; the file is then decoded in blocks of about
    :data:`BLOCK_SAMPLES` samples, each mixed to mono and resampled as it comes, so memory holds the result plus
    one block whatever the file's channel count or rate (and a header that lies is caught as the blocks arrive).
    """
    path = Path(path)
    _check_file(path)
    try:
        with sf.SoundFile(os.fsencode(path)) as f:  # bytes: a name that is not UTF-8 opens too
            return _decode(f, path, sample_rate, offset_seconds, duration_seconds, mono)
    except JukeboxError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise JukeboxError(f"{display(path)}: not a readable audio file ({_short(e)})") from None
    except MemoryError:
        raise JukeboxError(f"{display(path)}: out of memory while decoding; pass a shorter duration") from None


def _decode(f: sf.SoundFile, path: Path, sample_rate: int | None, offset_seconds: float,
            duration_seconds: float | None, mono: bool) -> tuple[np.ndarray, int]:
    """Decode an open file block by block into a preallocated result (see :func:`load_audio`)."""
    name = display(path)
    sr_in, channels = int(f.samplerate), int(f.channels)
    if sr_in <= 0 or channels <= 0:
        raise JukeboxError(f"{name}: invalid header (sample rate {sr_in}, {channels} channels)")
    sr_out = int(sample_rate) if sample_rate is not None else sr_in
    if sr_out <= 0:
        raise JukeboxError(f"invalid sample rate {sr_out} to decode {name} at")
    start = max(0, int(round(offset_seconds * sr_in)))
    # libsndfile says SF_COUNT_MAX frames where the length is unknown (a streamed FLAC): decode what is there, the
    # limits checked as the blocks arrive
    total = int(f.frames) if 0 < f.frames < UNKNOWN_FRAMES else None
    if total is not None and total / sr_in > MAX_SECONDS and duration_seconds is None:
        raise JukeboxError(f"{name}: {total / sr_in / 3600:.1f} hours of audio is longer than the "
                           f"{MAX_SECONDS // 3600} h limit; cut it or pass a duration")
    want = None if duration_seconds is None else max(0, int(round(duration_seconds * sr_in)))
    frames = want if total is None else max(0, total - start) if want is None else min(want, max(0, total - start))
    out_channels = 1 if mono else channels
    if frames is not None:  # what the header promises, checked before a sample is decoded
        _check_budget(name, frames, channels, sr_in, sr_out, out_channels)
    if total is not None and start >= total:
        raise JukeboxError(f"{name}: contains no audio samples after {offset_seconds:g} s (it ends at "
                           f"{total / sr_in:.2f} s)")
    if start:
        f.seek(start)
    unknown = f.frames >= UNKNOWN_FRAMES
    # of unknown length, libsndfile fails the read that would cross the end: small blocks lose at most 1024 frames
    block = 1024 if unknown else max(256, BLOCK_SAMPLES // channels)
    buf = np.empty((block, channels), np.float32)
    capacity = _out_length(frames if frames is not None else block, sr_in, sr_out) + 1
    out = np.empty((out_channels, capacity), np.float32)
    stream = None
    if sr_out != sr_in:
        import soxr

        stream = soxr.ResampleStream(sr_in, sr_out, out_channels, dtype="float32", quality="VHQ")
    n_in = n_out = 0
    remaining = -1 if want is None else want
    while remaining != 0:
        k = block if remaining < 0 else min(block, remaining)
        try:
            got = f.read(frames=k, dtype="float32", always_2d=True, out=buf[:k])
        except (sf.LibsndfileError, RuntimeError):
            if unknown and n_in > 0:
                break  # the end of a stream whose length the header did not give
            raise
        n = got.shape[0]
        if n == 0:
            break
        if not np.isfinite(got).all():
            raise JukeboxError(f"{name}: contains NaN or infinite samples")
        np.clip(got, -1.0, 1.0, out=got)
        x = (got[:, 0] if channels == 1 else got.mean(axis=1)) if mono else got
        y = x if stream is None else stream.resample_chunk(x)
        n_in += n
        if n_in * channels > MAX_DECODE_SAMPLES or (duration_seconds is None and n_in / sr_in > MAX_SECONDS):
            _check_budget(name, n_in, channels, sr_in, sr_out, out_channels)  # a header that lied: stop now
            raise JukeboxError(f"{name}: {n_in / sr_in / 3600:.1f} hours of audio is longer than the "
                               f"{MAX_SECONDS // 3600} h limit; cut it or pass a duration")
        out, n_out = _append(out, n_out, y, name, sr_out)
        if remaining > 0:
            remaining -= n
        if n < k:
            break
    if stream is not None:
        out, n_out = _append(out, n_out, stream.resample_chunk(np.zeros((0, out_channels) if not mono else 0,
                                                                        np.float32), last=True), name, sr_out)
    if n_in == 0:
        raise JukeboxError(f"{name}: contains no audio samples")
    out = out[:, :n_out]
    if mono:
        return out[0], sr_out  # a contiguous view
    return np.ascontiguousarray(out), sr_out


def _out_length(frames: int, sr_in: int, sr_out: int) -> int:
    """Samples the resampler gives for ``frames`` input frames (it rounds up or to the nearest)."""
    return frames if sr_in == sr_out else -(-frames * sr_out // sr_in)


def _check_budget(name: str, frames: int, channels: int, sr_in: int, sr_out: int, out_channels: int) -> None:
    if frames * channels > MAX_DECODE_SAMPLES:
        raise JukeboxError(f"{name}: {frames:,} frames x {channels} channels at {sr_in} Hz is more than the "
                           f"{MAX_DECODE_SAMPLES:,} samples one file may decode to; cut it or pass a duration")
    n_out = _out_length(frames, sr_in, sr_out) * out_channels
    if n_out > MAX_OUTPUT_SAMPLES:
        raise JukeboxError(f"{name}: {frames / sr_in:.0f} s of audio is {n_out:,} samples at {sr_out} Hz, more than "
                           f"the {MAX_OUTPUT_SAMPLES:,} one decode may return; cut it or pass a duration")


def _append(out: np.ndarray, n: int, y: np.ndarray, name: str, sr_out: int) -> tuple[np.ndarray, int]:
    """Write the block ``y`` ([m] or [m, C]) into ``out`` [C, capacity] at ``n``, growing ``out`` when the header
    under-stated the length (never beyond :data:`MAX_OUTPUT_SAMPLES`)."""
    m = y.shape[0]
    if n + m > out.shape[1]:
        need = (n + m) * out.shape[0]
        if need > MAX_OUTPUT_SAMPLES:
            raise JukeboxError(f"{name}: more than {MAX_OUTPUT_SAMPLES:,} samples at {sr_out} Hz, the most one "
                               "decode may return; cut it or pass a duration")
        grown = np.empty((out.shape[0], min(max(2 * out.shape[1], n + m),
                                            MAX_OUTPUT_SAMPLES // out.shape[0])), np.float32)
        grown[:, :n] = out[:, :n]
        out = grown
    out[:, n:n + m] = y.T if y.ndim == 2 else y
    return out, n + m


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
    with atomic_path(path, replace=force) as tmp:  # without force, a file that appears meanwhile is kept too
        try:
            sf.write(os.fsencode(tmp), x.T, int(sample_rate), subtype=_SUBTYPES[subtype], format=fmt)
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
        raise JukeboxError(f"{display(path)}: no such file")
    if path.is_dir():
        raise JukeboxError(f"{display(path)}: is a folder, expected an audio file")
    if check_regular(path, "audio file") == 0:  # a FIFO or a device is refused before libsndfile opens it
        raise JukeboxError(f"{display(path)}: file is empty")


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:200]
