"""The level-by-level sampling pipeline: top prior, then each upsampler, window by window.

It mirrors Jukebox's order exactly (so greedy runs reproduce the original's codes): for each level from the top
down, the level's length in tokens is ``sample_length // hop``; windows of the prior's context start at
:func:`~jukebox.sampling.schedule.window_starts` with stride ``hop_fraction * n_ctx``; each window is sampled
conditioned on the tokens already known in it, the upper level's codes under it (upsamplers) and the labels for
its position (offset and lyric window follow the window).

Priors are obtained through a ``load(level)`` callable and released after their level, so only one level's
weights need to be in memory at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from ..distributed import Ranks
from ..prior.logits import RowShare
from ..prior.sampler import CPU_DECODE_THREADS
from ..prior.settings import LevelSettings
from .parallel import sample_level_parallel
from .schedule import plan_level
from .settings import DEFAULT_HOP_FRACTIONS, UPSAMPLE_MODES, SamplingSettings

__all__ = ["DEFAULT_HOP_FRACTIONS", "UPSAMPLE_MODES", "LevelSettings", "LevelReport", "sample_level", "sample_levels"]


#: Builds the label vector y [B, label_width] for a window starting at ``start`` tokens of ``level``
#: (or returns None for priors without labels).
LabelFn = Callable[[int, int], "Tensor | None"]
#: ``progress(level, tokens_done, tokens_total)``.
ProgressFn = Callable[[int, int, int], None]


@dataclass
class LevelReport:
    level: int
    tokens: int
    seconds: float
    #: Processor time of this process (all its threads) over the level: equals ``seconds`` on one quiet core.
    cpu_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("inf")


def level_tokens(sample_length: int, hop: int) -> int:
    if sample_length % hop:
        raise ValueError(f"sample_length {sample_length} is not a multiple of the level's hop {hop}")
    return sample_length // hop


@torch.no_grad()
def sample_level(
    prior,
    codes: dict[int, Tensor],
    level: int,
    total_tokens: int,
    labels: LabelFn,
    settings: LevelSettings,
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
    ranks: Ranks | None = None,
) -> Tensor:
    """Extend ``codes[level]`` [B, have] to [B, total_tokens] with ``prior``; returns the new codes tensor.
    ``ranks``: several processes share the items of every call and gather them at the end
    (:mod:`jukebox.distributed`); a process with no item in any call skips the level's work."""
    z = codes[level]
    n, have = z.shape
    n_ctx = prior.n_ctx
    hop = max(1, int(settings.hop_fraction * n_ctx))
    steps = plan_level(total_tokens, z.shape[1], n_ctx, hop)
    todo = sum(s.new_tokens for s in steps)
    done = 0
    mbs = settings.max_batch_size
    if ranks is not None:
        shares = [(b, *ranks.share(min(n, b + mbs) - b)) for b in range(0, n, mbs)]
        mine = torch.zeros(n, total_tokens, dtype=torch.bool, device=z.device)
        for b, lo, hi, real in shares:
            mine[b + lo:b + hi, have:] = real
        if not any(real for *_, real in shares):
            steps = []
            z = torch.cat([z, z.new_zeros(n, total_tokens - have)], dim=1)
    for step in steps:
        known = z[:, step.start:step.start + step.known]
        z_cond = None
        if prior.cond_downsample is not None:
            upper = codes.get(level + 1)
            if upper is None:
                raise ValueError(f"level {level} needs the codes of level {level + 1}")
            down = prior.cond_downsample
            end = step.start + n_ctx
            z_cond = upper[:, step.start // down:end // down]
            if z_cond.shape[1] != n_ctx // down:
                raise ValueError(f"level {level + 1} is too short to condition window [{step.start}, {end}) "
                                 f"of level {level}")
        y = labels(level, step.start)
        pieces = []
        for b in range(0, n, settings.max_batch_size):
            sl = slice(b, b + settings.max_batch_size)
            gen, count = generator, min(n, b + mbs) - b
            if ranks is not None:  # this process's items of the call; the draws stay those of the whole call
                _, lo, hi, real = shares[b // mbs]
                sl, gen = slice(b + lo, b + hi), RowShare(generator, lo, hi, count, step.known)
                ranks.count(level, hi - lo if real else 0)
            on_token = None
            if progress is not None and b == 0:  # token-level progress from the first sub-batch
                def on_token(i: int, _todo: int, base: int = done) -> None:
                    progress(level, min(base + i, todo), todo)
            piece = prior.sample(known[sl].shape[0], None if z_cond is None else z_cond[sl],
                                 None if y is None else y[sl], settings, prime=known[sl],
                                 sample_tokens=step.length, generator=gen, progress=on_token)
            if ranks is not None:
                whole = piece.new_zeros(count, piece.shape[1])
                if real:
                    whole[lo:hi] = piece
                piece = whole
            pieces.append(piece)
        window = torch.cat(pieces, dim=0)
        z = torch.cat([z[:, :step.start + step.known], window[:, step.known:]], dim=1)
        done += step.new_tokens
        if progress is not None:
            progress(level, done, todo)
    if ranks is not None:
        new = torch.zeros_like(mine)
        new[:, have:] = True
        z = ranks.merge(z, mine, new)
    return z


def sample_levels(
    load: Callable[[int], object],
    codes: dict[int, Tensor],
    levels: Sequence[int],
    sample_length: int,
    labels: LabelFn,
    settings: SamplingSettings | Mapping[int, LevelSettings],
    hop_lengths: Sequence[int],
    generator: torch.Generator | Callable[[int], torch.Generator | None] | None = None,
    progress: ProgressFn | None = None,
    on_level_done: Callable[[int, dict[int, Tensor]], None] | None = None,
    release: Callable[[int, object], None] | None = None,
    upsample_mode: str | None = None,
    ranks: Ranks | None = None,
) -> tuple[dict[int, Tensor], list[LevelReport]]:
    """Sample ``levels`` from the highest down. ``codes`` maps level -> LongTensor [B, T_l] (T_l may be 0).

    ``settings``: a :class:`~jukebox.sampling.settings.SamplingSettings` (or a {level: LevelSettings} mapping).
    ``generator`` is one RNG for all levels or a function giving each level its own (so a resumed run draws
    the same numbers as an uninterrupted one). ``on_level_done(level, codes)`` runs after each level (the CLI
    saves its work there), ``release`` after a level's prior is no longer needed. ``upsample_mode`` (default: the
    settings', else ``sequential``): ``sequential`` (the original's window order) or ``parallel`` (upsampler
    levels in batched windows, :mod:`jukebox.sampling.parallel`; the top level always keeps the original order).
    ``ranks``: the processes that share each level's rows (:mod:`jukebox.distributed`; every one gets all codes).
    """
    if not isinstance(settings, SamplingSettings):
        settings = SamplingSettings(dict(settings))
    if upsample_mode is not None:
        settings = settings.replace(upsample_mode=upsample_mode)
    upsample_mode = settings.upsample_mode
    codes = dict(codes)
    reports: list[LevelReport] = []
    cpu = all(c.device.type == "cpu" for c in codes.values())
    with _intra_op_threads(CPU_DECODE_THREADS if cpu else 0):
        for level in sorted(levels, reverse=True):
            total = level_tokens(sample_length, hop_lengths[level])
            if codes[level].shape[1] >= total:
                codes[level] = codes[level][:, :total]
                continue
            prior = load(level)
            t0, c0 = time.perf_counter(), time.process_time()
            before = codes[level].shape[1]
            gen = generator(level) if callable(generator) else generator
            if upsample_mode == "parallel" and prior.cond_downsample is not None:
                codes[level] = sample_level_parallel(prior, codes, level, total, labels, settings[level], gen, progress,
                                                     max_batch_size=settings[level].max_windows, ranks=ranks)
            else:
                codes[level] = sample_level(prior, codes, level, total, labels, settings[level], gen, progress,
                                            ranks=ranks)
            if codes[level].is_cuda:
                torch.cuda.synchronize(codes[level].device)
            reports.append(LevelReport(level, (total - before) * codes[level].shape[0], time.perf_counter() - t0,
                                       time.process_time() - c0))
            if release is not None:
                release(level, prior)
            del prior
            if on_level_done is not None:
                on_level_done(level, codes)
    return codes, reports


@contextmanager
def _intra_op_threads(n: int) -> Iterator[None]:
    """At most ``n`` intra-op threads inside (0: unchanged). On a CPU the whole pipeline (conditioners, prefills,
    token steps) runs on one: its operations are small, and an operation split over cores waits for the slowest,
    which stalls for milliseconds whenever another process holds a core."""
    threads = torch.get_num_threads()
    if n and threads > n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
