"""Reading the files a user hands us: only regular files, never more bytes than a limit.

A FIFO, a socket or a device (``/dev/zero``, ``/dev/stdin``) given where a model file, config, weight file or code
file belongs would hang a plain ``open`` or be read until memory runs out. :func:`open_regular` opens without
blocking (``O_NONBLOCK``) and refuses anything that is not a regular file before a byte is read;
:func:`read_bytes` and :func:`read_json` also refuse a file larger than the limit its kind may have. Every failure
is a one-line :class:`~jukebox.errors.JukeboxError` naming the file.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import struct
import zipfile
import zlib
from typing import IO, Any

import numpy as np

from .errors import JukeboxError

#: Largest JSON file (configs, model.json, labels, indexes) we read; real ones are a few kB to a few MB.
MAX_JSON_BYTES = 64 * 2**20

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def display(path: str | os.PathLike[str]) -> str:
    """``path`` as text that always prints: undecodable bytes of a file name appear as ``\\xNN``."""
    return os.fspath(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def os_error(path: str | os.PathLike[str], e: OSError, what: str = "file") -> JukeboxError:
    """A one-line error for an :class:`OSError` met while opening or reading ``path``."""
    if e.errno in (errno.EACCES, errno.EPERM):
        return JukeboxError(f"{display(path)}: permission denied; the {what} must be readable by this user "
                            "(ask its owner to run chmod a+r on it)")
    if e.errno == errno.ENOENT:
        return JukeboxError(f"{display(path)}: no such file")
    if e.errno == errno.ENXIO:  # a socket or a FIFO without a writer, opened without blocking
        return JukeboxError(f"{display(path)}: not a regular file; give the {what} itself")
    return JukeboxError(f"{display(path)}: cannot read the {what} ({e.strerror or e})")


def open_regular(path: str | os.PathLike[str], what: str = "file") -> IO[bytes]:
    """Open ``path`` for binary reading if, and only if, it is a regular file (symbolic links are followed).

    Never blocks: a FIFO is opened with ``O_NONBLOCK`` and refused by its ``fstat``, before anything is read.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise os_error(path, e, what) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise JukeboxError(f"{display(path)}: is {_kind(mode)}, not a regular file; give the {what} itself")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: str | os.PathLike[str], what: str = "file") -> int:
    """Refuse ``path`` unless it is a readable regular file; return its size in bytes.

    For readers that take a path (libsndfile, safetensors, torch): call this first so they never open a FIFO.
    """
    with open_regular(path, what) as f:
        return os.fstat(f.fileno()).st_size


