"""Reconstruction quality metrics between reference and decoded audio (both [B, 1, T] or [T])."""

from __future__ import annotations

import math

import torch


def _stft_mag(x: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    window = torch.hann_window(win, device=x.device, dtype=x.dtype)
    spec = torch.stft(x.reshape(-1, x.shape[-1]), n_fft, hop, win, window=window, return_complex=True)
    return spec.abs()


def spectral_convergence(ref: torch.Tensor, est: torch.Tensor, n_fft: int = 2048, hop: int = 512) -> float:
    """||S_ref - S_est||_F / ||S_ref||_F over STFT magnitudes (lower is better; Jukebox's metric)."""
    s_ref = _stft_mag(ref.float(), n_fft, hop, n_fft)
    s_est = _stft_mag(est.float(), n_fft, hop, n_fft)
    return float(torch.linalg.norm(s_ref - s_est) / torch.linalg.norm(s_ref).clamp_min(1e-8))


def si_sdr(ref: torch.Tensor, est: torch.Tensor) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (higher is better), averaged over items."""
    r = ref.reshape(-1, ref.shape[-1]).double()
    e = est.reshape(-1, est.shape[-1]).double()
    r = r - r.mean(-1, keepdim=True)
    e = e - e.mean(-1, keepdim=True)
    alpha = (e * r).sum(-1, keepdim=True) / (r * r).sum(-1, keepdim=True).clamp_min(1e-12)
    target = alpha * r
    noise = e - target
    ratio = (target.pow(2).sum(-1) / noise.pow(2).sum(-1).clamp_min(1e-12)).clamp_min(1e-12)
    return float((10 * torch.log10(ratio)).mean())


def multires_stft_distance(ref: torch.Tensor, est: torch.Tensor,
                           sizes: tuple[int, ...] = (2048, 1024, 512, 256)) -> float:
    """Mean over resolutions of L1 distance between log STFT magnitudes plus spectral convergence."""
    total = 0.0
    for n in sizes:
        a, b = _stft_mag(ref.float(), n, n // 4, n), _stft_mag(est.float(), n, n // 4, n)
        total += float((torch.log(a + 1e-5) - torch.log(b + 1e-5)).abs().mean())
        total += float(torch.linalg.norm(a - b) / torch.linalg.norm(a).clamp_min(1e-8))
    return total / len(sizes)


def reconstruction_metrics(ref: torch.Tensor, est: torch.Tensor, sample_rate: int) -> dict[str, float]:
    """Spectral convergence (ratio and dB), SI-SDR and multi-resolution STFT distance."""
    sc = spectral_convergence(ref, est)
    return {
        "spectral_convergence": sc,
        "spectral_convergence_db": 20 * math.log10(max(sc, 1e-12)),
        "si_sdr_db": si_sdr(ref, est),
        "multires_stft_distance": multires_stft_distance(ref, est),
        "seconds": ref.shape[-1] / sample_rate,
    }
