"""The ``jukebox`` command line. Each subcommand lives in its own module and stays thin: sampling goes through the
public API and its run format (:mod:`jukebox.api`, :mod:`jukebox.runs`), training through :mod:`jukebox.train`;
``prepare``, ``eval``, ``import-openai`` and ``download-openai`` call the data, evaluation and checkpoint modules
they are about.

Exit codes: 0 success, 1 failure (a one-line ``error: ...`` on stderr), 2 bad usage, 130 interrupted.
Set ``JUKEBOX_DEBUG=1`` to see full tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Callable, Sequence

from ..errors import JukeboxError, UsageError

#: Modules that register subcommands, in the order they appear in ``jukebox --help``.
COMMAND_MODULES = ("sample", "score", "codec", "eval", "importer", "download", "prepare", "train", "serve")


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = argparse.ArgumentParser(
        prog="jukebox", description="Make music with Jukebox: sample, encode/decode audio, train, import."
    )
    parser.add_argument("--version", action="version", version=f"jukebox {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def _one_line_warning_once() -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints each distinct warning once, on one line, without source lines."""
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        text = " ".join(str(message).split())
        if text not in seen:
            seen.add(text)
            print(f"warning: {text}", file=file or sys.stderr)
    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``jukebox ARGV``; the exit code (module docstring). Ctrl+C at any moment, during the first second's
    imports too, is one line (``interrupted``) and exit code 130."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return _exit_interrupted(argv)


def _exit_interrupted(argv: Sequence[str] | None) -> int:
    """Report an interrupt in one line; exit code 130. Run as the program (``argv`` from the command line), exit
    at once: CPython remembers a KeyboardInterrupt that passed through code a C extension ran (``PyRun_*``) and
    would otherwise end the process by SIGINT at shutdown, although it was handled here. Calls from Python with
    their own ``argv`` get 130 back."""
    import signal
    import threading

    program = argv is None and threading.current_thread() is threading.main_thread()
    if program:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl+C while reporting changes nothing
    print("interrupted", file=sys.stderr)
    if program:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(130)
    return 130


def _main(argv: Sequence[str] | None) -> int:
    from .common import use_tolerant_output

    use_tolerant_output()  # a file name that is not UTF-8 prints as \xNN instead of failing after the work is done
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = os.environ.get("JUKEBOX_DEBUG") == "1"
    try:
        with warnings.catch_warnings():
            if not debug:  # warnings as one line each, without the source line Python shows by default
                warnings.simplefilter("always")  # repeats are dropped by the printer
                warnings.showwarning = _one_line_warning_once()
            rc = args.func(args)
    except UsageError as e:
        if debug:
            raise
        print(f"jukebox {args.command}: error: {e}", file=sys.stderr)
        return 2
    except JukeboxError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except MemoryError:
        print("error: out of memory; try a smaller --n-samples, fewer seconds or a smaller model", file=sys.stderr)
        return 1
    except OSError as e:
        if debug:
            raise
        from .common import os_error_line

        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        if debug:
            raise
        from .common import OUT_OF_MEMORY, is_out_of_memory

        if is_out_of_memory(e):  # torch's allocators raise RuntimeError (CPU) or OutOfMemoryError (CUDA)
            print(f"error: {OUT_OF_MEMORY}", file=sys.stderr)
            return 1
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        print(f"error: unexpected {type(e).__name__}: {msg} (set JUKEBOX_DEBUG=1 for details)", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
