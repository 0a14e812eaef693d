"""Tempo and beats of a track: onset envelope, pulse clarity, tempo estimate, beat tracking, window grids.

The pipeline follows Ellis (2007), "Beat tracking by dynamic programming" (the tracker librosa's ``beat_track``
implements), in numpy and torch only:

1. :func:`onset_envelope`: positive spectral flux of an 80-band log-mel spectrogram (30 Hz to 11 kHz, or the
   Nyquist rate) at a hop of 256 samples per 22050 Hz (11.6 ms; 512 at 44.1 kHz), window 8 hops, averaged over
   bands, minus its 1 s local mean and a 0.05 dB gate, half-wave rectified. Frame ``i`` stands for the time
   ``i / frame_rate`` s. The STFT runs in blocks of frames: beat tracking needs about 230 MB beyond the audio
   for 10 minutes, 300 MB for an hour (0.9 s and 4.5 s on one core at 22.05 kHz).
2. :func:`pulse_clarity`: how periodic the envelope is (the published measure, defined there).
3. :func:`estimate_tempo`: mean of 8 s windowed autocorrelations, weighted by a log-normal prior around
   120 BPM, peak refined to a fraction of a frame.
4. :func:`track_beats`: dynamic programming over the envelope, favouring onsets spaced by the tempo's period
   (penalty ``-tightness * log(gap / period) ** 2``), backtrace, trim of weak leading and trailing beats.
   Music without a pulse (:func:`has_pulse`: clarity below :data:`MIN_PULSE`) or silence gets no beats, bpm 0.
5. :func:`fit_grid`: the constant-tempo grid that best fits the beats of a window of a song (a training window's
   tempo label).

Beats are stored next to a code folder's codes in :data:`TEMPO_FILE` (:func:`save_beats`, :func:`load_beats`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write_text
from ..errors import JukeboxError, UsageError
from ..fileio import MAX_JSON_BYTES, read_bytes

TEMPO_FILE = "tempo.json"
TEMPO_FORMAT = "jukebox-tempo"
TEMPO_VERSION = 1

#: Pulse clarity (over the lags of 40 to 240 BPM) below which a track counts as having no pulse (no beats, bpm 0).
#: Click tracks score 0.5-0.95, steady tones, white noise and ambient music below 0.1, music with a beat 0.2-0.85.
MIN_PULSE = 0.1
#: Tempo range of :func:`estimate_tempo` (BPM).
MIN_BPM, MAX_BPM = 40.0, 240.0

_N_MELS = 80
_FMIN, _FMAX = 30.0, 11025.0
_FLOOR = 1e-10  # mel power floor (-100 dB; a full-scale sine has power 0.25 in its bin)
_TOP_DB = 80.0  # bands more than this below the loudest band so far count as silent (as librosa's top_db)
_LOCAL_MEAN_S = 1.0  # width of the local mean removed from the flux
_GATE_DB = 0.05  # flux this far above the local mean counts as nothing: a steady tone's tiny periodic ripple
_BLOCK_FRAMES = 4096  # STFT frames per block (~48 s, about 150 MB of work arrays): bounds long tracks' memory
_TEMPO_WINDOW_S = 8.0  # autocorrelation windows of estimate_tempo


@dataclass(frozen=True, eq=False)
class BeatTrack:
    """The beats of one track: ``bpm`` (its tempo, 0.0 without a pulse), ``beats`` (beat times in seconds,
    float64 [n_beats], increasing, read-only; empty without a pulse) and ``pulse`` (its pulse clarity)."""

    bpm: float
    beats: np.ndarray
    pulse: float

    def __post_init__(self) -> None:
        beats = np.array(self.beats, dtype=np.float64).reshape(-1)
        beats.setflags(write=False)
        object.__setattr__(self, "beats", beats)
        object.__setattr__(self, "bpm", float(self.bpm))
        object.__setattr__(self, "pulse", float(self.pulse))


# ------------------------------------------------------------------------------------------------ onset envelope
def _hop(sample_rate: int) -> int:
    return max(1, round(256 * sample_rate / 22050))


def _mel_matrix(sample_rate: int, n_fft: int) -> np.ndarray:
    """Triangular filters on the Slaney mel scale, each summing to 1 (band = mean power): [n_mels, n_bins]."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        return np.where(f < 1000.0, f * 3 / 200, 15 + np.log(np.maximum(f, 1e-9) / 1000) * 27 / math.log(6.4))

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return np.where(m < 15, m * 200 / 3, 1000 * np.exp((m - 15) * math.log(6.4) / 27))

    fmax = min(_FMAX, sample_rate / 2)
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(_FMIN), hz_to_mel(fmax), _N_MELS + 2))
    spacing = sample_rate / n_fft
    fb = np.zeros((_N_MELS, len(freqs)))
    for k in range(_N_MELS):
        lo, mid, hi = edges[k], edges[k + 1], edges[k + 2]
        # at least one bin either side, so the narrow low bands are never empty
        lo, hi = min(lo, mid - spacing), max(hi, mid + spacing)
        fb[k] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    fb /= fb.sum(1, keepdims=True)
    return fb.astype(np.float32)


