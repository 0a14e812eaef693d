"""``jukebox eval``: measure a model on a folder of music, printed as a table (or ``--json``).

- ``eval codec``: reconstruction quality of each VQ-VAE level (spectral convergence, SI-SDR, mel L1) on audio;
- ``eval prior``: bits per token of one prior on a folder of codes (.npz) or audio (encoded first);
- ``eval audio``: pulse clarity, tempo, harmony, level and clipping of a folder of audio
  (:func:`jukebox.eval.rhythm.audio_measures`); no model needed.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .common import add_device_arg, check_codes_range, load_codes_file, resolve_device

CODEC_METRICS = ("spectral_convergence_db", "si_sdr_db", "mel_l1")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="measure a model or a folder of music (codec, prior, audio)")
    ev = p.add_subparsers(dest="what", metavar="WHAT")
    ev.required = True

    c = ev.add_parser("codec", help="reconstruction quality of each VQ-VAE level on a folder of audio")
    c.add_argument("folder", help="folder of audio files (searched recursively), or one file")
    _model_args(c)
    c.add_argument("--levels", default=None, metavar="L,L",
                   help="levels to measure, e.g. 0,1 (default: every level)")
    _common(c)
    c.set_defaults(func=cmd_codec)

    pr = ev.add_parser("prior", help="bits per token of a prior on a folder of codes (.npz) or audio")
    pr.add_argument("folder", help="folder of codes files (.npz, as `jukebox encode` writes) and/or audio files, "
                                   "or one file")
    _model_args(pr)
    pr.add_argument("--level", type=int, default=None, help="level whose prior to measure (default: the top)")
    pr.add_argument("--artist", default="unknown")
    pr.add_argument("--genre", default="unknown")
    pr.add_argument("--total-seconds", type=float, default=None,
                    help="song length the prior is told (default: each piece's own length)")
    _common(pr)
    pr.set_defaults(func=cmd_prior)

    a = ev.add_parser("audio", help="pulse clarity, tempo, harmony, level and clipping of a folder of audio")
    a.add_argument("folder", help="folder of audio files (searched recursively), or one file")
    _common(a)
    a.set_defaults(func=cmd_audio)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", default=None, help="model directory (default: the embedded default model)")
    add_device_arg(p)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=30.0,
                   help="measure at most this much of each audio file, from its start (default: 30; 0 = all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


# ------------------------------------------------------------------------------------------ inputs
def _files(folder: str, suffixes: Sequence[str]) -> tuple[Path, list[Path]]:
    """(root, files under it with one of ``suffixes``, sorted); a single file is its own root."""
    root = Path(folder)
    if root.is_file():
        if root.suffix.lower() not in suffixes:
            raise UsageError(f"{root}: expected one of {', '.join(suffixes)}")
        return root.parent, [root]
    if not root.is_dir():
        raise UsageError(f"{root}: no such file or folder")
    files = sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                    and not any(part.startswith(".") for part in p.relative_to(root).parts)),
                   key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise UsageError(f"{root}: no {', '.join(suffixes)} files found")
    return root, files


def _seconds(args: argparse.Namespace) -> float | None:
    if args.seconds < 0 or not math.isfinite(args.seconds):
        raise UsageError("--seconds must be 0 (all) or positive")
    return args.seconds or None


def _load(path: Path, sample_rate: int, seconds: float | None) -> Any:
    """Audio [1, 1, T] float32 at ``sample_rate`` (torch)."""
    import torch

    from ..audio import load_audio

    audio, _ = load_audio(path, sample_rate=sample_rate, duration_seconds=seconds)
    return torch.from_numpy(audio)[None, None]


def _mean(rows: list[dict[str, Any]], key: str, weight: str | None = None) -> float:
    vals = [(r[key], r[weight] if weight else 1) for r in rows if r.get(key) is not None]
    total = sum(w for _, w in vals)
    return float(sum(v * w for v, w in vals) / total) if total else float("nan")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = lambda cells: "  ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(header), *(fmt(r) for r in rows)])


# ------------------------------------------------------------------------------------------- codec
def cmd_codec(args: argparse.Namespace) -> int:
    import torch

    from ..checkpoint.model_dir import ModelDir
    from ..codec import decode_codes, encode_audio
    from ..data.dataset import AUDIO_EXTENSIONS as AUDIO_SUFFIXES
    from ..eval.reconstruction import reconstruction_metrics

    seconds = _seconds(args)
    root, files = _files(args.folder, AUDIO_SUFFIXES)
    device = resolve_device(args.device)
    model_dir = _model_dir(args.model)
    vqvae = ModelDir(model_dir).load_vqvae(device)
    n_levels = vqvae.config.levels
    levels = _parse_levels(args.levels, n_levels)
    sr = vqvae.config.sample_rate
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        for path in files:
            x = _load(path, sr, seconds).to(device)
            codes = encode_audio(vqvae, x, end_level=max(levels) + 1)
            per_level = {}
            for level in levels:
                y = decode_codes(vqvae, codes[level], level).float()
                n = min(x.shape[-1], y.shape[-1])
                per_level[level] = reconstruction_metrics(x[..., :n], y[..., :n], sr)
            rows.append({"file": path.relative_to(root).as_posix(), "seconds": x.shape[-1] / sr,
                         "levels": per_level})
    mean = {level: {k: _mean([r["levels"][level] for r in rows], k, "seconds") for k in CODEC_METRICS}
            for level in levels}
    if args.json:
        print(json.dumps({"model": str(model_dir), "sample_rate": sr, "levels": levels,
                          "files": [{**r, "levels": {str(k): v for k, v in r["levels"].items()}} for r in rows],
                          "mean": {str(k): v for k, v in mean.items()}}))
        return 0
    header = ["file", "seconds", *(f"L{lvl} SC dB" for lvl in levels), *(f"L{lvl} SI-SDR" for lvl in levels)]
    body = [[r["file"], f"{r['seconds']:.2f}",
             *(f"{r['levels'][lvl]['spectral_convergence_db']:.2f}" for lvl in levels),
             *(f"{r['levels'][lvl]['si_sdr_db']:.2f}" for lvl in levels)] for r in rows]
    body.append([f"mean ({len(rows)} files, by length)", f"{sum(r['seconds'] for r in rows):.2f}",
                 *(f"{mean[lvl]['spectral_convergence_db']:.2f}" for lvl in levels),
                 *(f"{mean[lvl]['si_sdr_db']:.2f}" for lvl in levels)])
    print(_table(header, body))
    return 0


def _model_dir(path: str | None) -> Path:
    from ..api import default_model_path
    from ..errors import JukeboxError

    if path is not None:
        return Path(path)
    found = default_model_path()
    if found is None:
        raise JukeboxError("this install has no embedded default model; pass -m MODEL_DIR")
    return Path(found)


def _parse_levels(text: str | None, n_levels: int) -> list[int]:
    if text is None:
        return list(range(n_levels))
    try:
        levels = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise UsageError(f"--levels takes comma-separated integers, got {text!r}") from None
    if not levels or not all(0 <= lvl < n_levels for lvl in levels):
        raise UsageError(f"--levels must lie between 0 and {n_levels - 1}, got {text!r}")
    return levels


# ------------------------------------------------------------------------------------------- prior
def cmd_prior(args: argparse.Namespace) -> int:
    import torch

    from ..api import load_model
    from ..data.dataset import AUDIO_EXTENSIONS as AUDIO_SUFFIXES
    from .score import score_codes

    seconds = _seconds(args)
    root, files = _files(args.folder, (".npz", *AUDIO_SUFFIXES))
    model = load_model(_model_dir(args.model), device=resolve_device(args.device))
    if args.total_seconds is not None:
        model._check_seconds(args.total_seconds, "--total-seconds")  # the same range as `jukebox score`'s
    level = max(model.prior_levels) if args.level is None and model.prior_levels else args.level
    if level not in model.prior_levels:
        raise UsageError(f"the model has no prior for level {level} (it has {model.prior_levels})")
    sr, hop = model.sample_rate, model.hop_lengths[level]
    l_bins = model.vqvae.config.l_bins
    rows: list[dict[str, Any]] = []
    for path in files:
        name = path.relative_to(root).as_posix()
        if path.suffix.lower() == ".npz":
            arrays = load_codes_file(path)
            if level not in arrays:
                raise UsageError(f"{path} has no level_{level}")
            for lvl, arr in arrays.items():
                check_codes_range(arr, l_bins, f"{path} level_{lvl}")
            codes = {lvl: torch.from_numpy(a) for lvl, a in arrays.items()}
        else:
            codes = model.encode(_load(path, sr, seconds))
        n, tokens = codes[level].shape
        total = args.total_seconds if args.total_seconds is not None else tokens * hop / sr
        meta = {"artist": args.artist, "genre": args.genre, "lyrics": "", "total_length": int(total * sr),
                "offset": 0}
        for item in score_codes(model, level, codes, [meta] * n):
            rows.append({"file": name if n == 1 else f"{name}[{item['item']}]", "tokens": item["tokens"],
                         "bits_per_token": item["bits_per_token"]})
    mean = _mean(rows, "bits_per_token", "tokens")
    if args.json:
        print(json.dumps({"model": str(model.model_dir.path), "level": level, "artist": args.artist,
                          "genre": args.genre, "items": rows, "mean_bits_per_token": mean}))
        return 0
    body = [[r["file"], str(r["tokens"]), f"{r['bits_per_token']:.3f}"] for r in rows]
    body.append([f"mean ({len(rows)} items, by tokens)", str(sum(r["tokens"] for r in rows)), f"{mean:.3f}"])
    print(f"level {level} prior, artist {args.artist!r}, genre {args.genre!r}")
    print(_table(["item", "tokens", "bits/token"], body))
    return 0


# ------------------------------------------------------------------------------------------- audio
def cmd_audio(args: argparse.Namespace) -> int:
    from ..audio import load_audio
    from ..data.dataset import AUDIO_EXTENSIONS as AUDIO_SUFFIXES
    from ..eval.rhythm import audio_measures

    seconds = _seconds(args)
    root, files = _files(args.folder, AUDIO_SUFFIXES)
    rows: list[dict[str, Any]] = []
    for path in files:
        audio, sr = load_audio(path, duration_seconds=seconds, mono=False)  # [C, T] at the file's own rate
        rows.append({"file": path.relative_to(root).as_posix(), "seconds": audio.shape[-1] / sr,
                     **audio_measures(audio, sr)})
    keys = [k for k in rows[0] if k not in ("file", "seconds")]
    # The mean tempo is over the clips with a pulse (a clip without one reports 0 BPM).
    mean = {k: _mean([r for r in rows if k != "tempo_bpm" or r[k] > 0], k, "seconds") for k in keys}
    if args.json:
        print(json.dumps({"files": rows, "mean": {k: v if math.isfinite(v) else None for k, v in mean.items()}}))
        return 0

    def cell(key: str, value: float) -> str:
        if not math.isfinite(value):
            return "-"
        return f"{value:.1f}" if key.endswith(("_bpm", "_dbfs", "_db")) else f"{value:.3f}"

    body = [[r["file"], f"{r['seconds']:.2f}", *(cell(k, r[k]) for k in keys)] for r in rows]
    body.append([f"mean ({len(rows)} files, by length)", f"{sum(r['seconds'] for r in rows):.2f}",
                 *(cell(k, mean[k]) for k in keys)])
    print(_table(["file", "seconds", *keys], body))
    return 0
