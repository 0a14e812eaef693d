#!/usr/bin/env python3
"""Split an audio pack (`recipes/pack_training_audio.py`: PACK/audio/*.ogg + PACK/metadata.csv) into tar shards of
at most ``--max-mb`` each, for carrying to a GPU machine one call at a time.

Each shard holds ``audio/<files>`` and its own ``metadata.csv`` (the pack's rows of its files) under
``shard_<k>/``; untarring every shard into one folder and concatenating their metadata gives the pack back
(`gpu_upsamplers.sh` does that). Files go to shards in name order (a file larger than the limit is refused).

    python research/scripts/shard_pack.py /work/uppack --max-mb 30 --out .gpu/upshard
    # -> .gpu/upshard_0.tar, .gpu/upshard_1.tar, ...
"""

from __future__ import annotations

import argparse
import csv
import io
import tarfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pack", type=Path)
    ap.add_argument("--max-mb", type=float, default=30.0)
    ap.add_argument("--out", required=True, help="shard path prefix: PREFIX_<k>.tar")
    args = ap.parse_args()
    with open(args.pack / "metadata.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames, list(reader)
    limit = int(args.max_mb * 1e6) - 200_000  # room for the tar headers and the metadata
    shards: list[list[dict]] = [[]]
    size = 0
    for r in sorted(rows, key=lambda r: r["file"]):
        n = (args.pack / r["file"]).stat().st_size
        if n > limit:
            raise SystemExit(f"error: {r['file']} ({n / 1e6:.1f} MB) is larger than a shard")
        if size + n > limit:
            shards.append([])
            size = 0
        shards[-1].append(r)
        size += n
    for k, part in enumerate(shards):
        path = Path(f"{args.out}_{k}.tar")
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        w.writerows(part)
        data = buf.getvalue().encode("utf-8")
        with tarfile.open(path, "w") as tar:
            info = tarfile.TarInfo(f"shard_{k}/metadata.csv")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            for r in part:
                tar.add(args.pack / r["file"], arcname=f"shard_{k}/{r['file']}")
        print(f"{path}: {len(part)} files, {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
