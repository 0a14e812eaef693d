"""Download OpenAI's released Jukebox files and import them into a model directory (``jukebox download-openai``).

Nothing here runs unless asked for explicitly: loading a model and sampling never touch the network.

Where the files come from (the addresses the original code publishes):

- checkpoints: ``5b/vqvae.pth.tar`` and ``5b/prior_level_{0,1}.pth.tar`` (shared by the three models) and
  ``{5b,5b_lyrics,1b_lyrics}/prior_level_2.pth.tar`` under ``https://openaipublic.azureedge.net/jukebox/models/``
  (the original's ``jukebox/hparams.py``), with the storage account behind that CDN
  (``https://openaipublic.blob.core.windows.net/jukebox/models/``, the original's earlier address) as a fallback;
- artist and genre id tables: ``jukebox/data/ids/v{2,3}_{artist,genre}_ids.txt`` of the original repository at
  a pinned commit, checked against their known sizes and SHA-256.

Both addresses can be replaced (``--base-url`` / ``$JUKEBOX_OPENAI_URL``, ``--ids-url`` / ``$JUKEBOX_OPENAI_IDS_URL``),
e.g. by a local mirror.

Each file is written to ``NAME.part`` beside its final name, with ``NAME.part.json`` remembering the address, the
announced size and the server's validator (ETag or Last-Modified). An interrupted transfer resumes with an HTTP
range request (``If-Range``: a file that changed on the server starts over), within the same run (a few retries)
or when the command is run again. A file gets its final name only once its size matches what the server announced
(and, for the id tables, their known size and checksum).
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..atomic import atomic_write_text
from ..errors import JukeboxError, UsageError

#: The released models this command knows.
RELEASES = ("5b", "5b_lyrics", "1b_lyrics")
#: Where the original publishes the checkpoints: its CDN, then the storage account behind it.
MODELS_URLS = (
    "https://openaipublic.azureedge.net/jukebox/models/",
    "https://openaipublic.blob.core.windows.net/jukebox/models/",
)
#: The original repository's commit whose id tables the released priors use.
IDS_COMMIT = "08efbbc1d4ed1a3cef96e08a931944c8b4d63bb3"
IDS_URL = f"https://raw.githubusercontent.com/openai/jukebox/{IDS_COMMIT}/jukebox/data/ids/"
MODELS_URL_ENV = "JUKEBOX_OPENAI_URL"
IDS_URL_ENV = "JUKEBOX_OPENAI_IDS_URL"
#: The original's id tables at IDS_COMMIT: name -> (bytes, SHA-256). v2 serves 5b, 5b_lyrics and the upsamplers,
#: v3 the 1b_lyrics top prior. Checked whenever they come from IDS_URL.
ID_TABLES: dict[str, tuple[int, str]] = {
    "v2_artist_ids.txt": (71676, "fce2ecc0c7b00838cf8cc90273609c5460fa1ec8d3211ce9f6546ed792feb001"),
    "v2_genre_ids.txt": (1216, "04d7c5e5f0002c74789ee2a72a1e33f11057eb6c183ed0cf8f4b140164197e48"),
    "v3_artist_ids.txt": (141064, "85ab98ca035945a917ec3d3e1f06bcd938767196281cfb8caecf058872a9e9ed"),
    "v3_genre_ids.txt": (9414, "f85f72dca1e6052da129041bb927e29eb143e5f1450951006565f4a8af6f31cb"),
}
IDS_FOLDER = "ids"
MANIFEST = "download.json"
#: Seconds to wait before retry k (k = 1, 2, ...): RETRY_WAIT_S * k.
RETRY_WAIT_S = 1.0
TIMEOUT_S = 60.0
CHUNK_BYTES = 1 << 20

Log = Callable[[str], None]


class DownloadError(JukeboxError):
    """A download that cannot complete: unreachable server, HTTP error, size mismatch, full disk."""


class _Retry(Exception):
    """A transient failure: the transfer may resume after a pause."""


@dataclass
class Remote:
    """One file to fetch: ``url`` -> ``dest`` (``local``, relative to the source folder); ``key`` is its path at
    the remote address, recorded in the source folder's manifest once complete."""

    url: str
    dest: Path
    local: str
    key: str
    size: int | None = None  # bytes, when known before the transfer (HEAD or the id-table list)
    sha256: str | None = None