def read_bytes(path: str | os.PathLike[str], max_bytes: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (checked before reading, and while reading)."""
    with open_regular(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise JukeboxError(f"{display(path)}: {_mb(size)} is larger than a {what} may be ({_mb(max_bytes)}); "
                               "is it the right file?")
        try:
            data = f.read(max_bytes + 1)
        except OSError as e:
            raise os_error(path, e, what) from None
    if len(data) > max_bytes:  # it grew while we read it
        raise JukeboxError(f"{display(path)}: larger than a {what} may be ({_mb(max_bytes)}); is it the right file?")
    return data


def read_text(path: str | os.PathLike[str], max_bytes: int, what: str = "file") -> str:
    """A regular UTF-8 text file of at most ``max_bytes``."""
    data = read_bytes(path, max_bytes, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise JukeboxError(f"{display(path)}: the {what} is not UTF-8 text") from None


def read_json(path: str | os.PathLike[str], what: str = "JSON file", max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse a regular JSON file of at most ``max_bytes``; a damaged file is a one-line error naming it."""
    data = read_bytes(path, max_bytes, what)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise JukeboxError(f"{display(path)}: not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as e:
        raise JukeboxError(f"{display(path)}: not valid JSON ({e})") from None
    except RecursionError:
        raise JukeboxError(f"{display(path)}: not valid JSON (nested too deeply)") from None


#: Most bytes of a codes .npz file, and of one ``level_N`` array in it (uncompressed): 256 MiB of int64 is 33.5 M
#: codes, 100 min of level-0 codes at 44.1 kHz.
MAX_CODES_FILE_BYTES = 2**30
MAX_CODES_ARRAY_BYTES = 2**28
#: Most items in one codes batch, and most members one codes archive may list.
MAX_CODES_BATCH = 1024
MAX_CODES_MEMBERS = 256
_LEVEL_MEMBER = re.compile(r"level_([0-9]{1,3})\.npy")
_READ_CHUNK = 2**24


def read_codes_npz(path: str | os.PathLike[str]) -> dict[int, np.ndarray]:
    """Read a codes .npz (arrays ``level_L`` of shape [T] or [B, T]) safely: no pickles, bounded memory.

    The zip directory is checked before anything is decompressed (the number of members, each ``level_L``
    member's uncompressed size); only ``level_L`` members are read (any other member is never decompressed),
    each after its .npy header (integer dtype, shape [T] or [B, T] with at most :data:`MAX_CODES_BATCH` items, a
    byte count that matches the directory) was checked. Returns {level: int64 array [B, T]}.
    """
    name = display(path)
    with open_regular(path, "codes file") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise JukeboxError(f"{name}: not a readable codes file (the file is empty)")
        if size > MAX_CODES_FILE_BYTES:
            raise JukeboxError(f"{name}: {_mb(size)} is larger than a codes file may be "
                               f"({_mb(MAX_CODES_FILE_BYTES)}); is it the right file?")
        try:
            n_members = _zip_member_count(f, size, name)
            if n_members is None or n_members > MAX_CODES_MEMBERS:
                raise JukeboxError(f"{name}: the archive lists {'65,535 or more' if n_members is None else n_members}"
                                   " members (a codes file has one per level); not a codes file")
            with zipfile.ZipFile(f) as z:
                codes = _read_levels(z, name)
        except JukeboxError:
            raise
        except MemoryError:
            raise JukeboxError(f"{name}: corrupt codes file (it asks for more memory than there is)") from None
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, NotImplementedError,
                RuntimeError, struct.error, OverflowError, TypeError, SyntaxError) as e:
            first = str(e).strip().splitlines()[0][:150] if str(e).strip() else type(e).__name__
            raise JukeboxError(f"{name}: not a readable codes file ({first})") from None
    if not codes:
        raise JukeboxError(f"{name}: no level_0/level_1/level_2 arrays found")
    return codes


def _zip_member_count(f: IO[bytes], size: int, name: str) -> int | None:
    """Members the archive's end record lists (read from its last 64 kB); None for a ZIP64 count."""
    tail_len = min(size, 22 + 65535)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise JukeboxError(f"{name}: not a readable codes file (not a .npz archive)")
    (count,) = struct.unpack("<H", tail[at + 10:at + 12])
    f.seek(0)
    return None if count == 0xFFFF else count


def _read_levels(z: zipfile.ZipFile, name: str) -> dict[int, np.ndarray]:
    codes: dict[int, np.ndarray] = {}
    for info in z.infolist():
        m = _LEVEL_MEMBER.fullmatch(info.filename)
        if m is None:
            continue  # not a codes array: never decompressed
        level, key = int(m.group(1)), info.filename[:-4]
        if level in codes:
            raise JukeboxError(f"{name}: {key} appears twice; not a codes file")
        if info.file_size > MAX_CODES_ARRAY_BYTES + 4096:
            raise JukeboxError(f"{name}: {key} is {_mb(info.file_size)} uncompressed, more than a codes array may "
                               f"be ({_mb(MAX_CODES_ARRAY_BYTES)})")
        with z.open(info) as member:
            codes[level] = _read_npy(member, info.file_size, f"{name}: {key}")
    return codes


def _read_npy(member: IO[bytes], stored: int, where: str) -> np.ndarray:
    """One .npy member ([T] or [B, T] integers) as int64 [B, T]; its header is checked before its data are read."""
    version = np.lib.format.read_magic(member)
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise JukeboxError(f"{where}: unsupported .npy version {version}")
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        shape, fortran, dtype = read_header(member, max_header_size=4096)
    except ValueError as e:  # numpy's own text would advise loading the file as a pickle: never
        why = "longer than a codes array's (4,096 bytes)" if "max_header_size" in str(e) or "large" in str(e) \
            else "damaged"
        raise JukeboxError(f"{where}: its .npy header is {why}; corrupt codes file") from None
    if dtype.hasobject or dtype.kind not in "iu":
        raise JukeboxError(f"{where} must hold integer codes, found {dtype}")
    if len(shape) not in (1, 2) or shape[-1] == 0:
        raise JukeboxError(f"{where} must have shape [T] or [batch, T], found {tuple(shape)}")
    if len(shape) == 2 and shape[0] > MAX_CODES_BATCH:
        raise JukeboxError(f"{where} holds a batch of {shape[0]:,} items; at most {MAX_CODES_BATCH} at a time")
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if nbytes != stored - member.tell():
        raise JukeboxError(f"{where}: its header says {tuple(shape)} {dtype} ({nbytes:,} bytes), but the archive "
                           f"holds {stored - member.tell():,}; corrupt codes file")
    flat = np.empty(count, dtype)
    view = memoryview(flat).cast("B")
    done = 0
    while done < nbytes:
        chunk = member.read(min(_READ_CHUNK, nbytes - done))
        if not chunk:
            raise JukeboxError(f"{where}: truncated; corrupt codes file")
        view[done:done + len(chunk)] = chunk
        done += len(chunk)
    member.read(1)  # reach the end, so that the archive checks the member's CRC
    arr = flat.reshape(shape, order="F" if fortran else "C").astype(np.int64, copy=False)
    return np.ascontiguousarray(arr[None] if arr.ndim == 1 else arr)


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n:,} bytes"
