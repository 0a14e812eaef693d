"""``jukebox serve``: a local web page for making music (needs the ``ui`` extra: ``pip install 'jukebox[ui]'``).

The page offers artist/genre (searchable), lyrics, length, samples, temperature/top-k/top-p, seed and levels,
an optional audio prompt, and continue/upsample on earlier results; jobs run one at a time with live progress
per level and a cancel button. Every result is a folder in the results directory (default
``~/jukebox-results`` or ``$JUKEBOX_RESULTS_DIR``) holding what ``jukebox sample`` writes plus spectrograms.
The page binds to 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import sys

from ..errors import JukeboxError, UsageError
from .common import add_device_arg, resolve_device

INSTALL_HINT = "the web page needs Gradio; install it with: pip install 'jukebox[ui]'"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start a local web page for making music", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", default=None, help="model directory (default: the embedded default model)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes the page)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    p.add_argument("--results-dir", default=None,
                   help="folder for results (default $JUKEBOX_RESULTS_DIR or ~/jukebox-results)")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest audio prompt upload (default 50)")
    p.add_argument("--max-samples", type=int, default=8, help="most samples per job (default 8)")
    p.add_argument("--seconds", type=float, default=10.0, help="the form's default length in seconds")
    p.add_argument("--low-memory", action="store_true", help="load one level's prior at a time")
    add_device_arg(p)
    p.set_defaults(func=cmd_serve)


def check_ui_installed() -> None:
    """Raise a one-line error when the ``ui`` extra (Gradio) is missing."""
    for module in ("gradio", "fastapi", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            raise JukeboxError(INSTALL_HINT)


def cmd_serve(args: argparse.Namespace) -> int:
    check_ui_installed()
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0 to 65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_samples < 1:
        raise UsageError("--max-upload-mb must be positive and --max-samples at least 1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local page phones nobody
    from ..api import load_model
    from ..ui.app import Server, build_app, private_temp_dir
    from ..ui.jobs import JobQueue, default_results_dir

    temp_dir = private_temp_dir()  # before Gradio is imported: it reads GRADIO_TEMP_DIR once

    model = load_model(args.model, device=resolve_device(args.device), low_memory=args.low_memory)
    if not model.prior_levels:
        raise JukeboxError(f"{model.model_dir.path}: the model has no priors, so it cannot make music")
    results = default_results_dir() if args.results_dir is None else os.path.expanduser(args.results_dir)
    try:
        jobs = JobQueue(model, results, max_upload_bytes=int(args.max_upload_mb * 2**20),
                        max_samples=args.max_samples)
    except OSError as e:
        raise JukeboxError(f"{results}: cannot use as the results folder ({e.strerror or e})") from None
    server = Server(build_app(jobs, default_seconds=args.seconds), host=args.host, port=args.port)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding {args.host} makes the page (and the results) reachable from other machines",
              file=sys.stderr)
    interrupted = False

    def on_term(signum: int, frame: object) -> None:  # `kill` stops the page like Ctrl+C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        server.start()
        print(f"jukebox: serving {model.model_dir.path.name} at {server.url} (results in {jobs.results_dir}); "
              "Ctrl+C stops", flush=True)
        assert server.thread is not None
        while server.thread.is_alive():
            server.thread.join(0.5)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted", file=sys.stderr)
    finally:
        server.stop()
        jobs.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
    # Both are stopped (each with a bounded wait); don't let a library's leftover non-daemon thread keep the
    # process alive after Ctrl+C.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130 if interrupted else 0)
