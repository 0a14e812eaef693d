"""Conditioning of a prior: labels (artist, genres, timing, tempo) and, for upsamplers, the upper level's codes."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..nn.conv import DecoderBlock, decoder_block_channels_last
from .config import LabelConfig, UpsamplerConditionerConfig

__all__ = ["RangeEmbedding", "LabelConditioner", "UpsamplerConditioner", "null_labels", "UNKNOWN_ID"]

#: The artist and genre id of ``unknown``: the null label of label dropout and classifier-free guidance.
UNKNOWN_ID = 0


def null_labels(y: Tensor, max_bow_genre_size: int, rows: Tensor | None = None, tempo: bool = False,
                labels: bool = True) -> Tensor:
    """``y`` [B, 4 + max_bow_genre_size (+ 2) + n_tokens] (the layout :class:`LabelConditioner` reads, built by
    :class:`jukebox.data.labels.Labeller`) with artist and genre set to ``unknown`` (the null label of label
    dropout and classifier-free guidance; ``labels=False`` keeps them) and, with ``tempo`` (a tempo prior's
    guidance), the tempo set to "no steady pulse", on ``rows`` (bool [B]; default all); timing and lyrics kept."""
    out = y.clone()
    sel = slice(None) if rows is None else rows.to(y.device)
    if labels:
        out[sel, 3] = UNKNOWN_ID
        out[sel, 4] = UNKNOWN_ID
        if max_bow_genre_size > 1:
            out[sel, 5:4 + max_bow_genre_size] = -1
    if tempo:
        out[sel, 4 + max_bow_genre_size:6 + max_bow_genre_size] = 0
    return out


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

    y: LongTensor [B, 4 + max_bow_genre_size (+ 2 with tempo)] = (total_length, offset, sample_length, artist,
    genre ids padded with -1[, bpm x 100, beat0]), lengths in audio samples. Returns ``start`` [B, 1, W] = artist +
    sum of genre embeddings and ``timing`` [B, n_time, W] = total-length + absolute-position + relative-position
    embeddings (or None). With ``config.every_position`` the returned signal also carries ``label_proj(start)``
    (zero-initialised, so an existing prior gains the option without changing its output): [B, n_time, W], or
    [B, 1, W] without timing. With ``config.tempo`` the timing signal also carries a tempo embedding and, at every
    position, the embedding of the phase within the beat of the grid ``beat0 + k * 60 * sample_rate / bpm`` (both
    tables zero-initialised; bpm 0 means no steady pulse and uses the tables' ``none`` rows).
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
        self.tempo = config.tempo
        if config.tempo:
            if not include_time:
                raise ValueError("tempo conditioning needs the timing signal (a top-level prior)")
            self.tempo_emb = nn.Embedding(config.tempo_bins + 1, width)  # row 0: no steady pulse
            self.phase_emb = nn.Embedding(config.phase_bins + 1, width)  # last row: no steady pulse
            nn.init.zeros_(self.tempo_emb.weight)
            nn.init.zeros_(self.phase_emb.weight)
        self.label_proj = None
        if config.every_position:
            self.label_proj = nn.Linear(width, width, bias=False)
            nn.init.zeros_(self.label_proj.weight)

    def tempo_signal(self, y: Tensor) -> Tensor:
        """Tempo + beat-phase embeddings [B, n_time, W] of the label rows ``y`` (with tempo entries)."""
        c, g = self.config, 4 + self.max_bow_genre_size
        bpm = y[:, g:g + 1].float() / 100.0  # [B, 1]
        has = bpm > 0
        lo, hi = math.log(c.min_bpm), math.log(c.max_bpm)
        norm = (bpm.clamp(c.min_bpm, c.max_bpm).log() - lo) / (hi - lo)
        tempo_idx = torch.where(has, (norm * c.tempo_bins).floor().long().clamp(0, c.tempo_bins - 1) + 1, 0)
        # sample position of every token, relative to the grid's beat (exact integers first, then float64 where the
        # device has it: positions of long songs exceed float32's exact range)
        dtype = torch.float32 if y.device.type == "mps" else torch.float64
        rel = (y[:, 1:2] - y[:, g + 1:g + 2]).to(dtype)  # offset - beat0
        step = torch.arange(self.n_time, device=y.device, dtype=dtype).view(1, -1) / self.n_time
        pos = rel + y[:, 2:3].to(dtype) * step  # [B, n_time]
        period = 60.0 * c.sample_rate / bpm.to(dtype).clamp(min=1e-3)
        phase = torch.remainder(pos, period) / period
        phase_idx = (phase * c.phase_bins).floor().long().clamp(0, c.phase_bins - 1)
        phase_idx = torch.where(has, phase_idx, c.phase_bins)
        return self.tempo_emb(tempo_idx) + self.phase_emb(phase_idx)

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor | None]:
        n = 4 + self.max_bow_genre_size + self.config.n_tempo
        if y.dim() != 2 or y.shape[1] != n:
            raise ValueError(f"labels must be [B, {n}], got {tuple(y.shape)}")
        total_length, offset, length, artist = y[:, 0:1], y[:, 1:2], y[:, 2:3], y[:, 3:4]
        genre = y[:, 4:4 + self.max_bow_genre_size]
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
        if self.tempo:
            timing = timing + self.tempo_signal(y)
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
