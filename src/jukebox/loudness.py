"""Loudness per ITU-R BS.1770-4 and EBU R 128, true peak, and loudness normalisation with a soft limiter.

- :func:`integrated_loudness`: K-weighting (the standard's two biquads, derived for any sample rate), mean square
  per channel in 400 ms blocks with 75 % overlap, the absolute gate at -70 LUFS and the relative gate 10 LU below
  the loudness of the blocks above the absolute gate. A full-scale 997 Hz sine in one channel reads -3.01 LUFS.
- :func:`true_peak_db`: the largest absolute value of the signal oversampled 4x (soxr), in dBTP.
- :func:`normalize_loudness`: one static gain to the target loudness, then a look-ahead limiter (gain reduction
  that ramps in smoothly before a peak and recovers at a fixed rate in dB per second, never a hard clip) so the
  true peak stays at or below the ceiling; the static gain is refined so that the limited result meets the target.

Audio is float32 ``[T]`` (mono) or ``[C, T]``; every channel has weight 1 (the standard's weight for left, right
and centre). A mono signal is measured as one channel, as the standard does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Default target of :func:`normalize_loudness` (LUFS) and its true-peak ceiling (dBTP).
DEFAULT_LUFS = -16.0
DEFAULT_PEAK_DB = -1.0
#: Gates and blocks of BS.1770-4.
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
BLOCK_SECONDS = 0.4
STEP_SECONDS = 0.1
OVERSAMPLE = 4
#: The limiter: gain reduction ramps in over ATTACK_MS before a peak and recovers with time constant RELEASE_MS.
ATTACK_MS = 5.0
RELEASE_MS = 50.0


def k_weighting_coefficients(sample_rate: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two K-weighting biquads at ``sample_rate``: [(b, a) high shelf, (b, a) high pass], each b, a of shape [3].

    Derived from the analogue prototypes behind the standard's 48 kHz table (shelf +4 dB at high frequencies,
    high pass near 38 Hz) by the bilinear transform, so that at 48 kHz they equal the table's coefficients.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    # stage 1: high shelf
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh ** 0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf_b = np.array([vh + vb * k / q + k * k, 2.0 * (k * k - vh), vh - vb * k / q + k * k]) / a0
    shelf_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    # stage 2: high pass (the "RLB" curve)
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1.0 + k / q + k * k
    hp_b = np.array([1.0, -2.0, 1.0])
    hp_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    return [(shelf_b, shelf_a), (hp_b, hp_a)]


def _decay_length(sections: list[tuple[np.ndarray, np.ndarray]]) -> int:
    """Samples after which the filters' impulse response has decayed below 1e-15 of its start (poles' radius)."""
    radius = max(float(np.max(np.abs(np.roots(a)))) for _, a in sections)
    if radius >= 1.0:
        raise ValueError("unstable K-weighting filter")
    # x2: the near-double real pole of the high pass decays as n * r**n
    return 2 * int(math.ceil(math.log(1e-15) / math.log(radius))) + 64


def k_weight(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """K-weighted signal, same shape as ``audio`` ([T] or [C, T]), float32.

    The biquads run as their frequency response on an overlap-save FFT grid whose overlap exceeds the length over
    which the recursive filter's impulse response is non-negligible (< 1e-15), so the result equals the
    recursion up to float32 rounding, at the speed of a few FFTs (60 s of 44.1 kHz stereo in about 0.1 s).
    """
    x = np.asarray(audio, dtype=np.float32)
    squeeze = x.ndim == 1
    x = x[None] if squeeze else x
    sections = k_weighting_coefficients(sample_rate)
    pad = _decay_length(sections)
    n = x.shape[-1]
    size = 1 << max(14, (4 * pad - 1).bit_length())  # FFT block: at least 4x the overlap
    size = min(size, 1 << max(8, (n + pad - 1).bit_length()))  # a short signal needs one block only
    size = max(size, 1 << (2 * pad - 1).bit_length())
    hop = size - pad
    z = np.exp(-2j * np.pi * np.arange(size // 2 + 1) / size)
    response = np.ones_like(z)
    for b, a in sections:
        response *= (b[0] + b[1] * z + b[2] * z * z) / (a[0] + a[1] * z + a[2] * z * z)
    n_blocks = max(1, -(-n // hop))
    padded = np.zeros((x.shape[0], pad + n_blocks * hop), dtype=np.float32)
    padded[:, pad:pad + n] = x
    frames = np.lib.stride_tricks.sliding_window_view(padded, size, axis=-1)[:, ::hop]  # [C, n_blocks, size]
    y = np.fft.irfft(np.fft.rfft(frames, axis=-1) * response.astype(np.complex64), n=size, axis=-1)[..., pad:]
    y = np.ascontiguousarray(y, dtype=np.float32).reshape(x.shape[0], -1)[:, :n]
    return y[0] if squeeze else y


def _as_channels(audio: Any) -> np.ndarray:
    """``audio`` [T] or [C, T] (numpy or torch) -> float32 [C, T]."""
    if hasattr(audio, "detach"):
        audio = audio.detach().float().cpu().numpy()
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        return x[None]
    if x.ndim != 2:
        raise ValueError(f"audio must be [T] or [C, T], got shape {tuple(x.shape)}")
    return x


def _block_powers(power: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mean of ``power`` [T] (the channel-summed K-weighted square) over each 400 ms block, 100 ms apart: [J]."""
    block = int(round(BLOCK_SECONDS * sample_rate))
    step = int(round(STEP_SECONDS * sample_rate))
    if power.shape[0] < block or block <= 0:
        return np.zeros(0)
    csum = np.concatenate([[0.0], np.cumsum(power, dtype=np.float64)])
    starts = np.arange(0, power.shape[0] - block + 1, step)
    return np.maximum(csum[starts + block] - csum[starts], 0.0) / block


