"""The Gradio page over a :class:`~jukebox.ui.jobs.JobQueue`, and a small server that runs it.

The page only submits :class:`~jukebox.ui.jobs.JobRequest` objects and renders job state; the queue does the
work through the public API. Result files are served by the route ``/results/{job_id}/{name}``, which looks
both up through :func:`~jukebox.ui.jobs.result_path` (fixed patterns, generated ids): nothing from the
browser is ever used as a path. The page polls the queue twice a second (``gr.Timer``) for live progress.
"""

from __future__ import annotations

import html
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import JukeboxError
from ..loudness import DEFAULT_LUFS
from .jobs import UPLOAD_SUFFIXES, Job, JobQueue, JobRequest

#: How many finished results the page shows (all stay in the results folder).
SHOWN_RESULTS = 20

CSS = """
.jb-card { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 10px; margin-bottom: 12px; }
.jb-card h4 { margin: 0 0 6px 0; }
.jb-item { margin: 8px 0; }
.jb-item audio { width: 100%; }
.jb-item img { width: 100%; height: 120px; object-fit: fill; border-radius: 4px; display: block; }
.jb-align img { width: 100%; max-height: 160px; object-fit: fill; image-rendering: pixelated; }
.jb-row { display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
.jb-muted { opacity: 0.7; font-size: 0.9em; }
.jb-error { color: #c0392b; }
.jb-progress progress { width: 60%; vertical-align: middle; }
.jb-card pre { white-space: pre-wrap; font-size: 0.8em; max-height: 240px; overflow: auto; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def display_path(path: Path) -> str:
    """``path`` with the home folder shown as ``~``."""
    try:
        return "~/" + Path(path).relative_to(Path.home()).as_posix()
    except ValueError:
        return str(path)


def _levels_of(jobs: JobQueue, job: Job) -> list[int]:
    have = sorted(getattr(jobs.model, "prior_levels", []) or [], reverse=True)
    own = getattr(jobs.model, "default_levels", None) or have
    levels = sorted(job.request.levels or own, reverse=True)
    if job.request.action == "upsample" and have:
        levels = [lvl for lvl in levels if lvl < max(have)]
    return levels


def render_status(jobs: JobQueue) -> str:
    """HTML of the running job (progress per level) and the queue."""
    live = [j for j in jobs.jobs() if not j.is_finished]
    if not live:
        return '<div id="jb-status" class="jb-muted">No job running. Results are kept in ' \
               f'<code>{_esc(display_path(jobs.results_dir))}</code>.</div>'
    live.sort(key=lambda j: (j.status != "running", j.created))
    parts = ['<div id="jb-status">']
    for pos, job in enumerate(live):
        r = job.request
        what = f"{_esc(r.action)} · {_esc(r.artist)} · {_esc(r.genre)} · {r.n_samples} × {r.seconds:g} s"
        if job.status == "running":
            parts.append(f'<div class="jb-progress" data-job="{_esc(job.id)}"><b>Running</b> {what} — '
                         f'<span class="jb-stage">{_esc(job.stage)}</span>')
            for lvl in _levels_of(jobs, job):
                done, total = job.progress.get(lvl, (0, 0))
                pct = f"{100 * done / total:.0f}%" if total else "waiting"
                parts.append(f'<div>level {lvl}: <progress value="{done}" max="{max(total, 1)}"></progress> '
                             f'{pct} <span class="jb-muted">({done}/{total} tokens)</span></div>')
            parts.append("</div>")
        else:
            parts.append(f'<div class="jb-muted">Queued #{pos}: {what}</div>')
    parts.append("</div>")
    return "".join(parts)


def render_results(jobs: JobQueue, limit: int = SHOWN_RESULTS) -> str:
    """HTML cards of finished jobs, newest first: players, wav downloads, spectrograms, alignment, settings."""
    done = [j for j in jobs.jobs() if j.is_finished][:limit]
    if not done:
        return '<div id="jb-results" class="jb-muted">Results appear here.</div>'
    parts = ['<div id="jb-results">']
    for job in done:
        r = job.request
        base = f"results/{job.id}"
        head = f"{_esc(r.action)} · {_esc(r.artist)} · {_esc(r.genre)}"
        if r.source:
            head += f" · from {_esc(r.source)}"
        parts.append(f'<div class="jb-card" data-job="{_esc(job.id)}" data-status="{_esc(job.status)}">'
                     f'<h4>{head}</h4><div class="jb-muted">result <code>{_esc(job.id)}</code> · {_esc(job.status)}'
                     f'{" · seed " + _esc(r.seed) if r.seed is not None else ""}</div>')
        if job.status != "done":
            parts.append(f'<div class="jb-error">{_esc(job.error or job.status)}</div></div>')
            continue
        items = sorted(int(n[5:-4]) for n in job.outputs if n.startswith("item_") and n.endswith(".wav"))
        for i in items:
            wav = f"{base}/item_{i}.wav"
            parts.append(f'<div class="jb-item"><div class="jb-row"><b>#{i}</b>'
                         f'<audio controls preload="metadata" src="{wav}"></audio></div>'
                         f'<div class="jb-row"><a class="jb-download" href="{wav}" '
                         f'download="jukebox-{_esc(job.id)}-{i}.wav">Download wav</a></div>')
            if f"spectrogram_{i}.png" in job.outputs:
                parts.append(f'<img alt="spectrogram of #{i}" src="{base}/spectrogram_{i}.png">')
            if f"alignment_{i}.png" in job.outputs:
                parts.append(f'<details class="jb-align"><summary>Lyric alignment #{i}</summary>'
                             f'<img alt="lyric alignment of #{i}" src="{base}/alignment_{i}.png">'
                             f'<div class="jb-muted">time downwards, lyric characters across</div></details>')
            parts.append("</div>")
        links = " · ".join(f'<a href="{base}/{n}" download="jukebox-{_esc(job.id)}-{n}">{n}</a>'
                           for n in ("codes.npz", "metadata.json", "alignment.json") if n in job.outputs)
        settings = json.dumps(r.to_dict(), indent=1, ensure_ascii=False)
        parts.append(f'<details><summary>Settings used</summary><pre>{_esc(settings)}</pre></details>'
                     f'<div class="jb-muted">{links}</div></div>')
    parts.append("</div>")
    return "".join(parts)


def _source_choices(jobs: JobQueue) -> list[tuple[str, str]]:
    out = []
    for j in jobs.jobs():
        if j.status == "done" and "codes.npz" in j.outputs:
            out.append((f"{j.id} · {j.request.action} · {j.request.artist} · {j.request.genre}", j.id))
    return out[:50]


def _opt_float(value: Any) -> float | None:
    """An optional positive number from a form field (empty or 0: not given)."""
    return None if value is None or value == "" or float(value) <= 0 else float(value)


def _seed(value: Any) -> int | None:
    """The seed field: empty means random (the queue draws one and records it)."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    try:
        seed = int(text)
    except ValueError:
        raise JukeboxError(f"the seed must be a whole number, got {text[:40]!r}") from None
    from ..sampling.settings import SamplingSettings

    return SamplingSettings(seed=seed).seed  # the API's own check (|seed| < 2**53): the page takes what it takes