def checkpoint_paths(name: str) -> dict[str, str]:
    """The original-layout file name -> its path under the models address, for release ``name``."""
    if name not in RELEASES:
        raise UsageError(f"unknown released model {name!r}; choose one of {', '.join(RELEASES)}")
    return {
        "vqvae.pth.tar": "5b/vqvae.pth.tar",
        "prior_level_0.pth.tar": "5b/prior_level_0.pth.tar",
        "prior_level_1.pth.tar": "5b/prior_level_1.pth.tar",
        "prior_level_2.pth.tar": f"{name}/prior_level_2.pth.tar",
    }


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _base(url: str, what: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"{what} {url!r} is not an http(s) address")
    return url if url.endswith("/") else url + "/"


# ----------------------------------------------------------------------------------------------- HTTP
def _open(url: str, method: str = "GET", headers: dict[str, str] | None = None,
          timeout: float = TIMEOUT_S) -> http.client.HTTPResponse:
    req = urllib.request.Request(url, method=method, headers={"User-Agent": f"jukebox/{__version__}",
                                                              **(headers or {})})
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - http(s) only, checked by _base


def _failure(url: str, e: BaseException) -> tuple[str, bool]:
    """A one-line description of a failed request, and whether trying again may help."""
    host = urllib.parse.urlsplit(url).netloc
    if isinstance(e, urllib.error.HTTPError):
        hint = " (check the address: --base-url / --ids-url)" if e.code in (403, 404) else ""
        return f"{url}: HTTP {e.code} {e.reason}{hint}", e.code >= 500 or e.code in (408, 429)
    if isinstance(e, urllib.error.URLError):
        reason = e.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return f"{host}: no answer within {TIMEOUT_S:.0f} s", True
        text = getattr(reason, "strerror", None) or str(reason)
        return f"cannot reach {host}: {text} (check the network connection or the address)", True
    if isinstance(e, (TimeoutError, socket.timeout)):
        return f"{host}: no answer within {TIMEOUT_S:.0f} s", True
    return f"{url}: connection failed ({type(e).__name__}: {e})", True


def _retrying(what: Callable[[], Any], url: str, retries: int) -> Any:
    """Call ``what`` until it succeeds, retrying transient request failures ``retries`` times."""
    for attempt in range(retries + 1):
        try:
            return what()
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            message, transient = _failure(url, e)
            if not transient or attempt == retries:
                raise DownloadError(message) from None
        time.sleep(RETRY_WAIT_S * (attempt + 1))
    raise AssertionError("unreachable")


def remote_size(url: str, retries: int = 3) -> int | None:
    """The size the server announces for ``url`` (a HEAD request), or None when it does not say."""

    def head() -> int | None:
        try:
            with _open(url, method="HEAD") as resp:
                length = resp.headers.get("Content-Length")
        except urllib.error.HTTPError as e:
            if e.code in (405, 501):  # no HEAD: the GET announces the size
                return None
            raise
        return int(length) if length and length.isdigit() else None

    return _retrying(head, url, retries)


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _parse_content_range(value: str | None) -> tuple[int, int | None] | None:
    m = _CONTENT_RANGE.fullmatch((value or "").strip())
    if m is None:
        return None
    return int(m.group(1)), (None if m.group(3) == "*" else int(m.group(3)))


# ------------------------------------------------------------------------------------------ one file
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            h.update(block)
    return h.hexdigest()


def _no_space(where: Path, need: int, free: int) -> DownloadError:
    return DownloadError(f"not enough disk space in {where}: {human_bytes(need)} needed, {human_bytes(free)} free; "
                         "free some space or choose another folder (-o / --source-dir)")


