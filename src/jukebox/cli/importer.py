"""``jukebox import-openai``: convert OpenAI's released checkpoints into a model directory."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-openai", help="convert OpenAI's released Jukebox files into a model directory")
    p.add_argument("src", metavar="SRC_DIR", help="folder with vqvae.pth.tar and optional prior_level_{0,1,2}.pth.tar")
    p.add_argument("-o", "--output", required=True, metavar="MODEL_DIR", help="model directory to create")
    p.add_argument("--preset", choices=["5b", "5b_lyrics", "1b_lyrics"], default=None,
                   help="which released top prior the files hold (default: detected from the weights)")
    p.add_argument("--ids-dir", default=None, metavar="DIR",
                   help="the original repository's jukebox/data/ids/ folder (artist and genre tables)")
    p.add_argument("--force", action="store_true", help="write into an existing, non-empty MODEL_DIR")
    p.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    from ..checkpoint.openai_import import import_openai

    model_dir = import_openai(args.src, args.output, preset=args.preset, ids_dir=args.ids_dir, force=args.force)
    print(f"done: {model_dir.path} (prior levels: {model_dir.prior_levels() or 'none'})")
    return 0
