"""Jukebox's pre-LayerNorm transformer: fused-QKV factorized attention, quick-GELU MLP, one pattern per layer.

Block maths (as the original): ``a = attn(ln_attn(x))``, ``m = mlp(ln_mlp(x + a))``, ``out = x + a + m``
(or ``x + (a + m) / depth`` with ``res_scale``). Learned positions and token embeddings live in the model
that owns the transformer (see :mod:`jukebox.prior.autoregressive`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .attention import DecodePlan, FactorizedAttention
from .kv_cache import KVCache, LayerKVCache

__all__ = ["quick_gelu", "MLP", "TransformerBlock", "Transformer"]


def quick_gelu(x: Tensor) -> Tensor:
    """``x * sigmoid(1.702 x)``."""
    return x * torch.sigmoid(1.702 * x)


class MLP(nn.Module):
    """[B, T, width] -> [B, T, width]: Linear(width, hidden), quick-GELU, Linear(hidden, width)."""

    def __init__(self, width: int, hidden: int, resid_dropout: float = 0.0, zero_out: bool = False,
                 init_scale: float = 1.0) -> None:
        super().__init__()
        self.fc = nn.Linear(width, hidden)
        self.proj = nn.Linear(hidden, width)
        nn.init.normal_(self.fc.weight, std=0.02 * init_scale)
        nn.init.zeros_(self.fc.bias)
        if zero_out:
            nn.init.zeros_(self.proj.weight)
        else:
            nn.init.normal_(self.proj.weight, std=0.02 * init_scale)
        nn.init.zeros_(self.proj.bias)
        self.dropout = nn.Dropout(resid_dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(quick_gelu(self.fc(x))))


class TransformerBlock(nn.Module):
    """One residual attention block, [B, T, width] -> [B, T, width]."""

    def __init__(self, width: int, heads: int, pattern: str, n_ctx: int, block_ctx: int = 1, prime_keys: int = 0,
                 m_attn: float = 0.25, m_mlp: float = 1.0, attn_dropout: float = 0.0, resid_dropout: float = 0.0,
                 zero_out: bool = False, init_scale: float = 1.0, res_scale: float = 1.0) -> None:
        super().__init__()
        self.pattern = pattern
        self.norm_attn = nn.LayerNorm(width)
        self.attn = FactorizedAttention(width, int(m_attn * width), heads, pattern, n_ctx, block_ctx, prime_keys,
                                        attn_dropout, resid_dropout, zero_out, init_scale)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = MLP(width, int(m_mlp * width), resid_dropout, zero_out, init_scale)
        self.res_scale = res_scale

    def forward(self, x: Tensor, encoder_states: Tensor | None = None, cache: LayerKVCache | None = None,
                start: int = 0) -> Tensor:
        a = self.attn(self.norm_attn(x), encoder_states, cache, start)
        return self._residual(x, a)

    def _residual(self, x: Tensor, a: Tensor) -> Tensor:
        m = self.mlp(self.norm_mlp(x + a))
        if self.res_scale == 1.0:
            return x + a + m
        return x + self.res_scale * (a + m)

    def decode_static(self, x: Tensor, cache: LayerKVCache, plan: DecodePlan) -> Tensor:
        """One token [B, 1, width] at the device position of ``plan`` (static shapes, CUDA-graph safe)."""
        return self._residual(x, self.attn.decode_static(self.norm_attn(x), cache, plan))


class Transformer(nn.Module):
    """A stack of :class:`TransformerBlock` with per-layer attention patterns.

    Args:
        width: model width. depth = ``len(patterns)``.
        heads: attention heads. n_ctx: maximum sequence length (a multiple of ``n_ctx // blocks``).
        patterns: pattern of each layer (see :mod:`jukebox.nn.attention`).
        blocks: number of rows the context is factored into (``block_ctx = n_ctx // blocks``).
        prime_keys: visible prefix of ``prime`` layers. encoder_len: length of the encoder states (``cross``).
        checkpoint: recompute each block in backward (activation checkpointing) while training.
    """

    def __init__(self, width: int, heads: int, n_ctx: int, patterns: Sequence[str], blocks: int | None = None,
                 prime_keys: int = 0, encoder_len: int = 0, m_attn: float = 0.25, m_mlp: float = 1.0,
                 attn_dropout: float = 0.0, resid_dropout: float = 0.0, zero_out: bool = False,
                 init_scale: float = 1.0, res_scale: bool = False, checkpoint: bool = False) -> None:
        super().__init__()
        self.width, self.heads, self.n_ctx = width, heads, n_ctx
        self.patterns = tuple(patterns)
        if blocks is not None and n_ctx % blocks:
            raise ValueError(f"n_ctx {n_ctx} is not a multiple of blocks {blocks}")
        self.block_ctx = n_ctx // blocks if blocks else n_ctx
        self.encoder_len = encoder_len
        scale = 1.0 / len(self.patterns) if res_scale else 1.0
        self.blocks = nn.ModuleList(
            TransformerBlock(width, heads, p, n_ctx, self.block_ctx, prime_keys, m_attn, m_mlp, attn_dropout,
                             resid_dropout, zero_out or p == "cross", init_scale, scale)
            for p in self.patterns
        )
        self.checkpoint = checkpoint

    def forward(self, x: Tensor, encoder_states: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        """x: [B, T, width] -> [B, T, width]. With ``cache``, x holds positions ``cache.length ..`` and the
        cache advances by T; ``encoder_states`` [B, S, width] feed ``cross`` layers (needed once per cache)."""
        start = 0 if cache is None else cache.length
        use_ckpt = self.checkpoint and self.training and torch.is_grad_enabled() and cache is None
        for i, block in enumerate(self.blocks):
            layer_cache = None if cache is None else cache[i]
            if use_ckpt:
                x = checkpoint(block, x, encoder_states, use_reentrant=False)
            else:
                x = block(x, encoder_states, layer_cache, start)
        if cache is not None:
            cache.length = start + x.shape[1]
        return x

    def decode_static(self, x: Tensor, cache: KVCache, pos: Tensor) -> Tensor:
        """One decoding step x [B, 1, width] at position ``pos`` ([1] long tensor on the device): fixed shapes,
        no host synchronisation, masks computed once per step (:class:`~jukebox.nn.attention.DecodePlan`).
        Does not advance ``cache.length`` (the caller owns the position)."""
        plan = DecodePlan(pos, x.dtype)
        for i, block in enumerate(self.blocks):
            x = block.decode_static(x, cache[i], plan)
        return x

    def make_cache(self, batch: int, dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None, compact: bool = True) -> KVCache:
        """Allocate a :class:`KVCache` for ``batch`` sequences (dtype/device default to the parameters').

        ``compact``: each layer gets the layout its pattern reads fastest (local blocks keep one or two blocks,
        transposed blocks a column-major grid); otherwise every layer keeps the full context and single tokens
        are decoded the unoptimised way (mask rebuilt per layer per step: the benchmarks' reference path)."""
        ref = next(self.parameters())
        dtype = dtype or ref.dtype
        device = device if device is not None else ref.device
        layers = []
        for block in self.blocks:
            attn = block.attn
            cross = attn.pattern == "cross"
            if cross:
                layout, length, n_blocks = "linear", self.encoder_len, 1
            elif compact:
                layout, length, n_blocks = attn.cache_spec()
            else:
                layout, length, n_blocks = "linear", attn.cache_len(), 1
            layers.append(LayerKVCache(batch, attn.heads, length, attn.head_dim, cross=cross, dtype=dtype,
                                       device=device, layout=layout, n_blocks=n_blocks, reference=not compact))
        return KVCache(layers)
