"""Reconstruction metrics on audio, as tensors: the spectral measures of :mod:`jukebox.nn.spectral` and the
scale-invariant SDR.

Audio is ``[B, T]`` or channels-first ``[B, C, T]`` (channels are averaged to mono, as Jukebox does). Every
function returns one value per batch item, ``[B]``; take ``.mean()`` for a batch figure.

- :func:`stft_magnitude`, :func:`spectral_distance`, :func:`multires_spectral_distance`,
  :func:`spectral_convergence`, :func:`mel_filterbank`, :func:`mel_l1`, :func:`multires_stft_distance`: see
  :mod:`jukebox.nn.spectral`.
- :func:`si_sdr` -- scale-invariant signal-to-distortion ratio in dB.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..nn.spectral import (
    mel_filterbank,
    mel_l1,
    multires_spectral_distance,
    multires_stft_distance,
    spectral_convergence,
    spectral_distance,
    stft_magnitude,
    to_mono,
)

__all__ = [
    "to_mono",
    "stft_magnitude",
    "spectral_distance",
    "multires_spectral_distance",
    "spectral_convergence",
    "si_sdr",
    "mel_filterbank",
    "mel_l1",
    "multires_stft_distance",
]


def si_sdr(ref: Tensor, est: Tensor, eps: float = 1e-12) -> Tensor:
    """Scale-invariant SDR in dB per item, [B] (higher is better). Computed in float64."""
    r = to_mono(ref).double()
    e = to_mono(est).double()
    r = r - r.mean(-1, keepdim=True)
    e = e - e.mean(-1, keepdim=True)
    alpha = (e * r).sum(-1, keepdim=True) / (r * r).sum(-1, keepdim=True).clamp_min(eps)
    target = alpha * r
    noise = e - target
    ratio = target.square().sum(-1).clamp_min(eps) / noise.square().sum(-1).clamp_min(eps)
    return (10 * torch.log10(ratio)).to(ref.dtype if ref.is_floating_point() else torch.float32)

