"""Parallel upsampling: many windows of an upsampler level sampled in one batch.

The original samples a level strictly window after window: each window of ``n_ctx`` tokens starts ``hop`` tokens
after the previous one and continues its last ``n_ctx - hop`` tokens, so a level of ``L`` tokens needs about
``L / hop`` sequential windows. Upsamplers are conditioned mostly on the level above, which is known everywhere,
so most of that order is not needed. Here a level is sampled in two phases of batched windows:

1. *anchor* windows of ``n_ctx`` tokens, ``n_ctx + hop`` apart, all at once; each conditioned on its part of the
   level above and its labels (the first one continues the level's known tokens, if any);
2. *gap* windows, all at once: each fills the ``hop`` tokens between two anchors, continuing the last
   ``n_ctx - hop`` tokens of the anchor before it (the same overlap the sequential order gives every window).

Sequential steps per level drop from ``~L / hop * hop`` tokens to ``n_ctx + hop``, whatever the length; the price
is one seam per anchor where a gap's end meets the next anchor's cold start. With ``passes=1`` the level is
tiled by independent windows (one phase of ``n_ctx`` steps; a seam at every window). Levels too short for two
windows are sampled in the original order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..distributed import Ranks
from ..prior.logits import RowShare
from ..prior.settings import LevelSettings
from .schedule import WindowStep, plan_level

__all__ = ["plan_parallel", "sample_level_parallel"]


def plan_parallel(total_tokens: int, have_tokens: int, n_ctx: int, hop: int, passes: int = 2,
                  ) -> list[list[WindowStep]]:
    """Phases of windows (each phase one batch; a phase only continues tokens of earlier phases) that sample
    tokens ``have_tokens .. total_tokens - 1``. Falls back to the sequential plan (one window per phase) when
    the level is shorter than one window past its known part."""
    if have_tokens >= total_tokens:
        return []
    if passes not in (1, 2):
        raise ValueError(f"passes must be 1 or 2, got {passes}")
    if not 1 <= hop <= n_ctx:
        raise ValueError(f"hop must be in [1, n_ctx], got {hop}")
    overlap = n_ctx - hop
    first = max(0, have_tokens - overlap)
    if total_tokens < n_ctx or first + n_ctx > total_tokens:
        return [[step] for step in plan_level(total_tokens, have_tokens, n_ctx, hop)]
    gap = hop if passes == 2 else 0
    anchors = [WindowStep(first, n_ctx, have_tokens - first)]
    gaps: list[WindowStep] = []
    end = first + n_ctx
    while end < total_tokens:
        rest = total_tokens - end
        if rest >= n_ctx + gap:  # a whole period: a gap window, then the next anchor
            if gap:
                gaps.append(WindowStep(end + gap - n_ctx, n_ctx, n_ctx - gap))
            anchors.append(WindowStep(end + gap, n_ctx, 0))
            end += gap + n_ctx
        elif rest >= n_ctx:  # last anchor pulled back to end the level, a shorter gap before it
            g = rest - n_ctx
            if g:
                gaps.append(WindowStep(end + g - n_ctx, n_ctx, n_ctx - g))
            anchors.append(WindowStep(total_tokens - n_ctx, n_ctx, 0))
            end = total_tokens
        else:  # the tail continues the last anchor
            gaps.append(WindowStep(total_tokens - n_ctx, n_ctx, n_ctx - rest))
            end = total_tokens
    return [phase for phase in (anchors, gaps) if phase]


@torch.no_grad()
def sample_level_parallel(prior, codes: dict[int, Tensor], level: int, total_tokens: int,
                          labels: Callable[[int, int], Tensor | None], settings: LevelSettings,
                          generator: torch.Generator | None = None,
                          progress: Callable[[int, int, int], None] | None = None, passes: int = 2,
                          max_batch_size: int | None = None, ranks: Ranks | None = None) -> Tensor:
    """Extend ``codes[level]`` [B, have] to [B, total_tokens] with batched windows (module docstring).

    ``settings`` is the level's :class:`~jukebox.prior.settings.LevelSettings` (its ``max_batch_size``
    bounds samples per call in the sequential order; here ``max_batch_size`` bounds windows x samples per call,
    default: a whole phase in one call). ``ranks``: several processes share every call's rows and gather them
    after each phase (:mod:`jukebox.distributed`). Returns the new codes tensor.
    """
    z = codes[level]
    n, have = z.shape
    n_ctx = prior.n_ctx
    hop = max(1, int(settings.hop_fraction * n_ctx))
    phases = plan_parallel(total_tokens, have, n_ctx, hop, passes)
    out = torch.zeros(n, total_tokens, dtype=torch.long, device=z.device)
    out[:, :have] = z
    todo = total_tokens - have
    done = 0
    down = prior.cond_downsample
    upper = codes.get(level + 1) if down is not None else None
    if down is not None and upper is None:
        raise ValueError(f"level {level} needs the codes of level {level + 1}")
    for phase in phases:
        rows = [(step, b) for step in phase for b in range(n)]  # window-major, samples inside
        limit = max_batch_size or len(rows)
        if ranks is not None:
            mine, new = torch.zeros_like(out, dtype=torch.bool), torch.zeros_like(out, dtype=torch.bool)
        for lo in range(0, len(rows), limit):
            part = whole = rows[lo:lo + limit]
            gen, real = generator, True
            if ranks is not None:  # this process's rows of the call; the draws stay those of the whole call
                a, b, real = ranks.share(len(whole))
                gen = RowShare(generator, a, b, len(whole), min(step.known for step, _ in whole))
                part = whole[a:b]
                for step, i in whole:
                    new[i, step.start + step.known:step.start + n_ctx] = True
                ranks.count(level, len(part) if real else 0)
            steps = list(dict.fromkeys(step for step, _ in part))
            z_cond = None
            if down is not None:
                pieces = []
                for step, b in part:
                    zc = upper[b:b + 1, step.start // down:(step.start + n_ctx) // down]
                    if zc.shape[1] != n_ctx // down:
                        raise ValueError(f"level {level + 1} is too short to condition window "
                                         f"[{step.start}, {step.start + n_ctx}) of level {level}")
                    pieces.append(zc)
                z_cond = torch.cat(pieces, 0)
            ys = {step: labels(level, step.start) for step in steps}
            y = None
            if ys[steps[0]] is not None:
                y = torch.cat([ys[step][b:b + 1] for step, b in part], 0)
            width = max(step.known for step, _ in part)
            prime = None
            if width:
                prime = torch.zeros(len(part), width, dtype=torch.long, device=z.device)
                for i, (step, b) in enumerate(part):
                    prime[i, :step.known] = out[b, step.start:step.start + step.known]
            window = prior.sample(len(part), z_cond, y, settings, prime=prime,
                                  prime_lengths=[step.known for step, _ in part] if width else None,
                                  sample_tokens=n_ctx, generator=gen)
            for i, (step, b) in enumerate(part if real else []):
                out[b, step.start + step.known:step.start + n_ctx] = window[i, step.known:]
                if ranks is not None:
                    mine[b, step.start + step.known:step.start + n_ctx] = True
            done += sum(step.new_tokens for step, _ in whole)
            if progress is not None:
                progress(level, min(done // n, todo), todo)
        if ranks is not None:
            out = ranks.merge(out, mine, new)
    return out
