"""Jukebox's factorized self-attention, through one path: ``torch.nn.functional.scaled_dot_product_attention``.

A sequence of length ``T`` is viewed as a grid of ``T // block_ctx`` rows of ``block_ctx`` positions.
Each transformer layer uses one *pattern*; query position ``i`` may attend to key position ``j`` when

============== =============================================================== ======================
pattern        allowed keys (``b(i) = i // block_ctx``, ``c(i) = i % block_ctx``)  original ``attn_func``
============== =============================================================== ======================
dense          ``j <= i``                                                       0
block          ``j <= i`` and ``b(j) == b(i)`` (local block)                    1
transpose      ``j <= i`` and ``c(j) == c(i)`` (same column, earlier rows)       2
prev_block     ``b(j) == b(i) - 1`` (whole previous block, not causal inside)   3
cross          every encoder position (lyrics; encoder-decoder attention)       6
prime          ``j <= i`` and ``j < prime_keys`` (1b merged lyric+music prefix) 7
============== =============================================================== ======================

Queries of the first block under ``prev_block`` have no key; the original attends to a zero block there,
which yields an exactly zero output, and so do we. ``prime_keys`` is Jukebox's
``(prime_len // blocks + 1) * blocks``: a few music positions past the lyrics are visible too (kept for parity).

The full-sequence path computes each pattern by reshaping (block-sparse cost) into one 4-D SDPA call, so CUDA
runs flash or cuDNN attention on every pattern; :func:`pattern_mask` gives
the equivalent dense boolean mask, used for chunked incremental decoding and by the tests.

Decoding one token (``T == 1``) has two paths over the preallocated cache (:mod:`jukebox.nn.kv_cache`):
the eager one slices exactly the allowed keys out of the cache (no mask at all; the position is a Python int),
and the static one (:class:`DecodePlan`, position on the device) reads fixed-size key ranges under masks that
are computed once per step for all layers, so the whole step can be captured in a CUDA graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kv_cache import LayerKVCache

__all__ = [
    "PATTERNS",
    "OPENAI_ATTN_FUNCS",
    "layer_patterns",
    "prime_key_len",
    "pattern_mask",
    "factorized_attention",
    "FactorizedAttention",
    "DecodePlan",
]

PATTERNS = ("dense", "block", "transpose", "prev_block", "cross", "prime")

#: Original ``attn_func`` ids -> our pattern names (4/5, the "summary" patterns, are not used by any release).
OPENAI_ATTN_FUNCS = {0: "dense", 1: "block", 2: "transpose", 3: "prev_block", 6: "cross", 7: "prime"}


def _openai_attn_func(order: int, d: int) -> int:
    if order == 0:
        return 0
    if order == 1:
        return (1, 2)[d % 2]
    if order == 2:
        return (1, 2, 3)[d % 3]
    if order == 6:
        return (1, 2, 3, 6)[d % 4]
    if order == 7:
        return ((1, 2, 3) * 5 + (6,))[d % 16]
    if order == 8:
        return (1, 2, 3, 1, 2, 3, 1, 2, 3, 6)[d % 10]
    if order == 9:
        return (1, 2, 3, 0)[d % 4]
    if order == 10:
        return ((1, 2, 3) * 3 + (1, 2, 3, 1, 2, 3, 1, 2, 3, 6) * 7)[d % 79]
    if order == 11:
        return (6, 6, 0)[d % 3] if d % 16 == 15 else (1, 2, 3)[d % 3]
    if order == 12:
        return (7, 7, 0)[d % 3] if d % 16 == 15 else (1, 2, 3)[d % 3]
    raise NotImplementedError(f"attn_order {order} uses summary attention patterns, which are not supported")


def layer_patterns(attn_order: int, depth: int) -> tuple[str, ...]:
    """Pattern name of each of ``depth`` layers for Jukebox's ``attn_order`` (e.g. 2 -> block, transpose, prev)."""
    return tuple(OPENAI_ATTN_FUNCS[_openai_attn_func(attn_order, d)] for d in range(depth))


