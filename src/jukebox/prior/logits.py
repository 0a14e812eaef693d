"""What a prior's sampler does with logits: top-k and nucleus (top-p) filters, temperature, categorical draws.

Pure functions over ``[..., vocab]`` logits; fully batched, no host synchronisation. The settings they take are
validated once, where sampling starts (:class:`jukebox.sampling.settings.LevelSettings`), not per token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .settings import DRAWS, LevelSettings

__all__ = ["DRAWS", "filter_logits", "categorical_cdf", "draw_tokens", "token_sampler"]


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Return a copy of ``logits`` [..., V] with tokens outside the top-k / top-p set at ``-inf``.

    ``top_k > 0`` keeps the k largest logits (ties with the k-th value are kept, as in Jukebox).
    ``0 < top_p < 1`` keeps the smallest set of most likely tokens whose probability mass reaches
    ``top_p`` (the most likely token is always kept). Both may be combined: top-k first, then top-p.
    """
    LevelSettings(top_k=top_k, top_p=top_p)  # checks them
    return _filter(logits, top_k, top_p)


def _filter(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """:func:`filter_logits` without the checks (the sampler's settings were checked once)."""
    out = logits.clone()
    vocab = out.shape[-1]
    if 0 < top_k < vocab:
        kth = torch.topk(out, top_k, dim=-1).values[..., -1:]
        out = out.masked_fill(out < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(out, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits.float(), dim=-1).cumsum(dim=-1)
        # Drop a token when the mass strictly before it already reaches top_p.
        remove_sorted = (cum - torch.softmax(sorted_logits.float(), dim=-1)) >= top_p
        remove_sorted[..., 0] = False
        remove = torch.zeros_like(remove_sorted).scatter(-1, sorted_idx, remove_sorted)
        out = out.masked_fill(remove, float("-inf"))
    return out


def categorical_cdf(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row of ``softmax(logits)`` [..., V] -> LongTensor [...] by inverting the CDF with one uniform
    number per row (``-inf`` logits are never drawn). Deterministic for a given generator state and batch."""
    x = logits.float()
    cdf = torch.softmax(x, dim=-1).cumsum_(dim=-1)
    total = cdf[..., -1:]
    u = torch.rand(total.shape, generator=generator, device=x.device, dtype=x.dtype).mul_(total)
    # u < total strictly (a product can round up to it), so the token found has non-zero probability
    u = torch.minimum(u, total.nextafter(torch.zeros_like(total)))
    return torch.searchsorted(cdf, u, right=True).squeeze(-1)


@dataclass(frozen=True)
class RowShare:
    """A call that samples rows ``lo .. hi - 1`` of a batch of ``total`` rows whose shortest known prefix is
    ``first`` (the rest of the batch is sampled by other processes): every draw is made for the whole batch from
    ``generator`` and this call keeps its rows, so each row gets the random numbers of a one-process run.
    Passed as the ``generator`` of :func:`~jukebox.prior.sampler.sample_autoregressive`."""

    generator: torch.Generator | None
    lo: int
    hi: int
    total: int
    first: int

    def __post_init__(self) -> None:
        if not 0 <= self.lo < self.hi <= self.total or self.first < 0:
            raise ValueError(f"bad row share {self.lo}..{self.hi} of {self.total} (first {self.first})")


def token_sampler(settings: LevelSettings, generator: torch.Generator | None = None,
                  rows: RowShare | None = None) -> Callable[[Tensor], Tensor]:
    """The draw of one token per row of logits [..., V] -> [...] that ``settings`` asks for, decided once (the
    sampler calls it for every token; nothing is checked there).

    Greedy settings take the argmax. Stochastic draws follow Jukebox: ``logits / temperature``, top-k/top-p
    filtering, then a categorical draw: ``draw="multinomial"`` as the original (normalised log-probabilities,
    ``multinomial`` with replacement, as ``torch.distributions.Categorical``: the same seeded samples), or ``"cdf"``
    (one uniform per row, inverse CDF; :func:`categorical_cdf`). Everything stays on the logits' device.
    ``rows``: the logits [hi - lo, V] are rows of a larger batch (:class:`RowShare`); the draw is made for the
    whole batch (other rows uniform) and these rows' tokens returned.
    """
    if settings.greedy:
        return lambda logits: logits.argmax(dim=-1)
    temperature, top_k, top_p = settings.temperature, settings.top_k, settings.top_p
    scale = temperature != 1.0  # dividing by 1 changes no bit, but costs a pass
    filtered = top_k > 0 or 0.0 < top_p < 1.0
    cdf = settings.draw == "cdf"

    def pick(logits: Tensor) -> Tensor:
        x = logits.float() / temperature if scale else logits.float()
        if filtered:
            x = _filter(x, top_k, top_p)
        if cdf:
            return categorical_cdf(x, generator)
        probs = torch.softmax(x - x.logsumexp(dim=-1, keepdim=True), dim=-1)
        flat = probs.reshape(-1, probs.shape[-1])
        return torch.multinomial(flat, 1, replacement=True, generator=generator).reshape(probs.shape[:-1])

    if rows is None:
        return pick

    def pick_shared_rows(logits: Tensor) -> Tensor:
        whole = logits.new_zeros((rows.total, *logits.shape[1:]), dtype=torch.float32)
        whole[rows.lo:rows.hi] = logits
        return pick(whole)[rows.lo:rows.hi]

    return pick_shared_rows


def draw_tokens(logits: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 0.0,
                generator: torch.Generator | None = None, draw: str = "multinomial") -> Tensor:
    """One token per row of logits [..., V] -> [...] (:func:`token_sampler` of these settings, checked here)."""
    settings = LevelSettings(temperature=temperature, top_k=top_k, top_p=top_p, draw=draw)
    return token_sampler(settings, generator)(logits)
