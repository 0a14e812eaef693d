"""A summary of reconstruction quality for the CLI and reports, built on :mod:`jukebox.eval.metrics`."""

from __future__ import annotations

import math

import torch

from .metrics import mel_l1, multires_stft_distance, si_sdr, spectral_convergence


@torch.no_grad()
def reconstruction_metrics(ref: torch.Tensor, est: torch.Tensor, sample_rate: int) -> dict[str, float]:
    """Batch-mean metrics between ``ref`` and ``est`` audio [B, 1, T]: spectral convergence (ratio and dB),
    SI-SDR (dB), mel L1 and the multi-resolution STFT distance."""
    sc = float(spectral_convergence(ref, est).mean())
    return {
        "spectral_convergence": sc,
        "spectral_convergence_db": 20 * math.log10(max(sc, 1e-12)),
        "si_sdr_db": float(si_sdr(ref, est).mean()),
        "mel_l1": float(mel_l1(ref, est, sample_rate).mean()),
        "multires_stft_distance": float(multires_stft_distance(ref, est).mean()),
        "seconds": ref.shape[-1] / sample_rate,
    }
