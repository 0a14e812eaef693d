"""Preallocated key/value cache for incremental (token by token) transformer decoding.

Every layer owns fixed-size buffers ``key``/``value`` [B, H, L, D] allocated once (zeros) for the whole
context; decoding writes new positions in place, so there is no per-token allocation and every buffer keeps
a static shape (ready for CUDA graphs / torch.compile later). ``KVCache.length`` counts the positions
already written.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["LayerKVCache", "KVCache"]


class LayerKVCache:
    """Keys and values of one attention layer: ``key``/``value`` [B, H, L, D].

    Self-attention layers hold L context positions (positions past L are not kept; ``prime`` layers only
    need their visible prefix). Cross-attention layers hold the projected encoder states, computed once.
    """

    def __init__(self, batch: int, heads: int, length: int, head_dim: int, *, cross: bool = False,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        self.key = torch.zeros(batch, heads, length, head_dim, dtype=dtype, device=device)
        self.value = torch.zeros(batch, heads, length, head_dim, dtype=dtype, device=device)
        self.cross = cross
        self.ready = False  # cross layers: encoder keys/values stored

    def write(self, key: Tensor, value: Tensor, start: int) -> None:
        """Store key/value [B, H, T, D] for positions ``start .. start + T - 1`` (those beyond L are dropped)."""
        end = min(start + key.shape[2], self.key.shape[2])
        if end > start:
            self.key[:, :, start:end].copy_(key[:, :, : end - start])
            self.value[:, :, start:end].copy_(value[:, :, : end - start])

    def store_encoder(self, key: Tensor, value: Tensor) -> None:
        """Cross-attention: keep the projected encoder keys/values [B, H, S, D]."""
        self.key.copy_(key)
        self.value.copy_(value)
        self.ready = True

    def reset(self) -> None:
        self.key.zero_()
        self.value.zero_()
        self.ready = False


class KVCache:
    """Per-layer caches of a transformer plus the number of positions decoded so far (``length``)."""

    def __init__(self, layers: Sequence[LayerKVCache]) -> None:
        self.layers = list(layers)
        self.length = 0

    def __getitem__(self, i: int) -> LayerKVCache:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def batch_size(self) -> int:
        return self.layers[0].key.shape[0] if self.layers else 0

    def reset(self) -> None:
        """Forget everything (buffers are zeroed, not reallocated)."""
        for layer in self.layers:
            layer.reset()
        self.length = 0

    def nbytes(self) -> int:
        return sum(layer.key.nbytes + layer.value.nbytes for layer in self.layers)
