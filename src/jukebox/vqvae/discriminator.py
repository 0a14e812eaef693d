"""Discriminators and losses for adversarial (GAN) training of the VQ-VAE decoders.

Two discriminators, as modern neural codecs use them:

- :class:`MultiScaleSTFTDiscriminator` (EnCodec): one 2-D conv net per FFT size over the complex STFT
  (real and imaginary parts as two channels, ``[B, 2, frames, freq]``), dilated in time, strided in frequency.
- :class:`MultiPeriodDiscriminator` (HiFi-GAN): the waveform folded into ``[B, 1, T / p, p]`` for periods
  2, 3, 5, 7, 11, each with a stack of ``(k, 1)`` convs.

Every sub-discriminator returns ``(logits, feature maps)``; :class:`Discriminator` holds the chosen ones.
Losses: hinge or least-squares adversarial losses, EnCodec's relative feature-matching L1 and a multi-scale
log-mel L1 (:func:`jukebox.nn.spectral.mel_l1`, the metric's own filterbank). Weights and sizes live in the
frozen :class:`AdversarialConfig`, saved with the discriminator in ``MODEL_DIR/discriminator/``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from ..config import ConfigBase
from ..errors import UsageError
from ..nn.spectral import mel_l1

__all__ = [
    "AdversarialConfig", "STFTDiscriminator", "MultiScaleSTFTDiscriminator", "PeriodDiscriminator",
    "MultiPeriodDiscriminator", "Discriminator", "discriminator_loss", "generator_loss", "feature_matching_loss",
    "mel_loss", "frozen", "DISCRIMINATORS", "ADV_LOSSES",
]

DISCRIMINATORS = ("msstft", "mpd")
ADV_LOSSES = ("hinge", "lsgan")

#: (logits [B, ...], feature maps) of one sub-discriminator.
DiscOutput = tuple[Tensor, list[Tensor]]


@dataclass(frozen=True)
class AdversarialConfig(ConfigBase):
    """Discriminators, adversarial loss and weights of adversarial VQ-VAE training.

    Generator loss = ``recon_weight`` * the VQ-VAE's own loss + ``mel_weight`` * multi-scale log-mel L1 +
    ``adv_weight`` * adversarial loss + ``feat_weight`` * feature matching (each summed over trained levels).
    """

    #: Which discriminators: any of ``msstft`` (multi-scale STFT) and ``mpd`` (multi-period).
    discriminators: tuple[str, ...] = ("msstft", "mpd")
    #: ``hinge`` (EnCodec) or ``lsgan`` (HiFi-GAN, least squares).
    loss: str = "hinge"
    recon_weight: float = 1.0
    mel_weight: float = 5.0
    adv_weight: float = 1.0
    feat_weight: float = 2.0
    #: Multi-scale STFT discriminator: FFT sizes (hop n/4, window n) and conv channels.
    stft_n_ffts: tuple[int, ...] = (2048, 1024, 512)
    stft_channels: int = 32
    #: Multi-period discriminator: periods and the channels of its first conv (x4 per layer, capped).
    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    mpd_channels: int = 32
    mpd_max_channels: int = 512
    #: Mel L1: FFT sizes (hop n/4) and mel bands per size.
    mel_n_ffts: tuple[int, ...] = (2048, 512)
    mel_n_mels: tuple[int, ...] = (80, 40)
    #: Discriminator AdamW: learning rate (0 = the generator's) and betas; it follows the generator's schedule.
    disc_lr: float = 0.0
    disc_beta1: float = 0.5
    disc_beta2: float = 0.9
    #: Levels whose reconstructions are judged (and, with ``decoder_only``, whose decoders train); () = all.
    levels: tuple[int, ...] = ()
    #: Train only the decoders against the frozen encoders and codebooks (codes stay the same).
    decoder_only: bool = False

    def __post_init__(self) -> None:
        checks = [
            (bool(self.discriminators) and all(d in DISCRIMINATORS for d in self.discriminators),
             f"discriminators must be a non-empty subset of {DISCRIMINATORS}, got {self.discriminators}"),
            (self.loss in ADV_LOSSES, f"adversarial loss must be one of {ADV_LOSSES}, got {self.loss!r}"),
            (min(self.recon_weight, self.mel_weight, self.adv_weight, self.feat_weight) >= 0,
             "loss weights must be >= 0"),
            (len(self.mel_n_ffts) == len(self.mel_n_mels), "mel_n_ffts and mel_n_mels must have equal length"),
            (all(n >= 16 for n in self.stft_n_ffts) and all(p >= 1 for p in self.periods),
             "stft_n_ffts must be >= 16 and periods >= 1"),
            (self.stft_channels >= 1 and self.mpd_channels >= 1 and self.mpd_max_channels >= self.mpd_channels,
             "discriminator channels must be >= 1 (mpd_max_channels >= mpd_channels)"),
            (self.disc_lr >= 0, f"disc_lr must be >= 0, got {self.disc_lr}"),
            (all(level >= 0 for level in self.levels), f"levels must be >= 0, got {self.levels}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UsageError(msg)

    def trained_levels(self, n_levels: int) -> tuple[int, ...]:
        """The levels this config judges, checked against a VQ-VAE with ``n_levels`` levels."""
        levels = self.levels or tuple(range(n_levels))
        bad = [lvl for lvl in levels if lvl >= n_levels]
        if bad:
            raise UsageError(f"adversarial levels {bad} do not exist in a {n_levels}-level VQ-VAE")
        return tuple(sorted(set(levels)))


# ------------------------------------------------------------------------------------------------ discriminators


def _conv2d(cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int] = (1, 1),
            dilation: tuple[int, int] = (1, 1)) -> nn.Module:
    padding = ((kernel[0] - 1) * dilation[0] // 2, (kernel[1] - 1) * dilation[1] // 2)
    return weight_norm(nn.Conv2d(cin, cout, kernel, stride, padding, dilation))


class STFTDiscriminator(nn.Module):
    """EnCodec's STFT discriminator at one resolution: complex STFT [B, 2, frames, freq] -> 2-D convs.

    forward(x [B, 1, T]) -> (logits [B, 1, frames, freq'], feature maps).
    """

    def __init__(self, n_fft: int, channels: int = 32, dilations: tuple[int, ...] = (1, 2, 4)) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        layers = [_conv2d(2, channels, (3, 9))]
        for d in dilations:
            layers.append(_conv2d(channels, channels, (3, 9), stride=(1, 2), dilation=(d, 1)))
        layers.append(_conv2d(channels, channels, (3, 3)))
        self.layers = nn.ModuleList(layers)
        self.out = _conv2d(channels, 1, (3, 3))

    def forward(self, x: Tensor) -> DiscOutput:
        spec = torch.stft(x.reshape(x.shape[0], -1).float(), self.n_fft, self.hop, window=self.window,
                          return_complex=True, normalized=True)  # [B, F, frames]
        h = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # [B, 2, frames, F]
        feats = []
        for layer in self.layers:
            h = F.leaky_relu(layer(h), 0.2)
            feats.append(h)
        return self.out(h), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    """One :class:`STFTDiscriminator` per FFT size; forward(x [B, 1, T]) -> list of (logits, features)."""

    def __init__(self, n_ffts: tuple[int, ...] = (2048, 1024, 512), channels: int = 32) -> None:
        super().__init__()
        self.discs = nn.ModuleList(STFTDiscriminator(n, channels) for n in n_ffts)

    def forward(self, x: Tensor) -> list[DiscOutput]:
        return [d(x) for d in self.discs]


class PeriodDiscriminator(nn.Module):
    """HiFi-GAN's period discriminator: x [B, 1, T] padded and folded to [B, 1, T / p, p], then (5, 1) convs.

    forward(x [B, 1, T]) -> (logits [B, 1, T' , p], feature maps).
    """

    def __init__(self, period: int, channels: int = 32, max_channels: int = 512) -> None:
        super().__init__()
        self.period = period
        widths = [1] + [min(channels * 4**i, max_channels) for i in range(4)]
        layers = [_conv2d(widths[i], widths[i + 1], (5, 1), stride=(3, 1)) for i in range(4)]
        layers.append(_conv2d(widths[-1], widths[-1], (5, 1)))
        self.layers = nn.ModuleList(layers)
        self.out = _conv2d(widths[-1], 1, (3, 1))

    def forward(self, x: Tensor) -> DiscOutput:
        b, c, t = x.shape
        pad = (-t) % self.period
        if pad:
            x = F.pad(x, (0, pad), mode="reflect" if pad < t else "constant")
        h = x.reshape(b, c, -1, self.period)
        feats = []
        for layer in self.layers:
            h = F.leaky_relu(layer(h), 0.1)
            feats.append(h)
        return self.out(h), feats


class MultiPeriodDiscriminator(nn.Module):
    """One :class:`PeriodDiscriminator` per period; forward(x [B, 1, T]) -> list of (logits, features)."""

    def __init__(self, periods: tuple[int, ...] = (2, 3, 5, 7, 11), channels: int = 32,
                 max_channels: int = 512) -> None:
        super().__init__()
        self.discs = nn.ModuleList(PeriodDiscriminator(p, channels, max_channels) for p in periods)

    def forward(self, x: Tensor) -> list[DiscOutput]:
        return [d(x) for d in self.discs]


class Discriminator(nn.Module):
    """The discriminators chosen by an :class:`AdversarialConfig`; forward(x [B, 1, T]) -> every
    sub-discriminator's (logits, feature maps), in a fixed order."""

    def __init__(self, config: AdversarialConfig) -> None:
        super().__init__()
        self.config = config
        self.discs = nn.ModuleDict()
        if "msstft" in config.discriminators:
            self.discs["msstft"] = MultiScaleSTFTDiscriminator(config.stft_n_ffts, config.stft_channels)
        if "mpd" in config.discriminators:
            self.discs["mpd"] = MultiPeriodDiscriminator(config.periods, config.mpd_channels,
                                                         config.mpd_max_channels)

    def forward(self, x: Tensor) -> list[DiscOutput]:
        if x.dim() != 3 or x.shape[1] != 1:
            raise ValueError(f"expected audio [batch, 1, time], got {tuple(x.shape)}")
        return [out for name in self.discs for out in self.discs[name](x)]


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Within the block, ``module``'s parameters need no gradient (the generator step: gradients reach the
    generator's output only); their previous flags are restored afterwards."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


# ------------------------------------------------------------------------------------------------ losses


def discriminator_loss(real: list[DiscOutput], fake: list[DiscOutput], kind: str = "hinge") -> Tensor:
    """Discriminator loss (scalar) summed over sub-discriminators; ``fake`` from detached reconstructions.

    hinge: mean(relu(1 - D(x))) + mean(relu(1 + D(G))); lsgan: mean((1 - D(x))^2) + mean(D(G)^2).
    """
    total = torch.zeros((), device=real[0][0].device)
    for (r, _), (f, _) in zip(real, fake):
        if kind == "hinge":
            total = total + F.relu(1 - r).mean() + F.relu(1 + f).mean()
        elif kind == "lsgan":
            total = total + (1 - r).square().mean() + f.square().mean()
        else:
            raise ValueError(f"unknown adversarial loss {kind!r}; expected one of {ADV_LOSSES}")
    return total / len(real)


def generator_loss(fake: list[DiscOutput], kind: str = "hinge") -> Tensor:
    """Adversarial loss of the generator (scalar, mean over sub-discriminators).

    hinge: mean(relu(1 - D(G))) (EnCodec); lsgan: mean((1 - D(G))^2).
    """
    total = torch.zeros((), device=fake[0][0].device)
    for f, _ in fake:
        if kind == "hinge":
            total = total + F.relu(1 - f).mean()
        elif kind == "lsgan":
            total = total + (1 - f).square().mean()
        else:
            raise ValueError(f"unknown adversarial loss {kind!r}; expected one of {ADV_LOSSES}")
    return total / len(fake)


def feature_matching_loss(real: list[DiscOutput], fake: list[DiscOutput]) -> Tensor:
    """EnCodec's relative feature matching (scalar): mean over every feature map of
    ``mean|f_real - f_fake| / mean|f_real|``, real features detached."""
    total, n = torch.zeros((), device=real[0][0].device), 0
    for (_, fr), (_, ff) in zip(real, fake):
        for a, b in zip(fr, ff):
            a = a.detach()
            total = total + (a - b).abs().mean() / a.abs().mean().clamp_min(1e-8)
            n += 1
    return total / max(n, 1)


def mel_loss(ref: Tensor, est: Tensor, sample_rate: int, n_ffts: tuple[int, ...] = (2048, 512),
             n_mels: tuple[int, ...] = (80, 40)) -> Tensor:
    """Multi-scale log-mel L1 (scalar): mean over FFT sizes n (hop n/4) of :func:`~jukebox.nn.spectral.mel_l1`
    between audio ``ref`` and ``est`` [B, 1, T] (differentiable in ``est``)."""
    total = sum(mel_l1(ref, est, sample_rate, n_fft=n, hop_length=n // 4, n_mels=m).mean()
                for n, m in zip(n_ffts, n_mels))
    return total / len(n_ffts)
