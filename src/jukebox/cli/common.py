"""Small helpers shared by the subcommands: model and device arguments, output checks, code files (read by
:func:`jukebox.runs.load_codes_file`), batch files, printing names and file names, out-of-memory and OS errors."""

from __future__ import annotations

import argparse
import codecs
import errno
import io
import json
import math
import sys
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.text import check_lyrics_length
from ..errors import JukeboxError, UsageError
from ..fileio import display, read_text
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
    if dev.type not in ("cpu", "cuda", "mps"):  # e.g. meta: tensors without data, nothing could be computed
        raise UsageError(f"--device {name} cannot run a model; use cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA GPU is available; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: there are {torch.cuda.device_count()} CUDA GPU(s) (cuda:0 ...)")
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


def _escape_unencodable(e: UnicodeError) -> tuple[str, int]:
    """Codec error handler: an undecodable byte of a file name (a ``surrogateescape`` surrogate) as ``\\xNN``,
    anything else as ``backslashreplace`` writes it."""
    if not isinstance(e, UnicodeEncodeError):
        raise e
    out = []
    for ch in e.object[e.start:e.end]:
        o = ord(ch)
        out.append(f"\\x{o - 0xDC00:02x}" if 0xDC80 <= o <= 0xDCFF else
                   f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out), e.end


codecs.register_error("jukebox.escape", _escape_unencodable)


def use_tolerant_output() -> None:
    """Print what cannot be encoded (a file name that is not valid UTF-8) as ``\\xNN`` instead of failing after
    the work is done: standard output and error get that error handler where they were strict or
    ``backslashreplace``."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors in ("strict", "backslashreplace"):
            stream.reconfigure(errors="jukebox.escape")


#: Characters a name is never printed with: controls (ESC starts terminal escape sequences), surrogates,
#: private-use and unassigned code points, line and paragraph separators, and the bidirectional overrides.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Cn", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: unsafe characters (see above) and backslashes are escaped as Python
    writes them (``\\x1b``, ``\\u202e``, ``\\\\``); everything else, accents, CJK and emoji included, is kept."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch in _BIDI_CONTROLS or unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
        else:
            out.append(ch)
    return "".join(out)


#: Largest batch file read (64 MB).
MAX_BATCH_BYTES = 64 * 2**20
BATCH_TEXT_KEYS = ("artist", "genre", "lyrics")
BATCH_NUMBER_KEYS = {"total_seconds": "a number of seconds", "bpm": "a tempo in BPM"}


def read_batch_file(path: str | Path) -> list[dict[str, Any]]:
    """Read a batch file (``--batch FILE.jsonl``): one JSON object per line (see :func:`parse_batch_lines`).

    The file must be a regular UTF-8 file of at most :data:`MAX_BATCH_BYTES`; any problem is a :class:`UsageError`.
    """
    try:
        text = read_text(path, MAX_BATCH_BYTES, "batch file")
    except UsageError:
        raise
    except JukeboxError as e:
        raise UsageError(str(e)) from None
    return parse_batch_lines(text, display(path))


def parse_batch_lines(text: str, where: str = "batch") -> list[dict[str, Any]]:
    """Items of a JSONL batch: {artist, genre, lyrics (strings), total_seconds, bpm (numbers)} per line.

    Lines are split at ``\\n`` only (``\\r\\n`` too): U+2028, U+2029 and U+0085 are text inside a string, not line
    ends. ``artist``, ``genre`` and ``lyrics`` must be strings (``null``, numbers and lists are refused, never turned
    into text such as ``"None"``); ``total_seconds`` and ``bpm`` finite numbers or ``null`` (not given). Blank lines
    are skipped; an error names the line (``where:N: ...``) and is a :class:`UsageError`.
    """
    items = []
    for n, line in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"{where}:{n}: not valid JSON ({e.msg})") from None
        except RecursionError:
            raise UsageError(f"{where}:{n}: not valid JSON (nested too deeply)") from None
        if not isinstance(obj, dict) or not set(obj) <= {*BATCH_TEXT_KEYS, *BATCH_NUMBER_KEYS}:
            raise UsageError(f"{where}:{n}: expected an object with artist, genre, lyrics (and optionally "
                             "total_seconds, bpm)")
        item: dict[str, Any] = {}
        for key in BATCH_TEXT_KEYS:
            if key not in obj:
                continue
            value = obj[key]
            if not isinstance(value, str):
                raise UsageError(f"{where}:{n}: {key} must be a string, got {_json_kind(value)}")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise UsageError(f"{where}:{n}: the {key} is not valid Unicode text (a lone surrogate); pass "
                                 "UTF-8") from None
            item[key] = value
        check_lyrics_length(item.get("lyrics", ""), f"{where}:{n}: the lyrics")
        for key, what in BATCH_NUMBER_KEYS.items():
            value = obj.get(key)
            if value is None:
                continue
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            try:
                number = float(value) if ok else math.nan
            except OverflowError:
                number = math.nan
            if not math.isfinite(number):
                raise UsageError(f"{where}:{n}: {key} must be {what}, got {_json_kind(value)}")
            item[key] = number
        items.append(item)
    if not items:
        raise UsageError(f"{where}: no items")
    return items


def _json_kind(value: Any) -> str:
    kinds = {type(None): "null", bool: "true/false", list: "a list", dict: "an object", str: "a string"}
    return kinds.get(type(value), f"the number {value!r:.20}")
