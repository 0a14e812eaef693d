"""Per-level encoder and decoder of the hierarchical VQ-VAE.

Level ``l`` has its own encoder (``l + 1`` strided :class:`~jukebox.nn.conv.EncoderBlock` s, so it downsamples
by the level's hop length) and its own decoder (the mirror image, then a k=3 conv back to audio channels).
Levels share no weights; a level-``l`` code sequence decodes to audio on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..nn.conv import DecoderBlock, EncoderBlock

__all__ = ["LevelEncoder", "LevelDecoder"]


class LevelEncoder(nn.Module):
    """Audio [B, C_in, T] -> latents [B, emb_width, T // prod(stride ** down)].

    ``blocks[i]`` downsamples by ``strides_t[i] ** downs_t[i]``; the first maps C_in -> emb_width channels.
    """

    def __init__(self, in_channels: int, emb_width: int, downs_t: Sequence[int], strides_t: Sequence[int],
                 width: int, depth: int, m_conv: float = 1.0, dilation_growth_rate: int = 1,
                 dilation_cycle: int | None = None, zero_out: bool = False, res_scale: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            EncoderBlock(in_channels if i == 0 else emb_width, emb_width, down, stride, width, depth, m_conv,
                         dilation_growth_rate, dilation_cycle, zero_out, res_scale)
            for i, (down, stride) in enumerate(zip(downs_t, strides_t))
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class LevelDecoder(nn.Module):
    """Latents [B, emb_width, T_l] -> audio [B, C_out, T_l * prod(stride ** down)].

    ``blocks[i]`` undoes encoder block ``i`` (they run last to first); ``out`` maps emb_width -> C_out.
    """

    def __init__(self, out_channels: int, emb_width: int, downs_t: Sequence[int], strides_t: Sequence[int],
                 width: int, depth: int, m_conv: float = 1.0, dilation_growth_rate: int = 1,
                 dilation_cycle: int | None = None, zero_out: bool = False, res_scale: bool = False,
                 reverse_dilation: bool = True) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            DecoderBlock(emb_width, emb_width, down, stride, width, depth, m_conv, dilation_growth_rate,
                         dilation_cycle, zero_out, res_scale, reverse_dilation)
            for down, stride in zip(downs_t, strides_t)
        )
        self.out = nn.Conv1d(emb_width, out_channels, kernel_size=3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        for block in reversed(self.blocks):
            z = block(z)
        return self.out(z)
