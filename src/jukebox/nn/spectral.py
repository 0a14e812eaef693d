"""Spectral maths on audio, as tensors (differentiable): STFT magnitudes, spectral distances, mel filters.

The VQ-VAE's spectral losses, the adversarial mel loss and the reconstruction measures of :mod:`jukebox.eval`
are built on these.

Audio is ``[B, T]`` or channels-first ``[B, C, T]`` (channels are averaged to mono, as Jukebox does). Every
function returns one value per batch item, ``[B]``; take ``.mean()`` for a batch figure.

- :func:`stft_magnitude` -- ``|STFT|`` with a Hann window, centred frames (Jukebox's ``spec``).
- :func:`spectral_distance` -- ``||S_ref - S_est||_F`` (Jukebox's non-relative ``spectral_loss``).
- :func:`multires_spectral_distance` -- mean of :func:`spectral_distance` over several STFT resolutions.
- :func:`spectral_convergence` -- ``||S_ref - S_est||_F / ||S_ref||_F`` (Jukebox's definition, with its epsilon).
- :func:`mel_l1` -- mean absolute difference of log-mel spectrograms.
- :func:`multires_stft_distance` -- log-magnitude L1 plus spectral convergence, averaged over resolutions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "to_mono",
    "stft_magnitude",
    "spectral_distance",
    "multires_spectral_distance",
    "spectral_convergence",
    "mel_filterbank",
    "mel_l1",
    "multires_stft_distance",
]


def to_mono(x: Tensor) -> Tensor:
    """[B, T] -> [B, T]; [B, C, T] -> mean over channels, [B, T]. Always float32 or wider."""
    if x.dim() == 3:
        x = x.mean(dim=1)
    if x.dim() != 2:
        raise ValueError(f"expected audio [B, T] or [B, C, T], got shape {tuple(x.shape)}")
    if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return x


def stft_magnitude(x: Tensor, n_fft: int, hop_length: int, window_size: int) -> Tensor:
    """Magnitude STFT of audio [B, T] or [B, C, T] -> [B, n_fft // 2 + 1, frames] (centred, reflect-padded)."""
    x = to_mono(x)
    window = torch.hann_window(window_size, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, n_fft, hop_length, win_length=window_size, window=window, return_complex=True)
    return spec.abs()


def _norm(x: Tensor) -> Tensor:
    """Per-item L2 norm over all but the batch dim: [B, ...] -> [B]."""
    return x.reshape(x.shape[0], -1).square().sum(dim=-1).sqrt()


def spectral_distance(ref: Tensor, est: Tensor, n_fft: int = 2048, hop_length: int = 256,
                      window_size: int = 1536) -> Tensor:
    """``||S_ref - S_est||_F`` per item, [B]. Defaults are Jukebox's single-resolution STFT settings."""
    return _norm(stft_magnitude(ref, n_fft, hop_length, window_size) - stft_magnitude(est, n_fft, hop_length,
                                                                                     window_size))


def multires_spectral_distance(ref: Tensor, est: Tensor, n_ffts: Sequence[int] = (2048, 1024, 512),
                               hop_lengths: Sequence[int] = (240, 120, 50),
                               window_sizes: Sequence[int] = (1200, 600, 240)) -> Tensor:
    """Mean over resolutions of :func:`spectral_distance`, [B] (Jukebox's ``multispectral_loss``)."""
    if not len(n_ffts) == len(hop_lengths) == len(window_sizes):
        raise ValueError("n_ffts, hop_lengths and window_sizes must have the same length")
    total = sum(spectral_distance(ref, est, n, h, w) for n, h, w in zip(n_ffts, hop_lengths, window_sizes))
    return total / len(n_ffts)


def spectral_convergence(ref: Tensor, est: Tensor, n_fft: int = 2048, hop_length: int = 256,
                         window_size: int = 1536, epsilon: float = 2e-3) -> Tensor:
    """``||S_ref - S_est|| / ||S_ref||`` per item, [B]; items whose reference norm is <= epsilon score 0."""
    s_ref = stft_magnitude(ref, n_fft, hop_length, window_size)
    s_est = stft_magnitude(est, n_fft, hop_length, window_size)
    ref_norm = _norm(s_ref)
    mask = (ref_norm > epsilon).to(ref_norm.dtype)
    return _norm(s_ref - s_est) * mask / ref_norm.clamp(min=epsilon)


def _hz_to_mel(f: Tensor) -> Tensor:
    # Slaney scale: linear below 1 kHz, logarithmic above.
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return torch.where(f < min_log_hz, f / f_sp, min_log_mel + torch.log(f.clamp_min(1e-10) / min_log_hz) / logstep)


def _mel_to_hz(m: Tensor) -> Tensor:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return torch.where(m < min_log_mel, m * f_sp, min_log_hz * torch.exp(logstep * (m - min_log_mel)))


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = 80, f_min: float = 0.0,
                   f_max: float | None = None) -> Tensor:
    """Slaney-style, area-normalised triangular mel filters, [n_mels, n_fft // 2 + 1] float32."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mels = torch.linspace(float(_hz_to_mel(torch.tensor(f_min))), float(_hz_to_mel(torch.tensor(f_max))),
                          n_mels + 2, dtype=torch.float64)
    hz = _mel_to_hz(mels)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (freqs[None] - lower) / (centre - lower)
    down = (upper - freqs[None]) / (upper - centre)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    fb = fb * (2.0 / (upper - lower))
    return fb.float()


def mel_l1(ref: Tensor, est: Tensor, sample_rate: int, n_fft: int = 2048, hop_length: int = 512,
           n_mels: int = 80, eps: float = 1e-5) -> Tensor:
    """Mean |log mel(ref) - log mel(est)| per item, [B] (natural log of magnitude mel spectrograms)."""
    fb = mel_filterbank(sample_rate, n_fft, n_mels).to(device=ref.device)
    a = torch.matmul(fb.to(torch.float32), stft_magnitude(ref.float(), n_fft, hop_length, n_fft))
    b = torch.matmul(fb.to(torch.float32), stft_magnitude(est.float(), n_fft, hop_length, n_fft))
    return (torch.log(a + eps) - torch.log(b + eps)).abs().mean(dim=(1, 2))


def multires_stft_distance(ref: Tensor, est: Tensor, sizes: Sequence[int] = (2048, 1024, 512, 256),
                           eps: float = 1e-5) -> Tensor:
    """Mean over FFT sizes n (hop n/4) of log-magnitude L1 plus spectral convergence, per item, [B]."""
    total = torch.zeros(())
    for n in sizes:
        a = stft_magnitude(ref.float(), n, n // 4, n)
        b = stft_magnitude(est.float(), n, n // 4, n)
        log_l1 = (torch.log(a + eps) - torch.log(b + eps)).abs().mean(dim=(1, 2))
        sc = _norm(a - b) / _norm(a).clamp_min(1e-8)
        total = total + log_l1 + sc
    return total / len(sizes)
