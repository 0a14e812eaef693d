"""Step functions of the shared loop: the VQ-VAE on audio windows and the priors on cached codes.

Each task draws the batch of (step, micro-step, rank) from a generator seeded with exactly those numbers, so
the data order is a pure function of the step: ranks see different windows, and a resumed run sees the windows
the uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data.code_cache import CodeWindow, CodeWindowSampler
from ..data.dataset import Window, WindowSampler
from ..data.labels import LabelInfo, Labeller, null_labels
from ..data.word_timing import alignment_targets, word_char_spans
from ..errors import UsageError
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


def alignment_site(prior: nn.Module, layer: int | None = None, head: int | None = None) -> tuple[int, int]:
    """(layer, head) of ``prior``'s decoder whose lyric cross-attention the alignment loss supervises: ``layer`` /
    ``head`` when given, else the config's ``alignment_layer`` / ``alignment_head``, else the last
    cross-attention layer and head 0. A one-line :class:`UsageError` for a prior without an encoder-decoder
    lyric path (1b-style merged priors, priors without lyrics) or a layer that is not cross-attention."""
    style = getattr(prior, "style", "none")
    if style != "encoder_decoder":
        what = "a merged-sequence (1b-style) lyric prior" if style == "merged" else "a prior without lyrics"
        raise UsageError(f"--align-loss supervises a lyric cross-attention head of an encoder-decoder (5b_lyrics-"
                         f"style) prior; this is {what}: train it without --align-loss")
    cfg = prior.config
    blocks = prior.decoder.transformer.blocks
    cross = [i for i, b in enumerate(blocks) if b.attn.pattern == "cross"]
    layer = layer if layer is not None else cfg.alignment_layer if cfg.alignment_layer is not None else cross[-1]
    head = head if head is not None else cfg.alignment_head if cfg.alignment_head is not None else 0
    if layer not in cross:
        raise UsageError(f"--align-layer {layer} is not a cross-attention layer of this prior (those are "
                         f"{', '.join(map(str, cross))})")
    if not 0 <= head < blocks[layer].attn.heads:
        raise UsageError(f"--align-head {head} is outside the layer's {blocks[layer].attn.heads} heads")
    return layer, head


def head_weights(block: nn.Module, x: Tensor, states: Tensor, head: int) -> Tensor:
    """Softmax weights [B, T, S] (float32) of cross-attention ``head`` of transformer ``block`` for the block's
    input ``x`` [B, T, width] over the encoder states [B, S, width], as the block's attention computes them
    (with gradient)."""
    attn = block.attn
    d = attn.head_dim
    q = attn.q(block.norm_attn(x))[..., head * d:(head + 1) * d]
    k = attn.kv(states.to(attn.kv.weight.dtype))[..., head * d:(head + 1) * d]  # keys are the first half
    return torch.softmax(q.float() @ k.float().transpose(1, 2) / math.sqrt(d), dim=-1)


class PriorTask(_WindowBatches):
    """Train one prior on windows of cached codes with their labels.

    ``labeller`` builds y [B, 4 + max_bow_genre_size + n_tokens] (None for a prior without labels). The batch
    rates (``label_dropout``, ``input_noise``, ``scheduled_sampling``) and the alignment loss (``align_loss``,
    ``align_layer``, ``align_head``) come from ``options`` (a :class:`~jukebox.train.options.TrainOptions`) or
    by name.
    Batches: ``z`` [B, n_ctx] int64, ``z_cond`` [B, n_ctx // down] (upsamplers) and ``y``; with the alignment
    loss also ``align`` [B, n_ctx, 2] int64: per position the lyric-window columns ``[c0, c1)`` of the word sung
    then, ``(-1, -1)`` where none (see :func:`~jukebox.data.word_timing.alignment_targets`).
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
        self.align_loss, self.align_layer, self.align_head = options.align_loss, options.align_layer, options.align_head
        #: Metrics the training log line shows besides the loss.
        self.log_metrics: tuple[str, ...] = ("align_loss", "align_share") if self.align_loss else ()
        self._spans: dict[str, list[tuple[int, int] | None]] = {}  # each track's word spans in its lyrics
        self._site: tuple[int, int] | None = None
        if self.align_loss and (labeller is None or labeller.n_tokens == 0):
            raise UsageError("--align-loss needs a prior with lyrics (an encoder-decoder lyric prior)")
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

    def _collate(self, windows: list[CodeWindow], raw_to_tokens: int = 0, sample_rate: int = 0) -> dict[str, Any]:
        batch: dict[str, Any] = {
            "z": torch.from_numpy(np.stack([w.z for w in windows])),
            "z_cond": None if windows[0].z_cond is None else torch.from_numpy(np.stack([w.z_cond for w in windows])),
            "y": None,
            "ids": [f"{w.path}@{w.offset}" for w in windows],
        }
        if self.labeller is not None:
            metas = [{"artist": w.artist, "genre": w.genre, "lyrics": w.lyrics, "total_length": w.total_length,
                      "offset": w.offset, "bpm": w.bpm, "beat0": w.beat0} for w in windows]
            labels = self.labeller.batch_labels(metas)
            batch["y"] = labels.y
            if self.align_loss:
                batch["align"] = torch.from_numpy(np.stack([
                    self._targets(w, info, raw_to_tokens, sample_rate) for w, info in zip(windows, labels.infos)]))
        return batch

    def _targets(self, w: CodeWindow, info: LabelInfo, raw_to_tokens: int, sample_rate: int) -> np.ndarray:
        """The alignment targets [n_ctx, 2] of window ``w`` over the lyric window its labels were built with."""
        n_ctx = len(w.z)
        if not w.words:
            return np.full((n_ctx, 2), -1, np.int64)
        if w.path not in self._spans:
            self._spans[w.path] = word_char_spans(w.words, info.lyrics, self.labeller.vocab.lyric_vocab.clean)
        return alignment_targets(w.words, self._spans[w.path], info.window, int(w.offset), n_ctx, raw_to_tokens,
                                 sample_rate)

    def _draw(self, sampler: CodeWindowSampler, rng: np.random.Generator) -> dict[str, Any]:
        windows = [sampler.window(int(i)) for i in sampler.draw(rng, self.batch_size)]
        if not self.align_loss:
            return self._collate(windows)
        return self._collate(windows, sampler.hop, sampler.cache.sample_rate)

    def loss(self, model: nn.Module, batch: dict[str, Any], device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
        z = batch["z"].to(device, non_blocking=True)
        z_cond = None if batch["z_cond"] is None else batch["z_cond"].to(device, non_blocking=True)
        y = None if batch["y"] is None else batch["y"].to(device, non_blocking=True)
        z_in = batch.get("z_in")  # with input noise: the corrupted copy the decoder reads
        z_in = None if z_in is None else z_in.to(device, non_blocking=True)
        if "ss_hit" in batch:  # training batches only: validation reads clean codes
            z_in = self._self_fed(model, z, z_cond, y, z_in, batch["ss_hit"].to(device), batch["ss_u"].to(device))
        if not self.align_loss or "align" not in batch:
            return model(z, z_cond, y, z_input=z_in)
        return self._aligned_loss(model, z, z_cond, y, z_in, batch["align"].to(device))

    def alignment_site(self, prior: nn.Module) -> tuple[int, int]:
        """(layer, head) the alignment loss supervises in ``prior`` (see :func:`alignment_site`), checked once."""
        if self._site is None:
            self._site = alignment_site(prior, self.align_layer, self.align_head)
        return self._site

    def _aligned_loss(self, model: nn.Module, z: Tensor, z_cond: Tensor | None, y: Tensor | None,
                      z_in: Tensor | None, align: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The prior's loss plus ``align_loss`` x the alignment term; metrics ``align_loss`` (the term: mean over the
        positions with a target of -log(the head's weight on the target columns + 1e-6)) and ``align_share`` (the
        share of positions with a target). The head's weights are computed here from the alignment layer's input,
        seen by a pre-hook on its block, so compiled or checkpointed blocks need not record anything."""
        prior = _unwrap(model)
        layer, head = self.alignment_site(prior)
        block = prior.decoder.transformer.blocks[layer]
        seen: list[tuple[Tensor, Tensor]] = []

        def grab(_module: nn.Module, args: tuple[Any, ...]) -> None:
            if not seen:
                seen.append((args[0], args[1]))

        handle = block.register_forward_pre_hook(grab)
        try:
            loss, metrics = model(z, z_cond, y, z_input=z_in)
        finally:
            handle.remove()
        if not seen or seen[0][1] is None:
            raise UsageError("--align-loss: the alignment layer's input was not seen (a whole-model compile hides "
                             "it); use --compile blocks or none")
        w = head_weights(block, seen[0][0], seen[0][1], head)  # [B, T, S]
        cols = torch.arange(w.shape[-1], device=w.device)
        target = (cols >= align[..., :1]) & (cols < align[..., 1:])  # [B, T, S]
        has = align[..., 0] >= 0  # [B, T]
        mass = (w * target).sum(-1)
        n = has.sum()
        term = torch.where(has, -torch.log(mass + 1e-6), torch.zeros_like(mass)).sum() / n.clamp(min=1)
        metrics = {**metrics, "align_loss": term.detach(), "align_share": has.float().mean()}
        return loss + self.align_loss * term, metrics

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
