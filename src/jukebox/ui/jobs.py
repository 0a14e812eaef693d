"""The web page's job queue and results folder, in plain Python (no web framework).

A :class:`JobQueue` owns one loaded model and one worker thread: jobs run one at a time, in the order they
were submitted. Each job writes into ``results_dir/<job id>/`` the same files ``jukebox sample`` writes
(``item_{i}.wav``, ``codes.npz``, ``metadata.json``, ``alignment.json``/``alignment_{i}.png`` for lyric models)
plus ``spectrogram_{i}.png`` and, for an uploaded prompt, ``prompt.wav``. Results are addressed only by the
generated job id and a file name from a fixed pattern (:func:`result_path`); nothing a user types or uploads
becomes a path. Cancelling is cooperative: the progress callback raises :class:`JobCancelled` once the
job's flag is set, so a running job stops at its next token.
"""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..api import check_loudness
from ..atomic import atomic_write_bytes
from ..errors import JukeboxError, UsageError
from ..loudness import DEFAULT_LUFS
from ..runs import CODES_FILE, METADATA_FILE, RUN_FORMAT, RUN_VERSION, RunFolder, SamplingRequest, sample, write_json

ACTIONS = ("generate", "continue", "upsample")
STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
FINISHED = ("done", "failed", "cancelled", "interrupted")
#: Job ids: creation time plus 48 random bits, e.g. ``20250131-142501-9f3a2c01d4e7``.
JOB_ID_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{12}$")
#: The only file names a result folder serves.
RESULT_FILE_RE = re.compile(r"^(?:item_\d{1,3}\.wav|spectrogram_\d{1,3}\.png|alignment_\d{1,3}\.png|alignment\.json"
                            r"|codes\.npz|metadata\.json|prompt\.wav)$")
#: Upload types (what libsndfile decodes); the content is checked by decoding it, the suffix only screens.
UPLOAD_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")
DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_PROMPT_SECONDS = 600.0


def default_results_dir() -> Path:
    """``$JUKEBOX_RESULTS_DIR`` or ``~/jukebox-results``."""
    env = os.environ.get("JUKEBOX_RESULTS_DIR")
    return Path(env).expanduser() if env else Path.home() / "jukebox-results"


class JobCancelled(JukeboxError):
    """Raised inside a running job (from its progress callback) once the job was cancelled."""


