"""``jukebox sample``: make songs (ancestral, primed from audio, continue or upsample saved codes).

Outputs in OUT_DIR (a run folder, :mod:`jukebox.runs`): ``item_{i}.wav`` (decoded from the lowest sampled level),
``codes.npz`` (``level_L`` arrays of shape [n_samples, T_L]), ``metadata.json`` (every setting, model, seed,
timings) and, for lyric models, ``alignment.json`` plus ``alignment_{i}.png``. Each level's codes are saved as soon
as it finishes, so an interrupted run keeps its work and ``--resume`` continues it.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from ..errors import JukeboxError, UsageError
from ..loudness import DEFAULT_LUFS
from ..runs import MODES, RunFolder, SamplingRequest, absolute, run
from .common import add_device_arg, printable, read_batch_file, resolve_device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate music", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", default=None, help="model directory (default: the embedded default model)")
    p.add_argument("--artist", default="unknown", help="artist to condition on (see --list-artists)")
    p.add_argument("--genre", default="unknown", help="genre to condition on (see --list-genres)")
    lyr = p.add_mutually_exclusive_group()
    lyr.add_argument("--lyrics", default=None, help="lyrics text")
    lyr.add_argument("--lyrics-file", default=None, help="file with the lyrics (UTF-8)")
    p.add_argument("--batch", default=None, metavar="FILE.jsonl",
                   help="one JSON object per item with artist, genre, lyrics and optionally total_seconds (that "
                   "song's length for the timing labels) and bpm; sets --n-samples")
    p.add_argument("--seconds", type=float, default=None, help="length to generate, in seconds")
    p.add_argument("--total-seconds", type=float, default=None,
                   help="song length the timing labels describe (default: the model's typical song length where "
                   "its model.json gives one and it is longer than --seconds, else --seconds)")
    p.add_argument("--bpm", type=float, default=None,
                   help="tempo in beats per minute, for models whose top prior takes one (the embedded model's "
                   "does; default: the genre's typical tempo in the model's training music)")
    p.add_argument("--n-samples", type=int, default=1, help="number of songs")
    p.add_argument("--temperature", type=_floats, default=None,
                   help="sampling temperature: one value, or per level as T0,T1,T2 (default: the model's own from "
                        "its model.json, e.g. 0.7,0.7,0.9 for the embedded model; 1.0 where it gives none)")
    p.add_argument("--top-k", type=_ints, default=None, help="top-k filtering (0: off), one value or per level")
    p.add_argument("--top-p", type=_floats, default=None, help="nucleus filtering (0: off), one value or per level")
    p.add_argument("--hop-fraction", type=_floats, default=None,
                   help="window hop as a fraction of the context, per level (default 0.5,0.5,0.125)")
    p.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="classifier-free guidance of the top level: 1 = off, larger follows --artist/--genre more "
                   "closely (for priors trained with --label-dropout; default: the model's own setting)")
    p.add_argument("--label-guidance", type=float, default=None, metavar="W",
                   help="guidance of --artist/--genre alone, for a top prior with tempo (the embedded model's): "
                   "larger follows the genre more while --guidance keeps the pulse (default: the model's own "
                   "setting, else equal to --guidance)")
    p.add_argument("--loudness", type=loudness_arg, default=DEFAULT_LUFS, metavar="LUFS",
                   help="bring each item to this loudness (ITU-R BS.1770), true peak at most -1 dBTP, with a soft "
                   "limiter (default: %(default)s; 'off' writes the raw decode)")
    p.add_argument("--seed", type=int, default=None, help="random seed (makes a run reproducible)")
    p.add_argument("--levels", type=_levels, default=None,
                   help="levels to sample, e.g. 2 for a fast draft decoded from the top level, or 'all' (default: "
                   "the model's own; the embedded model renders from level 1: 2,1)")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="ancestral (default), primed (with --prompt), continue or upsample (with --codes)")
    p.add_argument("--prompt", default=None, help="audio file to continue (primed sampling)")
    p.add_argument("--prompt-seconds", type=float, default=None, help="seconds of the prompt/codes to keep")
    p.add_argument("--codes", default=None, help="codes.npz to continue or upsample")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="tokens per chunk when priming the cache (default: the model's, else 32)")
    p.add_argument("--max-batch-size", type=int, default=16, help="largest batch per sampling call")
    p.add_argument("--weights", choices=["native", "int8", "fp8"], default=None,
                   help="prior weights while sampling: the model's own (native, default) or weight-only 8-bit "
                   "int8/fp8 (half the bytes per decode step of bf16; KL to native <= 1e-2 nats/token)")
    p.add_argument("--low-memory", action="store_true", help="load one level's prior at a time")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="weights/activations dtype for the priors (bfloat16 halves memory on GPU)")
    p.add_argument("--no-alignment", action="store_true", help="skip the lyric alignment")
    p.add_argument("--list-artists", nargs="?", const="", default=None, metavar="SEARCH",
                   help="list the model's artists (optionally those matching SEARCH) and exit")
    p.add_argument("--list-genres", nargs="?", const="", default=None, metavar="SEARCH",
                   help="list the model's genres (optionally those matching SEARCH) and exit")
    p.add_argument("-o", "--output", default=None, metavar="OUT_DIR", help="output folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in OUT_DIR")
    p.add_argument("--force", action="store_true", help="write into an existing, non-empty OUT_DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_device_arg(p)
    p.set_defaults(func=cmd_sample)


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or comma-separated numbers, got {text!r}") from None


def loudness_arg(text: str) -> float | None:
    """``--loudness``: a target level in LUFS (between -70 and 0), or ``off`` (None)."""
    if text.strip().lower() in ("off", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not -70.0 < value < 0.0:
        raise argparse.ArgumentTypeError(f"expected a level in LUFS between -70 and 0 (e.g. -16) or 'off', got "
                                         f"{text!r}")
    return value


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or comma-separated integers, got {text!r}") from None


def _levels(text: str) -> list[int] | str:
    return "all" if text.strip().lower() == "all" else _ints(text)


def _per_level(values: list[float] | None) -> Any:
    """One value for every level, or one per level given as L0,L1,L2 (a {level: value} override)."""
    if values is None:
        return None
    if len(values) == 1:
        return values[0]
    return {lvl: values[lvl] for lvl in range(len(values))}


def _list_names(model, which: str, query: str) -> int:
    vocab = model.vocab()
    if vocab is None:
        print(f"this model has no {which} conditioning")
        return 0
    if query:
        names = vocab.search_artists(query, limit=50) if which == "artists" else vocab.search_genres(query, limit=50)
    else:
        names = vocab.list_artists() if which == "artists" else vocab.list_genres()
    for name in names:
        print(printable(name) if isinstance(name, str) else (printable(name[0]), *name[1:]))
    return 0


class _Bars:
    """tqdm progress per level, showing tokens per second."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bars: dict[int, Any] = {}

    def __call__(self, level: int, done: int, total: int) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        bar = self.bars.get(level)
        if bar is None:
            bar = self.bars[level] = tqdm(total=total, desc=f"level {level}", unit="tok", file=sys.stderr,
                                          dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _request_from_args(args: argparse.Namespace) -> SamplingRequest:
    lyrics = args.lyrics or ""
    if args.lyrics_file:
        try:
            lyrics = Path(args.lyrics_file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"{args.lyrics_file}: no such file") from None
        except UnicodeDecodeError:
            raise UsageError(f"{args.lyrics_file}: lyrics must be UTF-8 text") from None
    items = read_batch_file(args.batch) if args.batch else None
    n = len(items) if items else args.n_samples
    if args.batch and args.n_samples not in (1, n):
        raise UsageError(f"--batch has {n} items but --n-samples is {args.n_samples}")
    mode = args.mode or ("primed" if args.prompt else "ancestral")
    if mode == "primed" and not args.prompt:
        raise UsageError("--mode primed needs --prompt FILE")
    if mode in ("continue", "upsample") and not args.codes:
        raise UsageError(f"--mode {mode} needs --codes FILE")
    if args.seconds is None and mode != "upsample":
        raise UsageError("--seconds is required")
    if args.seconds is not None and args.seconds <= 0:
        raise UsageError(f"--seconds must be positive, got {args.seconds}")
    if n < 1:
        raise UsageError(f"--n-samples must be >= 1, got {n}")
    for name, text in (("--artist", args.artist), ("--genre", args.genre), ("--lyrics", lyrics)):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes on the command line arrive as lone surrogates
            raise UsageError(f"{name} is not valid Unicode text; pass UTF-8") from None
    return SamplingRequest(
        mode=mode, artist=args.artist, genre=args.genre, lyrics=lyrics, items=items, n_samples=n,
        seconds=args.seconds, total_seconds=args.total_seconds, bpm=args.bpm, levels=args.levels,
        prompt=args.prompt, prompt_seconds=args.prompt_seconds, codes=args.codes, loudness=args.loudness,
        alignment=not args.no_alignment, temperature=_per_level(args.temperature), top_k=_per_level(args.top_k),
        top_p=_per_level(args.top_p), hop_fraction=_per_level(args.hop_fraction), seed=args.seed,
        chunk_size=args.chunk_size, max_batch_size=args.max_batch_size, guidance=args.guidance,
        label_guidance=args.label_guidance,
        weights=args.weights)


def _sample_helper(args: argparse.Namespace, device: Any, dtype: Any) -> int:
    """A process of rank > 0 under torchrun: samples its share of every level with rank 0 (which alone reads
    and writes the run folder's outputs) and prints nothing."""
    from ..api import load_model
    from ..runs import api_call

    resume_codes = None
    if args.resume:
        folder = RunFolder(args.output)
        request, resume_codes = folder.resume_state()
        if folder.done:
            return 0
        request.alignment = request.alignment and not args.no_alignment
        args.model = args.model or folder.metadata.get("model")
    else:
        request = _request_from_args(args)
    model = load_model(args.model, device=device, dtype=dtype, low_memory=args.low_memory)
    settings = model.sampling_settings(**request.overrides())
    call, kwargs = api_call(model, request, settings, resume_codes, None, None)
    call(**kwargs)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from ..api import load_model

    device = resolve_device(args.device)
    dtype = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    if args.list_artists is None and args.list_genres is None and args.output is None:
        raise UsageError("-o OUT_DIR is required")
    from ..distributed import current_ranks, init_from_env

    device = init_from_env(device)  # under torchrun: one process per GPU, sharing every level's rows
    ranks = current_ranks()
    if ranks is not None and ranks.rank > 0:
        return _sample_helper(args, device, dtype)
    folder = RunFolder(args.output) if args.output else None
    resume_codes = None
    if folder is not None:
        if args.resume:
            request, resume_codes = folder.resume_state()
            if folder.done:
                print(f"{folder.path}: already complete")
                return 0
            request.alignment = request.alignment and not args.no_alignment
            stored = folder.metadata.get("model")
            if args.model is None:
                args.model = stored
            elif stored and absolute(args.model) != stored:  # an explicit -m wins (the model moved, or a copy)
                warnings.warn(f"resuming with -m {args.model}, not the model this run was started with ({stored})",
                              stacklevel=1)
        elif folder.path.exists() and any(folder.path.iterdir()) and not args.force:
            raise JukeboxError(f"{folder.path} already exists and is not empty; pass --resume to continue it or "
                               "--force")
    listing = args.list_artists is not None or args.list_genres is not None
    if folder is not None and not listing:
        folder.claim(force=args.force, resume=args.resume)  # exclusive: a second run into it fails here
    bars = _Bars(args.quiet)
    try:
        model = load_model(args.model, device=device, dtype=dtype, low_memory=args.low_memory)
        if args.list_artists is not None:
            return _list_names(model, "artists", args.list_artists)
        if args.list_genres is not None:
            return _list_names(model, "genres", args.list_genres)
        if not args.resume:
            request = _request_from_args(args)
        settings = model.sampling_settings(**request.overrides())  # bad settings: an error before any output
        assert folder is not None
        extra = {} if ranks is None else {"world_size": ranks.world}
        gen = run(model, request, folder, settings, resume_codes, progress=bars, device=str(device),
                  dtype=args.dtype, torch=torch.__version__, **extra)
        if ranks is not None:  # rows (window x item) each process sampled, per level
            folder.write(rows_per_rank={str(k): v for k, v in gen.settings["rows_per_rank"].items()})
    except BaseException:
        # Any failure before a level was saved leaves no half-made output folder behind (a saved level is kept
        # for --resume).
        if folder is not None:
            folder.abandon()
        raise
    finally:
        bars.close()
        if folder is not None:
            folder.release()
    total = sum(r.seconds for r in gen.reports)
    print(f"wrote {gen.audio.shape[0]} item(s) of {gen.audio.shape[-1] / gen.sample_rate:.2f} s to {folder.path} "
          f"(level {gen.level}, sampling {total:.1f} s)")
    return 0
