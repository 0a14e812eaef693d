"""``jukebox download-openai``: fetch OpenAI's released files and import them into a model directory."""

from __future__ import annotations

import argparse

from ..checkpoint.download import IDS_URL, IDS_URL_ENV, MODELS_URL_ENV, MODELS_URLS, RELEASES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download-openai", help="download one of OpenAI's released models and import it (several GB)",
        description="Download OpenAI's released checkpoints for NAME and the original artist/genre tables, then "
                    "import them into MODEL_DIR as `jukebox import-openai` does. An interrupted download resumes "
                    "when the same command is run again.")
    p.add_argument("name", metavar="NAME", choices=RELEASES, help=f"the released model: {', '.join(RELEASES)}")
    p.add_argument("-o", "--output", required=True, metavar="MODEL_DIR", help="model directory to create")
    p.add_argument("--source-dir", default=None, metavar="DIR",
                   help="where the original files are downloaded (default: MODEL_DIR.download beside MODEL_DIR)")
    p.add_argument("--keep-source", action="store_true",
                   help="keep the downloaded original files after the import (default: delete them)")
    p.add_argument("--base-url", default=None, metavar="URL",
                   help=f"address of the checkpoints (default: ${MODELS_URL_ENV}, else the original's "
                        f"{MODELS_URLS[0]})")
    p.add_argument("--ids-url", default=None, metavar="URL",
                   help=f"address of the id tables (default: ${IDS_URL_ENV}, else the original repository's "
                        f"{IDS_URL})")
    p.add_argument("--retries", type=int, default=3, metavar="N",
                   help="retries of a failed or interrupted request before giving up (default: 3)")
    p.add_argument("--force", action="store_true", help="import into an existing, non-empty MODEL_DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_download)


def cmd_download(args: argparse.Namespace) -> int:
    from ..checkpoint.download import download_openai

    model_dir = download_openai(args.name, args.output, source_dir=args.source_dir, keep_source=args.keep_source,
                                force=args.force, models_url=args.base_url, ids_url=args.ids_url,
                                retries=args.retries, progress=not args.quiet)
    print(f"done: {model_dir.path} (prior levels: {model_dir.prior_levels() or 'none'})")
    return 0
