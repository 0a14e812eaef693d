"""Conditioning of a prior: labels (artist, genres, timing) and, for upsamplers, the upper level's codes."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..nn.conv import DecoderBlock, decoder_block_channels_last
from .config import LabelConfig, UpsamplerConditionerConfig

__all__ = ["RangeEmbedding", "LabelConditioner", "UpsamplerConditioner"]


class RangeEmbedding(nn.Module):
    """Embed positions interpolated over [pos_start, pos_end] after binning the range [lo, hi) into ``bins``.

    ``n_time == 1``: one embedding of ``pos_start`` [B, 1] -> [B, 1, W]. Otherwise ``n_time`` evenly spaced
    positions ``start + (end - start) * i / n_time`` -> [B, n_time, W]. ``clamp`` clamps ``pos_end`` to the range.
    """

    def __init__(self, n_time: int, bins: int, lo: float, hi: float, width: int, init_scale: float = 1.0,
                 clamp: bool = False) -> None:
        super().__init__()
        self.n_time, self.bins, self.lo, self.hi, self.clamp = n_time, bins, lo, hi, clamp
        self.emb = nn.Embedding(bins, width)
        nn.init.normal_(self.emb.weight, std=0.01 * init_scale)

    def forward(self, pos_start: Tensor, pos_end: Tensor | None = None) -> Tensor:
        pos_start = pos_start.float()
        if self.n_time != 1:
            if pos_end is None:
                raise ValueError("RangeEmbedding with n_time > 1 needs pos_end")
            pos_end = pos_end.float()
            if self.clamp:
                pos_end = pos_end.clamp(self.lo, self.hi)
            interp = torch.arange(0, self.n_time, dtype=torch.float, device=pos_start.device).view(1, -1) / self.n_time
            position = pos_start + (pos_end - pos_start) * interp
        else:
            position = pos_start
        normalised = (position - self.lo) / (self.hi - self.lo)
        idx = (self.bins * normalised).floor().long().clamp(0, self.bins - 1)
        return self.emb(idx)


class LabelConditioner(nn.Module):
    """Labels -> start token and (top level) timing signal.

    y: LongTensor [B, 4 + max_bow_genre_size] = (total_length, offset, sample_length, artist, genre ids padded
    with -1), lengths in audio samples. Returns ``start`` [B, 1, W] = artist + sum of genre embeddings and
    ``timing`` [B, n_time, W] = total-length + absolute-position + relative-position embeddings (or None).
    With ``config.every_position`` the returned signal also carries ``label_proj(start)`` (zero-initialised, so an
    existing prior gains the option without changing its output): [B, n_time, W], or [B, 1, W] without timing.
    """

    def __init__(self, config: LabelConfig, width: int, n_time: int, include_time: bool,
                 init_scale: float = 1.0) -> None:
        super().__init__()
        self.config, self.width, self.n_time = config, width, n_time
        self.max_bow_genre_size = config.max_bow_genre_size
        self.genre_emb = nn.Embedding(config.genre_bins, width)
        self.artist_emb = nn.Embedding(config.artist_bins, width)
        nn.init.normal_(self.genre_emb.weight, std=0.01 * init_scale)
        nn.init.normal_(self.artist_emb.weight, std=0.01 * init_scale)
        self.include_time = include_time
        if include_time:
            if config.min_duration is None or config.max_duration is None:
                raise ValueError("timing conditioning needs labels.min_duration and labels.max_duration")
            sr = config.sample_rate
            lo, hi = config.min_duration * sr, config.max_duration * sr
            self.total_length_emb = RangeEmbedding(1, config.t_bins, lo, hi, width, init_scale)
            self.absolute_pos_emb = RangeEmbedding(n_time, config.t_bins, 0.0, hi, width, init_scale)
            self.relative_pos_emb = RangeEmbedding(n_time, config.t_bins, 0.0, 1.0, width, init_scale, clamp=True)
        self.label_proj = None
        if config.every_position:
            self.label_proj = nn.Linear(width, width, bias=False)
            nn.init.zeros_(self.label_proj.weight)

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor | None]:
        if y.dim() != 2 or y.shape[1] != 4 + self.max_bow_genre_size:
            raise ValueError(f"labels must be [B, {4 + self.max_bow_genre_size}], got {tuple(y.shape)}")
        total_length, offset, length, artist, genre = y[:, 0:1], y[:, 1:2], y[:, 2:3], y[:, 3:4], y[:, 4:]
        artist_emb = self.artist_emb(artist)
        mask = (genre >= 0).to(artist_emb.dtype).unsqueeze(2)
        genre_emb = (self.genre_emb(genre.clamp(0)) * mask).sum(dim=1, keepdim=True)
        start = genre_emb + artist_emb
        everywhere = None if self.label_proj is None else self.label_proj(start)
        if not self.include_time:
            return start, everywhere
        total, begin, end = total_length.float(), offset.float(), (offset + length).float()
        timing = (self.total_length_emb(total) + self.absolute_pos_emb(begin, end)
                  + self.relative_pos_emb(begin / total, end / total))
        return start, timing if everywhere is None else timing + everywhere


class UpsamplerConditioner(nn.Module):
    """Upper-level codes [B, T_up] -> conditioning [B, T_up * stride ** down, W]: embedding, conv, dilated
    residual stacks with transposed convs (:class:`jukebox.nn.conv.DecoderBlock`), LayerNorm."""

    def __init__(self, config: UpsamplerConditionerConfig, bins: int, width: int, down_t: int, stride_t: int,
                 init_scale: float = 1.0) -> None:
        super().__init__()
        self.token_emb = nn.Embedding(bins, width)
        nn.init.normal_(self.token_emb.weight, std=0.02 * init_scale)
        self.stack = DecoderBlock(width, width, down_t, stride_t, config.width, config.depth, config.m_conv,
                                  config.dilation_growth_rate, config.dilation_cycle, config.zero_out,
                                  config.res_scale, reverse_dilation=False, checkpoint_res=config.checkpoint)
        self.ln = nn.LayerNorm(width)

    def forward(self, z_cond: Tensor) -> Tensor:
        x = self.token_emb(z_cond.long())  # [B, T, W]
        if x.device.type == "cpu" and not self.training and not torch.is_grad_enabled():
            # inference on a CPU: channels-last 2-D convolutions (about 2x faster; same maths)
            x = x.transpose(1, 2).unsqueeze(2).contiguous(memory_format=torch.channels_last)
            x = decoder_block_channels_last(self.stack, x).squeeze(2).transpose(1, 2)
        else:
            x = self.stack(x.transpose(1, 2)).transpose(1, 2)
        return self.ln(x)
