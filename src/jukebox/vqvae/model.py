"""The hierarchical VQ-VAE of Jukebox: independent per-level encoders, codebooks and decoders.

Audio is channels-first ``[B, 1, T]`` float in [-1, 1]; level ``l`` turns it into codes ``[B, T // hop_l]``
(hops 8 / 32 / 128 for the released model) and decodes codes of one level back to audio ``[B, 1, T]``.
"""

from __future__ import annotations

import contextlib
import math
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor, nn

from ..config import VQVAEConfig
from ..nn.conv import conv1d_channels_last, decoder_block_channels_last
from .bottleneck import Codebook
from .encdec import LevelDecoder, LevelEncoder
from .losses import jukebox_spectral_convergence, multispectral_loss, reconstruction_loss, spectral_loss

__all__ = ["VQVAE"]

AUDIO_CHANNELS = 1


class VQVAE(nn.Module):
    """Hierarchical VQ-VAE built from a :class:`~jukebox.config.VQVAEConfig`.

    Submodules: ``encoders[l]`` (:class:`LevelEncoder`), ``codebooks[l]`` (:class:`Codebook`),
    ``decoders[l]`` (:class:`LevelDecoder`). Level ``l`` uses width ``width * multipliers[l]`` and depth
    ``depth * multipliers[l]``.
    """

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        c = config
        if not (len(c.downs_t) == len(c.strides_t) == c.levels):
            raise ValueError(f"downs_t {c.downs_t} and strides_t {c.strides_t} must have {c.levels} entries")
        multipliers = c.multipliers if c.multipliers else (1,) * c.levels
        if len(multipliers) != c.levels:
            raise ValueError(f"multipliers {c.multipliers} must have {c.levels} entries")
        self.config = c
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(c.levels):
            kw = dict(width=c.width * multipliers[level], depth=c.depth * multipliers[level], m_conv=c.m_conv,
                      dilation_growth_rate=c.dilation_growth_rate, dilation_cycle=c.dilation_cycle,
                      zero_out=c.zero_out, res_scale=c.res_scale)
            downs, strides = c.downs_t[: level + 1], c.strides_t[: level + 1]
            self.encoders.append(LevelEncoder(AUDIO_CHANNELS, c.emb_width, downs, strides, **kw))
            self.decoders.append(LevelDecoder(AUDIO_CHANNELS, c.emb_width, downs, strides, **kw,
                                              reverse_dilation=c.reverse_decoder_dilation))
        self.codebooks = nn.ModuleList(
            Codebook(c.l_bins, c.emb_width, c.mu, c.revival_threshold) for _ in range(c.levels)
        )

    # --- properties ------------------------------------------------------------------------------------------

    @property
    def levels(self) -> int:
        return self.config.levels

    @property
    def hop_lengths(self) -> tuple[int, ...]:
        """Audio samples per code at each level, e.g. (8, 32, 128)."""
        return self.config.hop_lengths

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def l_bins(self) -> int:
        return self.config.l_bins

    def restore_codebook_ema(self, sample_length: int, world_size: int = 1) -> None:
        """Before fine-tuning loaded weights: reset every codebook's EMA state from its codebook, with counts at
        the expected usage per code for batches of ``sample_length`` samples on ``world_size`` ranks
        (Jukebox's ``restore_k`` with ``revival_threshold`` from the config)."""
        for level, cb in enumerate(self.codebooks):
            num_tokens = (sample_length // self.hop_lengths[level]) * world_size
            cb.restore_ema(num_tokens=num_tokens, threshold=self.config.revival_threshold)

    # --- encode / decode -------------------------------------------------------------------------------------

    def _check_audio(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != AUDIO_CHANNELS:
            raise ValueError(f"expected audio of shape [batch, {AUDIO_CHANNELS}, time], got {tuple(x.shape)}")
        return x.float()

    def _level_range(self, start_level: int, end_level: int | None) -> tuple[int, int]:
        end_level = self.levels if end_level is None else end_level
        if not 0 <= start_level < end_level <= self.levels:
            raise ValueError(f"need 0 <= start_level < end_level <= {self.levels}, got {start_level}, {end_level}")
        return start_level, end_level

    def encode(self, x: Tensor, start_level: int = 0, end_level: int | None = None,
               chunks: int = 1) -> list[Tensor]:
        """Audio x [B, 1, T] -> codes for levels start..end-1, each LongTensor [B, T // hop_l].

        ``chunks`` splits the batch to bound memory; the result does not depend on it.
        """
        x = self._check_audio(x)
        start_level, end_level = self._level_range(start_level, end_level)
        per_chunk = [
            [self.codebooks[lvl].encode(self.encoders[lvl](xi)) for lvl in range(start_level, end_level)]
            for xi in torch.chunk(x, chunks, dim=0)
        ]
        return [torch.cat(level_codes, dim=0) for level_codes in zip(*per_chunk)]

    def decode(self, codes: list[Tensor], start_level: int = 0, end_level: int | None = None,
               chunks: int = 1) -> Tensor:
        """Codes for levels start..end-1 -> audio [B, 1, T] decoded from ``codes[0]`` (level ``start_level``).

        As in Jukebox, only the lowest given level is used; the others are only checked for count.
        """
        start_level, end_level = self._level_range(start_level, end_level)
        if len(codes) != end_level - start_level:
            raise ValueError(f"expected {end_level - start_level} code tensors for levels {start_level}.."
                             f"{end_level - 1}, got {len(codes)}")
        return torch.cat([self.decode_level(c, start_level) for c in torch.chunk(codes[0], chunks, dim=0)], dim=0)

    def decode_level(self, code: Tensor, level: int) -> Tensor:
        """Codes of one level [B, T_l] -> audio [B, 1, T_l * hop_l].

        On a CPU in eval mode without gradients the decoder runs channels-last (:func:`decode_channels_last`:
        the same convolutions, about 1.7x faster; equal to the modules' output within float rounding)."""
        if code.dim() != 2:
            raise ValueError(f"expected codes of shape [batch, time], got {tuple(code.shape)}")
        z = self.codebooks[level].decode(code.long())
        if z.device.type == "cpu" and not self.training and not torch.is_grad_enabled():
            return decode_channels_last(self.decoders[level], z)
        return self.decoders[level](z)

    # --- training forward ------------------------------------------------------------------------------------

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Encode, quantise and decode every level; return (level-0 reconstruction [B, 1, T], loss, metrics).

        In training mode the codebooks are EMA-updated (and initialised from the first batch); in eval mode
        the forward is deterministic and no gradient flows through the quantised latents.
        Metrics (detached scalars): per level ``recons_loss_l{n}``, ``spectral_loss_l{n}``,
        ``multispectral_loss_l{n}`` (n = level + 1); totals ``recons_loss``, ``spectral_loss``,
        ``multispectral_loss``, ``commit_loss``; level-0 ``spectral_convergence``, ``l2_loss``, ``l1_loss``,
        ``linf_loss``; in training also the codebook averages ``fit``, ``pn``, ``entropy``, ``used_curr``,
        ``usage``, ``dk``.
        """
        c = self.config
        x = self._check_audio(x)
        update = self.training
        x_outs, commit_losses, cb_metrics = [], [], []
        for level in range(self.levels):
            _, quant, commit, m = self.codebooks[level](self.encoders[level](x), update=update)
            if not update:
                quant = quant.detach()
            x_outs.append(self.decoders[level](quant))
            commit_losses.append(commit)
            cb_metrics.append(m)

        metrics: dict[str, Tensor] = {}
        zero = torch.zeros((), device=x.device)
        recons_total, spec_total, multispec_total = zero, zero, zero
        for level in reversed(range(self.levels)):
            x_out = x_outs[level]
            recons = reconstruction_loss(c.loss_fn, x, x_out, c)
            spec = spectral_loss(x, x_out, c)
            multispec = multispectral_loss(x, x_out, c)
            metrics[f"recons_loss_l{level + 1}"] = recons
            metrics[f"spectral_loss_l{level + 1}"] = spec
            metrics[f"multispectral_loss_l{level + 1}"] = multispec
            recons_total = recons_total + recons
            spec_total = spec_total + spec
            multispec_total = multispec_total + multispec

        commit_total = sum(commit_losses[1:], commit_losses[0])
        loss = recons_total + c.spectral * spec_total + c.multispectral * multispec_total + c.commit * commit_total

        x_out = x_outs[0]
        with torch.no_grad():
            metrics.update(
                recons_loss=recons_total,
                spectral_loss=spec_total,
                multispectral_loss=multispec_total,
                spectral_convergence=jukebox_spectral_convergence(x, x_out, c).mean(),
                l2_loss=reconstruction_loss("l2", x, x_out, c),
                l1_loss=reconstruction_loss("l1", x, x_out, c),
                linf_loss=reconstruction_loss("linf", x, x_out, c),
                commit_loss=commit_total,
            )
            if update:
                for key in cb_metrics[0]:
                    metrics[key] = sum(m[key] for m in cb_metrics) / len(cb_metrics)
        return x_out, loss, {k: v.detach() for k, v in metrics.items()}


# --- fast CPU inference of a decoder ------------------------------------------------------------------------------

def receptive_radius(decoder: LevelDecoder) -> int:
    """How many latent positions on each side can influence one output sample of ``decoder`` (rounded up)."""
    radius, scale = 0.0, 1  # scale: output samples per latent position at the current layer's input
    for block in reversed(decoder.blocks):
        if block.proj is not None:
            radius += (block.proj.kernel_size[0] // 2) * block.proj.dilation[0] / scale
        for stage in block.stages:
            for res in stage.res.blocks:
                conv = res.dilated_conv
                radius += (conv.kernel_size[0] // 2) * conv.dilation[0] / scale
            up = stage.up
            radius += -(-up.kernel_size[0] // up.stride[0]) / scale
            scale *= up.stride[0]
    radius += (decoder.out.kernel_size[0] // 2) / scale
    return math.ceil(radius)


def decode_channels_last(decoder: LevelDecoder, z: Tensor, workers: int | None = None) -> Tensor:
    """``decoder(z)`` for latents z [B, emb_width, T] with every convolution as a 2-D one over a channels-last
    [B, C, 1, T] layout, which oneDNN runs much faster on a CPU than 1-D convolutions (and 1x1 convolutions as
    GEMMs). Same weights and maths; the result differs from the modules' only by float rounding.

    With ``workers`` >= 2 (default: ``torch.get_num_threads()``) and a long enough ``z``, the time axis is cut in
    ``workers`` pieces, each decoded with :func:`receptive_radius` latents of context on each side by its own
    thread with one intra-op thread (no per-operation synchronisation between cores, which stalls whenever
    another process holds a core), then cropped and joined: the same samples as one piece."""
    T = z.shape[-1]
    workers = min(workers or torch.get_num_threads(), 8)
    margin = receptive_radius(decoder)
    if workers < 2 or T / workers + margin * min(2, workers - 1) > 0.8 * T:  # context costs what cores give
        return _decode_piece(decoder, z)
    bounds = [round(i * T / workers) for i in range(workers + 1)]
    pieces = [(max(0, lo - margin), min(T, hi + margin), lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(len(pieces)) as pool:
            outs = list(pool.map(lambda p: _decode_piece(decoder, z[..., p[0]:p[1]], no_grad=True), pieces))
    finally:
        torch.set_num_threads(threads)
    hop = outs[0].shape[-1] // (pieces[0][1] - pieces[0][0])
    return torch.cat([o[..., (lo - a) * hop:(hi - a) * hop] for o, (a, _, lo, hi) in zip(outs, pieces)], dim=-1)


def _decode_piece(decoder: LevelDecoder, z: Tensor, no_grad: bool = False) -> Tensor:
    with torch.no_grad() if no_grad else contextlib.nullcontext():  # grad mode is per thread
        x = z.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        for block in reversed(decoder.blocks):
            x = decoder_block_channels_last(block, x)
        return conv1d_channels_last(x, decoder.out).squeeze(2).contiguous()
