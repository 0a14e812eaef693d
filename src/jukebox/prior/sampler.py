"""Ancestral / primed token sampling of an :class:`AutoregressiveTransformer` with the preallocated KV cache."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..sampling.filters import filter_logits
from .autoregressive import AutoregressiveTransformer

__all__ = ["draw_tokens", "split_chunks", "sample_autoregressive"]

ProgressFn = Callable[[int, int], None]


def draw_tokens(logits: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 0.0,
                generator: torch.Generator | None = None) -> Tensor:
    """One token per row of logits [..., V] -> [...]. ``top_k == 1`` or ``temperature == 0`` is argmax.

    Stochastic draws follow Jukebox: ``logits / temperature``, top-k/top-p filtering, then a categorical draw
    (normalised log-probabilities, ``multinomial`` with replacement, as ``torch.distributions.Categorical``).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k == 1 or temperature == 0:
        return logits.argmax(dim=-1)
    x = filter_logits(logits.float() / temperature, top_k=top_k, top_p=top_p)
    x = x - x.logsumexp(dim=-1, keepdim=True)
    probs = torch.softmax(x, dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, replacement=True, generator=generator).reshape(probs.shape[:-1])


def split_chunks(length: int, chunk_size: int | None) -> list[int]:
    """Sizes of consecutive chunks covering ``length`` (the last may be shorter)."""
    if length <= 0:
        return []
    size = length if not chunk_size else chunk_size
    return [size] * ((length - 1) // size) + [(length - 1) % size + 1]


@torch.no_grad()
def sample_autoregressive(model: AutoregressiveTransformer, n_samples: int, total: int, known: Tensor | None = None,
                          start: Tensor | None = None, cond: Tensor | None = None,
                          encoder_states: Tensor | None = None, temperature: float = 1.0, top_k: int = 0,
                          top_p: float = 0.0, chunk_size: int | None = None,
                          generator: torch.Generator | None = None, progress: ProgressFn | None = None,
                          logits_mask: Tensor | None = None, return_logits: bool = False,
                          ) -> tuple[Tensor, Tensor | None]:
    """Sample a sequence of ``total`` tokens, continuing ``known`` [B, P] (kept as is).

    The known prefix is run through the model in chunks of ``chunk_size`` (default: one chunk) to fill the
    cache; then one token per step. ``logits_mask`` [V] (True = forbidden) masks sampled logits.
    Returns tokens [B, total] and, if asked, the logits at every position [B, total, V] (prefix included).
    """
    device = model.pos_emb.device
    P = 0 if known is None else known.shape[1]
    if not P < total <= model.n_ctx:
        raise ValueError(f"need known length {P} < total {total} <= context {model.n_ctx}")
    out = torch.zeros(n_samples, total, dtype=torch.long, device=device)
    cache = model.make_cache(n_samples)
    all_logits: list[Tensor] = []
    if P:
        out[:, :P] = known
        prev = torch.cat([known[:, :1], known[:, :-1]], dim=1)
        begin = 0
        for size in split_chunks(P, chunk_size):
            logits = model.step(prev[:, begin:begin + size], cache, start, cond, encoder_states)
            begin += size
            if return_logits:
                all_logits.append(logits.float())
    prev_tok = out[:, P - 1:P] if P else out[:, :1]
    for t in range(P, total):
        logits = model.step(prev_tok, cache, start, cond, encoder_states)
        if return_logits:
            all_logits.append(logits.float())
        step_logits = logits[:, 0]
        if logits_mask is not None:
            step_logits = step_logits.masked_fill(logits_mask, float("-inf"))
        tok = draw_tokens(step_logits, temperature, top_k, top_p, generator)
        out[:, t] = tok
        prev_tok = out[:, t:t + 1]
        if progress is not None:
            progress(t + 1 - P, total - P)
    return out, (torch.cat(all_logits, dim=1) if return_logits else None)