def prime_key_len(prime_len: int, blocks: int) -> int:
    """Number of leading positions visible to ``prime`` layers: ``(prime_len // blocks + 1) * blocks``."""
    return (prime_len // blocks + 1) * blocks


def pattern_mask(pattern: str, q_pos: Tensor, k_pos: Tensor, block_ctx: int = 1, prime_keys: int = 0) -> Tensor:
    """Boolean mask [Lq, Lk]: True where query position ``q_pos[i]`` may attend to key position ``k_pos[j]``."""
    q = q_pos.view(-1, 1)
    k = k_pos.view(1, -1)
    causal = k <= q
    if pattern == "dense":
        return causal
    if pattern == "block":
        return causal & (k // block_ctx == q // block_ctx)
    if pattern == "transpose":
        return causal & (k % block_ctx == q % block_ctx)
    if pattern == "prev_block":
        return k // block_ctx == q // block_ctx - 1
    if pattern == "prime":
        return causal & (k < prime_keys)
    if pattern == "cross":
        return torch.ones(q.shape[0], k.shape[1], dtype=torch.bool, device=q_pos.device)
    raise ValueError(f"unknown attention pattern {pattern!r}")


def _sdpa_rows(q: Tensor, k: Tensor, v: Tensor, causal: bool, dropout_p: float) -> Tensor:
    """SDPA over independent rows. q, k, v: [N, L, H, D] (any strides, last dim contiguous) -> [N, L, H, D].

    The heads are moved to dim 1 as a view, so every backend (flash, cuDNN, memory-efficient) sees the
    4-D layout it accepts; the output comes back in the [N, L, H, D] layout the fused kernels write."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal,
                                         dropout_p=dropout_p)
    return out.transpose(1, 2)


def factorized_attention(q: Tensor, k: Tensor, v: Tensor, pattern: str, block_ctx: int = 1, prime_keys: int = 0,
                         dropout_p: float = 0.0) -> Tensor:
    """Full-sequence attention of one pattern. q, k, v: [B, H, T, D] (self-attention; for ``cross`` k, v are
    [B, H, S, D]) -> [B, H, T, D]. Block patterns reshape the sequence into rows of ``block_ctx``; ``T`` needs
    not be a multiple of it (the tail is padded with later, hence invisible, positions).

    Every call is one 4-D ``scaled_dot_product_attention`` (so CUDA runs flash or cuDNN attention, never the
    math fallback that 5-D inputs get): local blocks are a batch of ``B * T / block_ctx`` short causal
    sequences, transposed blocks a batch of ``B * block_ctx`` columns (the column index joins the heads), the
    previous block a batch of rows against the row before. The reshapes are views when q, k, v are the head
    split of [B, T, H * D] activations (as :class:`FactorizedAttention` makes them), and the result is then a
    view of a [B, T, H, D] tensor, so merging the heads back costs no copy either."""
    if pattern == "cross":
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    if pattern == "dense":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
    if pattern == "prime":
        n = min(prime_keys, k.shape[2])
        # is_causal aligns top-left: query i sees keys j <= i, as required.
        return F.scaled_dot_product_attention(q, k[:, :, :n], v[:, :, :n], is_causal=True, dropout_p=dropout_p)
    if pattern not in ("block", "transpose", "prev_block"):
        raise ValueError(f"unknown attention pattern {pattern!r}")
    B, H, T, D = q.shape
    bc = block_ctx
    nb = -(-T // bc)
    L = nb * bc
    # [B, H, T, D] -> [B, L, H, D] (a view of the projection's output unless the tail needs padding)
    qt, kt, vt = (t.transpose(1, 2) if L == T else F.pad(t.transpose(1, 2), (0, 0, 0, 0, 0, L - T))
                  for t in (q, k, v))
    if pattern == "block":  # rows of block_ctx positions, causal inside: [B * nb, bc, H, D]
        out = _sdpa_rows(*(t.reshape(B * nb, bc, H, D) for t in (qt, kt, vt)), causal=True, dropout_p=dropout_p)
    elif pattern == "transpose":  # columns: [B, nb, bc, H, D] -> [B, nb, bc * H, D], the column as a head
        qg, kg, vg = (t.reshape(B, nb, bc * H, D) for t in (qt, kt, vt))
        out = _sdpa_rows(qg, kg, vg, causal=True, dropout_p=dropout_p)  # causal over the rows of a column
    else:  # prev_block: row r attends to row r - 1 entirely; row 0 to a zero block (output exactly zero)
        kg, vg = (F.pad(t[:, :L - bc], (0, 0, 0, 0, bc, 0)).reshape(B * nb, bc, H, D) for t in (kt, vt))
        out = _sdpa_rows(qt.reshape(B * nb, bc, H, D), kg, vg, causal=False, dropout_p=dropout_p)
    return out.reshape(B, L, H, D)[:, :T].transpose(1, 2)


def _masked_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """SDPA with a boolean mask [Lq, Lk]; query rows without any allowed key give zeros (Jukebox semantics)."""
    has_key = mask.any(dim=-1, keepdim=True)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | ~has_key)
    return out.masked_fill(~has_key, 0.0)


def attention_weights(q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
    """Softmax attention weights [B, H, Lq, Lk] (for lyric alignment; the main path never materialises them)."""
    w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        w = w.masked_fill(~mask, float("-inf"))
    return torch.softmax(w.float(), dim=-1).to(q.dtype)


class FactorizedAttention(nn.Module):
    """Multi-head attention with fused QKV projection and one Jukebox pattern.

    x: [B, T, width] -> [B, T, width]. ``n_state`` is the total attention width (heads * head_dim).
    For ``cross`` the queries come from ``x`` (``q``) and keys/values from the encoder states (``kv``);
    otherwise one ``qkv`` Linear gives [query | key | value].
    """

    def __init__(self, width: int, n_state: int, heads: int, pattern: str, n_ctx: int, block_ctx: int = 1,
                 prime_keys: int = 0, attn_dropout: float = 0.0, resid_dropout: float = 0.0,
                 zero_out: bool = False, init_scale: float = 1.0) -> None:
        super().__init__()
        if pattern not in PATTERNS:
            raise ValueError(f"unknown attention pattern {pattern!r}; choose one of {PATTERNS}")
        if n_state % heads:
            raise ValueError(f"attention width {n_state} not divisible by {heads} heads")
        if pattern in ("block", "transpose", "prev_block") and n_ctx % block_ctx:
            raise ValueError(f"n_ctx {n_ctx} is not a multiple of block_ctx {block_ctx}")
        self.width, self.n_state, self.heads = width, n_state, heads
        self.head_dim = n_state // heads
        self.pattern, self.n_ctx, self.block_ctx, self.prime_keys = pattern, n_ctx, block_ctx, prime_keys
        self.attn_dropout = attn_dropout
        std = 0.02 * init_scale
        if pattern == "cross":
            self.q = nn.Linear(width, n_state)
            self.kv = nn.Linear(width, 2 * n_state)
            linears = [self.q, self.kv]
        else:
            self.qkv = nn.Linear(width, 3 * n_state)
            linears = [self.qkv]
        self.proj = nn.Linear(n_state, width)
        for lin in linears:
            nn.init.normal_(lin.weight, std=std)
            nn.init.zeros_(lin.bias)
        if zero_out:
            nn.init.zeros_(self.proj.weight)
        else:
            nn.init.normal_(self.proj.weight, std=std)
        nn.init.zeros_(self.proj.bias)
        self.resid_dropout = nn.Dropout(resid_dropout)
        #: When True, the softmax weights of the last call are kept in ``last_weights`` [B, H, Lq, Lk].
        self.record_weights = False
        self.last_weights: Tensor | None = None

    # --- helpers --------------------------------------------------------------------------------------------
    def cache_len(self) -> int:
        """Key/value positions a cache must hold for this layer (self-attention patterns)."""
        if self.pattern == "prime":
            return min(self.prime_keys, self.n_ctx)
        return self.n_ctx

    def _heads(self, x: Tensor) -> Tensor:  # [B, T, n_state] -> [B, H, T, D]
        B, T, _ = x.shape
        return x.view(B, T, self.heads, self.head_dim).transpose(1, 2)

    def _merge(self, x: Tensor) -> Tensor:  # [B, H, T, D] -> [B, T, n_state]
        B, H, T, D = x.shape
        return x.transpose(1, 2).reshape(B, T, H * D)

    def encoder_kv(self, encoder_states: Tensor) -> tuple[Tensor, Tensor]:
        """Project encoder states [B, S, width] to keys and values [B, H, S, D] (``cross`` layers)."""
        k, v = self.kv(encoder_states.to(self.kv.weight.dtype)).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def _record(self, q: Tensor, k: Tensor, mask: Tensor | None) -> None:
        if self.record_weights:
            self.last_weights = attention_weights(q, k, mask)

    # --- forward --------------------------------------------------------------------------------------------
    def forward(self, x: Tensor, encoder_states: Tensor | None = None, cache: LayerKVCache | None = None,
                start: int = 0) -> Tensor:
        """x: [B, T, width] at positions ``start .. start + T - 1``; ``cache`` enables incremental decoding
        (keys/values written into the preallocated cache, attention over the cached past)."""
        if self.pattern == "cross":
            if encoder_states is None and (cache is None or not cache.ready):
                raise ValueError("cross-attention layer needs encoder states")
            q = self._heads(self.q(x))
            if cache is not None:
                if not cache.ready:
                    cache.store_encoder(*self.encoder_kv(encoder_states))
                k, v = cache.key, cache.value
            else:
                k, v = self.encoder_kv(encoder_states)
            dropout = self.attn_dropout if self.training else 0.0
            a = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
            self._record(q, k, None)
        else:
            q, k, v = (self._heads(t) for t in self.qkv(x).chunk(3, dim=-1))
            if cache is None:
                if start != 0:
                    raise ValueError("start > 0 needs a KV cache")
                a = self._full(q, k, v)
            else:
                a = self._cached(q, k, v, cache, start)
        return self.resid_dropout(self.proj(self._merge(a)))

    def _full(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        dropout = self.attn_dropout if self.training else 0.0
        if self.record_weights:
            pos = torch.arange(q.shape[2], device=q.device)
            n = k.shape[2] if self.pattern != "prime" else min(self.prime_keys, k.shape[2])
            self._record(q, k[:, :, :n], pattern_mask(self.pattern, pos, pos[:n], self.block_ctx, self.prime_keys))
        return factorized_attention(q, k, v, self.pattern, self.block_ctx, self.prime_keys, dropout)

    def cache_spec(self) -> tuple[str, int, int]:
        """(layout, size, n_blocks) of the cache this layer decodes with fastest (see :mod:`..kv_cache`)."""
        bc = self.block_ctx
        if self.pattern == "block":
            return "ring", bc, 1
        if self.pattern == "prev_block":
            return "ring", 2 * bc, 1
        if self.pattern == "transpose":
            return "columns", bc, self.n_ctx // bc
        return "linear", self.cache_len(), 1

    def _cached(self, q: Tensor, k: Tensor, v: Tensor, cache: LayerKVCache, start: int) -> Tensor:
        T = q.shape[2]
        end = start + T
        if end > self.n_ctx:
            raise ValueError(f"position {end} past the context of {self.n_ctx}")
        if start == 0:
            # Prefill from the beginning: the block-sparse full path on the new keys equals attention over the cache.
            cache.write(k, v, 0)
            return self._full(q, k, v)
        if T == 1 and not cache.reference:
            kk, vv = self._step_keys(k, v, cache, start)
            if kk is None:
                return q.new_zeros(q.shape)  # prev_block in the first block: no key
            self._record(q, kk, None)
            return F.scaled_dot_product_attention(q, kk, vv)
        # A chunk continuing earlier context: the cached prefix it needs, then the new keys, under the mask.
        bc = self.block_ctx
        lo = {"block": (start // bc) * bc, "prev_block": max(0, (start // bc - 1) * bc)}.get(self.pattern, 0)
        if self.pattern == "prime":
            n = cache.size
            pk, pv = cache.read(0, min(start, n))
            kk, vv = torch.cat([pk, k[:, :, :max(0, n - start)]], 2), torch.cat([pv, v[:, :, :max(0, n - start)]], 2)
        else:
            pk, pv = cache.read(lo, start)
            kk, vv = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
        cache.write(k, v, start)
        keys = torch.arange(lo, lo + kk.shape[2], device=q.device)
        mask = pattern_mask(self.pattern, torch.arange(start, end, device=q.device), keys, bc, self.prime_keys)
        self._record(q, kk, mask)
        return _masked_attention(q, kk, vv, mask)

    def _step_keys(self, k: Tensor, v: Tensor, cache: LayerKVCache, t: int) -> tuple[Tensor | None, Tensor | None]:
        """Write position ``t`` and return exactly the keys/values query ``t`` may attend to (no mask needed)."""
        cache.write(k, v, t)
        bc, layout = self.block_ctx, cache.layout
        key, value = cache.key, cache.value
        if self.pattern == "block":
            lo = (t // bc) * bc
            if layout == "ring":
                s = lo % cache.size
                return key[:, :, s:s + t - lo + 1], value[:, :, s:s + t - lo + 1]
            return key[:, :, lo:t + 1], value[:, :, lo:t + 1]
        if self.pattern == "prev_block":
            lo = (t // bc - 1) * bc
            if lo < 0:
                return None, None
            s = lo % cache.size if layout == "ring" else lo
            return key[:, :, s:s + bc], value[:, :, s:s + bc]
        if self.pattern == "transpose":
            if layout == "columns":
                return key[:, :, t % bc, :t // bc + 1], value[:, :, t % bc, :t // bc + 1]
            return key[:, :, t % bc:t + 1:bc], value[:, :, t % bc:t + 1:bc]
        n = min(t + 1, cache.size)  # dense, prime (linear)
        return key[:, :, :n], value[:, :, :n]

    # --- static-shape decode step (CUDA graphs) -------------------------------------------------------------
    def decode_static(self, x: Tensor, cache: LayerKVCache, plan: DecodePlan) -> Tensor:
        """One token x [B, 1, width] at ``plan.pos`` with fixed-size key ranges and device-side masks."""
        if self.pattern == "cross":
            q = self._heads(self.q(x))
            a = F.scaled_dot_product_attention(q, cache.key, cache.value)
        else:
            q, k, v = (self._heads(t) for t in self.qkv(x).chunk(3, dim=-1))
            cache.write_index(k, v, plan.slot(cache))
            kk, vv = cache.key, cache.value
            if cache.layout == "columns":
                col = plan.pos % self.block_ctx
                kk, vv = kk.index_select(2, col).squeeze(2), vv.index_select(2, col).squeeze(2)
            mask, keep = plan.mask(self.pattern, cache, self.block_ctx, self.prime_keys)
            a = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)
            if keep is not None:
                a = a * keep
        return self.resid_dropout(self.proj(self._merge(a)))


class DecodePlan:
    """Device-side slots and masks of one decode step at position ``pos`` ([1] long tensor), computed once per
    step and shared by every layer with the same pattern and cache layout (no host synchronisation)."""

    def __init__(self, pos: Tensor, dtype: torch.dtype) -> None:
        self.pos = pos
        self.dtype = dtype
        self._slots: dict[tuple, Tensor] = {}
        self._masks: dict[tuple, tuple[Tensor, Tensor | None]] = {}

    def slot(self, cache: LayerKVCache) -> Tensor:
        key = (cache.layout, cache.size, cache.n_blocks)
        if key not in self._slots:
            self._slots[key] = cache.slot_index(self.pos)
        return self._slots[key]

    def mask(self, pattern: str, cache: LayerKVCache, block_ctx: int, prime_keys: int) -> tuple[Tensor, Tensor | None]:
        """(attention mask [1, 1, 1, L] over the keys the layer reads, output scale [1] or None)."""
        key = (pattern, cache.layout, cache.size, cache.n_blocks)
        if key in self._masks:
            return self._masks[key]
        pos, dev, bc = self.pos, self.pos.device, block_ctx
        if cache.layout == "ring":
            slots = torch.arange(cache.size, device=dev)
            if pattern == "block":
                m = slots <= pos % bc
            else:  # prev_block, ring of two blocks
                m = (slots // bc == (pos // bc - 1) % 2) & (pos >= bc)
        elif cache.layout == "columns":
            m = torch.arange(cache.n_blocks, device=dev) <= pos // bc
        else:
            m = pattern_mask(pattern, pos, torch.arange(cache.size, device=dev), bc, prime_keys)[0]
        keep = None
        if pattern == "prev_block":  # the first block has no key: attend anywhere, then zero the output
            has = pos >= bc
            m = m | ~has
            keep = has.to(self.dtype)
        self._masks[key] = (m.view(1, 1, 1, -1), keep)
        return self._masks[key]
