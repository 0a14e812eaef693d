"""Step functions of the shared loop: the VQ-VAE on audio windows and the priors on cached codes.

Each task draws the batch of (step, micro-step, rank) from a generator seeded with exactly those numbers, so
the data order is a pure function of the step: ranks see different windows, and a resumed run sees the windows
the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data.code_cache import CodeWindow, CodeWindowSampler
from ..data.dataset import Window, WindowSampler
from ..data.labels import Labeller, null_labels
from .options import TrainOptions

VAL_STREAM = 0x5EED_0FF5  # keeps validation draws apart from training draws


def batch_rng(seed: int, step: int, micro: int, rank: int) -> np.random.Generator:
    """The generator that chooses the windows of one micro-batch."""
    return np.random.default_rng([seed, step, micro, rank])


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


# ---------------------------------------------------------------------------------------------------- VQ-VAE


class _WindowBatches:
    """Batches drawn by a task's ``_draw(sampler, rng)``: training batches are a pure function of (seed, step,
    micro-step, rank), so resuming redraws them exactly; validation batches are drawn once and kept."""

    train: Any
    val: Any
    seed: int
    n_val: int
    _val: list[dict[str, Any]] | None

    def _draw(self, sampler: Any, rng: np.random.Generator) -> dict[str, Any]:
        raise NotImplementedError

    def train_batch(self, step: int, micro: int, rank: int) -> dict[str, Any]:
        return self._draw(self.train, batch_rng(self.seed, step, micro, rank))

    def val_batches(self) -> list[dict[str, Any]]:
        if self._val is None:
            sampler = self.val or self.train
            rng = np.random.default_rng([self.seed, VAL_STREAM])
            self._val = [self._draw(sampler, rng) for _ in range(self.n_val)]
        return self._val


class VQVAETask(_WindowBatches):
    """Train a VQ-VAE on audio windows [B, 1, window] decoded on the fly from the corpus."""

    name = "vqvae"
    prefers_bf16 = False

    def __init__(self, train: WindowSampler, val: WindowSampler | None, batch_size: int, seed: int = 0,
                 val_batches: int = 4, export: Callable[[nn.Module], None] | None = None) -> None:
        self.train, self.val, self.batch_size, self.seed = train, val, batch_size, seed
        self.n_val = val_batches
        self._export = export
        self._val: list[dict[str, Any]] | None = None

    def _collate(self, windows: list[Window]) -> dict[str, Any]:
        return {"audio": np.stack([w.audio for w in windows]),
                "ids": [f"{w.path}@{w.offset_samples}" for w in windows]}

    def _draw(self, sampler: WindowSampler, rng: np.random.Generator) -> dict[str, Any]:
        idx = rng.integers(len(sampler), size=self.batch_size)
        return self._collate([sampler.window_at(*sampler.locate(int(i))) for i in idx])

    def loss(self, model: nn.Module, batch: dict[str, Any], device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
        x = torch.as_tensor(batch["audio"]).to(device, non_blocking=True)  # numpy, or a pinned tensor
        _, loss, metrics = model(x)
        return loss, metrics

    def tokens(self, batch: dict[str, Any]) -> int:
        return int(batch["audio"].shape[0] * batch["audio"].shape[-1])

    def describe(self, batch: dict[str, Any]) -> list[str]:
        return list(batch["ids"])

    def export(self, model: nn.Module) -> None:
        if self._export is not None:
            self._export(_unwrap(model))

    def log_media(self, writer: Any, model: nn.Module, step: int) -> None:
        """The first validation window and its reconstruction from every level."""
        model = _unwrap(model)
        x = torch.from_numpy(self.val_batches()[0]["audio"][:1]).to(next(model.parameters()).device)
        sr = model.config.sample_rate
        if step == 0 or not getattr(self, "_logged_input", False):
            writer.add_audio("audio/input", x[0].clamp(-1, 1).cpu(), step, sample_rate=sr)
            self._logged_input = True
        codes = model.encode(x)
        for level, z in enumerate(codes):
            y = model.decode_level(z, level)
            writer.add_audio(f"audio/recon_level_{level}", y[0].clamp(-1, 1).float().cpu(), step, sample_rate=sr)
            used = torch.unique(z).numel()
            writer.add_scalar(f"codebook/used_in_val_clip_level_{level}", used, step)


@torch.no_grad()
def estimate_bandwidth(sampler: WindowSampler, config: Any, n_windows: int = 16, seed: int = 0) -> dict[str, float]:
    """Jukebox's loss normalisers from a few corpus windows: l1 = mean |x|, l2 = variance of x,
    spec = mean STFT-magnitude norm at the config's single resolution."""
    from ..nn.spectral import spectral_distance

    rng = np.random.default_rng([seed, 0xBA4D])
    xs = np.stack([sampler.window_at(*sampler.locate(int(i))).audio
                   for i in rng.integers(len(sampler), size=n_windows)])
    x = torch.from_numpy(xs)
    l1 = float(x.abs().mean())
    l2 = float(x.var())
    spec = float(spectral_distance(x, torch.zeros_like(x), config.n_fft, config.hop_length,
                                   config.window_size).mean())
    eps = 1e-6
    return {"l1": max(l1, eps), "l2": max(l2, eps), "spec": max(spec, eps)}


