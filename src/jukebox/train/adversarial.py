"""Adversarial VQ-VAE training in the shared loop: the generator wrapper and the task with a discriminator.

:class:`GeneratorVQVAE` wraps a :class:`~jukebox.vqvae.VQVAE` so one forward returns the reconstruction of every
judged level next to the VQ-VAE's own loss. Full mode runs the VQ-VAE's training forward (codebooks EMA-updated,
commitment loss) and captures each level's decoder output; ``decoder_only`` encodes and quantises under
``no_grad`` without touching the codebooks and decodes the judged levels only, so the codes (and every prior
trained on them) stay valid. :class:`AdversarialVQVAETask` adds the mel, adversarial and feature-matching losses
and the discriminator step (:class:`jukebox.train.loop.AdversarialTask`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..checkpoint.model_dir import save_discriminator
from ..data.dataset import WindowSampler
from ..vqvae import VQVAE
from ..vqvae.discriminator import (
    AdversarialConfig,
    Discriminator,
    discriminator_loss,
    feature_matching_loss,
    frozen,
    generator_loss,
    mel_loss,
)
from ..vqvae.losses import multispectral_loss, reconstruction_loss, spectral_loss
from .config import TrainConfig
from .optim import build_optimizer
from .tasks import VQVAETask, _unwrap

__all__ = ["GeneratorVQVAE", "AdversarialVQVAETask", "freeze_for_decoder_only"]


def freeze_for_decoder_only(vqvae: VQVAE, levels: tuple[int, ...]) -> int:
    """Make only the decoders of ``levels`` trainable; returns their parameter count."""
    for p in vqvae.parameters():
        p.requires_grad_(False)
    n = 0
    for level in levels:
        for p in vqvae.decoders[level].parameters():
            p.requires_grad_(True)
            n += p.numel()
    return n


class GeneratorVQVAE(nn.Module):
    """The generator side of adversarial training: ``forward(x [B, 1, T])`` -> ({level: x_out [B, 1, T]},
    VQ-VAE loss (scalar), detached metrics). ``vqvae`` is the wrapped model (its state dict keys get ``vqvae.``)."""

    def __init__(self, vqvae: VQVAE, levels: tuple[int, ...], decoder_only: bool) -> None:
        super().__init__()
        self.vqvae = vqvae
        self.levels = levels
        self.decoder_only = decoder_only

    def forward(self, x: Tensor) -> tuple[dict[int, Tensor], Tensor, dict[str, Tensor]]:
        vq = self.vqvae
        if not self.decoder_only:
            outs: dict[int, Tensor] = {}
            hooks = [vq.decoders[lvl].register_forward_hook(
                lambda _m, _i, out, lvl=lvl: outs.__setitem__(lvl, out)) for lvl in self.levels]
            try:
                _, loss, metrics = vq(x)
            finally:
                for h in hooks:
                    h.remove()
            return outs, loss, metrics
        c = vq.config
        x = x.float()
        outs, metrics = {}, {}
        loss = torch.zeros((), device=x.device)
        for level in self.levels:
            with torch.no_grad():
                quant = vq.codebooks[level](vq.encoders[level](x), update=False)[1]
            x_out = vq.decoders[level](quant)
            recons = reconstruction_loss(c.loss_fn, x, x_out, c)
            spec = spectral_loss(x, x_out, c)
            multispec = multispectral_loss(x, x_out, c)
            loss = loss + recons + c.spectral * spec + c.multispectral * multispec
            metrics.update({f"recons_loss_l{level + 1}": recons.detach(), f"spectral_loss_l{level + 1}": spec.detach(),
                            f"multispectral_loss_l{level + 1}": multispec.detach()})
            outs[level] = x_out
        return outs, loss, metrics


class AdversarialVQVAETask(VQVAETask):
    """:class:`~jukebox.train.tasks.VQVAETask` with a discriminator: the model is a :class:`GeneratorVQVAE`.

    Generator loss = recon_weight * VQ-VAE loss + sum over judged levels of (mel_weight * mel L1 +
    adv_weight * adversarial + feat_weight * feature matching). The discriminator sees the real window and each
    level's detached reconstruction (left in the batch as ``_fakes`` by :meth:`loss`). Without a
    discriminator (``discriminator=None``: adversarial and feature weights 0) it is a plain (decoder-only)
    fine-tuning task with the mel loss, and the loop takes no discriminator steps.
    """

    def __init__(self, train: WindowSampler, val: WindowSampler | None, batch_size: int, adversarial: AdversarialConfig,
                 discriminator: Discriminator | None, sample_rate: int, seed: int = 0, val_batches: int = 4,
                 export: Callable[[nn.Module], None] | None = None,
                 export_discriminator: str | None = None) -> None:
        super().__init__(train, val, batch_size, seed, val_batches, export)
        self.adv = adversarial
        self.discriminator = discriminator
        self.sample_rate = sample_rate
        self.discriminator_dir = export_discriminator

    def discriminator_optimizer(self, config: TrainConfig) -> torch.optim.Optimizer:
        a = self.adv
        return build_optimizer(self.discriminator, config.replace(lr=a.disc_lr or config.lr, beta1=a.disc_beta1,
                                                                  beta2=a.disc_beta2, weight_decay=0.0))

    def loss(self, model: nn.Module, batch: dict[str, Any], device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
        a = self.adv
        x = torch.as_tensor(batch["audio"]).to(device, non_blocking=True)
        outs, base, metrics = model(x)
        loss = a.recon_weight * base
        mel_t = adv_t = feat_t = torch.zeros((), device=device)
        disc = self.discriminator
        real = None
        if disc is not None:
            with frozen(disc), torch.no_grad():
                real = disc(x)
        for level, x_out in outs.items():
            if a.mel_weight > 0:
                mel = mel_loss(x, x_out, self.sample_rate, a.mel_n_ffts, a.mel_n_mels)
                mel_t = mel_t + mel
                metrics[f"mel_loss_l{level + 1}"] = mel.detach()
            if disc is not None and real is not None:
                with frozen(disc):
                    fake = disc(x_out)
                g = generator_loss(fake, a.loss)
                fm = feature_matching_loss(real, fake)
                adv_t, feat_t = adv_t + g, feat_t + fm
                metrics[f"adv_loss_l{level + 1}"] = g.detach()
                metrics[f"feat_loss_l{level + 1}"] = fm.detach()
        loss = loss + a.mel_weight * mel_t + a.adv_weight * adv_t + a.feat_weight * feat_t
        metrics.update(vqvae_loss=base.detach(), mel_loss=mel_t.detach(), adv_loss=adv_t.detach(),
                       feat_loss=feat_t.detach())
        if torch.is_grad_enabled() and disc is not None:
            batch["_fakes"] = [o.detach() for o in outs.values()]
        return loss, metrics

    def discriminator_loss(self, batch: dict[str, Any], device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean over judged levels of the discriminator loss on (real window, detached reconstruction)."""
        assert self.discriminator is not None
        x = torch.as_tensor(batch["audio"]).to(device, non_blocking=True)
        fakes = batch.pop("_fakes")
        real = self.discriminator(x)
        total = torch.zeros((), device=device)
        for fake in fakes:
            total = total + discriminator_loss(real, self.discriminator(fake), self.adv.loss)
        with torch.no_grad():
            real_score = torch.stack([r.mean() for r, _ in real]).mean()
        return total / len(fakes), {"disc_real_logit": real_score}

    def export(self, model: nn.Module) -> None:
        if self._export is not None:
            self._export(_unwrap(model).vqvae)
        if self.discriminator_dir is not None and self.discriminator is not None:
            save_discriminator(self.discriminator_dir, self.discriminator)

    def log_media(self, writer: Any, model: nn.Module, step: int) -> None:
        super().log_media(writer, _unwrap(model).vqvae, step)
