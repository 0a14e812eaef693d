"""Audio measures for judging generated music: pulse and tempo, harmony, level and clipping.

:func:`audio_measures` returns, for one clip:

- ``pulse_clarity``: the published pulse measure (:func:`jukebox.data.tempo.pulse_clarity`: highest normalised
  autocorrelation of the onset envelope between 60 and 200 BPM);
- ``tempo_bpm``: :func:`jukebox.data.tempo.estimate_tempo`, or 0.0 when the clip has no pulse (the beat
  tracker's gate, :func:`jukebox.data.tempo.has_pulse`);
- ``harmonic_fraction``: the share of non-silent chroma frames whose strongest pitch class holds at least
  :data:`HARMONIC_RATIO` (2.5) times the frame's mean pitch-class energy, i.e. frames where notes are playing;
- ``chroma_peak_ratio``: the mean over non-silent frames of that max / mean ratio (1 for a flat chroma, 12 for
  a single pitch class; a major triad of sines gives about 4, white noise about 1.3);
- ``rms_dbfs`` and ``peak_dbfs`` of the whole clip (-120 for digital silence) and ``clipped_fraction``, the
  share of samples with ``|x| >= 0.999``.

The chroma comes from an STFT of about 0.37 s (8192 samples at 22.05 kHz, hop a quarter of that): power in
60 semitones from C2 (65 Hz) to B6 (1976 Hz), each the mean power of the bins under a triangle one semitone
either side of it, summed by pitch class. Frames quieter than :data:`SILENT_DBFS` (-60 dBFS RMS) are ignored.
"""

from __future__ import annotations

import math

import numpy as np

from ..data.tempo import estimate_tempo, has_pulse, onset_envelope, pulse_clarity
from ..errors import UsageError

#: Frames whose RMS is below this level (dBFS) count as silent for the chroma measures.
SILENT_DBFS = -60.0
#: A frame is harmonic when its strongest pitch class has at least this many times the mean pitch-class energy.
HARMONIC_RATIO = 2.5
#: Samples at or above this magnitude count as clipped.
CLIP_LEVEL = 0.999
_FLOOR_DB = -120.0
_MIDI_LO, _MIDI_HI = 36, 95  # C2 .. B6: five whole octaves, every pitch class five times
_BLOCK = 256  # chroma frames per STFT block (bounded memory on long clips)


def _as_channels(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[-1] == 0:
        raise UsageError(f"audio must be [T] or [channels, T] with samples, got shape {tuple(np.shape(audio))}")
    if not np.issubdtype(x.dtype, np.floating):
        raise UsageError(f"audio must be float in [-1, 1], got {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise UsageError("audio has NaN or infinite samples")
    return x


def _db(x: float) -> float:
    return max(_FLOOR_DB, 20 * math.log10(x)) if x > 0 else _FLOOR_DB


def _pitch_matrix(sample_rate: int, n_fft: int) -> np.ndarray:
    """[n_semitones, n_bins] triangles in log frequency, one semitone either side of each pitch, rows sum to 1."""
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    with np.errstate(divide="ignore"):
        pitch = 69 + 12 * np.log2(freqs / 440.0)  # -inf at DC
    midi = np.arange(_MIDI_LO, _MIDI_HI + 1)
    w = np.clip(1 - np.abs(pitch[None] - midi[:, None]), 0, None)
    w /= np.maximum(w.sum(1, keepdims=True), 1e-12)
    return w


def chroma(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Mono audio [T] -> (chroma [n_frames, 12] power per pitch class C, C#, ..., B; frame RMS in dBFS
    [n_frames]). Frames of about 0.37 s, hop a quarter of that (see the module's docstring)."""
    if sample_rate <= 0:
        raise UsageError(f"sample_rate must be positive, got {sample_rate}")
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    n_fft = 1 << int(round(math.log2(0.372 * sample_rate)))
    hop = n_fft // 4
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    n_frames = 1 + (len(x) - n_fft) // hop
    pm = _pitch_matrix(sample_rate, n_fft)
    used = int(np.nonzero(pm.any(0))[0].max()) + 1
    pm = pm[:, :used].astype(np.float32)
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    window /= window.sum()
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop][:n_frames]
    out = np.zeros((n_frames, 12), dtype=np.float64)
    rms = np.zeros(n_frames, dtype=np.float64)
    fold = np.zeros((pm.shape[0], 12), dtype=np.float32)
    fold[np.arange(pm.shape[0]), (np.arange(_MIDI_LO, _MIDI_HI + 1)) % 12] = 1
    for i in range(0, n_frames, _BLOCK):
        f = frames[i:i + _BLOCK]
        rms[i:i + len(f)] = np.sqrt(np.mean(np.square(f, dtype=np.float64), axis=1))
        spec = np.fft.rfft(f * window, axis=1)[:, :used]
        power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
        out[i:i + len(f)] = (power @ pm.T) @ fold
    with np.errstate(divide="ignore"):
        rms_db = np.maximum(20 * np.log10(rms), _FLOOR_DB)
    return out, rms_db


def audio_measures(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Measures of one clip, audio [T] or [channels, T] float in [-1, 1] (channels are averaged for the
    spectral measures; level and clipping look at every sample). Keys: ``pulse_clarity``, ``tempo_bpm``,
    ``harmonic_fraction``, ``chroma_peak_ratio``, ``rms_dbfs``, ``peak_dbfs``, ``clipped_fraction`` (defined in
    the module's docstring). A clip without non-silent frames has harmonic fraction and chroma ratio 0."""
    if sample_rate <= 0:
        raise UsageError(f"sample_rate must be positive, got {sample_rate}")
    x = _as_channels(audio)
    mono = x.mean(0).astype(np.float32)
    env, fr = onset_envelope(mono, sample_rate)
    pulse = pulse_clarity(env, fr)
    bpm = estimate_tempo(env, fr) if has_pulse(env, fr) else 0.0
    ch, rms_db = chroma(mono, sample_rate)
    active = rms_db >= SILENT_DBFS
    if active.any():
        c = ch[active]
        mean = c.mean(1)
        ratio = np.where(mean > 0, c.max(1) / np.maximum(mean, 1e-30), 1.0)
        harmonic, peak_ratio = float(np.mean(ratio >= HARMONIC_RATIO)), float(ratio.mean())
    else:
        harmonic, peak_ratio = 0.0, 0.0
    mag = np.abs(x.astype(np.float64))
    return {
        "pulse_clarity": float(pulse),
        "tempo_bpm": float(bpm),
        "harmonic_fraction": harmonic,
        "chroma_peak_ratio": peak_ratio,
        "rms_dbfs": _db(float(np.sqrt(np.mean(np.square(mag))))),
        "peak_dbfs": _db(float(mag.max())),
        "clipped_fraction": float(np.mean(mag >= CLIP_LEVEL)),
    }


def tempo_matches(estimated: float, asked: float, tol: float = 0.05) -> bool:
    """Whether ``estimated`` BPM is within ``tol`` (relative) of ``asked`` BPM or of its half or double (tempo
    estimators often report the neighbouring metrical level). An estimate of 0 (no pulse) never matches."""
    if not (math.isfinite(asked) and asked > 0):
        raise UsageError(f"the asked tempo must be a positive number of BPM, got {asked}")
    if not 0 < tol < 1:
        raise UsageError(f"tol must be in (0, 1), got {tol}")
    if not (math.isfinite(estimated) and estimated > 0):
        return False
    return any(abs(estimated - asked * m) <= tol * asked * m for m in (1.0, 0.5, 2.0))
