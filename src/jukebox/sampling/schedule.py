"""Window schedules for sampling a level longer than the prior's context (pure functions, no torch)."""

from __future__ import annotations

from dataclasses import dataclass


def window_starts(total_tokens: int, n_ctx: int, hop: int) -> list[int]:
    """Start positions of the context windows that cover ``total_tokens`` with stride ``hop``.

    Windows have length ``n_ctx``; the last one is pulled back to end exactly at ``total_tokens`` so it keeps a
    full context (as Jukebox does). Requires ``total_tokens >= n_ctx`` and ``hop >= 1``.
    """
    if hop < 1:
        raise ValueError(f"hop must be >= 1, got {hop}")
    if total_tokens < n_ctx:
        raise ValueError(f"total_tokens {total_tokens} is shorter than the context {n_ctx}")
    starts = []
    start = 0
    while True:
        if start + n_ctx >= total_tokens:
            starts.append(total_tokens - n_ctx)
            break
        starts.append(start)
        start += hop
    return starts


@dataclass(frozen=True)
class WindowStep:
    """One sampling call: the window [start, start + length) of which the first ``known`` tokens exist."""

    start: int
    length: int
    known: int

    @property
    def new_tokens(self) -> int:
        return self.length - self.known


def plan_level(total_tokens: int, have_tokens: int, n_ctx: int, hop: int) -> list[WindowStep]:
    """Plan the sampling of one level from ``have_tokens`` already known tokens up to ``total_tokens``.

    Follows Jukebox's order: when the level is at least one context long, windows start at
    ``window_starts(total, n_ctx, hop)`` and each samples what is not known yet (windows that add nothing are
    skipped); a level shorter than one context is sampled in a single partial window.
    """
    if have_tokens >= total_tokens:
        return []
    steps: list[WindowStep] = []
    if total_tokens >= n_ctx:
        have = have_tokens
        for start in window_starts(total_tokens, n_ctx, hop):
            known = max(0, min(have, start + n_ctx) - start)
            if known >= n_ctx:
                continue
            steps.append(WindowStep(start, n_ctx, known))
            have = start + n_ctx
        return steps
    # Shorter than one context: one window from 0 (or a sliding one once the known part is long).
    if have_tokens < n_ctx - (total_tokens - have_tokens):
        return [WindowStep(0, total_tokens, have_tokens)]
    start = total_tokens - n_ctx
    return [WindowStep(start, n_ctx, have_tokens - start)]
