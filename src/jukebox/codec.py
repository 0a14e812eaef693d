"""Encoding whole pieces of audio into codes and decoding them back, in bounded memory.

Thin helpers over :class:`jukebox.vqvae.VQVAE` used by the CLI, the sampling pipeline and the API: pad the
input to a multiple of the top level's hop, and process long audio in windows so memory stays flat.
"""

from __future__ import annotations

import math

import torch

#: Audio per encoder/decoder call, in seconds; long inputs are processed window by window.
WINDOW_SECONDS = 30.0
#: Most output samples (items x samples) one decoder call makes: a large batch decodes in shorter windows, so the
#: decoder's activations stay bounded whatever the batch.
DECODE_CALL_SAMPLES = 2**22


def check_decode_size(n_items: int, n_codes: int, hop: int, sample_rate: int, where: str = "the codes") -> int:
    """Refuse, before any decoding, codes whose audio would exceed :data:`jukebox.audio.MAX_OUTPUT_SAMPLES` values
    (1 GiB of float32; 10**7 level-2 codes in a 15 kB file ask for 1.28e9 samples, 8 hours of audio): a one-line
    :class:`~jukebox.errors.JukeboxError`. Returns the number of samples."""
    from .audio import MAX_OUTPUT_SAMPLES
    from .errors import JukeboxError

    total = n_items * n_codes * hop
    if total > MAX_OUTPUT_SAMPLES:
        raise JukeboxError(f"{where}: {n_items} item(s) of {n_codes:,} codes decode to {total:,} samples "
                           f"({total / sample_rate / 3600:.1f} h of audio); at most {MAX_OUTPUT_SAMPLES:,} are decoded "
                           "at once; cut the codes or decode fewer items")
    return total


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

    The size is checked first (:func:`check_decode_size`); windows are at most :data:`WINDOW_SECONDS` long and
    make at most :data:`DECODE_CALL_SAMPLES` samples over the batch, and overlap by a margin that is then
    cropped, so window borders do not click.
    """
    hop = vqvae.config.hop_lengths[level]
    n = codes.shape[-1]
    check_decode_size(codes.shape[0], n, hop, vqvae.config.sample_rate)
    window = max(1, min(int(WINDOW_SECONDS * vqvae.config.sample_rate), DECODE_CALL_SAMPLES // max(1, codes.shape[0]))
                 // hop)
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
