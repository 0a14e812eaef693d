#!/usr/bin/env python3
"""Pack a genre- and artist-balanced subset of the Debian corpus into small Ogg Vorbis files: the default model's
VQ-VAE and upsampler training data.

Every genre gets an equal share of ``--minutes`` (capped by what it has; the rest goes to the others). Tracks are
taken round-robin over artists within each genre until the genre's share is used; each track is cut to at most
``--max-track-seconds``. ~29 kbit/s Vorbis (about 13 MB per hour at 22.05 kHz mono) keeps the pack small enough to
copy to a GPU machine. Writes ``OUT/audio/*.ogg`` and ``OUT/metadata.csv`` (file, artist, genre, lyrics, split).
Validation tracks of the corpus are never packed. The default model: ``--minutes 210`` (103 tracks, 3.6 h).

    python recipes/pack_training_audio.py --corpus CORPUS --out PACK --minutes 210
"""

from __future__ import annotations

import argparse
import csv
import random
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="corpus folder with metadata.csv (recipes/build_debian_corpus.py)")
    ap.add_argument("--out", required=True, help="the pack folder to write")
    ap.add_argument("--minutes", type=float, default=200.0, help="total audio to pack")
    ap.add_argument("--max-track-seconds", type=float, default=150.0)
    ap.add_argument("--quality", type=float, default=1.0, help="Vorbis compression level (1.0 = smallest)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    corpus, out = Path(args.corpus), Path(args.out)
    rows = [r for r in csv.DictReader(open(corpus / "metadata.csv", encoding="utf-8")) if r["split"] == "train"]
    rng = random.Random(args.seed)
    by_genre: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_genre[r["genre"]][r["artist"]].append(r)
    # Each genre gets an equal share of the budget, capped by what it has; leftovers go to the others.
    budget = args.minutes * 60
    genres = sorted(by_genre)
    have = {g: sum(min(float(r["seconds"]), args.max_track_seconds) for a in by_genre[g].values() for r in a)
            for g in genres}
    share: dict[str, float] = {}
    left, open_genres = budget, list(genres)
    while open_genres:
        each = left / len(open_genres)
        small = [g for g in open_genres if have[g] <= each]
        if not small:
            for g in open_genres:
                share[g] = each
            break
        for g in small:
            share[g] = have[g]
            left -= have[g]
            open_genres.remove(g)

    (out / "audio").mkdir(parents=True, exist_ok=True)
    picked = []
    for g in genres:
        queues = {a: rng.sample(ts, len(ts)) for a, ts in sorted(by_genre[g].items())}
        used = 0.0
        while used < share[g] and any(queues.values()):
            for a in list(queues):
                if not queues[a] or used >= share[g]:
                    continue
                r = queues[a].pop()
                secs = min(float(r["seconds"]), args.max_track_seconds)
                picked.append((r, secs))
                used += secs
    total = 0.0
    with open(out / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "artist", "genre", "lyrics", "split"])
        for r, secs in picked:
            name = re.sub(r"[^A-Za-z0-9._-]+", "_", r["file"].replace("/", "__"))[:120]
            dst = out / "audio" / (Path(name).stem + ".ogg")
            if not dst.exists():
                info = sf.info(corpus / r["file"])
                frames = int(secs * info.samplerate)
                x, sr = sf.read(corpus / r["file"], frames=frames, dtype="float32", always_2d=False)
                if x.ndim > 1:
                    x = x.mean(axis=1)
                x = np.ascontiguousarray(x, dtype=np.float32)
                print(f"  {dst.name}: {len(x) / sr:.0f} s", flush=True)
                # Write in blocks: libsndfile's Vorbis encoder has crashed on single very large writes.
                with sf.SoundFile(dst, "w", sr, 1, format="OGG", subtype="VORBIS",
                                  compression_level=args.quality) as fo:
                    for i in range(0, len(x), 1 << 16):
                        fo.write(x[i:i + (1 << 16)])
            w.writerow([f"audio/{dst.name}", r["artist"], r["genre"], r.get("lyrics", ""), "train"])
            total += secs
    size = sum(p.stat().st_size for p in (out / "audio").glob("*.ogg"))
    print(f"packed {len(picked)} tracks, {total / 60:.1f} min, {size / 1e6:.1f} MB into {out}")
    per = defaultdict(float)
    for r, secs in picked:
        per[r["genre"]] += secs / 60
    print({g: round(m, 1) for g, m in sorted(per.items())})


if __name__ == "__main__":
    main()
