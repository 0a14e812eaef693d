"""A sampling run: what is asked (:class:`SamplingRequest`) and its folder (:class:`RunFolder`), the one format
``jukebox sample`` and the web page write, read and resume.

::

    OUT_DIR/
      item_{i}.wav          the audio of item i, decoded from the lowest sampled level
      codes.npz             ``level_L`` int64 arrays [n_samples, T_L]; rewritten after each level (resume)
      metadata.json         {"format": "jukebox-run", "version": 2, "status": "running" | "done", "request",
                            "model", "sample_rate", "started", "levels_done", then "level", "settings", "timings",
                            "outputs", "finished"}
      alignment.json        lyric models: each character's time per item
      alignment_{i}.png     lyric models: the alignment matrix of item i

Every file is written atomically, so an interrupted run leaves a consistent folder that ``--resume`` continues
(metadata.json of version 1, without ``format`` and ``version``, is read the same way). :func:`api_call` is the
one place a request's mode becomes a call of the public API.
"""

from __future__ import annotations

import dataclasses
import fcntl
import io
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_bytes, atomic_write_text
from .errors import JukeboxError, UsageError
from .fileio import read_codes_npz, read_json
from .loudness import DEFAULT_LUFS

#: ``metadata.json``'s format name and version (version 1 had neither field).
RUN_FORMAT = "jukebox-run"
RUN_VERSION = 2
CODES_FILE = "codes.npz"
METADATA_FILE = "metadata.json"
ALIGNMENT_FILE = "alignment.json"
#: What a run can do: sample from nothing, continue an audio prompt, continue or upsample saved codes.
MODES = ("ancestral", "primed", "continue", "upsample")
#: Sampling settings a request may override (the names :meth:`jukebox.api.Jukebox.sampling_settings` takes).
SETTING_FIELDS = ("temperature", "top_k", "top_p", "hop_fraction", "seed", "chunk_size", "max_batch_size",
                  "guidance", "label_guidance", "decode", "draw", "upsample_mode", "max_windows", "weights")