def new_job_id() -> str:
    """A fresh, unguessable job id (time-ordered)."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(6)


def result_path(results_dir: str | Path, job_id: str, name: str) -> Path:
    """The file ``name`` of job ``job_id`` under ``results_dir``, after checking both against fixed patterns.

    Raises :class:`~jukebox.errors.UsageError` for a malformed id or name, and
    :class:`~jukebox.errors.JukeboxError` when the file does not exist.
    """
    if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
        raise UsageError("malformed result id")
    if not isinstance(name, str) or not RESULT_FILE_RE.fullmatch(name):
        raise UsageError("no such result file")
    path = Path(results_dir) / job_id / name
    if not path.is_file():
        raise JukeboxError(f"result {job_id} has no {name}")
    return path


@dataclass
class JobRequest:
    """What the page asks for. ``source`` names a previous result (its id) for ``continue``/``upsample``; those
    take the source's labels (artist, genre, lyrics) and number of samples, and upsample also its lengths.
    ``loudness``: the level in LUFS the audio is brought to (None: the raw decode)."""

    action: str = "generate"
    artist: str = "unknown"
    genre: str = "unknown"
    lyrics: str = ""
    seconds: float = 5.0
    total_seconds: float | None = None
    n_samples: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0
    seed: int | None = None
    levels: list[int] | None = None
    prompt_seconds: float | None = None
    source: str | None = None
    loudness: float | None = DEFAULT_LUFS
    bpm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return asdict(self)

    def sampling_request(self, model: Any, results_dir: Path, prompt: Path | None = None) -> SamplingRequest:
        """The run this page request asks for (the format ``jukebox sample`` runs): a new song, or the uploaded
        ``prompt`` continued, or the source result's codes continued or upsampled (its top level)."""
        mode, codes, codes_levels = "ancestral", None, None
        if self.action == "generate" and prompt is not None:
            mode = "primed"
        elif self.action in ("continue", "upsample"):
            mode = self.action
            codes = str(result_path(results_dir, str(self.source), CODES_FILE))
            codes_levels = [model.top_level] if mode == "upsample" else None
        return SamplingRequest(
            mode=mode, artist=self.artist, genre=self.genre, lyrics=self.lyrics, n_samples=self.n_samples,
            seconds=self.seconds, total_seconds=self.total_seconds,
            bpm=None if mode == "upsample" else self.bpm, levels=self.levels,
            prompt=None if prompt is None else str(prompt), prompt_seconds=self.prompt_seconds, codes=codes,
            codes_levels=codes_levels, loudness=self.loudness, **self.sampling_overrides(model))

    def sampling_overrides(self, model: Any) -> dict[str, Any]:
        """The settings this request overrides, for :meth:`jukebox.api.Jukebox.sampling_settings`. The page's one
        temperature is the top level's where the model gives its own per-level temperatures (the embedded model's
        upsamplers sample best cooler); else it applies to every level."""
        own = (getattr(model, "sampling_defaults", None) or {}).get("temperature")
        temperature = {model.top_level: self.temperature} if isinstance(own, dict) else self.temperature
        return dict(temperature=temperature, top_k=self.top_k, top_p=self.top_p, seed=self.seed)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRequest:
        """Rebuild from :meth:`to_dict` output (unknown keys are ignored)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class Job:
    """One queued, running or finished job. ``progress`` is ``{level: (tokens_done, tokens_total)}``."""

    id: str
    request: JobRequest
    status: str = "queued"
    stage: str = "waiting"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    progress: dict[int, tuple[int, int]] = field(default_factory=dict)
    error: str | None = None
    outputs: list[str] = field(default_factory=list)
    n_items: int = 0
    level: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    #: The run the page request became (None for results listed from an earlier server).
    run: SamplingRequest | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    def summary(self) -> dict[str, Any]:
        """JSON-ready state for the page (and tests)."""
        return dict(id=self.id, status=self.status, stage=self.stage, request=self.request.to_dict(),
                    created=self.created, started=self.started, finished=self.finished,
                    progress={str(k): list(v) for k, v in sorted(self.progress.items(), reverse=True)},
                    error=self.error, outputs=list(self.outputs), n_items=self.n_items, level=self.level)


#: ``runner(model, job, out_dir, progress)`` does the work of one job (the default is :func:`run_job`).
Runner = Callable[[Any, Job, Path, Callable[[int, int, int], None]], None]


class JobQueue:
    """Runs jobs one at a time on a background thread and keeps their results in ``results_dir``.

    ``model`` is a loaded :class:`jukebox.api.Jukebox` (only the worker thread samples with it).
    ``runner`` replaces :func:`run_job` (tests use a fake). Finished results already in ``results_dir`` are
    listed again (jobs that were running when a previous server stopped show as ``interrupted``).
    """

    def __init__(self, model: Any, results_dir: str | Path, runner: Runner | None = None,
                 max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_samples: int = 8,
                 max_seconds: float = 600.0, max_prompt_seconds: float = DEFAULT_MAX_PROMPT_SECONDS) -> None:
        self.model = model
        self.results_dir = Path(results_dir).expanduser().resolve()
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.runner: Runner = runner or run_job
        self.max_upload_bytes = max_upload_bytes
        self.max_samples = max_samples
        self.max_seconds = max_seconds
        self.max_prompt_seconds = max_prompt_seconds
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._pending: queue.Queue[str | None] = queue.Queue()
        self._changed = threading.Condition(self._lock)
        self.revision = 0  # bumped on every status change (not on progress ticks)
        self._load_history()
        self._thread = threading.Thread(target=self._work, name="jukebox-jobs", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public
    def submit(self, request: JobRequest, prompt_file: str | Path | None = None) -> Job:
        """Check ``request`` (and decode an uploaded ``prompt_file``), then queue it. Returns the new job.

        Bad settings or a bad upload raise :class:`~jukebox.errors.UsageError` / ``JukeboxError`` at once;
        nothing is queued and no result folder is left behind.
        """
        self._check(request, prompt_file)
        self._inherit(request)
        job = Job(new_job_id(), request)
        out = self.results_dir / job.id
        out.mkdir(parents=True)
        try:
            if prompt_file is not None:
                self._store_prompt(Path(prompt_file), out / "prompt.wav")
            if request.seed is None:  # record the seed actually used, so every result can be reproduced
                request.seed = secrets.randbelow(2**31)
            job.run = request.sampling_request(self.model, self.results_dir,
                                               out / "prompt.wav" if prompt_file is not None else None)
            write_json(out / METADATA_FILE, self._metadata(job))
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)
            raise
        with self._lock:
            self._jobs[job.id] = job
            self._bump()
        self._pending.put(job.id)
        return job

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job. Returns False when it is unknown or already finished."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.is_finished:
                return False
            job.cancel_event.set()
            queued = job.status == "queued"
            if queued:
                self._finish(job, "cancelled", "cancelled before it started")
            else:
                job.stage = "cancelling"
                self._bump()
        if queued:
            self._save_metadata(job, self.results_dir / job.id)
        return True

    def cancel_latest(self) -> Job | None:
        """Cancel the most recently submitted unfinished job (what a page's Cancel button means)."""
        with self._lock:
            live = [j for j in self._jobs.values() if not j.is_finished and not j.cancel_event.is_set()]
        live.sort(key=_order)
        for job in reversed(live):
            if self.cancel(job.id):
                return job
        return None

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None (malformed ids included)."""
        if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
            return None
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        """All jobs, newest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=_order, reverse=True)

    def queue_position(self, job_id: str) -> int | None:
        """0 for the running job, 1.. for queued ones in order, None when finished or unknown."""
        with self._lock:
            live = sorted((j for j in self._jobs.values() if not j.is_finished),
                          key=lambda j: (j.status != "running", _order(j)))
        ids = [j.id for j in live]
        return ids.index(job_id) if job_id in ids else None

    def result_file(self, job_id: str, name: str) -> Path:
        """A result file by job id and fixed-pattern name (see :func:`result_path`)."""
        return result_path(self.results_dir, job_id, name)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job finishes (or ``timeout`` seconds pass); return it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            job = self._jobs[job_id]
            while not job.is_finished:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._changed.wait(left)
            return job

    def close(self, timeout: float = 10.0) -> None:
        """Cancel everything and stop the worker."""
        for job in self.jobs():
            if not job.is_finished:
                self.cancel(job.id)
        self._pending.put(None)
        self._thread.join(timeout)

    # ------------------------------------------------------------------ checks
    def _check(self, r: JobRequest, prompt_file: str | Path | None) -> None:
        if r.action not in ACTIONS:
            raise UsageError(f"unknown action {r.action!r}; use one of {', '.join(ACTIONS)}")
        if not isinstance(r.n_samples, int) or not 1 <= r.n_samples <= self.max_samples:
            raise UsageError(f"number of samples must be 1 to {self.max_samples}")
        if r.action != "upsample":
            if not r.seconds or not 0 < r.seconds <= self.max_seconds:
                raise UsageError(f"length must be more than 0 and at most {self.max_seconds:g} seconds")
        if r.total_seconds is not None and r.total_seconds < (r.seconds or 0):
            raise UsageError("the song length for the timing labels must be at least the length to generate")
        self.model.sampling_settings(**r.sampling_overrides(self.model))  # the API's checks, the API's words
        have = list(getattr(self.model, "prior_levels", []) or [])
        if r.levels is not None:
            if not r.levels:
                raise UsageError("choose at least one level")
            bad = sorted(set(r.levels) - set(have))
            if bad:
                raise UsageError(f"the model has no level(s) {bad} (it has {have})")
        if r.prompt_seconds is not None and r.prompt_seconds <= 0:
            raise UsageError("prompt length must be positive")
        if r.loudness is not None:
            check_loudness(r.loudness)  # the API's check, the API's words
        if r.bpm is not None:
            self.model.check_bpm(r.bpm, "the tempo")
        if r.action == "generate":
            if r.source is not None:
                raise UsageError("a new song has no source result")
        else:
            if prompt_file is not None:
                raise UsageError(f"{r.action} works on a previous result, not on an upload")
            src = self.get(r.source) if r.source else None
            if src is None:
                raise UsageError("choose a previous result to " + r.action)
            if src.status != "done" or not (self.results_dir / src.id / CODES_FILE).is_file():
                raise UsageError(f"result {src.id} has no finished codes to {r.action}")
        if prompt_file is not None:
            path = Path(prompt_file)
            if path.suffix.lower() not in UPLOAD_SUFFIXES:
                raise UsageError(f"the prompt must be an audio file ({', '.join(UPLOAD_SUFFIXES)})")
            try:
                size = path.stat().st_size
            except OSError:
                raise UsageError("the uploaded prompt could not be read") from None
            if size > self.max_upload_bytes:
                raise UsageError(f"the prompt is {size / 2**20:.1f} MB; the limit is "
                                 f"{self.max_upload_bytes / 2**20:.0f} MB")

    def _inherit(self, r: JobRequest) -> None:
        """Continue/upsample keep the source's labels (artist, genre, lyrics) and samples; upsample its lengths."""
        if r.action == "generate" or r.source is None:
            return
        src = self._jobs[r.source]
        r.artist, r.genre, r.lyrics = src.request.artist, src.request.genre, src.request.lyrics
        r.n_samples = src.n_items or src.request.n_samples
        if r.action == "upsample":
            r.seconds = src.request.seconds
            r.total_seconds = r.total_seconds or src.request.total_seconds

    def _store_prompt(self, src: Path, dst: Path) -> None:
        """Decode the upload (jukebox.audio's checks and errors), resample to the model's rate, save as wav."""
        from ..audio import audio_info, load_audio, save_audio

        try:
            _, _, seconds = audio_info(src)
            if seconds > self.max_prompt_seconds:
                raise UsageError(f"the prompt is {seconds:.0f} s long; the limit is {self.max_prompt_seconds:.0f} s")
            audio, sr = load_audio(src, sample_rate=self.model.sample_rate)
        except JukeboxError as e:
            # jukebox.audio names the file; the upload's temporary path means nothing to the user.
            msg = str(e).replace(str(src), "the uploaded prompt")
            raise type(e)(msg) from None
        save_audio(audio, dst, sr)

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while True:
            job_id = self._pending.get()
            if job_id is None:
                return
            with self._lock:
                job = self._jobs.get(job_id)
                if job is None or job.status != "queued":
                    continue
                job.status, job.stage, job.started = "running", "starting", time.time()
                self._bump()
            self._run(job)

    def _run(self, job: Job) -> None:
        out = self.results_dir / job.id

        def progress(level: int, done: int, total: int) -> None:
            if job.cancel_event.is_set():
                raise JobCancelled("cancelled")
            with self._lock:
                job.progress[level] = (int(done), int(total))
                if job.stage != "cancelling":
                    job.stage = f"sampling level {level}"

        try:
            write_json(out / METADATA_FILE, self._metadata(job))
            self.runner(self.model, job, out, progress)
        except JobCancelled:
            self._end(job, out, "cancelled", "cancelled")
        except JukeboxError as e:
            self._end(job, out, "failed", str(e))
        except Exception as e:  # noqa: BLE001 - a job's failure must not kill the worker
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            self._end(job, out, "failed", f"unexpected {type(e).__name__}: {msg}")
        else:
            if job.cancel_event.is_set():  # cancelled during decoding/writing, after the last progress tick
                self._end(job, out, "cancelled", "cancelled")
            else:
                self._end(job, out, "done", None)

    def _end(self, job: Job, out: Path, status: str, error: str | None) -> None:
        try:  # a finished run's metadata.json (written by the runner, with settings and timings) is kept
            meta = json.loads((out / METADATA_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        if status != "done" or not isinstance(meta, dict) or meta.get("status") != "done":
            self._save_metadata(job, out, status=status, error=error)
        with self._lock:
            job.outputs = _outputs(out)
            self._finish(job, status, error)

    def _save_metadata(self, job: Job, out: Path, **override: Any) -> None:
        try:
            write_json(out / METADATA_FILE, {**self._metadata(job), **override})
        except OSError:
            pass

    def _finish(self, job: Job, status: str, error: str | None) -> None:
        job.status, job.error, job.finished = status, error, time.time()
        job.stage = status
        self._bump()

    def _bump(self) -> None:
        self.revision += 1
        self._changed.notify_all()

    def _metadata(self, job: Job) -> dict[str, Any]:
        """The run folder's metadata (:mod:`jukebox.runs`) while the job is not done, plus the page's request."""
        return dict(format=RUN_FORMAT, version=RUN_VERSION, job=job.id, status=job.status, error=job.error,
                    request=job.run.to_dict() if job.run is not None else job.request.to_dict(),
                    page=job.request.to_dict(), model=str(getattr(getattr(self.model, "model_dir", None), "path", "")),
                    sample_rate=getattr(self.model, "sample_rate", None), created=_iso(job.created),
                    source="jukebox serve")

    def _load_history(self) -> None:
        for folder in sorted(self.results_dir.iterdir()):
            if not (folder.is_dir() and JOB_ID_RE.fullmatch(folder.name)):
                continue
            try:
                meta = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
                request = JobRequest.from_dict(meta.get("page") or meta.get("request") or {})
            except (OSError, ValueError, TypeError, AttributeError):
                continue
            status = meta.get("status")
            status = status if status in FINISHED else "interrupted"
            job = Job(folder.name, request, status=status, stage=status, error=meta.get("error"),
                      outputs=_outputs(folder),
                      level=meta.get("level"), settings=meta.get("settings") or {})
            job.n_items = sum(1 for n in job.outputs if n.startswith("item_"))
            job.created = job.finished = folder.stat().st_mtime
            self._jobs[job.id] = job


# ---------------------------------------------------------------------- the default runner
def run_job(model: Any, job: Job, out: Path, progress: Callable[[int, int, int], None]) -> None:
    """Do one job: its run (:func:`jukebox.runs.sample`, the public API) into the result folder, which holds what
    ``jukebox sample`` writes plus a spectrogram per item."""
    assert job.run is not None
    request = job.run
    folder = RunFolder(out)
    settings = model.sampling_settings(**request.overrides())
    folder.start(request, model, job=job.id, page=job.request.to_dict(), created=_iso(job.created),
                 source="jukebox serve")
    lowest = min(model.resolve_levels(request.levels))

    def on_level_done(level: int, codes: dict[int, Any]) -> None:
        folder.level_done(level, codes)
        if level <= lowest:
            job.stage = "decoding"

    gen = sample(model, request, settings, progress=progress, on_level_done=on_level_done)
    if job.cancel_event.is_set():
        raise JobCancelled("cancelled")
    job.stage = "writing"
    from .media import spectrogram_png

    for i in range(gen.audio.shape[0]):
        atomic_write_bytes(out / f"spectrogram_{i}.png",
                           spectrogram_png(np.asarray(gen.audio[i, 0].numpy()), gen.sample_rate))
    folder.finish(model, gen)
    job.n_items, job.level, job.settings = int(gen.audio.shape[0]), int(gen.level), dict(gen.settings)


def _outputs(folder: Path) -> list[str]:
    """The result files in a job folder (names from the fixed pattern only)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and RESULT_FILE_RE.fullmatch(p.name))


def _order(job: Job) -> tuple[float, str]:
    """Submission order (ids share a second's prefix, so the creation time decides)."""
    return job.created, job.id


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))
