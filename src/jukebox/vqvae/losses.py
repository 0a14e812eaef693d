"""VQ-VAE reconstruction losses (Jukebox's definitions), on audio [B, 1, T].

Every loss is divided by a data statistic from the config (Jukebox's ``bandwidth``): ``bandwidth_l1`` (mean
|x|), ``bandwidth_l2`` (variance of x) and ``bandwidth_spec`` (mean STFT norm).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import VQVAEConfig
from ..nn.spectral import multires_spectral_distance, spectral_convergence, spectral_distance

__all__ = ["reconstruction_loss", "spectral_loss", "multispectral_loss", "jukebox_spectral_convergence"]


def _l1(target: Tensor, pred: Tensor, cfg: VQVAEConfig) -> Tensor:
    return torch.mean(torch.abs(pred - target)) / cfg.bandwidth_l1


def _l2(target: Tensor, pred: Tensor, cfg: VQVAEConfig) -> Tensor:
    return torch.mean((pred - target) ** 2) / cfg.bandwidth_l2


def _linf(target: Tensor, pred: Tensor, cfg: VQVAEConfig) -> Tensor:
    """Mean of the ``linf_k`` largest squared errors of each item, / bandwidth_l2."""
    residual = ((pred - target) ** 2).reshape(target.shape[0], -1)
    values, _ = torch.topk(residual, min(cfg.linf_k, residual.shape[1]), dim=1)
    return torch.mean(values) / cfg.bandwidth_l2


def reconstruction_loss(kind: str, target: Tensor, pred: Tensor, cfg: VQVAEConfig) -> Tensor:
    """Sample-domain loss ``kind`` in l1 / l2 / linf / lmix (= lmix_l1*l1 + lmix_l2*l2 + lmix_linf*linf)."""
    if kind == "l1":
        return _l1(target, pred, cfg)
    if kind == "l2":
        return _l2(target, pred, cfg)
    if kind == "linf":
        return _linf(target, pred, cfg)
    if kind == "lmix":
        loss = torch.zeros((), device=pred.device, dtype=pred.dtype)
        for weight, fn in ((cfg.lmix_l1, _l1), (cfg.lmix_l2, _l2), (cfg.lmix_linf, _linf)):
            if weight:
                loss = loss + weight * fn(target, pred, cfg)
        return loss
    raise ValueError(f"unknown VQ-VAE loss_fn {kind!r}; expected l1, l2, linf or lmix")


def jukebox_spectral_convergence(target: Tensor, pred: Tensor, cfg: VQVAEConfig) -> Tensor:
    """Spectral convergence per item [B] at the config's single STFT resolution."""
    return spectral_convergence(target, pred, cfg.n_fft, cfg.hop_length, cfg.window_size)


def spectral_loss(target: Tensor, pred: Tensor, cfg: VQVAEConfig) -> Tensor:
    """Single-resolution spectral loss (scalar): ||S_t - S_p|| / bandwidth_spec, or spectral convergence."""
    if cfg.use_nonrelative_specloss:
        per_item = spectral_distance(target, pred, cfg.n_fft, cfg.hop_length, cfg.window_size) / cfg.bandwidth_spec
    else:
        per_item = jukebox_spectral_convergence(target, pred, cfg)
    return per_item.mean()


def multispectral_loss(target: Tensor, pred: Tensor, cfg: VQVAEConfig) -> Tensor:
    """Multi-resolution STFT magnitude loss (scalar): mean over resolutions of ||S_t - S_p||, / bandwidth_spec."""
    per_item = multires_spectral_distance(target, pred, cfg.multispec_n_fft, cfg.multispec_hop_length,
                                          cfg.multispec_window_size)
    return (per_item / cfg.bandwidth_spec).mean()