def _gated_loudness(blocks: np.ndarray) -> float:
    """Integrated loudness (LUFS) of block powers [J] after the absolute and relative gates; -inf when none pass."""
    with np.errstate(divide="ignore"):
        lufs = -0.691 + 10.0 * np.log10(blocks)
    kept = blocks[lufs > ABSOLUTE_GATE_LUFS]
    if kept.size == 0:
        return -math.inf
    relative = -0.691 + 10.0 * math.log10(float(kept.mean())) + RELATIVE_GATE_LU
    kept = blocks[(lufs > ABSOLUTE_GATE_LUFS) & (lufs > relative)]
    if kept.size == 0:
        return -math.inf
    return -0.691 + 10.0 * math.log10(float(kept.mean()))


def _power(weighted: np.ndarray) -> np.ndarray:
    """Channel-summed square of the K-weighted signal [C, T] -> [T] float64."""
    return np.einsum("ct,ct->t", weighted, weighted, dtype=np.float64)


def integrated_loudness(audio: Any, sample_rate: int) -> float:
    """Integrated loudness of ``audio`` ([T] or [C, T], float in [-1, 1] full scale) in LUFS, per BS.1770-4.

    ``-inf`` for audio shorter than one 400 ms block or quieter than the absolute gate everywhere (silence).
    """
    x = _as_channels(audio)
    return _gated_loudness(_block_powers(_power(k_weight(x, sample_rate)), sample_rate))


def _oversampled(channel: np.ndarray, sample_rate: int) -> np.ndarray:
    """One channel [T] resampled to ``OVERSAMPLE`` x ``sample_rate`` with soxr: [about OVERSAMPLE * T] float32."""
    import soxr

    up = soxr.resample(np.ascontiguousarray(channel, dtype=np.float32), sample_rate, OVERSAMPLE * sample_rate,
                       quality="HQ")
    return np.asarray(up, dtype=np.float32)


