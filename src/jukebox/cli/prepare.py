"""``jukebox prepare``: validate a folder of the user's music for training, write its manifest and (with
``--codes``) encode it into a portable code folder that priors train from without the audio."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import JukeboxError, UsageError
from .common import output_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="check a folder of music for training: report, train/validation split, manifest",
        description="Scan DIR (wav/flac/ogg/opus/mp3, nested folders; optional metadata.csv or metadata.jsonl "
        "with columns file, artist, genre, lyrics, split), validate every file, print a report and "
        "optionally write the manifest that training reads. With --model and --codes it also encodes the corpus "
        "with the model's VQ-VAE into a self-contained code folder (codes + manifest): `jukebox train prior --data "
        "CODE_FOLDER` then trains without the audio, on any machine.",
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
    p.set_defaults(func=cmd_prepare)


def _model_path(name: str) -> Path:
    if name == "default":
        from ..api import default_model_path

        path = default_model_path()
        if path is None:
            raise JukeboxError("this install has no embedded default model; pass a model directory")
        return path
    return Path(name)


def _progress(enabled: bool):
    """A ``progress(i, total, path)`` callback drawing a tqdm bar on stderr (a log line every 10% otherwise)."""
    state: dict = {}

    def progress(i: int, total: int, path: str) -> None:
        if enabled:
            if "bar" not in state:
                from tqdm import tqdm

                state["bar"] = tqdm(total=total, desc="encoding", unit="track", file=sys.stderr, dynamic_ncols=True)
            bar = state["bar"]
            bar.n = i
            bar.set_postfix_str(path[-40:], refresh=True)
            if i == total:
                bar.close()
        elif total and (i == total or i * 10 // total != (i - 1) * 10 // total):
            print(f"encoding: {i}/{total} tracks", file=sys.stderr, flush=True)

    return progress


def cmd_prepare(args: argparse.Namespace) -> int:
    from ..data.dataset import corpus_report, format_report, scan_corpus, split_manifest

    md = None
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
                  f"{args.model} --data {args.codes} --level L`")
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    return 0