def private_temp_dir() -> str:
    """A new folder only this user may read (0700) for Gradio's uploads and cached files, set as
    ``GRADIO_TEMP_DIR`` before Gradio is imported (inside the user's own ``GRADIO_TEMP_DIR`` where one is set):
    the machine-wide ``/tmp/gradio`` would let the page serve files other programs and users put there, and
    theirs ours. The caller removes it when the page stops."""
    import tempfile

    parent = os.environ.get("GRADIO_TEMP_DIR") or None
    if parent:
        os.makedirs(parent, exist_ok=True)
    path = tempfile.mkdtemp(prefix="jukebox-page-", dir=parent)  # mode 0700
    os.environ["GRADIO_TEMP_DIR"] = path
    return path


def build_blocks(jobs: JobQueue, default_seconds: float = 10.0):
    """The page: a form on the left, live status and results on the right."""
    import gradio as gr

    model = jobs.model
    vocab = model.vocab() if getattr(model, "prior_levels", None) else None
    artists = vocab.list_artists() if vocab is not None else ["unknown"]
    genres = vocab.list_genres() if vocab is not None else ["unknown"]
    levels = sorted(getattr(model, "prior_levels", []) or [], reverse=True)
    top = max(levels) if levels else None
    level_choices = [(f"level {lvl}" + (" (top)" if lvl == top else ""), str(lvl)) for lvl in levels]
    has_lyrics = _has_lyrics(model)

    with gr.Blocks(title="Jukebox", delete_cache=(3600, 3600)) as blocks:  # uploads are copied at once
        gr.Markdown(f"## Jukebox\nModel `{_esc(model.model_dir.path.name)}` · {model.sample_rate} Hz · levels "
                    f"{', '.join(map(str, levels)) or 'none'} · results in `{_esc(display_path(jobs.results_dir))}`")
        with gr.Row():
            with gr.Column(scale=1):
                artist = gr.Dropdown(artists, value="unknown" if "unknown" in artists else artists[0],
                                     label="Artist", info="type to search", filterable=True,
                                     interactive=vocab is not None, elem_id="artist")
                genre = gr.Dropdown(genres, value="unknown" if "unknown" in genres else genres[0], label="Genre",
                                    info="type to search", filterable=True, interactive=vocab is not None,
                                    elem_id="genre")
                lyrics = gr.Textbox(label="Lyrics" + ("" if has_lyrics else " (this model ignores lyrics)"),
                                    lines=5, elem_id="lyrics")
                with gr.Row():
                    seconds = gr.Number(default_seconds, label="Length (s)", minimum=0, elem_id="seconds")
                    total = gr.Number(None, label="Song length for timing (s, 0: the model's usual length, at "
                                      "least the length)", minimum=0, elem_id="total-seconds")
                    n_samples = gr.Slider(1, jobs.max_samples, value=1, step=1, label="Samples",
                                          elem_id="n-samples")
                with gr.Row():
                    temperature = gr.Slider(0.0, 1.5, value=_top_temperature(model), step=0.01,
                                            label="Temperature of the top level (0: greedy)",
                                            elem_id="temperature")
                    top_k = gr.Number(0, label="Top-k (0: off)", precision=0, minimum=0, elem_id="top-k")
                    top_p = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Top-p (0: off)", elem_id="top-p")
                with gr.Row():
                    seed = gr.Textbox("", label="Seed (empty: random, recorded)", placeholder="random",
                                      max_lines=1, elem_id="seed")
                    own = set(getattr(model, "default_levels", None) or levels)
                    level_box = gr.CheckboxGroup(level_choices, value=[v for _, v in level_choices if int(v) in own],
                                                 label="Levels (the model's own checked; fewer: a faster draft)",
                                                 elem_id="levels")
                with gr.Accordion("Continue an audio prompt (optional)", open=False):
                    prompt = gr.File(label=f"Audio prompt ({', '.join(UPLOAD_SUFFIXES)}; up to "
                                           f"{jobs.max_upload_bytes // 2**20} MB)",
                                     file_types=list(UPLOAD_SUFFIXES), type="filepath", elem_id="prompt")
                    prompt_seconds = gr.Number(None, label="Prompt length to keep (s, 0: all)", minimum=0,
                                               elem_id="prompt-seconds")
                loudness = gr.Number(DEFAULT_LUFS, label="Loudness (LUFS; 0: off, the raw decode)", maximum=0,
                                     elem_id="loudness")
                tempo = gr.Number(None, label="Tempo (BPM; empty: the genre's typical tempo)" if
                                  getattr(model, "has_tempo", False) else "Tempo (this model takes none)",
                                  minimum=0, interactive=bool(getattr(model, "has_tempo", False)), elem_id="bpm")
                with gr.Row():
                    generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel")
                with gr.Accordion("Continue or upsample a previous result", open=False):
                    source = gr.Dropdown(_source_choices(jobs), value=None, label="Previous result",
                                         elem_id="source")
                    gr.Markdown("*Continue* extends it to **Length** seconds in all (keeping **Prompt length** "
                                "of it when given); *Upsample* renders its top level through the upsamplers. "
                                "Both keep the result's artist, genre and lyrics and use the sampling settings "
                                "above.")
                    with gr.Row():
                        continue_btn = gr.Button("Continue", elem_id="continue")
                        upsample_btn = gr.Button("Upsample", elem_id="upsample")
                message = gr.Markdown("", elem_id="message")
            with gr.Column(scale=1):
                status = gr.HTML(render_status(jobs), js_on_load=None, elem_id="status")
                results = gr.HTML(render_results(jobs), js_on_load=None, elem_id="results")
        seen = gr.State({"rev": jobs.revision, "status": ""})
        timer = gr.Timer(0.5)

        form = [artist, genre, lyrics, seconds, total, n_samples, temperature, top_k, top_p, seed, level_box,
                prompt_seconds, loudness, tempo]

        def request_from(action: str, a, g, lyr, sec, tot, n, temp, k, p, sd, lv, ps, loud, bpm,
                         src=None) -> JobRequest:
            return JobRequest(action=action, artist=a or "unknown", genre=g or "unknown", lyrics=lyr or "",
                              seconds=float(sec or 0), total_seconds=_opt_float(tot), n_samples=int(n or 1),
                              temperature=float(temp), top_k=int(k or 0), top_p=float(p or 0.0), seed=_seed(sd),
                              levels=sorted((int(v) for v in lv), reverse=True) if lv is not None else None,
                              prompt_seconds=_opt_float(ps), source=src,
                              loudness=None if loud in (None, "") or float(loud) == 0 else float(loud),
                              bpm=None if bpm in (None, "") or float(bpm) == 0 else float(bpm))

        def submit(action: str, values: list[Any], upload: str | None = None, src: str | None = None) -> str:
            try:
                job = jobs.submit(request_from(action, *values, src=src), prompt_file=upload)
            except JukeboxError as e:
                return f"**Error:** {_esc(e)}"
            except (TypeError, ValueError, OverflowError) as e:  # e.g. int(inf) from a client's request
                return f"**Error:** bad value ({_esc(e)})"
            pos = jobs.queue_position(job.id)
            where = "starting" if not pos else f"#{pos} in the queue"
            return f"Queued `{job.id}` ({where})."

        def on_generate(*values: Any) -> str:
            *form_values, upload = values
            return submit("generate", form_values, upload=upload)

        def on_action(action: str):
            def handler(*values: Any) -> str:
                *form_values, src = values
                return submit(action, form_values, src=src or None)
            return handler

        def on_cancel() -> str:
            job = jobs.cancel_latest()
            return f"Cancelling `{job.id}`." if job else "Nothing to cancel."

        def refresh(state: dict[str, Any], current_source: str | None):
            status_html = render_status(jobs)
            rev = jobs.revision
            changed = rev != state.get("rev")
            new_state = {"rev": rev, "status": status_html}
            choices = _source_choices(jobs)
            keep = current_source if current_source in {c[1] for c in choices} else None
            return (status_html if status_html != state.get("status") else gr.skip(),
                    render_results(jobs) if changed else gr.skip(),
                    gr.update(choices=choices, value=keep) if changed else gr.skip(),
                    new_state)

        generate_btn.click(on_generate, inputs=[*form, prompt], outputs=message)
        continue_btn.click(on_action("continue"), inputs=[*form, source], outputs=message)
        upsample_btn.click(on_action("upsample"), inputs=[*form, source], outputs=message)
        cancel_btn.click(on_cancel, outputs=message)
        timer.tick(refresh, inputs=[seen, source], outputs=[status, results, source, seen], show_progress="hidden")
    return blocks