def _mono(audio: np.ndarray, what: str = "audio") -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim != 1:
        raise UsageError(f"{what} must be mono [T], got shape {tuple(x.shape)}; mix it down first")
    if not np.issubdtype(x.dtype, np.number):
        raise UsageError(f"{what} must be numeric, got {x.dtype}")
    return x.astype(np.float32, copy=False)


def onset_envelope(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """Mono audio [T] in [-1, 1] -> (onset envelope [T // hop + 1] float32 >= 0, frame rate in Hz).

    Positive spectral flux of the log-mel spectrogram (dB, floored at -100 dB and 80 dB below the loudest band
    so far) averaged over the 80 bands, aligned so that an onset peaks at its own time (frame ``i`` is time
    ``i * hop / sample_rate``), minus its 1 s moving mean and 0.05 dB, half-wave rectified. The hop is 256
    samples per 22050 Hz (11.6 ms), the Hann window 8 hops (93 ms, long enough that the partials of a held chord
    do not beat in the bands).
    """
    if sample_rate <= 0:
        raise UsageError(f"sample_rate must be positive, got {sample_rate}")
    x = _mono(audio)
    hop = _hop(sample_rate)
    n_fft = 8 * hop
    half = n_fft // 2
    frame_rate = sample_rate / hop
    n_frames = len(x) // hop + 1
    fb = torch.from_numpy(_mel_matrix(sample_rate, n_fft))
    used = int(np.nonzero(fb.numpy().any(0))[0].max()) + 1
    fb = fb[:, :used]
    window = torch.hann_window(n_fft, periodic=True)
    window = window / window.sum()
    flux = np.zeros(n_frames, dtype=np.float32)
    prev: torch.Tensor | None = None
    ref = -1e9
    with torch.inference_mode():
        for f0 in range(0, n_frames, _BLOCK_FRAMES):
            f1 = min(n_frames, f0 + _BLOCK_FRAMES)
            a, b = f0 * hop - half, (f1 - 1) * hop + half  # samples [a, b) of the signal, zero outside
            seg = np.zeros(b - a, dtype=np.float32)
            lo, hi = max(a, 0), min(b, len(x))
            if hi > lo:
                seg[lo - a:hi - a] = x[lo:hi]
            frames = torch.from_numpy(seg).unfold(0, n_fft, hop) * window  # [F, n_fft]
            spec = torch.fft.rfft(frames, dim=-1)[:, :used]
            power = spec.real.square() + spec.imag.square()
            db = 10 * torch.log10(power @ fb.T + _FLOOR)  # [F, n_mels]
            ref = max(ref, float(db.max()))
            db = db.clamp_min(ref - _TOP_DB)
            if prev is None:
                prev = db[:1]
            diff = torch.cat([prev, db], 0).diff(dim=0).clamp_min(0).mean(1)
            flux[f0:f1] = diff.numpy()
            prev = db[-1:]
    flux[:half // hop] = 0  # windows reaching before the start: the track starting is not an onset
    # the flux of STFT frame j (window centred at j * hop, right edge at (j + 4) * hop) reports onsets before
    # (j + 4) * hop, the later in the window the noisier the signal; it is frame j + 2 (clicks in silence then
    # land about 8 ms early, clicks in noise 7 ms late)
    shift = half // hop - 2
    flux = np.concatenate([np.zeros(shift, np.float32), flux[:n_frames - shift]])
    w = max(1, int(round(_LOCAL_MEAN_S * frame_rate)) | 1)
    c = np.concatenate([[0.0], np.cumsum(flux, dtype=np.float64)])
    idx = np.arange(n_frames)
    lo_i, hi_i = np.maximum(idx - w // 2, 0), np.minimum(idx + w // 2 + 1, n_frames)
    local = (c[hi_i] - c[lo_i]) / (hi_i - lo_i)
    env = np.maximum(flux - local - _GATE_DB, 0.0).astype(np.float32)
    return env, float(frame_rate)


# ------------------------------------------------------------------------------------------------ periodicity
def _smooth(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``x`` [n] convolved with a centred, odd-length ``kernel`` -> [n] (zeros beyond the ends, any n)."""
    half = len(kernel) // 2
    return np.convolve(x, kernel)[half:half + len(x)]


def _autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Biased autocorrelation sum_t x[t] x[t + k] of ``x`` [..., n] for k = 0..max_lag -> [..., max_lag + 1]."""
    n = x.shape[-1]
    size = 1 << int(math.ceil(math.log2(max(2, n + max_lag + 1))))
    spec = np.fft.rfft(x, size, axis=-1)
    ac = np.fft.irfft(spec.real ** 2 + spec.imag ** 2, size, axis=-1)
    return ac[..., :max_lag + 1]


def _check_env(env: np.ndarray, frame_rate: float) -> np.ndarray:
    e = np.asarray(env, dtype=np.float64)
    if e.ndim != 1:
        raise UsageError(f"the onset envelope must be 1-D [n_frames], got shape {tuple(e.shape)}")
    if not frame_rate > 0:
        raise UsageError(f"frame_rate must be positive, got {frame_rate}")
    if not np.all(np.isfinite(e)):
        raise UsageError("the onset envelope has NaN or infinite values")
    return e


def pulse_clarity(env: np.ndarray, frame_rate: float, lo_bpm: float = 60.0, hi_bpm: float = 200.0) -> float:
    """Pulse clarity of an onset envelope [n_frames] at ``frame_rate`` Hz: a number in [-1, 1].

    Definition (the project's published measure): remove the envelope's mean, take its autocorrelation
    ``r[k] = sum_t e[t] e[t + k]`` over the whole envelope (no per-lag normalisation), divide by ``r[0]``, and
    return the largest ``r[k]`` at whole lags ``k`` from ``ceil(60 * frame_rate / hi_bpm)`` to
    ``floor(60 * frame_rate / lo_bpm)`` frames (beat periods of 60 to 200 BPM by default). A click track scores
    about 0.7-0.95, steady tones, white noise and silence about 0 (0.0 when the envelope is constant).
    """
    e = _check_env(env, frame_rate)
    if not 0 < lo_bpm < hi_bpm:
        raise UsageError(f"need 0 < lo_bpm < hi_bpm, got {lo_bpm} and {hi_bpm}")
    e = e - e.mean()
    lag_lo = max(1, math.ceil(60 * frame_rate / hi_bpm))
    lag_hi = min(len(e) - 1, math.floor(60 * frame_rate / lo_bpm))
    if lag_lo > lag_hi:
        return 0.0
    ac = _autocorrelation(e, lag_hi)
    if not ac[0] > 1e-12 * len(e):
        return 0.0
    return float(np.max(ac[lag_lo:lag_hi + 1]) / ac[0])


def has_pulse(env: np.ndarray, frame_rate: float) -> bool:
    """Whether an onset envelope [n_frames] has a pulse: its pulse clarity over the lags of 40 to 240 BPM (the
    whole tempo range: a 45 BPM click has no lag between 60 and 200 BPM) is at least :data:`MIN_PULSE`, and at
    least ``6 / sqrt(n_frames)``, above what white noise reaches on short clips (0.2 at 10 s, 0.1 from 36 s)."""
    e = _check_env(env, frame_rate)
    if not e.any():
        return False
    return pulse_clarity(e, frame_rate, MIN_BPM, MAX_BPM) >= max(MIN_PULSE, 6.0 / math.sqrt(len(e)))


def estimate_tempo(env: np.ndarray, frame_rate: float, start_bpm: float = 120.0, std_octaves: float = 1.0,
                   min_bpm: float = MIN_BPM, max_bpm: float = MAX_BPM) -> float:
    """Global tempo in BPM (in [min_bpm, max_bpm]) of an onset envelope [n_frames] at ``frame_rate`` Hz.

    As librosa's tempo estimator (after Ellis 2007): the envelope is cut into 8 s Hann-weighted windows (hop
    4 s), each window's mean-removed autocorrelation is normalised by its lag 0, the windows are averaged (so
    loud and quiet passages count alike), the positive part is weighted by a log-normal prior
    ``exp(-0.5 * (log2(bpm / start_bpm) / std_octaves) ** 2)`` and the best lag is refined by a parabola
    through its neighbours. A click track comes out at its own tempo between 60 and 200 BPM; music whose beat
    is ambiguous may come out at half or double its tempo. An envelope without energy returns ``start_bpm``.
    """
    e = _check_env(env, frame_rate)
    if not 0 < min_bpm < max_bpm or not start_bpm > 0 or not std_octaves > 0:
        raise UsageError("need 0 < min_bpm < max_bpm, start_bpm > 0 and std_octaves > 0")
    e = _smooth(e, np.array([1, 4, 6, 4, 1]) / 16)  # about 1 frame, so periods between whole lags are not missed
    lag_lo = max(1, math.floor(60 * frame_rate / max_bpm))
    lag_hi = math.ceil(60 * frame_rate / min_bpm)
    win = max(int(round(_TEMPO_WINDOW_S * frame_rate)), lag_hi + 2)
    if len(e) < win:
        e = np.pad(e, (0, win - len(e)))
    hop = win // 2
    starts = np.arange(0, max(1, len(e) - win + hop), hop)
    acc = np.zeros(lag_hi + 2)
    weight = 0.0
    taper = np.hanning(win)
    for s0 in range(0, len(starts), 256):  # blocks of windows: bounded memory on long tracks
        idx = starts[s0:s0 + 256, None] + np.arange(win)[None]
        seg = np.take(e, np.minimum(idx, len(e) - 1)) * (idx < len(e))
        seg = (seg - seg.mean(1, keepdims=True)) * taper
        ac = _autocorrelation(seg, lag_hi + 1)
        ok = ac[:, 0] > 1e-12
        acc += (ac[ok] / ac[ok, :1]).sum(0)
        weight += int(ok.sum())
    if weight == 0:
        return float(start_bpm)
    acf = acc / weight
    lags = np.arange(lag_lo, lag_hi + 1)
    bpms = 60 * frame_rate / lags
    prior = np.exp(-0.5 * (np.log2(bpms / start_bpm) / std_octaves) ** 2)
    score = np.clip(acf[lags], 0, None) * prior
    score[(bpms < min_bpm) | (bpms > max_bpm)] = -1
    best = int(lags[int(np.argmax(score))])
    period = float(best)
    if 1 <= best <= lag_hi:
        a, b, c = acf[best - 1], acf[best], acf[best + 1]
        denom = a - 2 * b + c
        if denom < 0:
            period = best + float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5))
    return float(np.clip(60 * frame_rate / period, min_bpm, max_bpm))


# ------------------------------------------------------------------------------------------------ beat tracking
def _track(env: np.ndarray, frame_rate: float, bpm: float, tightness: float) -> np.ndarray:
    """Ellis's dynamic programme: beat frames (float, sub-frame refined) of an envelope at tempo ``bpm``."""
    n = len(env)
    period = 60 * frame_rate / bpm
    k = np.arange(-int(round(period)), int(round(period)) + 1)
    std = env.std(ddof=1) if n > 1 else 0.0
    if not std > 0:
        return np.zeros(0)
    local = _smooth(env / std, np.exp(-0.5 * (k * 32.0 / period) ** 2))
    lag_min, lag_max = max(1, int(round(period / 2))), max(2, int(round(2 * period)))
    gaps = np.arange(lag_min, lag_max + 1)
    txwt = -tightness * np.log(gaps / period) ** 2
    cum = np.zeros(n + lag_max)  # cum[lag_max + i] is the score of a beat sequence ending at frame i
    back = np.empty(n, dtype=np.int64)
    for b in range(0, n, lag_min):  # frames in a block depend only on frames before it
        idx = np.arange(b, min(n, b + lag_min))
        prev = idx[:, None] - gaps[None]
        cand = txwt[None] + cum[prev + lag_max]
        j = cand.argmax(1)
        rows = np.arange(len(idx))
        cum[idx + lag_max] = local[idx] + cand[rows, j]
        back[idx] = prev[rows, j]
    first = int(np.argmax(local >= 0.01 * local.max()))
    back[:first] = -1  # no beat chains back into the silence before the first onset
    score = cum[lag_max:]
    peaks = np.zeros(n, dtype=bool)
    if n >= 3:
        peaks[1:-1] = (score[1:-1] > score[:-2]) & (score[1:-1] >= score[2:])
    if not peaks.any():
        return np.zeros(0)
    med = np.median(score[peaks])
    last = int(np.nonzero(peaks & (2 * score > med))[0].max()) if np.any(peaks & (2 * score > med)) else \
        int(np.nonzero(peaks)[0].max())
    beats = [last]
    while back[beats[-1]] >= 0:
        beats.append(int(back[beats[-1]]))
    frames = np.array(beats[::-1], dtype=np.int64)
    # trim weak leading/trailing beats: smoothed onset strength at the beats below half its RMS
    smooth = _smooth(local[frames], np.array([0.5, 1.0, 0.5]))
    keep = np.nonzero(smooth > 0.5 * np.sqrt(np.mean(smooth ** 2)))[0]
    if len(keep) == 0:
        return np.zeros(0)
    frames = frames[keep[0]:keep[-1] + 1]
    # a parabola through the local score refines each beat to a fraction of a frame
    out = frames.astype(np.float64)
    inner = (frames > 0) & (frames < n - 1)
    f = frames[inner]
    a, b, c = local[f - 1], local[f], local[f + 1]
    denom = a - 2 * b + c
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.where(denom < 0, 0.5 * (a - c) / denom, 0.0)
    out[inner] += np.clip(delta, -0.5, 0.5)
    return out


def track_beats(audio: np.ndarray, sample_rate: int, tightness: float = 100.0) -> BeatTrack:
    """Beats of mono audio [T] in [-1, 1] at ``sample_rate`` Hz (Ellis 2007, as ``librosa.beat.beat_track``).

    The tempo comes from :func:`estimate_tempo`; then a dynamic programme over the onset envelope picks the
    beat sequence that maximises onset strength at the beats minus ``tightness * log(gap / period) ** 2`` per
    gap, the sequence is read back from its best end, weak leading and trailing beats are trimmed, and each beat
    is refined to a fraction of a frame. Returns ``BeatTrack(bpm, beats, pulse)``; music without a pulse
    (:func:`has_pulse`) and silence get ``bpm == 0.0`` and no beats. Memory is bounded by the STFT's
    blocks plus a few arrays of one float per 11.6 ms frame.
    """
    x = _mono(audio)
    if not tightness > 0:
        raise UsageError(f"tightness must be positive, got {tightness}")
    if not all(np.isfinite(x[i:i + (1 << 22)]).all() for i in range(0, len(x), 1 << 22)):
        raise UsageError("audio has NaN or infinite samples")
    env, fr = onset_envelope(x, sample_rate)
    pulse = pulse_clarity(env, fr)
    if not has_pulse(env, fr):
        return BeatTrack(0.0, np.zeros(0), pulse)
    bpm = estimate_tempo(env, fr)
    frames = _track(env.astype(np.float64), fr, bpm, tightness)
    if len(frames) < 2:
        return BeatTrack(0.0, np.zeros(0), pulse)
    return BeatTrack(bpm, frames / fr, pulse)


def track_files(items: Iterable[tuple[str, str | os.PathLike]], sample_rate: int,
                progress: Callable[[int, int, str], None] | None = None,
                ) -> tuple[dict[str, BeatTrack], dict[str, str]]:
    """Beats of a corpus: ``items`` are (name, audio file) pairs, decoded at ``sample_rate``. Returns
    ({name: BeatTrack}, {name: why it failed}) for files that cannot be read. ``progress(i, total, name)`` is
    called before each file and once more at the end."""
    from ..audio import load_audio

    items = list(items)
    found: dict[str, BeatTrack] = {}
    failed: dict[str, str] = {}
    for i, (name, path) in enumerate(items):
        if progress is not None:
            progress(i, len(items), name)
        try:
            audio, _ = load_audio(path, sample_rate=sample_rate)
            found[name] = track_beats(audio, sample_rate)
        except (JukeboxError, OSError, MemoryError) as e:
            failed[name] = str(e) or type(e).__name__
    if progress is not None:
        progress(len(items), len(items), "")
    return found, failed


def fit_grid(beats: np.ndarray, start: float, end: float, min_beats: int = 4) -> tuple[float, float]:
    """The constant-tempo grid fitting the beats [n] (seconds) that fall in ``[start, end]`` seconds.

    Returns ``(bpm, beat0)``: ``bpm = 60 / period``, the period being the median inter-beat interval of those
    beats refined by a least-squares line through the beats numbered on that grid (a missed beat skips a
    number), and the phase ``beat0``
    in [0, period) seconds (``period = 60 / bpm``) such that ``beats ~= beat0 + k * period`` for whole ``k``,
    in the song's time (the circular mean of ``beats mod period``); the first grid beat inside the window is
    at ``start + (beat0 - start) % period``. Returns ``(0.0, 0.0)`` when fewer than ``min_beats`` beats (at
    least 2) fall in the window.
    """
    b = np.asarray(beats, dtype=np.float64).reshape(-1)
    if end < start:
        raise UsageError(f"the window's end {end} is before its start {start}")
    b = b[(b >= start) & (b <= end)]
    if len(b) < max(2, min_beats):
        return 0.0, 0.0
    period = float(np.median(np.diff(b)))
    if not period > 0:
        return 0.0, 0.0
    # number the beats on that grid (a missed beat skips a number) and refine the period by least squares
    k = np.round((b - b[0]) / period)
    if k[-1] > 0:
        kc = k - k.mean()
        slope = float(np.dot(kc, b - b.mean()) / np.dot(kc, kc))
        if abs(slope / period - 1) < 0.1:
            period = slope
    angle = 2 * np.pi * np.mod(b, period) / period
    mean = math.atan2(float(np.sin(angle).mean()), float(np.cos(angle).mean()))
    beat0 = (mean % (2 * np.pi)) / (2 * np.pi) * period
    if not 0 <= beat0 < period:
        beat0 = 0.0
    return 60.0 / period, float(beat0)


# ------------------------------------------------------------------------------------------------ storage
def save_beats(folder: str | os.PathLike, tracks: Mapping[str, BeatTrack]) -> Path:
    """Write ``tracks`` ({track path: BeatTrack}) to ``folder``/tempo.json atomically; returns the file's path.

    Format: ``{"format": "jukebox-tempo", "version": 1, "tracks": {path: {"bpm", "pulse", "beats": [seconds,
    rounded to 1 ms]}}}``.
    """
    table = {}
    for path, t in tracks.items():
        beats = np.round(np.asarray(t.beats, dtype=np.float64), 3)
        if not (np.all(np.isfinite(beats)) and np.all(np.diff(beats) > 0)):
            raise JukeboxError(f"{path}: beats must be finite and increasing by at least 1 ms")
        if not (math.isfinite(t.bpm) and math.isfinite(t.pulse)):
            raise JukeboxError(f"{path}: bpm and pulse must be finite")
        table[str(path)] = {"bpm": round(float(t.bpm), 4), "pulse": round(float(t.pulse), 4),
                            "beats": beats.tolist()}
    out = Path(folder) / TEMPO_FILE
    doc = {"format": TEMPO_FORMAT, "version": TEMPO_VERSION, "tracks": table}
    atomic_write_text(out, json.dumps(doc, separators=(",", ":")) + "\n")
    return out


def load_beats(folder: str | os.PathLike) -> dict[str, BeatTrack] | None:
    """The beats stored in ``folder``/tempo.json ({track path: BeatTrack}), or None when there is no such file.

    A corrupt file (bad JSON, another format or version, non-finite values, beats not increasing) raises a
    one-line :class:`~jukebox.errors.JukeboxError`.
    """
    path = Path(folder) / TEMPO_FILE
    if not path.is_file():
        return None
    bad = f"{path}: corrupt beat file"
    try:
        doc = json.loads(read_bytes(path, MAX_JSON_BYTES, "beat file").decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise JukeboxError(f"{bad} ({str(e)[:100]}); rebuild it with `jukebox prepare --beats-only`") from None
    if not isinstance(doc, dict) or doc.get("format") != TEMPO_FORMAT:
        raise JukeboxError(f"{path}: not a {TEMPO_FORMAT} file")
    if doc.get("version") != TEMPO_VERSION:
        raise JukeboxError(f"{path}: version {doc.get('version')} is not supported (expected {TEMPO_VERSION})")
    table = doc.get("tracks")
    if not isinstance(table, dict):
        raise JukeboxError(f"{bad} (no track table)")
    out: dict[str, BeatTrack] = {}
    for name, entry in table.items():
        try:
            bpm, pulse = float(entry["bpm"]), float(entry["pulse"])
            beats = np.asarray(entry["beats"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise JukeboxError(f"{bad} (track {name!r} lacks a numeric bpm, pulse or beat list)") from None
        if beats.ndim != 1 or not (math.isfinite(bpm) and math.isfinite(pulse) and np.all(np.isfinite(beats))):
            raise JukeboxError(f"{bad} (track {name!r} has non-finite values)")
        if bpm < 0 or np.any(np.diff(beats) <= 0):
            raise JukeboxError(f"{bad} (track {name!r}: negative bpm or beats not increasing)")
        out[name] = BeatTrack(bpm, beats, pulse)
    return out
