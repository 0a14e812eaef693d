"""Encoding whole pieces of audio into codes and decoding them back, in bounded memory.

Thin helpers over :class:`jukebox.vqvae.VQVAE` used by the CLI, the sampling pipeline and the API: pad the
input to a multiple of the top level's hop, and process long audio in windows so memory stays flat.
"""

from __future__ import annotations

import math

import torch

#: Audio per encoder/decoder call, in seconds; long inputs are processed window by window.
WINDOW_SECONDS = 30.0


@torch.no_grad()
def encode_audio(vqvae, x: torch.Tensor, end_level: int | None = None) -> list[torch.Tensor]:
    """Encode audio x [B, 1, T] into codes per level: list of LongTensor [B, ceil(T / top_hop) * top_hop / hop_l].

    The input is zero-padded to a multiple of the top level's hop, so every level covers the same span.
    """
    if x.dim() != 3 or x.shape[1] != 1:
        raise ValueError(f"expected audio of shape [batch, 1, time], got {tuple(x.shape)}")
    hops = vqvae.config.hop_lengths
    end_level = vqvae.config.levels if end_level is None else end_level
    top = max(hops)
    length = math.ceil(x.shape[-1] / top) * top
    x = torch.nn.functional.pad(x, (0, length - x.shape[-1]))
    window = max(top, int(WINDOW_SECONDS * vqvae.config.sample_rate) // top * top)
    pieces: list[list[torch.Tensor]] = [[] for _ in range(end_level)]
    for start in range(0, length, window):
        codes = vqvae.encode(x[..., start:start + window], start_level=0, end_level=end_level)
        for lvl, c in enumerate(codes):
            pieces[lvl].append(c)
    return [torch.cat(p, dim=-1) for p in pieces]


@torch.no_grad()
def decode_codes(vqvae, codes: torch.Tensor, level: int) -> torch.Tensor:
    """Decode one level's codes [B, T_l] into audio [B, 1, T_l * hop_l], window by window.

    Windows overlap by a margin that is then cropped, so window borders do not click.
    """
    hop = vqvae.config.hop_lengths[level]
    n = codes.shape[-1]
    window = max(1, int(WINDOW_SECONDS * vqvae.config.sample_rate) // hop)
    if n <= window:
        return vqvae.decode_level(codes, level)
    margin = max(1, window // 16)
    outs = []
    for start in range(0, n, window):
        lo, hi = max(0, start - margin), min(n, start + window + margin)
        audio = vqvae.decode_level(codes[:, lo:hi], level)
        a = (start - lo) * hop
        outs.append(audio[..., a:a + (min(n, start + window) - start) * hop])
    return torch.cat(outs, dim=-1)
