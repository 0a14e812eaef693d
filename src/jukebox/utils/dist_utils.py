"""``setup_dist_logging()``: logging and device setup, under the original's module name.

Single process by default; under ``torchrun`` (RANK/WORLD_SIZE set) it also joins the process group.
"""

from __future__ import annotations

import logging
import os

import torch


def setup_dist_logging(level: int = logging.INFO) -> tuple[int, int, torch.device]:
    """Configure logging and pick the device. Returns (rank, local_rank, device)."""
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    logging.basicConfig(level=level if rank == 0 else logging.WARNING,
                        format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and torch.distributed.is_available() and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, local_rank, device