def _top_temperature(model: Any, fallback: float = 0.98) -> float:
    """The top level's temperature from the model's own sampling defaults (model.json), else ``fallback``."""
    own = (getattr(model, "sampling_defaults", None) or {}).get("temperature")
    if isinstance(own, dict):
        own = own.get(getattr(model, "top_level", None))
    return float(own) if isinstance(own, (int, float)) and 0 <= own <= 1.5 else fallback


def _has_lyrics(model: Any) -> bool:
    try:
        return bool(model.prior(model.top_level).n_tokens > 0)
    except Exception:  # noqa: BLE001 - only a label on the page
        return False


def quiet_refused_requests() -> None:
    """Gradio prints a whole traceback in the server's terminal for every value a client sends outside a control's
    range (its own checks raise ``gradio.Error``, which the client is shown). Print those as one line instead; any
    other error keeps its traceback (and ``JUKEBOX_DEBUG=1`` keeps all of them). Idempotent."""
    import sys
    import traceback
    import types

    try:
        from gradio import queueing
        from gradio.exceptions import Error
    except ImportError:
        return
    if getattr(queueing.traceback, "_jukebox_quiet", False):
        return

    def print_exc(*args: Any, **kwargs: Any) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, Error) and os.environ.get("JUKEBOX_DEBUG") != "1":
            text = "".join(c if c.isprintable() else "?" for c in str(getattr(err, "message", err)))[:300]
            print(f"jukebox serve: refused a request: {text}", file=sys.stderr)
            return
        traceback.print_exc(*args, **kwargs)

    shim = types.ModuleType("traceback")
    shim.__dict__.update({k: v for k, v in vars(traceback).items() if not k.startswith("__")})
    shim.print_exc = print_exc
    shim._jukebox_quiet = True
    queueing.traceback = shim