@dataclass
class SamplingRequest:
    """What one run samples: the mode, the labels (shared, or one item each), the lengths, the prompt or codes and
    the sampling settings it overrides (None: the model's own). JSON-ready as a flat object (``to_dict``).

    ``mode``: ``ancestral``; ``primed`` (continue the audio file ``prompt``); ``continue`` or ``upsample`` the
    codes file ``codes`` (``codes_levels``: the levels of it to use, default all). ``items``: one {artist, genre,
    lyrics[, total_seconds][, bpm]} per sample instead of the shared labels. Settings that vary by level take a
    number, a list by level or a {level: value} mapping (see :mod:`jukebox.sampling.settings`)."""

    mode: str = "ancestral"
    artist: str = "unknown"
    genre: str = "unknown"
    lyrics: str = ""
    items: list[dict[str, Any]] | None = None
    n_samples: int = 1
    seconds: float | None = None
    total_seconds: float | None = None
    bpm: float | None = None
    levels: list[int] | str | None = None  # None: the model's default levels; "all": every level
    prompt: str | None = None
    prompt_seconds: float | None = None
    codes: str | None = None
    codes_levels: list[int] | None = None
    loudness: float | None = DEFAULT_LUFS
    alignment: bool = True
    temperature: Any = None
    top_k: Any = None
    top_p: Any = None
    hop_fraction: Any = None
    seed: int | None = None
    chunk_size: int | None = None
    max_batch_size: int | None = None
    guidance: Any = None
    label_guidance: Any = None
    decode: Any = None
    draw: Any = None
    upsample_mode: str | None = None
    max_windows: Any = None
    weights: Any = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode == "primed" and not self.prompt:
            raise UsageError("primed sampling needs a prompt (an audio file)")
        if self.mode in ("continue", "upsample") and not self.codes:
            raise UsageError(f"{self.mode} needs codes (a codes.npz file)")
        if self.seconds is None and self.mode != "upsample":
            raise UsageError("the number of seconds to sample is required")
        if self.items is not None:
            if not self.items:
                raise UsageError("items is empty")
            self.n_samples = len(self.items)
        if not isinstance(self.n_samples, int) or isinstance(self.n_samples, bool) or self.n_samples < 1:
            raise UsageError(f"n_samples must be an integer >= 1, got {self.n_samples!r}")

    def overrides(self) -> dict[str, Any]:
        """The sampling settings this request overrides, for :meth:`jukebox.api.Jukebox.sampling_settings`."""
        return {name: getattr(self, name) for name in SETTING_FIELDS if getattr(self, name) is not None}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (flat: the settings beside the labels and lengths)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SamplingRequest:
        """Rebuild from :meth:`to_dict`, or from the request of a version-1 ``metadata.json`` (its per-level lists
        of one value mean every level, longer ones are by level). Every field's type is checked (a damaged or
        hand-edited request is a one-line :class:`~jukebox.errors.JukeboxError` naming the field); the sampling
        settings' values are checked where they are resolved, by the settings object."""
        if not isinstance(data, Mapping):
            raise JukeboxError("a sampling request must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in known}
        for name, value in fields.items():
            _check_field(name, value)
        for name in ("temperature", "top_k", "top_p", "hop_fraction"):
            value = fields.get(name)
            if isinstance(value, list):
                fields[name] = value[0] if len(value) == 1 else dict(enumerate(value))
        return cls(**fields)


_TEXT_FIELDS = ("mode", "artist", "genre", "lyrics", "prompt", "codes", "upsample_mode")
_NUMBER_FIELDS = ("seconds", "total_seconds", "bpm", "prompt_seconds", "loudness")
_INT_FIELDS = ("n_samples", "seed", "chunk_size", "max_batch_size")
_ITEM_TEXT = ("artist", "genre", "lyrics")
_ITEM_NUMBERS = ("total_seconds", "bpm")


def _check_field(name: str, value: Any) -> None:
    """Refuse a request field of the wrong type (from a damaged ``metadata.json``): a one-line error."""
    def bad(what: str) -> JukeboxError:
        return JukeboxError(f"request.{name} must be {what}, got {json.dumps(value, default=str)[:60]}")

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def integer(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if value is None and name not in ("mode", "artist", "genre", "lyrics", "n_samples", "alignment"):
        return
    if name in _TEXT_FIELDS and not isinstance(value, str):
        raise bad("a string")
    if name in _NUMBER_FIELDS and not number(value):
        raise bad("a finite number")
    if name in _INT_FIELDS and not integer(value):
        raise bad("an integer")
    if name == "alignment" and not isinstance(value, bool):
        raise bad("true or false")
    if name == "levels" and value == "all":
        pass
    elif name in ("levels", "codes_levels") and not (
            isinstance(value, list) and value and all(integer(v) and 0 <= v < 16 for v in value)):
        raise bad("a list of levels" + (" or 'all'" if name == "levels" else ""))
    if name == "items":
        if not isinstance(value, list) or not value:
            raise bad("a list of items")
        for item in value:
            if not isinstance(item, dict) or not set(item) <= {*_ITEM_TEXT, *_ITEM_NUMBERS}:
                raise bad("a list of {artist, genre, lyrics} objects")
            if not all(isinstance(item.get(k, ""), str) for k in _ITEM_TEXT) or not all(
                    item.get(k) is None or number(item[k]) for k in _ITEM_NUMBERS):
                raise bad("a list of items with text labels and finite numbers")


#: The lock file a run holds (``flock``) while it writes into its folder; hidden, so never one of the outputs.
LOCK_FILE = ".jukebox-run.lock"


class RunFolder:
    """The folder of one run (module docstring): its metadata, its codes after each level, its outputs.

    A run first :meth:`claim` s the folder: it creates a new folder exclusively (two runs into the same new folder:
    the second fails) and holds a lock on it until :meth:`release` (a second run into a folder in use, even with
    ``--force`` or ``--resume``, fails in one line); the lock goes with the process, so a killed run leaves nothing
    that blocks ``--resume``. :meth:`abandon` removes what a failed run made before it saved any level."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.metadata: dict[str, Any] = {}
        self._lock: Any = None
        self._created = False
        self._had_metadata = False

    def claim(self, force: bool = False, resume: bool = False) -> None:
        """Take the folder for this run (see the class docstring): a new folder is created exclusively; an
        existing one must be empty unless ``force`` or ``resume``; another run holding it is a one-line error."""
        if self._lock is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.mkdir()
            self._created = True
        except FileExistsError:
            if not self.path.is_dir():
                raise JukeboxError(f"{self.path} exists and is not a folder; choose another output folder") from None
            if not (force or resume) and any(p.name != LOCK_FILE for p in self.path.iterdir()):
                raise JukeboxError(f"{self.path} already exists and is not empty; pass --resume to continue it or "
                                   "--force") from None
        except OSError as e:
            raise JukeboxError(f"could not create {self.path}: {e.strerror or e}") from None
        self._had_metadata = self.metadata_path.exists()
        try:
            lock = open(self.path / LOCK_FILE, "a+b")  # noqa: SIM115 - held until release()
        except OSError as e:
            raise JukeboxError(f"could not create {self.path / LOCK_FILE}: {e.strerror or e}") from None
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(lock.fileno()).st_ino != os.stat(self.path / LOCK_FILE).st_ino:
                raise OSError("the lock file was replaced: another run released it just now")
        except OSError:
            lock.close()
            self._created = False  # the folder is the other run's now
            raise JukeboxError(f"{self.path}: another jukebox run is writing into this folder; wait for it to "
                               "finish or choose another output folder") from None
        self._lock = lock

    def release(self) -> None:
        """Let go of the folder: the lock file is removed while still locked (a run that opened it meanwhile sees
        that the name no longer leads to its file, and fails rather than share the folder)."""
        if self._lock is not None:
            (self.path / LOCK_FILE).unlink(missing_ok=True)
            self._lock.close()
            self._lock = None

    def abandon(self) -> None:
        """After a failure before any level was saved: remove the metadata this run wrote and, where this run
        created the folder and nothing else is in it, the folder; then :meth:`release`. A run that saved a level
        keeps its folder for ``--resume``."""
        try:
            if self._lock is not None and not self.metadata.get("levels_done"):
                if not self._had_metadata:
                    self.metadata_path.unlink(missing_ok=True)
                if self._created and {p.name for p in self.path.iterdir()} <= {LOCK_FILE}:
                    self.release()
                    self.path.rmdir()
        except OSError:
            pass
        finally:
            self.release()

    @property
    def metadata_path(self) -> Path:
        return self.path / METADATA_FILE

    @property
    def codes_path(self) -> Path:
        return self.path / CODES_FILE

    def read(self) -> dict[str, Any]:
        """The folder's ``metadata.json`` (a one-line error when it is missing or damaged)."""
        if not self.metadata_path.is_file():
            raise JukeboxError(f"{self.path}: nothing to resume (no {METADATA_FILE})")
        try:  # a regular file of at most 64 MB; deep nesting, bad UTF-8 and bad JSON are one line each
            meta = read_json(self.metadata_path, "run's metadata", 64 * 2**20)
        except JukeboxError as e:
            raise JukeboxError(f"{e}; the run's metadata is corrupt; cannot resume") from None
        if not isinstance(meta, dict) or meta.get("format", RUN_FORMAT) != RUN_FORMAT:
            raise JukeboxError(f"{self.metadata_path}: not the metadata of a jukebox run")
        version = meta.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool):
            raise JukeboxError(f"{self.metadata_path}: damaged (version must be an integer); cannot resume")
        if version > RUN_VERSION:
            raise JukeboxError(f"{self.metadata_path}: written by a newer jukebox (run format version "
                               f"{meta['version']}); update jukebox to resume it")
        self.metadata = meta
        return meta

    def resume_state(self) -> tuple[SamplingRequest, dict[int, np.ndarray] | None]:
        """The request of an interrupted run and the codes it saved (None before its first level)."""
        meta = self.read()
        if "request" not in meta:
            raise JukeboxError(f"{self.metadata_path}: damaged (no request); cannot resume")
        try:
            request = SamplingRequest.from_dict(meta["request"])
        except (JukeboxError, TypeError, ValueError) as e:
            raise JukeboxError(f"{self.metadata_path}: damaged ({e}); cannot resume") from None
        done = meta.get("levels_done", [])
        if not isinstance(done, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in done):
            raise JukeboxError(f"{self.metadata_path}: damaged (levels_done must be a list of levels); cannot resume")
        if not isinstance(meta.get("model", ""), str):
            raise JukeboxError(f"{self.metadata_path}: damaged (model must be a path); cannot resume")
        codes = load_codes_file(self.codes_path) if self.codes_path.exists() else None
        return request, codes

    @property
    def done(self) -> bool:
        return self.metadata.get("status") == "done"

    def start(self, request: SamplingRequest, model: Any, **extra: Any) -> None:
        """Create the folder and write ``metadata.json`` of a starting run (``extra``: more facts to record)."""
        if self._lock is None:
            self.path.mkdir(parents=True, exist_ok=True)
        kept = {k: self.metadata[k] for k in ("levels_done",) if k in self.metadata}
        stored = request.to_dict()
        for name in ("prompt", "codes"):  # absolute, so that --resume works from any working directory
            if stored.get(name):
                stored[name] = absolute(stored[name])
        self.metadata = {"format": RUN_FORMAT, "version": RUN_VERSION, "status": "running",
                         "request": stored, "model": absolute(model.model_dir.path),
                         "sample_rate": model.sample_rate, "started": now(), **extra, **kept}
        self.write()

    def level_done(self, level: int, codes: Mapping[int, Any]) -> None:
        """Save the codes so far and note the level (what ``--resume`` continues from)."""
        save_codes(self.codes_path, codes)
        self.metadata.setdefault("levels_done", []).append(level)
        self.write()

    def finish(self, model: Any, gen: Any) -> dict[str, Any]:
        """Write the outputs of a finished :class:`~jukebox.api.Generation` (status ``done``)."""
        return write_outputs(self.path, model, gen, self.metadata)

    def write(self, **fields: Any) -> None:
        """Update ``metadata.json`` with ``fields``."""
        self.metadata.update(fields)
        write_json(self.metadata_path, self.metadata)


#: ``progress(level, tokens_done, tokens_total)``
ProgressFn = Callable[[int, int, int], None]


def sample(model: Any, request: SamplingRequest, settings: Any = None, resume_codes: Mapping[int, Any] | None = None,
           progress: ProgressFn | None = None,
           on_level_done: Callable[[int, dict[int, Any]], None] | None = None) -> Any:
    """Sample ``request`` with ``model`` (a :class:`~jukebox.api.Jukebox`) through its public API and return the
    :class:`~jukebox.api.Generation`. ``settings``: the resolved :class:`~jukebox.sampling.settings.SamplingSettings`
    (default: the model's own with the request's overrides). ``resume_codes``: the codes an interrupted run of
    this request saved; the run continues from them."""
    call, kwargs = api_call(model, request, settings, resume_codes, progress, on_level_done)
    return call(**kwargs)


def api_call(model: Any, request: SamplingRequest, settings: Any = None,
             resume_codes: Mapping[int, Any] | None = None, progress: ProgressFn | None = None,
             on_level_done: Callable[[int, dict[int, Any]], None] | None = None,
             ) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The public API call that samples ``request`` (the one place a request's mode becomes ``generate``,
    ``continue_`` or ``upsample``) and its keyword arguments, for :func:`sample` and :func:`run`."""
    import torch

    if settings is None:
        settings = model.sampling_settings(**request.overrides())
    common: dict[str, Any] = dict(settings=settings, levels=request.levels, progress=progress,
                                  on_level_done=on_level_done, alignment=request.alignment,
                                  loudness=request.loudness, total_seconds=request.total_seconds,
                                  artist=request.artist, genre=request.genre, lyrics=request.lyrics,
                                  items=request.items)
    tempo = dict(bpm=request.bpm, n_samples=request.n_samples)
    mode = request.mode
    if resume_codes is not None:
        codes = {int(k): torch.as_tensor(np.asarray(v)) for k, v in resume_codes.items()}
        if mode == "upsample":
            return model.upsample, dict(codes=codes, **common)
        return model.continue_, dict(codes=codes, seconds=request.seconds, **tempo, **common)
    if mode == "ancestral":
        return model.generate, dict(seconds=request.seconds, **tempo, **common)
    if mode == "primed":
        from .audio import load_audio

        audio, _ = load_audio(request.prompt, sample_rate=model.sample_rate)
        return model.continue_, dict(audio=torch.from_numpy(audio), seconds=request.seconds,
                                     prompt_seconds=request.prompt_seconds, **tempo, **common)
    loaded = load_codes_file(request.codes)
    if request.codes_levels is not None:
        missing = sorted(set(request.codes_levels) - set(loaded))
        if missing:
            raise UsageError(f"{request.codes} has no level(s) {missing} to {mode}")
        loaded = {lvl: loaded[lvl] for lvl in request.codes_levels}
    codes = {k: torch.from_numpy(v) for k, v in loaded.items()}
    if mode == "continue":
        return model.continue_, dict(codes=codes, seconds=request.seconds, prompt_seconds=request.prompt_seconds,
                                     **tempo, **common)
    return model.upsample, dict(codes=codes, **common)


def run(model: Any, request: SamplingRequest, folder: RunFolder, settings: Any = None,
        resume_codes: Mapping[int, Any] | None = None, progress: ProgressFn | None = None,
        on_level_done: Callable[[int, dict[int, Any]], None] | None = None, **extra: Any) -> Any:
    """Sample ``request`` into ``folder``: its metadata first (``extra`` recorded in it), the codes after every
    level, then the outputs (:meth:`RunFolder.finish`). Returns the :class:`~jukebox.api.Generation`."""
    if settings is None:
        settings = model.sampling_settings(**request.overrides())  # bad settings: an error before any output
    folder.start(request, model, **extra)

    def level_done(level: int, codes: dict[int, Any]) -> None:
        folder.level_done(level, codes)
        if on_level_done is not None:
            on_level_done(level, codes)

    call, kwargs = api_call(model, request, settings, resume_codes, progress, level_done)
    gen = call(**kwargs)
    folder.finish(model, gen)
    return gen


def absolute(path: str | Path) -> str:
    """``path`` made absolute (not resolving links), as a run's metadata stores it."""
    return os.path.abspath(os.fspath(path))


def load_codes_file(path: str | Path) -> dict[int, np.ndarray]:
    """Read a codes .npz (arrays ``level_L`` of shape [T] or [B, T]) safely: {level: int64 array [B, T]}
    (see :func:`jukebox.fileio.read_codes_npz`)."""
    return read_codes_npz(path)


def save_codes(path: str | Path, codes: Mapping[int, Any]) -> None:
    """Write codes {level: [B, T] tensor or array} as ``level_L`` int64 arrays (empty levels left out)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"level_{lvl}": np.asarray(_numpy(c), dtype=np.int64)
                                for lvl, c in sorted(codes.items()) if c.shape[1] > 0})
    atomic_write_bytes(path, buf.getvalue())


def write_json(path: str | Path, data: Any) -> None:
    """``data`` as indented UTF-8 JSON (anything JSON lacks written as its ``str``), atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def now() -> str:
    """The local time as metadata records it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def write_outputs(out: Path, model: Any, gen: Any, metadata: dict[str, Any]) -> dict[str, Any]:
    """Write a finished :class:`~jukebox.api.Generation` into the run folder ``out``: codes, one wav per item,
    the lyric alignment (lyric models) and ``metadata`` completed with the settings, timings and outputs (status
    ``done``). Returns the metadata written."""
    from .audio import save_audio

    save_codes(out / CODES_FILE, gen.codes)
    written = [CODES_FILE, METADATA_FILE]
    for i in range(gen.audio.shape[0]):
        save_audio(gen.audio[i], out / f"item_{i}.wav", gen.sample_rate)
        written.append(f"item_{i}.wav")
    if gen.alignments is not None:
        from .sampling.alignment import alignment_json, alignment_png

        seconds_per_token = model.hop_lengths[model.top_level] / model.sample_rate
        items = []
        for i, align in enumerate(gen.alignments):
            lyrics = clean_lyrics(model, gen.settings["items"][i]["lyrics"])
            items.append({"item": i, **alignment_json(align, lyrics, seconds_per_token)})
            atomic_write_bytes(out / f"alignment_{i}.png", alignment_png(align))
            written.append(f"alignment_{i}.png")
        write_json(out / ALIGNMENT_FILE, {"items": items})
        written.append(ALIGNMENT_FILE)
    metadata.update(
        format=RUN_FORMAT, version=RUN_VERSION, status="done", level=gen.level, settings=gen.settings,
        timings=[{"level": r.level, "tokens": r.tokens, "seconds": round(r.seconds, 3),
                  "tokens_per_second": round(r.tokens_per_second, 1)} for r in gen.reports],
        outputs=sorted(written),  # this run's files only: an earlier run's extra items (--force) are not listed
        finished=now())
    write_json(out / METADATA_FILE, metadata)
    return metadata


def clean_lyrics(model: Any, lyrics: str) -> str:
    """``lyrics`` as the model's top prior reads them (its lyric vocabulary's cleaning)."""
    labeller = model.labeller(model.top_level)
    if labeller is None:
        return lyrics
    return labeller.vocab.lyric_vocab.clean(lyrics)


def _numpy(codes: Any) -> np.ndarray:
    return codes.cpu().numpy() if hasattr(codes, "cpu") else np.asarray(codes)
