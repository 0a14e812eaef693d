"""``jukebox prepare``: validate a folder of the user's music for training and write its manifest."""

from __future__ import annotations

import argparse
import json

from ..errors import JukeboxError, UsageError
from .common import output_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="check a folder of music for training: report, train/validation split, manifest",
        description="Scan DIR (wav/flac/ogg/opus/mp3, nested folders; optional metadata.csv or metadata.jsonl "
        "with columns file, artist, genre, lyrics, split), validate every file, print a report and "
        "optionally write the manifest that training reads.",
    )
    p.add_argument("--data", required=True, metavar="DIR", help="folder of audio files")
    p.add_argument("-o", "--output", default=None, help="manifest to write (.json); without it only the report")
    p.add_argument("--force", action="store_true", help="overwrite an existing manifest")
    p.add_argument("--sample-rate", type=int, default=44100, help="the model's sample rate (default 44100)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of tracks held out (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/validation split (default 0)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="skip files shorter than this (default 1)")
    p.add_argument("--folder-as", choices=("artist", "genre", "none"), default="artist",
                   help="label the top-level folder gives files without metadata or tags (default artist)")
    p.add_argument("--deep", action="store_true", help="decode every file completely (slow, finds more damage)")
    p.add_argument("--strict", action="store_true", help="fail when any file has to be skipped")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    from ..data.dataset import corpus_report, format_report, scan_corpus, split_manifest

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
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(format_report(report))
        if out is not None:
            print(f"wrote {out}")
    return 0
