#!/usr/bin/env python3
"""Choose the genre-balanced subset of the corpus's training split that the default model's top prior (v3) was
trained on, and lay it out as a folder that `jukebox prepare` reads.

Rule: every track of the pack (`PACK/metadata.csv` from pack_training_audio.py, the upsamplers' data) first, then
the other training tracks in a seeded random order, each added while its genre holds less than
``--hours-per-genre`` hours. With the defaults this gives the 236 tracks (12.3 h) of v3's top-level code folder.
``--pack none`` leaves the pack out of the rule and ``--with-validation`` adds the validation split: the 255 tracks
(12.4 h of training music + 1.1 h held out) of v5's tempo-labelled top-level code folder.

    python recipes/select_training_subset.py --corpus CORPUS --pack PACK --out SUBSET
    jukebox prepare --data SUBSET --model MODEL_DIR --codes CODES --levels 2

``--out`` gets ``metadata.csv`` (the corpus's columns) and symbolic links to the corpus's audio files.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np


def track_key(file: str) -> str:
    """A file's identity across the corpus and its packs: ``pkg/name.flac`` and ``audio/pkg__name.ogg`` match."""
    stem = file.rsplit(".", 1)[0]
    return stem.removeprefix("audio/").replace("/", "__")


def select(rows: list[dict], pack: set[str], hours_per_genre: float, seed: int) -> list[dict]:
    """The subset, in the order it was chosen: rows of the training split, pack tracks first. ``pack``: the
    pack's tracks as :func:`track_key` keys."""
    train = [r for r in rows if r["split"] == "train"]
    train = [train[i] for i in np.random.RandomState(seed).permutation(len(train))]
    packed = [track_key(r["file"]) in pack for r in train]
    order = [r for r, p in zip(train, packed) if p] + [r for r, p in zip(train, packed) if not p]
    n_packed = sum(packed)
    cap, total, chosen = hours_per_genre * 3600, {}, []
    for i, r in enumerate(order):
        if i < n_packed or total.get(r["genre"], 0.0) < cap:
            chosen.append(r)
            total[r["genre"]] = total.get(r["genre"], 0.0) + float(r["seconds"])
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="corpus folder with metadata.csv")
    ap.add_argument("--pack", required=True, help="the pack (recipes/pack_training_audio.py), or none")
    ap.add_argument("--with-validation", action="store_true", help="also link the validation split's tracks")
    ap.add_argument("--out", required=True, help="folder to write (metadata.csv + links to the audio)")
    ap.add_argument("--hours-per-genre", type=float, default=2.5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    corpus, out = Path(args.corpus).resolve(), Path(args.out)
    rows = list(csv.DictReader(open(corpus / "metadata.csv", encoding="utf-8")))
    pack_csv = Path(args.pack) / "metadata.csv"
    if args.pack == "none":
        pack: set[str] = set()
    elif not pack_csv.exists():
        raise SystemExit(f"error: {pack_csv} not found: build the pack first (recipes/pack_training_audio.py)")
    else:
        pack = {track_key(r["file"]) for r in csv.DictReader(open(pack_csv, encoding="utf-8"))}
    chosen = select(rows, pack, args.hours_per_genre, args.seed)
    if args.with_validation:
        chosen += [r for r in rows if r["split"] == "validation"]
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"error: {out} is not empty: pass a new folder")
    out.mkdir(parents=True, exist_ok=True)
    for r in chosen:
        link = out / r["file"]
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(corpus / r["file"], link)
    with open(out / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(chosen)
    hours: dict[str, float] = {}
    for r in chosen:
        hours[r["genre"]] = hours.get(r["genre"], 0.0) + float(r["seconds"]) / 3600
    print(f"{len(chosen)} tracks, {sum(hours.values()):.2f} h: "
          + ", ".join(f"{g} {h:.2f} h" for g, h in sorted(hours.items())) + f" -> {out}")


if __name__ == "__main__":
    main()
