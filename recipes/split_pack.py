#!/usr/bin/env python3
"""The first half of a training pack by bytes: the data the default model's v3 upsamplers were fine-tuned on.

Walks ``PACK/audio/*`` in name order and keeps each file while the kept bytes stay within half of the pack's total
(a file that does not fit is skipped, later smaller ones may still fit); with the 103-track pack of
``recipes/pack_training_audio.py --minutes 210`` this gives 49 tracks, 1.6 h. Writes ``OUT/metadata.csv`` (the
pack's rows of the kept files) and ``OUT/audio/`` with symbolic links to them, a folder `jukebox prepare` and
`jukebox train` read.

    python recipes/split_pack.py PACK OUT
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path


def first_half(files: list[Path]) -> list[Path]:
    """The files of the first half by bytes, in name order: each one kept while the total stays within half."""
    files = sorted(files, key=lambda p: p.name)
    half = sum(p.stat().st_size for p in files) // 2
    kept, total = [], 0
    for p in files:
        size = p.stat().st_size
        if total + size <= half:
            kept.append(p)
            total += size
    return kept


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pack", type=Path, help="a pack from recipes/pack_training_audio.py (audio/ + metadata.csv)")
    ap.add_argument("out", type=Path, help="a new folder to write")
    args = ap.parse_args(argv)
    pack, out = args.pack.resolve(), args.out
    if not (pack / "metadata.csv").exists():
        raise SystemExit(f"error: {pack / 'metadata.csv'} not found: build the pack first "
                         "(recipes/pack_training_audio.py)")
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"error: {out} is not empty: pass a new folder")
    kept = first_half([p for p in (pack / "audio").iterdir() if p.is_file()])
    names = {f"audio/{p.name}" for p in kept}
    with open(pack / "metadata.csv", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        rows = [r for r in reader if r["file"] in names]
    (out / "audio").mkdir(parents=True, exist_ok=True)
    for p in kept:
        os.symlink(p, out / "audio" / p.name)
    with open(out / "metadata.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    print(f"{len(rows)} of the pack's tracks ({sum(p.stat().st_size for p in kept) / 1e6:.1f} MB) -> {out}")


if __name__ == "__main__":
    main()
