"""Sampling spread over several processes (one per GPU), started with ``torchrun``.

``torchrun --nproc-per-node N -m jukebox sample ...`` (or a script of the API under torchrun, after
:func:`init_from_env`) shares each level's work: the items of a batch, and the windows of an upsampler level in
parallel upsampling, are split into N contiguous shares of every batched call; each process samples its rows and
the rows are gathered after every phase. Every row gets the random numbers a one-process run gives it: each call's
draws are made for the whole call and each process keeps its rows (:class:`~jukebox.prior.logits.RowShare`), so
with the same seed the codes equal a one-process run's (on GPUs up to the last-bit differences that matrix
products of another batch size may give). A process whose share of a call is empty samples one row of it anyway
and discards it, to keep its random stream in step.

Rank 0 writes the output; every process returns the whole result.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .errors import UsageError

__all__ = ["Ranks", "current_ranks", "init_from_env", "share_of"]


@dataclass
class Ranks:
    """This process's place among ``world`` sampling processes, and the rows it sampled per level."""

    rank: int
    world: int
    #: level -> rows (window x item) this process sampled (shadow rows not counted).
    work: dict[int, int] = field(default_factory=dict)

    def share(self, total: int) -> tuple[int, int, bool]:
        """``(lo, hi, real)``: this process's rows of a call of ``total`` rows; ``real`` False when its share is
        empty and it samples row 0 only to keep its random stream in step (the result is discarded)."""
        lo, hi = share_of(total, self.rank, self.world)
        return (lo, hi, True) if hi > lo else (0, 1, False)

    def count(self, level: int, rows: int) -> None:
        self.work[level] = self.work.get(level, 0) + rows

    def merge(self, out: Tensor, mine: Tensor, new: Tensor) -> Tensor:
        """``out`` [B, T] with every process's rows: ``mine`` [B, T] (bool) marks the positions this process
        sampled, ``new`` those sampled by any process in this phase (each by exactly one)."""
        import torch.distributed as dist

        part = torch.where(mine, out, torch.zeros_like(out))
        dist.all_reduce(part)
        return torch.where(new, part, out)

    def gather_work(self) -> dict[int, list[int]]:
        """{level: rows sampled by each rank} (every process calls it)."""
        import torch.distributed as dist

        everyone: list[dict[int, int] | None] = [None] * self.world
        dist.all_gather_object(everyone, dict(self.work))
        levels = sorted({lvl for w in everyone for lvl in (w or {})}, reverse=True)
        return {lvl: [int((w or {}).get(lvl, 0)) for w in everyone] for lvl in levels}

    def broadcast_seed(self, seed: int | None) -> int:
        """Rank 0's seed on every process (a fresh random one when ``seed`` is None)."""
        import torch.distributed as dist

        box = [seed if seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())]
        dist.broadcast_object_list(box, src=0)
        return int(box[0])


def share_of(total: int, rank: int, world: int) -> tuple[int, int]:
    """Rows ``lo .. hi - 1`` of ``total`` for ``rank`` of ``world``: contiguous, sizes differing by at most one."""
    base, extra = divmod(total, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def current_ranks() -> Ranks | None:
    """The sampling ranks of an initialised process group of more than one process, else None."""
    dist = sys.modules.get("torch.distributed")  # not imported: no group (and no import cost for one process)
    if dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return Ranks(dist.get_rank(), dist.get_world_size())
    return None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise UsageError(f"environment variable {name}={value!r} is not an integer") from None


def init_from_env(device: torch.device) -> torch.device:
    """Join the ``torchrun`` process group (``WORLD_SIZE`` > 1: nccl on CUDA, gloo on a CPU) and return this
    process's device (``cuda:LOCAL_RANK`` for a CUDA device without an index). One process: nothing is done."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return device
    local = _env_int("LOCAL_RANK", _env_int("RANK", 0))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local % max(1, torch.cuda.device_count()))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    import torch.distributed as dist

    if not dist.is_initialized():
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", **kwargs)
    return device