# ---------------------------------------------------------------------------------------------------- priors


class PriorTask(_WindowBatches):
    """Train one prior on windows of cached codes with their labels.

    ``labeller`` builds y [B, 4 + max_bow_genre_size + n_tokens] (None for a prior without labels). The batch
    rates (``label_dropout``, ``input_noise``, ``scheduled_sampling``) come from ``options`` (a
    :class:`~jukebox.train.options.TrainOptions`) or by name.
    Batches: ``z`` [B, n_ctx] int64, ``z_cond`` [B, n_ctx // down] (upsamplers) and ``y``.
    """

    prefers_bf16 = True

    def __init__(self, level: int, train: CodeWindowSampler, val: CodeWindowSampler | None,
                 labeller: Labeller | None, batch_size: int, seed: int = 0, val_batches: int = 4,
                 export: Callable[[nn.Module], None] | None = None, vqvae: Any = None,
                 label_dropout: float = 0.0, input_noise: float = 0.0, l_bins: int = 0,
                 scheduled_sampling: float = 0.0, options: TrainOptions | None = None) -> None:
        self.name = f"prior_level_{level}"
        self.level = level
        self.train, self.val, self.labeller = train, val, labeller
        self.batch_size, self.seed, self.n_val = batch_size, seed, val_batches
        self._export = export
        self.vqvae = vqvae
        self._val: list[dict[str, Any]] | None = None
        if options is None:  # the rates by name, checked as training options
            options = TrainOptions(label_dropout=label_dropout, input_noise=input_noise,
                                   scheduled_sampling=scheduled_sampling)
        self.label_dropout = options.label_dropout
        self.input_noise, self.l_bins = options.input_noise, l_bins
        self.scheduled_sampling = options.scheduled_sampling
        if self.label_dropout and labeller is None:
            raise ValueError("label dropout needs a prior with labels")
        if self.input_noise and l_bins < 1:
            raise ValueError("input noise needs the number of codes (l_bins)")

    def train_batch(self, step: int, micro: int, rank: int) -> dict[str, Any]:
        """A training batch; with ``label_dropout`` p, each item's artist and genre become ``unknown`` (a tempo
        prior keeps its tempo) with probability p (drawn from the batch's own RNG, so resuming keeps the same
        batches): the prior also learns the unconditional distribution that classifier-free guidance needs."""
        rng = batch_rng(self.seed, step, micro, rank)
        batch = self._draw(self.train, rng)
        if self.label_dropout:
            drop = torch.from_numpy(rng.random(len(batch["ids"])) < self.label_dropout)
            batch["y"] = null_labels(batch["y"], self.labeller.max_bow_genre_size, drop)
        if self.input_noise:  # the decoder reads a corrupted copy, the targets stay real: it learns to recover
            z = batch["z"]
            hit = torch.from_numpy(rng.random(tuple(z.shape)) < self.input_noise)
            noise = torch.from_numpy(rng.integers(0, self.l_bins, size=tuple(z.shape))).to(z.dtype)
            batch["z_in"] = torch.where(hit, noise, z)
        if self.scheduled_sampling:  # which inputs become the model's own guesses, and the uniforms that draw them
            shape = tuple(batch["z"].shape)
            batch["ss_hit"] = torch.from_numpy(rng.random(shape) < self.scheduled_sampling)
            batch["ss_u"] = torch.from_numpy(rng.random(shape, dtype=np.float32))
        return batch

    def _collate(self, windows: list[CodeWindow]) -> dict[str, Any]:
        batch: dict[str, Any] = {
            "z": torch.from_numpy(np.stack([w.z for w in windows])),
            "z_cond": None if windows[0].z_cond is None else torch.from_numpy(np.stack([w.z_cond for w in windows])),
            "y": None,
            "ids": [f"{w.path}@{w.offset}" for w in windows],
        }
        if self.labeller is not None:
            metas = [{"artist": w.artist, "genre": w.genre, "lyrics": w.lyrics, "total_length": w.total_length,
                      "offset": w.offset, "bpm": w.bpm, "beat0": w.beat0} for w in windows]
            batch["y"] = self.labeller.batch_labels(metas).y
        return batch

    def _draw(self, sampler: CodeWindowSampler, rng: np.random.Generator) -> dict[str, Any]:
        return self._collate([sampler.window(int(i)) for i in sampler.draw(rng, self.batch_size)])

    def loss(self, model: nn.Module, batch: dict[str, Any], device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
        z = batch["z"].to(device, non_blocking=True)
        z_cond = None if batch["z_cond"] is None else batch["z_cond"].to(device, non_blocking=True)
        y = None if batch["y"] is None else batch["y"].to(device, non_blocking=True)
        z_in = batch.get("z_in")  # with input noise: the corrupted copy the decoder reads
        z_in = None if z_in is None else z_in.to(device, non_blocking=True)
        if "ss_hit" in batch:  # training batches only: validation reads clean codes
            z_in = self._self_fed(model, z, z_cond, y, z_in, batch["ss_hit"].to(device), batch["ss_u"].to(device))
        return model(z, z_cond, y, z_input=z_in)

    @staticmethod
    def _self_fed(model: nn.Module, z: Tensor, z_cond: Tensor | None, y: Tensor | None, z_in: Tensor | None,
                  hit: Tensor, u: Tensor) -> Tensor:
        """Parallel scheduled sampling: one teacher-forced pass without gradients predicts every position from the
        real prefix; where ``hit`` [B, T] is set the decoder then reads the token drawn from that prediction (by
        inverse CDF with the uniforms ``u`` [B, T], so a step's draw is reproducible), elsewhere ``z_in`` (or ``z``).
        The model's own plausible-but-wrong tokens are what it meets when it samples."""
        with torch.no_grad():
            logits = _unwrap(model).logits(z, z_cond, y)  # [B, T, l_bins]
            cdf = torch.softmax(logits.float(), dim=-1).cumsum(-1)
            guess = torch.searchsorted(cdf, u.unsqueeze(-1).to(cdf.dtype)).squeeze(-1)
            guess = guess.clamp_(max=logits.shape[-1] - 1)
        return torch.where(hit, guess, z.long() if z_in is None else z_in.long())

    def tokens(self, batch: dict[str, Any]) -> int:
        return int(batch["z"].numel())

    def describe(self, batch: dict[str, Any]) -> list[str]:
        return list(batch["ids"])

    def export(self, model: nn.Module) -> None:
        if self._export is not None:
            self._export(_unwrap(model))

    def log_media(self, writer: Any, model: nn.Module, step: int) -> None:
        """A window sampled from the prior (conditioned like the first validation item), decoded at its level."""
        if self.vqvae is None:
            return
        model = _unwrap(model)
        batch = self.val_batches()[0]
        device = next(model.parameters()).device
        z_cond = None if batch["z_cond"] is None else batch["z_cond"][:1].to(device)
        y = None if batch["y"] is None else batch["y"][:1].to(device)
        gen = torch.Generator(device=device).manual_seed(self.seed)
        z = model.sample(1, z_cond=z_cond, y=y, generator=gen)
        vq = self.vqvae.to(device)
        sr = vq.config.sample_rate
        writer.add_audio("audio/sample", vq.decode_level(z, self.level)[0].clamp(-1, 1).float().cpu(), step,
                         sample_rate=sr)
        writer.add_audio("audio/data", vq.decode_level(batch["z"][:1].to(device), self.level)[0].clamp(-1, 1)
                         .float().cpu(), step, sample_rate=sr)
