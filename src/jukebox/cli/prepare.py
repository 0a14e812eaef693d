"""``jukebox prepare``: validate a folder of the user's music for training, write its manifest and (with
``--codes``) encode it into a portable code folder that priors train from without the audio."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import JukeboxError, UsageError
from .common import output_path

if TYPE_CHECKING:
    from ..data.dataset import Track
    from ..data.tempo import BeatTrack


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="check a folder of music for training: report, train/validation split, manifest",
        description="Scan DIR (wav/flac/ogg/opus/mp3, nested folders; optional metadata.csv or metadata.jsonl "
        "with columns file, artist, genre, lyrics, split), validate every file, print a report and "
        "optionally write the manifest that training reads. With --model and --codes it also encodes the corpus "
        "with the model's VQ-VAE into a self-contained code folder (codes + manifest): `jukebox train prior --data "
        "CODE_FOLDER` then trains without the audio, on any machine. The code folder also gets every track's "
        "beats and tempo (tempo.json; --no-beats skips it, --beats-only adds or refreshes it in an existing folder).",
    )
    p.add_argument("--data", required=True, metavar="DIR", help="folder of audio files")
    p.add_argument("-o", "--output", default=None, help="manifest to write (.json); without it only the report")
    p.add_argument("--force", action="store_true", help="overwrite an existing manifest")
    p.add_argument("--sample-rate", type=int, default=None,
                   help="the model's sample rate (default: the --model VQ-VAE's, else 44100)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of tracks held out (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/validation split (default 0)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="skip files shorter than this (default 1)")
    p.add_argument("--folder-as", choices=("artist", "genre", "none"), default="artist",
                   help="label the top-level folder gives files without metadata or tags (default artist)")
    p.add_argument("--deep", action="store_true", help="decode every file completely (slow, finds more damage)")
    p.add_argument("--strict", action="store_true", help="fail when any file has to be skipped")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    g = p.add_argument_group("portable code folder")
    g.add_argument("--model", "-m", default=None, metavar="MODEL_DIR",
                   help="model directory whose frozen VQ-VAE encodes the corpus ('default': the embedded model)")
    g.add_argument("--codes", default=None, metavar="OUT_DIR",
                   help="code folder to write (codes of --levels + manifest); needs --model")
    g.add_argument("--levels", type=int, nargs="+", default=None, metavar="L",
                   help="levels to encode (default all; a level-L prior needs L, an upsampler also L+1)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when available)")
    g.add_argument("--batch-size", type=int, default=4, help="audio chunks of 2^19 samples encoded at once (default 4)")
    g.add_argument("--no-beats", action="store_true",
                   help="do not track the beats of the encoded tracks (no tempo.json in the code folder)")
    g.add_argument("--beats-only", action="store_true",
                   help="only add or refresh tempo.json (beats and tempo per track) in the existing code folder "
                   "--codes, reading the audio from --data; nothing is re-encoded, no --model needed")
    p.set_defaults(func=cmd_prepare)


def _model_path(name: str) -> Path:
    if name == "default":
        from ..api import default_model_path

        path = default_model_path()
        if path is None:
            raise JukeboxError("this install has no embedded default model; pass a model directory")
        return path
    return Path(name)


def _progress(enabled: bool, desc: str = "encoding"):
    """A ``progress(i, total, path)`` callback drawing a tqdm bar on stderr (a log line every 10% otherwise)."""
    state: dict = {}

    def progress(i: int, total: int, path: str) -> None:
        if enabled:
            if "bar" not in state:
                from tqdm import tqdm

                state["bar"] = tqdm(total=total, desc=desc, unit="track", file=sys.stderr, dynamic_ncols=True)
            bar = state["bar"]
            bar.n = i
            bar.set_postfix_str(path[-40:], refresh=True)
            if i == total:
                bar.close()
        elif total and (i == total or i * 10 // total != (i - 1) * 10 // total):
            print(f"{desc}: {i}/{total} tracks", file=sys.stderr, flush=True)

    return progress


def _track_beats(tracks: list[Track], audio_path: Callable[[Track], Path], sample_rate: int,
                 progress: Callable[[int, int, str], None]) -> tuple[dict[str, BeatTrack], list[str]]:
    """Beats of ``tracks`` (manifest Tracks; audio at ``audio_path(track)``) -> ({track path: BeatTrack},
    [track paths that failed]); each failure is reported in one line on stderr."""
    from ..data.tempo import track_files

    found, failed = track_files(((t.path, audio_path(t)) for t in tracks), sample_rate, progress)
    for path, why in failed.items():
        print(f"beats skipped: {why if path in why else f'{path}: {why}'}", file=sys.stderr, flush=True)
    return found, list(failed)


def _write_beats(folder: Path, found: dict[str, BeatTrack], failed: list[str],
                 keep: dict[str, BeatTrack] | None = None) -> dict[str, Any]:
    """Save ``found`` (plus the ``keep`` entries of failed tracks) as ``folder``/tempo.json; returns the report."""
    from ..data.tempo import save_beats

    keep = keep or {}
    kept = [p for p in failed if p in keep]
    tracks = {**found, **{p: keep[p] for p in kept}}
    path = save_beats(folder, dict(sorted(tracks.items())))
    bpms = sorted(t.bpm for t in found.values() if t.bpm > 0)
    return {"file": str(path), "tracks": len(found), "with_pulse": len(bpms),
            "median_bpm": round(bpms[len(bpms) // 2], 1) if bpms else None, "failed": failed, "kept": kept}


def _beats_line(report: dict[str, Any]) -> str:
    pulse = f"{report['with_pulse']} with a pulse" + (f", median {report['median_bpm']} BPM" if report["with_pulse"]
                                                       else "")
    line = f"wrote {report['file']}: beats of {report['tracks']} tracks ({pulse})"
    if report["failed"]:
        line += f"; {len(report['failed'])} failed" + (f" ({len(report['kept'])} keep their earlier beats)"
                                                       if report["kept"] else "")
    return line


def _beats_only(args: argparse.Namespace) -> int:
    """``prepare --beats-only``: (re)write tempo.json of the existing code folder ``--codes``."""
    from ..data.code_cache import CodeCache
    from ..data.tempo import load_beats

    if args.codes is None:
        raise UsageError("--beats-only needs --codes CODE_FOLDER (an existing code folder)")
    clash = [name for name, given in (("--model", args.model is not None), ("--levels", args.levels is not None),
                                      ("--output", args.output is not None), ("--no-beats", args.no_beats),
                                      ("--sample-rate", args.sample_rate is not None)) if given]
    if clash:
        raise UsageError(f"{clash[0]} does not go with --beats-only (it only adds beats to an existing code folder)")
    codes, data = Path(args.codes), Path(args.data)
    if not codes.is_dir():
        raise JukeboxError(f"{codes}: no such code folder; write one with `jukebox prepare --model ... --codes`")
    if not data.is_dir():
        raise JukeboxError(f"{data}: no such folder (--data is the audio the code folder was made from)")
    cache = CodeCache(codes)
    manifest = cache.manifest()
    try:
        earlier = load_beats(codes) or {}
    except JukeboxError:
        earlier = {}  # a corrupt file is replaced whole
    found, failed = _track_beats(manifest.tracks, lambda t: data / t.path, cache.sample_rate,
                                 _progress(not args.json and sys.stderr.isatty(), "beats"))
    if not found:
        raise JukeboxError(f"no track of {codes} could be read from {data} ({len(failed)} failed); is --data the "
                           "folder the codes were made from?")
    report = _write_beats(codes, found, failed, keep=earlier)
    print(json.dumps({"beats": report}, ensure_ascii=False) if args.json else _beats_line(report), flush=True)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from ..data.dataset import corpus_report, format_report, scan_corpus, split_manifest

    if args.beats_only:
        return _beats_only(args)
    md = None
    if args.no_beats and args.codes is None:
        raise UsageError("--no-beats goes with --codes OUT_DIR")
    if args.codes is not None:
        if args.model is None:
            raise UsageError("--codes needs --model (the model whose VQ-VAE encodes the corpus)")
        if Path(args.codes).exists() and not args.force:
            raise JukeboxError(f"{args.codes} already exists; pass --force to overwrite it")
        if args.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    elif args.model is not None or args.levels is not None:
        raise UsageError("--model and --levels go with --codes OUT_DIR")
    if args.model is not None:
        from ..checkpoint.model_dir import ModelDir

        md = ModelDir(_model_path(args.model))
        vq = md.vqvae_config()
        if args.sample_rate is not None and args.sample_rate != vq.sample_rate:
            raise UsageError(f"--sample-rate {args.sample_rate} differs from the VQ-VAE's {vq.sample_rate}; drop it")
        args.sample_rate = vq.sample_rate
        levels = sorted(set(args.levels if args.levels is not None else range(vq.levels)))
        bad = [lv for lv in levels if not 0 <= lv < vq.levels]
        if bad:
            raise UsageError(f"--levels must be in 0..{vq.levels - 1} for this VQ-VAE, got {bad[0]}")
    if args.sample_rate is None:
        args.sample_rate = 44100
    if args.sample_rate <= 0:
        raise UsageError(f"--sample-rate must be positive, got {args.sample_rate}")
    if not 0.0 <= args.val_fraction < 1.0:
        raise UsageError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.min_seconds < 0:
        raise UsageError(f"--min-seconds must be >= 0, got {args.min_seconds}")
    out = output_path(args.output, args.force, (".json",)) if args.output else None
    manifest = scan_corpus(args.data, sample_rate=args.sample_rate,
                           folder_as=None if args.folder_as == "none" else args.folder_as,
                           min_seconds=args.min_seconds, deep=args.deep)
    if not manifest.tracks:
        raise JukeboxError(f"{args.data}: no readable audio files found ({len(manifest.skipped)} skipped)")
    manifest = split_manifest(manifest, val_fraction=args.val_fraction, seed=args.seed)
    report = corpus_report(manifest)
    if args.strict and manifest.skipped:
        first = manifest.skipped[0]
        raise JukeboxError(f"{len(manifest.skipped)} files cannot be used (first: {first.path}: {first.reason}); "
                           "fix or remove them, or drop --strict")
    if out is not None:
        manifest.save(out)
        report["manifest"] = str(out)
    if not args.json:
        print(format_report(report), flush=True)
        if out is not None:
            print(f"wrote {out}")
    if md is not None:
        from ..data.code_cache import build_code_cache, vqvae_fingerprint
        from .common import resolve_device

        device = resolve_device(args.device)
        vqvae = md.load_vqvae(device).eval()
        for p in vqvae.parameters():
            p.requires_grad_(False)
        cache = build_code_cache(manifest, vqvae, args.codes, vqvae_fingerprint(md.path / "vqvae"), levels=levels,
                                 portable=True, batch_size=args.batch_size,
                                 progress=_progress(not args.json and sys.stderr.isatty()))
        size = sum(f.stat().st_size for f in Path(args.codes).iterdir() if f.is_file())
        report["codes"] = {"folder": str(args.codes), "levels": list(cache.present), "tracks": len(cache.tracks),
                           "bytes": size}
        if not args.json:
            print(f"wrote {args.codes}: level(s) {', '.join(map(str, cache.present))} codes of {len(cache.tracks)} "
                  f"tracks + manifest ({size / 2**20:.1f} MiB); train with `jukebox train prior --model "
                  f"{args.model} --data {args.codes} --level L`", flush=True)
        if not args.no_beats:
            encoded = [t for t in manifest.tracks if t.path in cache.tracks]
            found, failed = _track_beats(encoded, manifest.track_path, cache.sample_rate,
                                         _progress(not args.json and sys.stderr.isatty(), "beats"))
            report["codes"]["beats"] = beats = _write_beats(Path(args.codes), found, failed)
            if not args.json:
                print(_beats_line(beats), flush=True)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    return 0
