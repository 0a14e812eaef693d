"""Tasks of synthetic data for the shared loop: throughput benchmarks and loop tests without a corpus.

:class:`SyntheticPriorTask` trains any prior on windows of a code stream (uniformly random codes, or a sparse
random Markov chain whose entropy the prior can learn, so loss curves fall); :class:`SyntheticAudioTask` trains a
VQ-VAE on windows of a synthetic signal (decaying sines plus noise). As with the real tasks, the batch of
(step, micro-step, rank) is a pure function of those numbers and the seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .tasks import batch_rng

__all__ = ["markov_stream", "SyntheticPriorTask", "SyntheticAudioTask", "SyntheticAdversarialTask"]


def markov_stream(length: int, bins: int, successors: int = 4, seed: int = 0) -> np.ndarray:
    """A code stream [length] (int64) of a random first-order Markov chain: each code is followed by one of
    ``successors`` codes (drawn once per code) with probabilities 0.5, 0.25, ... (about 1.9 bits per token for 4)."""
    rng = np.random.default_rng([seed, 0x3A7C])
    succ = rng.integers(0, bins, size=(bins, successors))
    p = 0.5 ** np.arange(1, successors + 1)
    p /= p.sum()
    picks = rng.choice(successors, size=length, p=p)
    out = np.empty(length, dtype=np.int64)
    z = int(rng.integers(bins))
    for i in range(length):
        out[i] = z
        z = int(succ[z, picks[i]])
    return out


class SyntheticPriorTask:
    """Batches of ``batch_size`` windows for a prior of ``config`` (a :class:`~jukebox.prior.config.PriorConfig`):
    ``z`` [B, n_ctx] from a code stream (``data="random"``: uniform codes; ``"markov"``: :func:`markov_stream`),
    ``z_cond`` [B, n_ctx // cond_downsample] for upsamplers and labels ``y`` [B, y_len] (random artist, genre and
    lyrics, a fixed tempo)."""

    name = "synthetic_prior"
    prefers_bf16 = True

    def __init__(self, config: Any, batch_size: int, data: str = "random", seed: int = 0,
                 stream_tokens: int = 1 << 20) -> None:
        if data not in ("random", "markov"):
            raise ValueError(f"data must be 'random' or 'markov', got {data!r}")
        self.c, self.batch_size, self.data, self.seed = config, batch_size, data, seed
        self.stream = markov_stream(max(stream_tokens, 2 * config.n_ctx), config.l_bins, seed=seed) \
            if data == "markov" else None

    def _codes(self, rng: np.random.Generator, n: int) -> Tensor:
        B, bins = self.batch_size, self.c.l_bins
        if self.stream is None:
            return torch.from_numpy(rng.integers(0, bins, size=(B, n)))
        starts = rng.integers(0, len(self.stream) - n, size=B)
        return torch.from_numpy(np.stack([self.stream[s:s + n] for s in starts]))

    def _labels(self, rng: np.random.Generator) -> Tensor | None:
        c = self.c
        if c.labels is None:
            return None
        B, lab = self.batch_size, c.labels
        y = torch.zeros(B, c.y_len, dtype=torch.long)
        y[:, 0] = c.sample_length * 8
        y[:, 1] = torch.from_numpy(rng.integers(0, c.sample_length * 7, size=B))
        y[:, 2] = c.sample_length
        y[:, 3] = torch.from_numpy(rng.integers(0, lab.artist_bins, size=B))
        y[:, 4] = torch.from_numpy(rng.integers(0, lab.genre_bins, size=B))
        if lab.max_bow_genre_size > 1:
            y[:, 5:4 + lab.max_bow_genre_size] = -1
        if lab.n_tempo:
            y[:, 4 + lab.max_bow_genre_size] = 12000  # 120 bpm, x100
        if c.lyrics.n_tokens:
            y[:, c.n_labels:] = torch.from_numpy(rng.integers(1, c.lyrics.n_vocab, size=(B, c.lyrics.n_tokens)))
        return y

    def train_batch(self, step: int, micro: int, rank: int) -> dict[str, Any]:
        rng = batch_rng(self.seed, step, micro, rank)
        z = self._codes(rng, self.c.n_ctx)
        z_cond = self._codes(rng, self.c.n_ctx // self.c.cond_downsample) if self.c.is_upsampler else None
        return {"z": z, "z_cond": z_cond, "y": self._labels(rng)}

    def val_batches(self) -> list[Any]:
        return []

    def loss(self, model: nn.Module, batch: dict[str, Any], device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
        def to(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return model(to(batch["z"]), to(batch["z_cond"]), to(batch["y"]))

    def tokens(self, batch: dict[str, Any]) -> int:
        return int(batch["z"].numel())

    def describe(self, batch: dict[str, Any]) -> list[str]:
        return [f"item{i}" for i in range(batch["z"].shape[0])]

    def export(self, model: nn.Module) -> None:
        pass

    def log_media(self, writer: Any, model: nn.Module, step: int) -> None:
        pass


class SyntheticAudioTask:
    """Batches ``audio`` [B, 1, window] (float32) of decaying sines at random pitches plus a little noise, for a
    VQ-VAE (or :class:`~jukebox.train.adversarial.GeneratorVQVAE` through :meth:`loss`)."""

    name = "synthetic_vqvae"
    prefers_bf16 = False

    def __init__(self, batch_size: int, window: int, sample_rate: int, seed: int = 0) -> None:
        self.batch_size, self.window, self.sample_rate, self.seed = batch_size, window, sample_rate, seed

    def train_batch(self, step: int, micro: int, rank: int) -> dict[str, Any]:
        rng = batch_rng(self.seed, step, micro, rank)
        B, T = self.batch_size, self.window
        t = np.arange(T, dtype=np.float32)[None] / self.sample_rate
        f = rng.uniform(80.0, 2000.0, size=(B, 1)).astype(np.float32)
        decay = rng.uniform(0.5, 4.0, size=(B, 1)).astype(np.float32)
        x = 0.5 * np.sin(2 * np.pi * f * t) * np.exp(-decay * t) + 0.01 * rng.standard_normal((B, T), np.float32)
        return {"audio": x[:, None, :].astype(np.float32)}

    def val_batches(self) -> list[Any]:
        return []

    def loss(self, model: nn.Module, batch: dict[str, Any], device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
        x = torch.as_tensor(batch["audio"]).to(device, non_blocking=True)
        _, loss, metrics = model(x)
        return loss, metrics

    def tokens(self, batch: dict[str, Any]) -> int:
        return int(batch["audio"].shape[0] * batch["audio"].shape[-1])

    def describe(self, batch: dict[str, Any]) -> list[str]:
        return []

    def export(self, model: nn.Module) -> None:
        pass

    def log_media(self, writer: Any, model: nn.Module, step: int) -> None:
        pass


def _adversarial_base() -> type:
    from .adversarial import AdversarialVQVAETask

    return AdversarialVQVAETask


class SyntheticAdversarialTask(_adversarial_base()):  # type: ignore[misc]
    """Adversarial VQ-VAE training (:class:`~jukebox.train.adversarial.AdversarialVQVAETask`: mel, adversarial and
    feature-matching losses, the discriminator's step) on the batches of a :class:`SyntheticAudioTask`; the model
    is a :class:`~jukebox.train.adversarial.GeneratorVQVAE`."""

    name = "synthetic_adversarial"

    def __init__(self, audio: SyntheticAudioTask, adversarial: Any, discriminator: nn.Module | None) -> None:
        super().__init__(None, None, audio.batch_size, adversarial, discriminator, audio.sample_rate, audio.seed, 0)
        self.audio = audio

    def train_batch(self, step: int, micro: int, rank: int) -> dict[str, Any]:
        return self.audio.train_batch(step, micro, rank)

    def val_batches(self) -> list[Any]:
        return []

    def log_media(self, writer: Any, model: nn.Module, step: int) -> None:
        pass
