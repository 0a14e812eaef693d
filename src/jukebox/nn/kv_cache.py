"""Preallocated key/value cache for incremental (token by token) transformer decoding.

Every layer owns fixed-size buffers ``key``/``value`` allocated once (zeros); decoding writes new positions in
place, so there is no per-token allocation and every buffer keeps a static shape (CUDA graphs capture the
decode step over them). ``KVCache.length`` counts the positions already written.

A layer's buffers use one of three *layouts*, chosen for the keys its attention pattern reads:

``linear``  [B, H, L, D], position ``p`` at index ``p`` (dense, prime and cross layers; anything by default).
``ring``    [B, H, R, D], position ``p`` at slot ``p % R``: local ``block`` layers keep only their current block
            (``R = block_ctx``), ``prev_block`` layers the previous and the current one (``R = 2 * block_ctx``),
            instead of the whole context (2/3 of the cache of a Jukebox prior).
``columns`` [B, H, block_ctx, n_blocks, D], position ``p`` at ``[p % block_ctx, p // block_ctx]``: the keys of a
            ``transpose`` layer's query (one column of the block grid) are contiguous.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["LAYOUTS", "LayerKVCache", "KVCache"]

LAYOUTS = ("linear", "ring", "columns")


class LayerKVCache:
    """Keys and values of one attention layer (see the module docstring for the layouts).

    ``length`` is the number of positions the buffers hold (``linear``), the ring size (``ring``) or
    ``block_ctx`` (``columns``, which needs ``n_blocks`` too). Positions past a ``linear`` buffer are dropped
    (``prime`` layers only keep their visible prefix). Cross-attention layers hold the projected encoder states.
    """

    def __init__(self, batch: int, heads: int, length: int, head_dim: int, *, cross: bool = False,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                 layout: str = "linear", n_blocks: int = 1, reference: bool = False) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown cache layout {layout!r}; choose one of {LAYOUTS}")
        if cross and layout != "linear":
            raise ValueError("cross-attention caches are linear")
        shape = (batch, heads, length, n_blocks, head_dim) if layout == "columns" else (batch, heads, length,
                                                                                         head_dim)
        self.key = torch.zeros(shape, dtype=dtype, device=device)
        self.value = torch.zeros(shape, dtype=dtype, device=device)
        self.layout = layout
        self.size = length  # linear: positions; ring: slots; columns: block_ctx
        self.n_blocks = n_blocks
        self.cross = cross
        self.ready = False  # cross layers: encoder keys/values stored
        #: Decode single tokens the unoptimised way (keys from the cached prefix, mask rebuilt every step), for
        #: benchmarks and equality checks against the fast path.
        self.reference = reference

    @property
    def capacity(self) -> int:
        """Positions that can be written (``0 .. capacity - 1``; a ring takes any position)."""
        if self.layout == "columns":
            return self.size * self.n_blocks
        return self.size if self.layout == "linear" else 1 << 62

    def _flat(self, t: Tensor) -> Tensor:  # columns buffer as [B, H, block_ctx * n_blocks, D] (a view)
        B, H, C, N, D = t.shape
        return t.view(B, H, C * N, D)

    def write(self, key: Tensor, value: Tensor, start: int) -> None:
        """Store key/value [B, H, T, D] for positions ``start .. start + T - 1``."""
        T = key.shape[2]
        if self.layout == "linear":
            end = min(start + T, self.size)
            if end > start:
                self.key[:, :, start:end].copy_(key[:, :, : end - start])
                self.value[:, :, start:end].copy_(value[:, :, : end - start])
            return
        if self.layout == "ring":
            R = self.size
            if T > R:  # only the last R positions survive
                key, value, start, T = key[:, :, T - R:], value[:, :, T - R:], start + T - R, R
            s = start % R
            first = min(T, R - s)
            self.key[:, :, s:s + first].copy_(key[:, :, :first])
            self.value[:, :, s:s + first].copy_(value[:, :, :first])
            if first < T:
                self.key[:, :, : T - first].copy_(key[:, :, first:])
                self.value[:, :, : T - first].copy_(value[:, :, first:])
            return
        # columns: one strided copy per block row touched
        bc, end = self.size, min(start + T, self.capacity)
        p = start
        while p < end:
            row, col = divmod(p, bc)
            n = min(bc - col, end - p)
            self.key[:, :, col:col + n, row].copy_(key[:, :, p - start:p - start + n])
            self.value[:, :, col:col + n, row].copy_(value[:, :, p - start:p - start + n])
            p += n

    def write_index(self, key: Tensor, value: Tensor, index: Tensor) -> None:
        """Static-shape write of key/value [B, H, 1, D] at flat slot ``index`` [1] (a device tensor; see
        :meth:`slot_index`). Used by the CUDA-graph decode step."""
        if self.layout == "columns":
            self._flat(self.key).index_copy_(2, index, key)
            self._flat(self.value).index_copy_(2, index, value)
        elif self.layout == "linear":  # positions past the buffer (prime layers) are dropped: rewrite the old value
            keep = index < self.size
            index = index.clamp(max=self.size - 1)
            self.key.index_copy_(2, index, torch.where(keep, key, self.key.index_select(2, index)))
            self.value.index_copy_(2, index, torch.where(keep, value, self.value.index_select(2, index)))
        else:
            self.key.index_copy_(2, index, key)
            self.value.index_copy_(2, index, value)

    def slot_index(self, pos: Tensor) -> Tensor:
        """Flat slot of position(s) ``pos`` (a long tensor) in this layout."""
        if self.layout == "ring":
            return pos % self.size
        if self.layout == "columns":
            return (pos % self.size) * self.n_blocks + pos // self.size
        return pos

    def read(self, lo: int, hi: int) -> tuple[Tensor, Tensor]:
        """Keys/values [B, H, hi - lo, D] of positions ``lo .. hi - 1`` (a copy for ring and columns layouts;
        a ring only holds its last ``R`` positions)."""
        if self.layout == "linear":
            return self.key[:, :, lo:hi], self.value[:, :, lo:hi]
        if self.layout == "ring":
            if hi - lo > self.size:
                raise ValueError(f"ring cache of {self.size} cannot give {hi - lo} positions")
            idx = torch.arange(lo, hi, device=self.key.device) % self.size
            return self.key.index_select(2, idx), self.value.index_select(2, idx)
        B, H, C, N, D = self.key.shape
        k = self.key.transpose(2, 3).reshape(B, H, C * N, D)[:, :, lo:hi]
        v = self.value.transpose(2, 3).reshape(B, H, C * N, D)[:, :, lo:hi]
        return k, v

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
