"""Atomic file writes: write to a temporary name in the same folder, fsync, then rename."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import JukeboxError

# The umask at import; :func:`current_umask` reads the live one from /proc where it can (setting it to read it,
# as os.umask does, is not thread-safe).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def current_umask() -> int:
    """The process's umask, read from /proc/self/status (Linux), else the one at import."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _UMASK


def file_mode() -> int:
    """The mode a new file gets: 0666 less the umask, as for any file a program creates."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on failure removed.

    No half-written file ever appears under the final name. ``replace=False`` publishes only where nothing is at
    ``path`` at that moment (a hard link, which fails on an existing name, instead of a rename): a file another
    program or run wrote there while this one worked is kept, and the write fails with a one-line
    :class:`OutputExistsError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{_short_name(path)}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _write_error(path, e) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600 files, and a writer may replace the file with another 0600 one (safetensors does): the
        # output gets the mode of any new file, 0666 less the umask, so that others can read a model we made.
        os.chmod(tmp_path, file_mode())
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        _publish(tmp_path, path, replace)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        raise _write_error(path, e) from None
    except Exception as e:
        tmp_path.unlink(missing_ok=True)
        hidden = os.fspath(tmp_path)
        if hidden not in str(e):
            raise
        # a writer's message names the hidden temporary: name the output instead
        text = str(e).replace(hidden, _shown(path))
        if isinstance(e, JukeboxError):
            raise JukeboxError(text) from None
        raise JukeboxError(f"could not write {_shown(path)}: {_first_line(text)}") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else "unknown error"


class OutputExistsError(JukeboxError):
    """An output appeared at its path while it was being made, and was not replaced (no ``--force``)."""


#: errno values of a file system that has no hard links (publishing then claims the name with O_EXCL instead).
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


def _publish(tmp: Path, path: Path, replace: bool) -> None:
    """Move the finished temporary ``tmp`` onto ``path``: a rename, or (``replace=False``) a link that fails when
    ``path`` exists, then the temporary's removal."""
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists(path) from None
    except OSError as e:
        if e.errno not in _NO_LINKS:
            raise
        try:  # no hard links here: claim the name exclusively, then rename onto the claimed (empty) file
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise _exists(path) from None
        os.replace(tmp, path)
        return
    tmp.unlink(missing_ok=True)


def _exists(path: Path) -> OutputExistsError:
    return OutputExistsError(f"{_shown(path)} appeared while this command ran (another program or run wrote it); "
                             "it was kept; pass --force to replace it")


def _shown(path: Path) -> str:
    return os.fspath(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _short_name(path: Path) -> str:
    """``path``'s name cut to 200 bytes, for a temporary name beside it that stays within the 255-byte limit."""
    return os.fsdecode(os.fsencode(path.name)[:200])


def _write_error(path: Path, e: OSError) -> JukeboxError:
    shown = _shown(path)
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "permission denied" if e.errno != errno.EROFS else "read-only file system"
        return JukeboxError(f"could not write {shown}: {why}; choose a folder this user may write to")
    return JukeboxError(f"could not write {shown}: {e.strerror or e}")


def atomic_write_bytes(path: str | Path, data: bytes, replace: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (``replace=False``: never over a file that is there; see
    :func:`atomic_path`)."""
    with atomic_path(path, replace) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str, replace: bool = True) -> None:
    """``text`` as UTF-8 by :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"), replace)


def swap_in_folder(tmp: str | Path, folder: str | Path) -> None:
    """Replace ``folder`` by the completed folder ``tmp`` with two renames; the old one is removed afterwards.

    At every moment either the old or the new folder is complete under ``folder`` (or under ``folder.old``).
    """
    tmp, folder = Path(tmp), Path(folder)
    old = folder.with_name(folder.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def check_can_write(path: str | Path, force: bool) -> Path:
    """Refuse to overwrite an existing output unless ``force``; return the path."""
    path = Path(path)
    if path.exists() and not force:
        raise JukeboxError(f"{path} already exists; pass --force to overwrite it")
    return path