def free_bytes(path: Path) -> int:
    """Free bytes on the file system that holds ``path`` (or would hold it: the nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def _open_part(tmp: Path, append: bool) -> Any:
    """The ``.part`` file (the temporary name, renamed once its size checks out), for appending or anew."""
    return open(tmp, "ab" if append else "wb")  # noqa: SIM115 - closed by the caller's with-block


def download_file(remote: Remote, retries: int = 3, progress: bool = True, log: Log | None = None) -> int:
    """Fetch ``remote.url`` into ``remote.dest`` (resuming ``dest.part`` where one is left); return its size.

    Raises DownloadError (one line) when the server cannot be reached or answers with an error after ``retries``
    retries, when sizes or the checksum disagree, or when the disk is full.
    """
    dest = remote.dest
    part = dest.with_name(dest.name + ".part")
    state_path = dest.with_name(dest.name + ".part.json")
    dest.parent.mkdir(parents=True, exist_ok=True)
    state = _read_state(state_path, remote.url)
    if not state:
        part.unlink(missing_ok=True)
    for attempt in range(retries + 1):
        try:
            state = _transfer(remote, part, state_path, state, progress)
            break
        except _Retry as e:
            if attempt == retries:
                have = part.stat().st_size if part.exists() else 0
                kept = f"; {human_bytes(have)} kept in {part}" if have else ""
                raise DownloadError(f"{e}{kept}; run the same command again to resume") from None
            if log is not None:
                log(f"{e}; retrying ({attempt + 1} of {retries})")
        time.sleep(RETRY_WAIT_S * (attempt + 1))
    size = part.stat().st_size
    if remote.sha256 is not None and _sha256(part) != remote.sha256:
        part.unlink()
        state_path.unlink(missing_ok=True)
        raise DownloadError(f"{remote.url}: checksum mismatch (not the file the original published); "
                            "check --ids-url")
    os.replace(part, dest)
    state_path.unlink(missing_ok=True)
    return size


def _read_state(path: Path, url: str) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) and state.get("url") == url else {}


def _transfer(remote: Remote, part: Path, state_path: Path, state: dict[str, Any], progress: bool) -> dict[str, Any]:
    """One request: append what the server sends to ``part``; raise _Retry when the transfer stops early."""
    from tqdm import tqdm

    url = remote.url
    have = part.stat().st_size if part.exists() else 0
    headers: dict[str, str] = {}
    if have:
        headers["Range"] = f"bytes={have}-"
        validator = state.get("etag") or state.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    try:
        resp = _open(url, headers=headers)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have and state.get("size") == have:  # already complete
            return state
        if e.code == 416:  # our part no longer fits the remote file: start over
            part.unlink(missing_ok=True)
            raise _Retry(f"{url}: the server refused to resume at byte {have}") from None
        message, transient = _failure(url, e)
        if transient:
            raise _Retry(message) from None
        raise DownloadError(message) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        raise _Retry(_failure(url, e)[0]) from None
    with resp:
        if resp.status == 206:
            parsed = _parse_content_range(resp.headers.get("Content-Range"))
            if parsed is None or parsed[0] != have:
                part.unlink(missing_ok=True)
                raise _Retry(f"{url}: the server resumed at the wrong place; starting the file over")
            total = parsed[1]
        else:  # 200: the whole file (no range support, or the remote file changed)
            have = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        expected = remote.size if remote.size is not None else state.get("size")
        if expected is not None and total is not None and total != expected:
            part.unlink(missing_ok=True)
            state_path.unlink(missing_ok=True)
            raise DownloadError(f"{url}: size mismatch: the server now announces {total} bytes, expected "
                                f"{expected}; run the command again to start the file over")
        total = total if total is not None else expected
        state = {"url": url, "size": total, "etag": resp.headers.get("ETag"),
                 "last_modified": resp.headers.get("Last-Modified")}
        try:
            atomic_write_text(state_path, json.dumps(state))
        except OSError as e:
            raise _disk_error(part, e) from None
        if total is not None:
            free = free_bytes(part.parent)
            if free < total - have:
                raise _no_space(part.parent, total - have, free)
        with _open_part(part, append=have > 0) as f, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1000, desc=remote.dest.name,
                disable=not progress, file=sys.stderr, mininterval=0.5, leave=True) as bar:
            for chunk in _chunks(resp, url):
                try:
                    f.write(chunk)
                except OSError as e:
                    raise _disk_error(part, e) from None
                have += len(chunk)
                bar.update(len(chunk))
    got = part.stat().st_size
    if total is not None and got < total:
        raise _Retry(f"{url}: the transfer stopped at {got} of {total} bytes")
    if total is not None and got > total:
        part.unlink()
        state_path.unlink(missing_ok=True)
        raise DownloadError(f"{url}: the server sent {got} bytes but announced {total}")
    return state


def _chunks(resp: http.client.HTTPResponse, url: str) -> Iterator[bytes]:
    """The response body in chunks; a dropped connection is a transient failure."""
    while True:
        try:
            chunk = resp.read(CHUNK_BYTES)
        except (http.client.HTTPException, OSError) as e:
            raise _Retry(f"{url}: the connection dropped ({type(e).__name__})") from None
        if not chunk:
            return
        yield chunk


def _disk_error(path: Path, e: OSError) -> DownloadError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DownloadError(f"the disk holding {path.parent} is full; free some space and run the same command "
                             "again to resume")
    return DownloadError(f"could not write {path}: {e.strerror or e}")


# ------------------------------------------------------------------------------------- a release
def _read_manifest(source: Path) -> dict[str, str]:
    try:
        data = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}


def _write_manifest(source: Path, files: dict[str, str]) -> None:
    atomic_write_text(source / MANIFEST, json.dumps({"files": files}, indent=2) + "\n")


def plan_release(name: str, source: str | Path, models_url: str | None = None, ids_url: str | None = None,
                 retries: int = 3) -> list[Remote]:
    """The files release ``name`` needs in ``source`` (original layout plus ``ids/``), with sizes.

    Files already complete in ``source`` (listed in its manifest) are not asked about again. Without
    ``models_url`` (and $JUKEBOX_OPENAI_URL) the original's addresses are tried in turn.
    """
    source = Path(source)
    paths = checkpoint_paths(name)
    env_models = os.environ.get(MODELS_URL_ENV) or None
    bases = [_base(u, "--base-url") for u in ([models_url or env_models] if (models_url or env_models)
                                               else list(MODELS_URLS))]
    ids_base = _base(ids_url or os.environ.get(IDS_URL_ENV) or IDS_URL, "--ids-url")
    done = _read_manifest(source)

    tables = [Remote(ids_base + t, source / IDS_FOLDER / t, f"{IDS_FOLDER}/{t}", f"ids/{t}") for t in ID_TABLES]
    if ids_base == IDS_URL:
        for r in tables:
            r.size, r.sha256 = ID_TABLES[r.dest.name]
    checkpoints = [Remote("", source / local, local, key) for local, key in paths.items()]
    for r in checkpoints:  # a source folder holds one release: never mix another model's top prior in
        recorded = done.get(r.local)
        if r.dest.exists() and recorded is not None and recorded != r.key:
            raise DownloadError(f"{r.dest} holds {recorded}, not {r.key}; choose another --source-dir for "
                                f"{name} or delete that file")

    def complete(r: Remote) -> bool:
        return r.dest.exists() and done.get(r.local) == r.key

    pending = [r for r in checkpoints if not complete(r)]
    base = bases[0]
    if pending:
        errors = []
        for candidate in bases:  # the first address that answers serves them all
            try:
                pending[0].size = remote_size(candidate + pending[0].key, retries if candidate == bases[-1] else 0)
                base = candidate
                break
            except DownloadError as e:
                errors.append(str(e))
        else:
            raise DownloadError("; ".join(errors))
    for r in checkpoints:
        r.url = base + r.key
        if complete(r):
            r.size = r.dest.stat().st_size
        elif r.size is None:
            r.size = remote_size(r.url, retries)
        if r.dest.exists() and not complete(r) and r.size is not None and r.dest.stat().st_size != r.size:
            raise DownloadError(f"{r.dest} has {r.dest.stat().st_size} bytes but {r.url} has {r.size}; "
                                "delete it and run the command again")
    return checkpoints + tables


def check_disk_space(remotes: list[Remote], source: Path, out_dir: Path, import_bytes: int) -> None:
    """Raise DownloadError (before anything is fetched) when the downloads plus the import would not fit."""
    download = 0
    for r in remotes:
        if r.size is not None and not r.dest.exists():
            part = r.dest.with_name(r.dest.name + ".part")
            download += max(0, r.size - (part.stat().st_size if part.exists() else 0))

    def device(p: Path) -> int:
        p = p.absolute()
        while not p.exists():
            p = p.parent
        return p.stat().st_dev

    if device(source) == device(out_dir):
        need, free = download + import_bytes, free_bytes(out_dir)
        if free < need:
            raise _no_space(out_dir.absolute().parent, need, free)
        return
    for where, need in ((source, download), (out_dir, import_bytes)):
        free = free_bytes(where)
        if free < need:
            raise _no_space(where.absolute(), need, free)


def fetch_release(remotes: list[Remote], source: Path, retries: int = 3, progress: bool = True,
                  log: Log = print) -> None:
    """Download every file of ``remotes`` that is not complete yet, recording each in the source manifest."""
    source.mkdir(parents=True, exist_ok=True)
    done = _read_manifest(source)
    for r in remotes:
        if r.dest.exists() and done.get(r.local) == r.key:
            continue
        if r.dest.exists() and r.size is not None and r.dest.stat().st_size == r.size and (
                r.sha256 is None or _sha256(r.dest) == r.sha256):
            pass  # a complete file from an earlier run that stopped before recording it
        elif r.dest.exists():
            raise DownloadError(f"{r.dest} is not the file at {r.url}; delete it and run the command again")
        else:
            size = download_file(r, retries=retries, progress=progress, log=log)
            if not progress:
                log(f"{r.local}: {human_bytes(size)}")
        done[r.local] = r.key
        try:
            _write_manifest(source, done)
        except OSError as e:
            raise _disk_error(source / MANIFEST, e) from None


def download_openai(
    name: str,
    out_dir: str | Path,
    source_dir: str | Path | None = None,
    keep_source: bool = False,
    force: bool = False,
    models_url: str | None = None,
    ids_url: str | None = None,
    retries: int = 3,
    progress: bool = True,
    log: Log = print,
) -> Any:
    """Download release ``name`` (5b, 5b_lyrics or 1b_lyrics) and import it into ``out_dir``; return its ModelDir.

    The original files go to ``source_dir`` (default: ``<out_dir>.download`` beside it) and are deleted after a
    successful import unless ``keep_source``; after a failure they stay, so running again resumes.
    """
    from .openai_import import import_openai

    if retries < 0:
        raise UsageError("--retries must be 0 or more")
    out = Path(out_dir)
    source = Path(source_dir) if source_dir is not None else out.with_name(out.name + ".download")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise JukeboxError(f"{out} already exists and is not empty; pass --force to overwrite it")
    if source.resolve() == out.resolve():
        raise UsageError("--source-dir must differ from MODEL_DIR")
    remotes = plan_release(name, source, models_url=models_url, ids_url=ids_url, retries=retries)
    checkpoints = [r for r in remotes if r.dest.parent == source]
    sizes = [r.size for r in checkpoints]
    total = sum(s for s in sizes if s is not None)
    known = "" if all(s is not None for s in sizes) else " (some sizes not announced)"
    log(f"{name}: {len(checkpoints)} checkpoint files, {human_bytes(total)}{known}, into {source}")
    check_disk_space(remotes, source, out, import_bytes=total)
    fetch_release(remotes, source, retries=retries, progress=progress, log=log)

    existed, was_empty = out.exists(), not out.exists() or not any(out.iterdir())
    try:
        model_dir = import_openai(source, out, preset=name, ids_dir=source / IDS_FOLDER, force=force, log=log)
    except (JukeboxError, OSError) as e:
        if not existed:  # leave no half-imported model directory behind
            shutil.rmtree(out, ignore_errors=True)
        elif was_empty:
            for child in out.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        message = str(e) if isinstance(e, JukeboxError) else f"{getattr(e, 'filename', '') or out}: {e.strerror or e}"
        raise JukeboxError(f"{message} (the downloaded files stay in {source})") from None
    if keep_source:
        log(f"kept the original files in {source}")
    else:
        remove_source(source, remotes)
    return model_dir


def remove_source(source: Path, remotes: list[Remote]) -> None:
    """Delete the downloaded files (and only those), then the folders they leave empty."""
    for r in remotes:
        for p in (r.dest, r.dest.with_name(r.dest.name + ".part"), r.dest.with_name(r.dest.name + ".part.json")):
            p.unlink(missing_ok=True)
    (source / MANIFEST).unlink(missing_ok=True)
    for folder in (source / IDS_FOLDER, source):
        try:
            folder.rmdir()
        except OSError:
            pass
