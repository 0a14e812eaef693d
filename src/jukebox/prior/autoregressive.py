"""Token-level autoregressive transformer: embeddings + learned positions + :class:`Transformer` + head.

The input at position ``t`` is ``emb(token[t-1])`` (the start embedding at ``t = 0``) ``+ pos[t] + cond[t]``;
``cond`` (timing signal or upsampler conditioning, [B, T, W] or [B, 1, W]) is added again after the stack
unless ``add_cond_after`` is off (5b tops). Used as the prior's decoder and as the 5b_lyrics lyric encoder.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..nn.attention import layer_patterns, prime_key_len
from ..nn.kv_cache import KVCache
from ..nn.transformer import Transformer
from .config import TransformerConfig

__all__ = ["AutoregressiveTransformer"]


class AutoregressiveTransformer(nn.Module):
    """Args:
        bins: vocabulary. n_ctx: sequence length. config: the transformer hyper-parameters.
        start_token: learn a start embedding (else the caller passes one, e.g. the label embedding).
        head: ``"tied"`` (output weights = input embedding), ``"separate"`` or ``"none"`` (encoder only).
        add_cond_after: add ``cond`` to the stack's output too.
        prime_len: lyric prefix length of the merged (1b) sequence, for ``prime`` layers.
        encoder_len: length of encoder states for ``cross`` layers.
    """

    def __init__(self, bins: int, n_ctx: int, config: TransformerConfig, *, start_token: bool = False,
                 head: str = "tied", add_cond_after: bool = True, prime_len: int = 0, encoder_len: int = 0) -> None:
        super().__init__()
        self.bins, self.n_ctx, self.width = bins, n_ctx, config.width
        s = config.init_scale
        self.token_emb = nn.Embedding(bins, config.width)
        nn.init.normal_(self.token_emb.weight, std=0.02 * s)
        self.start_token = nn.Parameter(torch.randn(1, config.width) * 0.01 * s) if start_token else None
        self.pos_emb = nn.Parameter(torch.randn(n_ctx, config.width) * 0.01 * s)
        self.emb_dropout = nn.Dropout(config.emb_dropout)
        patterns = layer_patterns(config.attn_order, config.depth)
        blocks = config.blocks
        prime_keys = prime_key_len(prime_len, blocks or 1) if "prime" in patterns else 0
        self.transformer = Transformer(
            config.width, config.heads, n_ctx, patterns, blocks, prime_keys, encoder_len, config.m_attn,
            config.m_mlp, config.attn_dropout, config.resid_dropout, config.zero_out, s, config.res_scale,
            config.checkpoint)
        self.add_cond_after = add_cond_after
        if head not in ("tied", "separate", "none"):
            raise ValueError(f"head must be tied, separate or none, got {head!r}")
        self.head_kind = head
        self.head = None if head == "none" else nn.Linear(config.width, bins, bias=False)
        if head == "tied":
            self.head.weight = self.token_emb.weight
        elif head == "separate":
            nn.init.normal_(self.head.weight, std=0.02 * s)

    # --- embeddings -----------------------------------------------------------------------------------------
    def _start(self, batch: int, start: Tensor | None) -> Tensor:
        if start is None:
            if self.start_token is None:
                raise ValueError("this model needs a start embedding [B, 1, W]")
            return self.start_token.view(1, 1, -1).expand(batch, 1, -1)
        return start.view(batch, 1, self.width)

    @staticmethod
    def _cond_slice(cond: Tensor | None, begin: int, end: int) -> Tensor | float:
        if cond is None:
            return 0.0
        return cond if cond.shape[1] == 1 else cond[:, begin:end]

    def embed_inputs(self, prev_tokens: Tensor, begin: int, start: Tensor | None, cond: Tensor | None) -> Tensor:
        """Inputs [B, T, W] for positions ``begin .. begin + T - 1``; ``prev_tokens`` [B, T] holds the token
        *before* each position (ignored at position 0, which takes the start embedding)."""
        B, T = prev_tokens.shape
        x = self.token_emb(prev_tokens)
        if begin == 0:
            x = torch.cat([self._start(B, start).to(x.dtype), x[:, 1:]], dim=1)
        x = self.emb_dropout(x) + self.emb_dropout(self.pos_emb[begin:begin + T])
        return x + self._cond_slice(cond, begin, begin + T)

    # --- passes ---------------------------------------------------------------------------------------------
    def hidden(self, tokens: Tensor, start: Tensor | None = None, cond: Tensor | None = None,
               encoder_states: Tensor | None = None) -> Tensor:
        """Teacher-forced pass over tokens [B, T] (T <= n_ctx) -> hidden states [B, T, W]."""
        T = tokens.shape[1]
        if T > self.n_ctx:
            raise ValueError(f"sequence of {T} tokens is longer than the context {self.n_ctx}")
        prev = torch.cat([tokens[:, :1], tokens[:, :-1]], dim=1)
        x = self.embed_inputs(prev, 0, start, cond)
        x = self.transformer(x, encoder_states)
        if self.add_cond_after:
            x = x + self._cond_slice(cond, 0, T)
        return x

    def forward(self, tokens: Tensor, start: Tensor | None = None, cond: Tensor | None = None,
                encoder_states: Tensor | None = None) -> Tensor:
        """Logits [B, T, bins] (hidden states [B, T, W] for an encoder without head)."""
        x = self.hidden(tokens, start, cond, encoder_states)
        return x if self.head is None else self.head(x)

    def step(self, prev_tokens: Tensor, cache: KVCache, start: Tensor | None = None, cond: Tensor | None = None,
             encoder_states: Tensor | None = None) -> Tensor:
        """Incremental pass for positions ``cache.length ..`` given the preceding tokens [B, T] -> logits
        [B, T, bins]; the cache advances by T."""
        begin = cache.length
        T = prev_tokens.shape[1]
        x = self.embed_inputs(prev_tokens, begin, start, cond)
        x = self.transformer(x, encoder_states, cache)
        if self.add_cond_after:
            x = x + self._cond_slice(cond, begin, begin + T)
        return x if self.head is None else self.head(x)

    def step_static(self, prev_tokens: Tensor, pos: Tensor, cache: KVCache, cond: Tensor | None = None) -> Tensor:
        """One decoding step at position ``pos`` ([1] long tensor on the device, > 0) given the preceding token
        [B, 1] -> logits [B, 1, bins]. Fixed shapes and no host synchronisation, so it can be captured in a CUDA
        graph or compiled; ``cache.length`` is left to the caller. Cross-attention caches must be filled."""
        x = self.token_emb(prev_tokens) + self.pos_emb.index_select(0, pos)
        c = None if cond is None else (cond if cond.shape[1] == 1 else cond.index_select(1, pos))
        if c is not None:
            x = x + c
        x = self.transformer.decode_static(x, cache, pos)
        if self.add_cond_after and c is not None:
            x = x + c
        return x if self.head is None else self.head(x)

    def make_cache(self, batch: int, dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None, compact: bool = True) -> KVCache:
        return self.transformer.make_cache(batch, dtype, device, compact)