def build_app(jobs: JobQueue, max_upload_bytes: int | None = None, default_seconds: float = 10.0):
    """A FastAPI app: ``/results/{job_id}/{name}`` plus the Gradio page at ``/``."""
    import gradio as gr

    quiet_refused_requests()
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import FileResponse

    app = FastAPI(title="jukebox", docs_url=None, redoc_url=None, openapi_url=None)
    media = {".wav": "audio/wav", ".png": "image/png", ".json": "application/json", ".npz": "application/zip"}

    @app.get("/results/{job_id}/{name}")
    def result_file(job_id: str, name: str) -> FileResponse:
        try:
            path = jobs.result_file(job_id, name)
        except JukeboxError:
            raise HTTPException(status_code=404, detail="no such result file") from None
        return FileResponse(path, media_type=media.get(Path(name).suffix, "application/octet-stream"))

    blocks = build_blocks(jobs, default_seconds=default_seconds)
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                           font_mono=["ui-monospace", "SFMono-Regular", "monospace"])
    return gr.mount_gradio_app(app, blocks, path="/", theme=theme, css=CSS, ssr_mode=False, footer_links=[],
                               max_file_size=max_upload_bytes or jobs.max_upload_bytes)


class Server:
    """Runs the app with uvicorn on a background thread (``serve_forever`` for the command line)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 7860) -> None:
        import uvicorn

        self.config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(self.config)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's address (the real port when 0 was asked for)."""
        port = self.config.port
        servers = getattr(self.server, "servers", None) or []
        for srv in servers:
            for sock in srv.sockets:
                port = sock.getsockname()[1]
        host = self.config.host
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"

    def start(self, timeout: float = 30.0) -> Server:
        """Start serving on a thread; return once the socket accepts connections."""
        self.thread = threading.Thread(target=self.server.run, name="jukebox-serve", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise JukeboxError(f"the web server did not start on {self.config.host}:{self.config.port} "
                                   "(is the port in use?)")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit and wait for it."""
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout)

    def serve_forever(self) -> None:
        """Run in the calling thread until interrupted."""
        self.server.run()
