"""The Jukebox prior: p(codes of one level | upper-level codes, artist, genre, timing, lyrics).

Label vector layout (as the original): y [B, 4 + max_bow_genre_size + n_tokens] =
(total_length, offset, sample_length, artist, genre ids padded with -1, lyric tokens); lengths in samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .autoregressive import AutoregressiveTransformer
from .conditioners import LabelConditioner, UpsamplerConditioner, null_labels
from .config import PriorConfig
from .lyrics import LyricEncoder
from .sampler import sample_autoregressive
from .settings import LevelSettings, SettingsError

__all__ = ["Prior", "Conditioning"]

_LN2 = math.log(2.0)


class Conditioning:
    """What the conditioners produce for a batch: start [B, 1, W] (labels), cond [B, T, W] (timing or upsampler
    conditioning, or None), lyric tokens [B, n_tokens] (or None)."""

    def __init__(self, start: Tensor | None, cond: Tensor | None, lyrics: Tensor | None) -> None:
        self.start, self.cond, self.lyrics = start, cond, lyrics


class Prior(nn.Module):
    """A top-level prior or an upsampler, built from a :class:`PriorConfig`.

    Submodules: ``upsampler_conditioner`` (upsamplers), ``label_conditioner`` (with labels), ``lyric_encoder``
    (5b_lyrics style) and ``decoder`` (the autoregressive transformer over codes; for the 1b_lyrics style over
    lyric tokens followed by codes offset by ``n_vocab``).
    """

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        c, t = config, config.transformer
        self.config = config
        self.level = c.level
        self.n_ctx = c.n_ctx
        self.raw_to_tokens = c.raw_to_tokens
        self.sample_length = c.sample_length
        self.cond_downsample = c.cond_downsample
        self.style = c.lyrics.style
        self.n_tokens = c.lyrics.n_tokens
        self.n_vocab = c.lyrics.n_vocab
        self.upsampler_conditioner = None
        if c.is_upsampler:
            self.upsampler_conditioner = UpsamplerConditioner(
                c.upsampler, c.l_bins, t.width, c.downs_t[c.level + 1], c.strides_t[c.level + 1], t.init_scale)
        self.label_conditioner = None
        if c.labels is not None:
            self.label_conditioner = LabelConditioner(c.labels, t.width, c.n_ctx, c.has_timing, t.init_scale)
        elif self.style == "merged":
            raise ValueError("the merged lyric style needs labels")
        self.lyric_encoder = None
        if self.style == "encoder_decoder":
            self.lyric_encoder = LyricEncoder(c.lyrics.encoder, self.n_tokens, self.n_vocab, t.width, t.init_scale)
        self.decoder = AutoregressiveTransformer(
            c.bins, c.seq_len, t, start_token=c.labels is None, head="separate" if c.merged_decoder else "tied",
            add_cond_after=not c.merged_decoder, prime_len=self.n_tokens if self.style == "merged" else 0,
            encoder_len=self.n_tokens if self.style == "encoder_decoder" else 0)

    # --- conditioning ---------------------------------------------------------------------------------------
    def conditioning(self, z_cond: Tensor | None = None, y: Tensor | None = None) -> Conditioning:
        """Run the conditioners. z_cond: upper-level codes [B, n_ctx // cond_downsample] (upsamplers)."""
        c = self.config
        start = cond = lyrics = None
        if self.label_conditioner is not None:
            if y is None or y.dim() != 2 or y.shape[1] != c.y_len:
                raise ValueError(f"labels y must be [B, {c.y_len}], got {None if y is None else tuple(y.shape)}")
            start, cond = self.label_conditioner(y[:, :c.n_labels])
            lyrics = y[:, c.n_labels:] if self.style != "none" else None
        if self.upsampler_conditioner is not None:
            if z_cond is None:
                raise ValueError(f"level {self.level} upsampler needs z_cond (codes of level {self.level + 1})")
            upper = self.upsampler_conditioner(z_cond)
            cond = upper if cond is None else upper + cond  # labels on every position (LabelConfig.every_position)
        return Conditioning(start, cond, lyrics)

    def merged_sequence(self, lyrics: Tensor, z: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """1b style: tokens [B, n_tokens + T] = lyrics then codes + n_vocab; cond zero on the lyric part."""
        tokens = torch.cat([lyrics, z + self.n_vocab], dim=1)
        if cond is not None:
            cond = torch.cat([cond.new_zeros(cond.shape[0], self.n_tokens, cond.shape[2]), cond], dim=1)
        return tokens, cond

    def encode_lyrics(self, lyrics: Tensor) -> Tensor:
        """5b_lyrics style: encoder states [B, n_tokens, W] for the cross-attention layers."""
        return self.lyric_encoder(lyrics)

    # --- scoring / training ---------------------------------------------------------------------------------
    def logits(self, z: Tensor, z_cond: Tensor | None = None, y: Tensor | None = None,
               z_input: Tensor | None = None) -> Tensor:
        """Teacher-forced logits of the decoder: [B, T, l_bins]; for the 1b style the whole merged sequence,
        [B, n_tokens + T, n_vocab + l_bins] (lyric positions first, codes offset by n_vocab). ``z_input``: see
        :meth:`_forward`."""
        return self._forward(z, z_cond, y, z_input)[0]

    def _forward(self, z: Tensor, z_cond: Tensor | None, y: Tensor | None,
                 z_input: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """-> (logits, per-item prime loss [B] in bits, per-item music loss [B] in bits). ``z_input`` [B, T]: the
        tokens the decoder reads (e.g. corrupted, see ``PriorTask``'s ``input_noise``); targets stay ``z``."""
        z = z.long()
        if z_input is not None and (z_input.shape != z.shape or self.style == "merged"):
            raise ValueError("z_input must have z's shape, and lyric-merged priors do not take one")
        cond = self.conditioning(z_cond, y)
        zero = torch.zeros(z.shape[0], device=z.device)
        if self.style == "merged":
            tokens, c = self.merged_sequence(cond.lyrics, z, cond.cond)
            logits = self.decoder(tokens, cond.start, c)
            ce = F.cross_entropy(logits.float().transpose(1, 2), tokens, reduction="none")
            return logits, ce[:, :self.n_tokens].mean(1) / _LN2, ce[:, self.n_tokens:].mean(1) / _LN2
        states, prime_loss = None, zero
        if self.style == "encoder_decoder":
            states = self.encode_lyrics(cond.lyrics)
            prime_loss = self.lyric_encoder.loss(states, cond.lyrics)
        logits = self.decoder(z if z_input is None else z_input.long(), cond.start, cond.cond, states)
        ce = F.cross_entropy(logits.float().transpose(1, 2), z, reduction="none")
        return logits, prime_loss, ce.mean(1) / _LN2

    def forward(self, z: Tensor, z_cond: Tensor | None = None, y: Tensor | None = None,
                reduction: str = "mean", z_input: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss of codes z [B, T]: ``(loss, metrics)``; metrics ``bpd`` = ``gen_loss`` (music bits per
        token) and ``prime_loss`` (lyric bits per token, 0 without lyric prediction). ``reduction="none"``
        gives per-item values [B]; ``"mean"`` averages over the batch. ``z_input``: see :meth:`_forward`."""
        _, prime_loss, gen_loss = self._forward(z, z_cond, y, z_input)
        c = self.config
        prime_dims = self.n_tokens if self.style != "none" else 0
        gen_dims = z.shape[1]
        total = prime_dims + gen_dims
        loss = c.lyrics.prime_loss_fraction * prime_loss * prime_dims / total + gen_loss * gen_dims / total
        metrics = {"bpd": gen_loss.detach(), "prime_loss": prime_loss.detach(), "gen_loss": gen_loss.detach()}
        if reduction == "mean":
            return loss.mean(), {k: v.mean() for k, v in metrics.items()}
        if reduction != "none":
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        return loss, metrics

    @torch.no_grad()
    def alignment_weights(self, z: Tensor, z_cond: Tensor | None = None, y: Tensor | None = None,
                          layer: int | None = None, head: int | None = None) -> Tensor:
        """Attention of music positions over lyric tokens at ``alignment_layer``/``alignment_head``:
        [B, T, n_tokens] (the original's lyric alignment)."""
        layer = self.config.alignment_layer if layer is None else layer
        head = self.config.alignment_head if head is None else head
        if self.style == "none" or layer is None or head is None:
            raise ValueError("this prior has no lyric alignment layer")
        attn = self.decoder.transformer.blocks[layer].attn
        attn.record_weights = True
        try:
            self._forward(z, z_cond, y)
            w = attn.last_weights
        finally:
            attn.record_weights, attn.last_weights = False, None
        if self.style == "merged":
            w = w[:, :, self.n_tokens:, :self.n_tokens]
        return w[:, head]

    # --- sampling -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_sequence(self, n_samples: int, z_cond: Tensor | None = None, y: Tensor | None = None,
                        settings: LevelSettings | None = None, *, prime: Tensor | None = None,
                        sample_tokens: int | None = None, generator: torch.Generator | None = None,
                        progress: Callable[[int, int], None] | None = None, mask_lyric_vocab: bool = False,
                        return_logits: bool = False, prime_lengths: Sequence[int] | None = None,
                        y_uncond: Tensor | None = None, **overrides: Any) -> tuple[Tensor, Tensor | None]:
        """Sample the decoder's raw sequence (1b style: lyric tokens then codes + n_vocab) and, if asked, its
        logits at every position. Arguments as :meth:`sample`."""
        s = LevelSettings.of(settings, **overrides)
        args, kwargs = self._decoder_inputs(n_samples, z_cond, y, s, prime, sample_tokens, mask_lyric_vocab,
                                            prime_lengths, y_uncond)
        return sample_autoregressive(*args, generator=generator, progress=progress, return_logits=return_logits,
                                     **kwargs)

    def _decoder_inputs(self, n_samples: int, z_cond: Tensor | None, y: Tensor | None, s: LevelSettings,
                        prime: Tensor | None, sample_tokens: int | None, mask_lyric_vocab: bool,
                        prime_lengths: Sequence[int] | None, y_uncond: Tensor | None,
                        ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments of :func:`~jukebox.prior.sampler.sample_autoregressive` for this prior's decoder:
        conditioning (and its unconditional twin for guidance), the known prefix (1b style: lyrics first), the
        length and the lyric-vocabulary mask."""
        for name, t in (("z_cond", z_cond), ("y", y), ("prime", prime)):
            if t is not None and t.shape[0] != n_samples:
                raise ValueError(f"{name} has batch {t.shape[0]}, expected n_samples={n_samples}")
        cond = self.conditioning(z_cond, y)
        uncond = label_row = None
        if s.guided:
            if self.label_conditioner is None:
                raise SettingsError("guidance needs a prior with labels")
            tempo = self.config.labels.tempo
            if y_uncond is None:
                y_uncond = null_labels(y, self.config.labels.max_bow_genre_size, tempo=tempo)
            uncond = self.conditioning(z_cond, y_uncond)
            if s.split_guidance:
                if not tempo:
                    raise SettingsError("label_guidance needs a prior with tempo; use guidance")
                label_row = self.conditioning(z_cond, null_labels(y, self.config.labels.max_bow_genre_size,
                                                                  tempo=True, labels=False))
        total = self.n_ctx if sample_tokens is None else sample_tokens
        known = None if prime is None or prime.shape[1] == 0 else prime.long()
        states, c, mask = None, cond.cond, None
        c_u = None if uncond is None else uncond.cond
        c_l = None if label_row is None else label_row.cond
        lengths = None if prime_lengths is None or known is None else list(prime_lengths)
        if self.style == "merged":
            if lengths is not None:
                lengths = [n + self.n_tokens for n in lengths]
            empty = torch.zeros(n_samples, 0, dtype=torch.long, device=cond.lyrics.device)
            if uncond is not None:
                c_u = self.merged_sequence(uncond.lyrics, empty if known is None else known, c_u)[1]
            if label_row is not None:
                c_l = self.merged_sequence(label_row.lyrics, empty if known is None else known, c_l)[1]
            known, c = self.merged_sequence(cond.lyrics, empty if known is None else known, c)
            total += self.n_tokens
            if mask_lyric_vocab:
                mask = torch.arange(self.decoder.bins, device=known.device) < self.n_vocab
        elif self.style == "encoder_decoder":
            states = self.encode_lyrics(cond.lyrics)
        args = (self.decoder, n_samples, total, known, cond.start, c, states, s)
        return args, dict(logits_mask=mask, known_lengths=lengths,
                          uncond=None if uncond is None else (uncond.start, c_u),
                          label_uncond=None if label_row is None else (label_row.start, c_l))

    @torch.no_grad()
    def sample(self, n_samples: int, z_cond: Tensor | None = None, y: Tensor | None = None,
               settings: LevelSettings | None = None, *, prime: Tensor | None = None,
               sample_tokens: int | None = None, generator: torch.Generator | None = None,
               progress: Callable[[int, int], None] | None = None, mask_lyric_vocab: bool = False,
               prime_lengths: Sequence[int] | None = None, y_uncond: Tensor | None = None,
               **overrides: Any) -> Tensor:
        """Sample codes [B, sample_tokens or n_ctx] with the KV cache.

        Args:
            z_cond: upper-level codes [B, n_ctx // cond_downsample] (upsamplers). y: labels (module docstring).
            settings: a :class:`~jukebox.prior.settings.LevelSettings` (default: its defaults): ``temperature``,
                ``top_k``, ``top_p`` (``top_k=1`` or ``temperature=0``: greedy), ``chunk_size`` (the prime is
                processed in chunks), ``decode`` (``eager``, ``int8`` on a CPU, ``static``, ``graph``, ``compile``,
                ``triton`` on CUDA; see :mod:`jukebox.prior.sampler`), ``draw`` (``multinomial``: the original's
                seeded samples; ``cdf``: one uniform per row, cheaper) and ``guidance`` (classifier-free guidance
                scale w, 1: off, 0: unconditional: each token is drawn from ``uncond + w * (cond - uncond)``
                logits, where the unconditional input is ``y_uncond``, default ``y`` with artist and genre
                ``unknown``, the null label a prior learns with label dropout).
            prime: known codes [B, P] to continue from (returned unchanged as the first P codes).
            sample_tokens: total length of the result (<= n_ctx).
            generator: RNG for the draws. progress: called as ``progress(done, todo)`` after each token.
            mask_lyric_vocab: 1b style only: forbid lyric characters at music positions. The original does not
                (a sampled character becomes code 0), so the default keeps its behaviour.
            prime_lengths: per-sample length of ``prime`` to keep (<= its width): rows continue prefixes of
                different lengths in one batch (parallel upsampling).
            overrides: settings by name (``temperature=0.9, top_k=5``...) on top of ``settings``; checked once.
        """
        s = LevelSettings.of(settings, **overrides)
        args, kwargs = self._decoder_inputs(n_samples, z_cond, y, s, prime, sample_tokens, mask_lyric_vocab,
                                            prime_lengths, y_uncond)
        seq, _ = sample_autoregressive(*args, generator=generator, progress=progress, **kwargs)
        if self.style == "merged":
            seq = (seq[:, self.n_tokens:] - self.n_vocab).clamp(min=0)
        return seq
