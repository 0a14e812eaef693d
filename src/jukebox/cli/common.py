"""Small helpers shared by the subcommands: model and device arguments, output checks, code files."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..errors import JukeboxError, UsageError


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


def load_codes_file(path: str | Path) -> dict[int, np.ndarray]:
    """Read a codes .npz (arrays ``level_L`` of shape [T] or [B, T]) safely (no pickles).

    Returns {level: int64 array [B, T]}.
    """
    path = Path(path)
    if not path.exists():
        raise JukeboxError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError, EOFError, KeyError) as e:
        first = str(e).strip().splitlines()[0][:150] if str(e).strip() else type(e).__name__
        raise JukeboxError(f"{path}: not a readable codes file ({first})") from None
    except MemoryError:
        raise JukeboxError(f"{path}: corrupt codes file (it asks for more memory than there is)") from None
    except Exception as e:  # zipfile.BadZipFile and friends from a corrupt archive
        raise JukeboxError(f"{path}: corrupt codes file ({type(e).__name__})") from None
    codes: dict[int, np.ndarray] = {}
    for key, arr in arrays.items():
        if not key.startswith("level_"):
            continue
        try:
            level = int(key[len("level_"):])
        except ValueError:
            continue
        if arr.dtype.kind not in "iu":
            raise JukeboxError(f"{path}: {key} must hold integer codes, found {arr.dtype}")
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[-1] == 0:
            raise JukeboxError(f"{path}: {key} must have shape [T] or [batch, T], found {arr.shape}")
        codes[level] = arr.astype(np.int64)
    if not codes:
        raise JukeboxError(f"{path}: no level_0/level_1/level_2 arrays found")
    return codes


def check_codes_range(codes: np.ndarray, n_bins: int, where: str) -> None:
    if codes.size and (codes.min() < 0 or codes.max() >= n_bins):
        raise JukeboxError(f"{where}: codes must lie in [0, {n_bins}), found [{codes.min()}, {codes.max()}]; "
                           "were they made with another model?")
