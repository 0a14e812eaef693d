"""Small helpers shared by the subcommands: model and device arguments, output checks, code files (read by
:func:`jukebox.runs.load_codes_file`)."""

from __future__ import annotations

import argparse
import errno
from pathlib import Path

import numpy as np
import torch

from ..errors import JukeboxError, UsageError
from ..fileio import display
from ..runs import load_codes_file as load_codes_file  # re-exported: the codes files every command reads


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when available)")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA GPU is available; use --device cpu")
    return dev


def output_path(path: str | Path, force: bool, suffixes: tuple[str, ...] | None = None) -> Path:
    """Validate an output file path: known suffix, existing file only with --force."""
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise UsageError(f"{path}: output must end with one of {', '.join(suffixes)}")
    if path.exists() and not force:
        raise JukeboxError(f"{path} already exists; pass --force to overwrite it")
    if path.is_dir():
        raise JukeboxError(f"{path} is a folder; give a file name")
    return path


def check_codes_range(codes: np.ndarray, n_bins: int, where: str) -> None:
    if codes.size and (codes.min() < 0 or codes.max() >= n_bins):
        raise JukeboxError(f"{where}: codes must lie in [0, {n_bins}), found [{codes.min()}, {codes.max()}]; "
                           "were they made with another model?")


OUT_OF_MEMORY = "out of memory; try a smaller --n-samples, fewer seconds or a smaller model"
_ALLOCATOR_FAILURES = ("can't allocate memory", "out of memory", "cannot allocate memory")


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is a failed allocation: Python's MemoryError, torch's OutOfMemoryError (CUDA), or the
    RuntimeError torch's CPU allocator raises (``DefaultCPUAllocator: can't allocate memory``)."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(s in text for s in _ALLOCATOR_FAILURES)


def os_error_line(e: OSError) -> str:
    """One line for an OSError that reached the command line: the file (printable), then what went wrong."""
    where = f"{display(e.filename)}: " if getattr(e, "filename", None) else ""
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"{where}permission denied"
    return f"{where}{e.strerror or e}"