def _peak_envelope(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Per input sample of ``x`` [C, T], the largest absolute value of any channel among the sample and its
    oversampled neighbours up to half a sample either side: [T] float32 (its maximum is the true peak)."""
    n = x.shape[-1]
    env = np.abs(x).max(axis=0)
    half = OVERSAMPLE // 2
    grid = np.zeros(OVERSAMPLE * (n + 1), dtype=np.float32)  # grid[4k + j] = |up[4k + j - 2]|
    for channel in x:
        up = _oversampled(channel, sample_rate)
        m = min(up.shape[0], OVERSAMPLE * n + half)
        np.abs(up[:m], out=grid[half:half + m])
        for j in range(OVERSAMPLE + 1):  # up[4k - 2 .. 4k + 2]
            np.maximum(env, grid[j:j + OVERSAMPLE * n:OVERSAMPLE], out=env)
    return env


def true_peak_db(audio: Any, sample_rate: int) -> float:
    """True peak of ``audio`` ([T] or [C, T]) in dBTP: the largest absolute sample after 4x oversampling
    (``-inf`` for silence)."""
    x = _as_channels(audio)
    if x.shape[-1] == 0:
        return -math.inf
    peak = 0.0
    for channel in x:
        up = _oversampled(channel, sample_rate)
        peak = max(peak, float(up.max()), -float(up.min()), float(channel.max()), -float(channel.min()))
    return 20.0 * math.log10(peak) if peak > 0 else -math.inf


def _sliding_min(x: np.ndarray, width: int) -> np.ndarray:
    """``out[i] = min(x[i:i + width])`` (the window cut at the end), in O(T) (van Herk / Gil-Werman)."""
    n = x.shape[0]
    if width <= 1:
        return x.copy()
    blocks = -(-(n + width) // width)
    padded = np.full(blocks * width, np.inf)
    padded[:n] = x
    grid = padded.reshape(blocks, width)
    prefix = np.minimum.accumulate(grid, axis=1).ravel()
    suffix = np.minimum.accumulate(grid[:, ::-1], axis=1)[:, ::-1].ravel()
    idx = np.arange(n)
    return np.minimum(suffix[idx], prefix[idx + width - 1])


def _moving_mean(x: np.ndarray, width: int) -> np.ndarray:
    """``out[i] = mean(x[i - width + 1:i + 1])``, for ``i >= width - 1``: [T - width + 1]."""
    csum = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    return (csum[width:] - csum[:-width]) / width


def _frame_size(sample_rate: int) -> int:
    """Samples per limiter frame (about 0.25 ms)."""
    return max(1, sample_rate // 4000)


def _frame_peaks_db(peak_env_db: np.ndarray, frame: int) -> np.ndarray:
    """The largest of ``peak_env_db`` [T] over each frame and its two neighbours: [ceil(T / frame)]."""
    n = peak_env_db.shape[0]
    n_frames = -(-n // frame)
    framed = np.full(n_frames * frame, -np.inf)
    framed[:n] = peak_env_db
    framed = framed.reshape(n_frames, frame).max(axis=1)
    framed[1:] = np.maximum(framed[1:], framed[:-1].copy())
    framed[:-1] = np.maximum(framed[:-1], framed[1:].copy())
    return framed


def _limiter_frames(frame_peaks_db: np.ndarray, ceiling_db: float, frames_per_second: float, attack_ms: float,
                    release_ms: float) -> np.ndarray:
    """The limiter's gain in dB (<= 0) per frame, [F], for frame peaks [F] (see :func:`limiter_gain_db`)."""
    excess = np.maximum(0.0, frame_peaks_db - ceiling_db)  # the reduction each frame needs, in dB (>= 0)
    n = excess.shape[0]
    if n == 0 or not np.any(excess > 0):
        return np.zeros(n)
    # release: held[i] = max over k <= i of excess[k] * exp(-(i - k) / tau), as a running maximum of logarithms
    decay = 1.0 / max(release_ms * 1e-3 * frames_per_second, 1e-9)
    ramp = decay * np.arange(n)
    with np.errstate(divide="ignore"):
        held = -np.exp(np.maximum.accumulate(np.log(excess) + ramp) - ramp)
    # attack: a running minimum over the next 2 * half - 1 frames, then two moving means of half frames
    half = max(1, int(round(attack_ms * 1e-3 * frames_per_second / 2)))
    padded = np.concatenate([np.zeros(2 * half), held, np.zeros(2 * half)])
    lowest = _sliding_min(padded, 2 * half - 1)
    return np.minimum(_moving_mean(_moving_mean(lowest, half), half)[2:2 + n], 0.0)  # aligned with held


def _frame_centres(n_frames: int, frame: int) -> np.ndarray:
    return np.arange(n_frames) * frame + (frame - 1) / 2.0


def limiter_gain_db(peak_env_db: np.ndarray, ceiling_db: float, sample_rate: int, attack_ms: float = ATTACK_MS,
                    release_ms: float = RELEASE_MS) -> np.ndarray:
    """Gain in dB (<= 0), [T], that keeps ``peak_env_db + gain`` ([T]) at or below ``ceiling_db`` at every sample.

    Each needed reduction is held and released exponentially (time constant ``release_ms``, in dB), then every
    dip is widened forward by the attack time with a running minimum and smoothed by two moving means of half
    that length: the gain starts falling up to ``attack_ms`` before a peak along a smooth S-shaped curve, and
    each smoothed value is an average of values no higher than the need at that sample, so no peak gets
    through. The curve is built on frames of about 0.25 ms (each frame's need the largest of its own and its
    neighbours') and interpolated linearly between frame centres, which keeps that guarantee.
    """
    n = peak_env_db.shape[0]
    frame = _frame_size(sample_rate)
    peaks = _frame_peaks_db(np.asarray(peak_env_db, dtype=np.float64), frame)
    gain = _limiter_frames(peaks, ceiling_db, sample_rate / frame, attack_ms, release_ms)
    return np.minimum(np.interp(np.arange(n, dtype=np.float64), _frame_centres(gain.shape[0], frame), gain), 0.0)


def _amplitude(gain_db: np.ndarray) -> np.ndarray:
    """dB -> amplitude factor, float32."""
    return np.exp(gain_db * (math.log(10.0) / 20.0)).astype(np.float32)


#: How far the static gain may rise above the plain gain to the target to make up for what the limiter takes.
MAX_MAKEUP_DB = 12.0


def normalize_loudness(audio: Any, sample_rate: int, target_lufs: float = DEFAULT_LUFS,
                       peak_db: float = DEFAULT_PEAK_DB) -> tuple[Any, dict[str, Any]]:
    """Bring ``audio`` ([C, T] or [T] float32, numpy or torch) to ``target_lufs`` with true peak <= ``peak_db``.

    One static gain to the target, then the soft limiter of :func:`limiter_gain_db` on the true-peak envelope;
    the static gain is raised until the limited result measures the target (by at most ``MAX_MAKEUP_DB``: a
    piece whose peaks stand far above its loudness stays quieter rather than crushed). Audio shorter than one
    400 ms block, silence (nothing above the -70 LUFS gate) and audio with non-finite samples are returned
    unchanged. Returns ``(audio, info)``: the same shape and type as given, and a JSON-ready dict: ``applied``,
    ``reason`` (when not applied), ``input_lufs``, ``input_true_peak_db``, ``gain_db`` (the static gain),
    ``limiter_max_reduction_db``, ``limited_fraction`` (share of samples the limiter turned down by more than
    0.1 dB), ``output_lufs``, ``output_true_peak_db``.
    """
    if not (math.isfinite(target_lufs) and math.isfinite(peak_db)):
        raise ValueError("target_lufs and peak_db must be finite numbers")
    is_torch = hasattr(audio, "detach")
    x = _as_channels(audio)
    info: dict[str, Any] = dict(applied=False, target_lufs=float(target_lufs), peak_db=float(peak_db))
    if not np.all(np.isfinite(x)):
        return audio, {**info, "reason": "non-finite samples"}
    if x.shape[-1] < int(round(BLOCK_SECONDS * sample_rate)):
        return audio, {**info, "reason": "shorter than one 400 ms block"}
    n = x.shape[-1]
    weighted_power = _power(k_weight(x, sample_rate))
    input_lufs = _gated_loudness(_block_powers(weighted_power, sample_rate))
    if not math.isfinite(input_lufs):
        return audio, {**info, "reason": "silence (below the -70 LUFS gate)"}
    with np.errstate(divide="ignore"):
        env_db = 20.0 * np.log10(_peak_envelope(x, sample_rate).astype(np.float64))
    input_peak = float(env_db.max())

    # Everything the gain search needs, per limiter frame: peaks, and the K-weighted energy (cumulated).
    frame = _frame_size(sample_rate)
    peaks = _frame_peaks_db(env_db, frame)
    n_frames = peaks.shape[0]
    energy = np.zeros(n_frames * frame)
    energy[:n] = weighted_power
    energy = energy.reshape(n_frames, frame).sum(axis=1)
    block, step = int(round(BLOCK_SECONDS * sample_rate)), int(round(STEP_SECONDS * sample_rate))
    starts = np.arange(0, n - block + 1, step)
    grid = np.arange(n_frames + 1)

    def frame_curve(gain: float, ceiling: float) -> np.ndarray:
        return gain + _limiter_frames(peaks + gain, ceiling, sample_rate / frame, ATTACK_MS, RELEASE_MS)

    def estimate(curve: np.ndarray) -> float:
        """Loudness with the per-frame gain ``curve`` applied (the K-weighted energy of a slowly varying gain
        times x is that gain squared times x's, to well under 0.1 LU)."""
        csum = np.concatenate([[0.0], np.cumsum(energy * np.exp(curve * (math.log(10.0) / 10.0)))])
        sums = np.interp((starts + block) / frame, grid, csum) - np.interp(starts / frame, grid, csum)
        return _gated_loudness(np.maximum(sums, 0.0) / block)

    ceiling = peak_db
    low = gain = target_lufs - input_lufs
    lufs = estimate(frame_curve(gain, ceiling))
    high = low + MAX_MAKEUP_DB
    if lufs < target_lufs - 0.02:  # the limiter took some loudness: raise the gain (loudness rises with it)
        if estimate(frame_curve(high, ceiling)) <= target_lufs:
            gain = high
        else:
            for _ in range(30):  # bisection
                gain = 0.5 * (low + high)
                lufs = estimate(frame_curve(gain, ceiling))
                if abs(lufs - target_lufs) < 0.01:
                    break
                low, high = (gain, high) if lufs < target_lufs else (low, gain)
    centres = _frame_centres(n_frames, frame)
    samples = np.arange(n, dtype=np.float64)

    def curve_at(gain: float, ceiling: float) -> np.ndarray:
        return np.minimum(np.interp(samples, centres, frame_curve(gain, ceiling)), gain)

    curve = curve_at(gain, ceiling)
    out = x * _amplitude(curve)
    final_peak = true_peak_db(out, sample_rate)
    for _ in range(3):  # the gain moves between samples; pull the ceiling in by any overshoot of the true peak
        if final_peak <= peak_db:
            break
        ceiling -= final_peak - peak_db + 0.01
        curve = curve_at(gain, ceiling)
        out = x * _amplitude(curve)
        final_peak = true_peak_db(out, sample_rate)
    if final_peak > peak_db:  # last resort (not seen in practice): a static trim
        trim = peak_db - final_peak - 0.001
        out *= np.float32(10.0 ** (trim / 20.0))
        curve = curve + trim
        final_peak = true_peak_db(out, sample_rate)
    reduction = curve - gain
    limited_any = bool(np.any(reduction < 0))
    info.update(applied=True, input_lufs=round(input_lufs, 3), input_true_peak_db=round(input_peak, 3),
                gain_db=round(gain, 3), limiter_max_reduction_db=round(max(0.0, float(-reduction.min())), 3),
                limited_fraction=round(float(np.mean(reduction < -0.1)), 5),
                output_lufs=round(integrated_loudness(out, sample_rate) if limited_any else input_lufs + gain, 3),
                output_true_peak_db=round(final_peak, 3))
    out = out.astype(np.float32, copy=False)
    if (audio.dim() if is_torch else np.ndim(audio)) == 1:
        out = out[0]
    if is_torch:
        import torch

        return torch.from_numpy(np.ascontiguousarray(out)).to(audio.device), info
    return out, info
