#!/usr/bin/env python
"""Pack the sung corpus small enough to travel to the GPU machine (issue 10): Ogg/Opus, mono, 16 kHz.

Festival's diphone voices are 16 kHz, so 16 kHz loses nothing of the singing (the accompaniment loses its top
octave). Opus at ~11 kbit/s brings the 4.2 h of train + validation songs to about 21 MB. Writes::

    OUT/<id>.opus        the songs of SRC/songs/metadata.csv (train + validation)
    OUT/metadata.csv     file, artist, genre, lyrics, split (what `jukebox train --data OUT` reads)
    OUT/heldout.json     the held-out songs' id, artist, genre, lyrics, duration (for sampling; no audio)

Usage::

    python research/scripts/pack_sung_audio.py --corpus /work/sung_corpus --out .sung --kbps 11 --workers 2
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

#: libsndfile maps Opus "compression level" c to about 6 + 250 * (1 - c) kbit/s (measured on these songs).
_KBPS_AT_1, _KBPS_SPAN = 6.0, 250.0


def compression_level(kbps: float) -> float:
    """libsndfile's Opus compression level for a target bit rate in kbit/s (6 .. 256)."""
    if not _KBPS_AT_1 <= kbps <= _KBPS_AT_1 + _KBPS_SPAN:
        raise SystemExit(f"error: --kbps must be in {_KBPS_AT_1:g}..{_KBPS_AT_1 + _KBPS_SPAN:g}, got {kbps:g}")
    return 1.0 - (kbps - _KBPS_AT_1) / _KBPS_SPAN


def encode_opus(audio: np.ndarray, sr_in: int, sr_out: int = 16000, kbps: float = 11.0) -> bytes:
    """Mono float ``audio`` [T] at ``sr_in`` -> Ogg/Opus bytes at ``sr_out`` Hz (soxr resampling)."""
    import soundfile as sf
    import soxr

    x = soxr.resample(audio.astype(np.float32), sr_in, sr_out) if sr_in != sr_out else audio.astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1.0, 1.0), sr_out, format="OGG", subtype="OPUS",
             compression_level=compression_level(kbps))
    return buf.getvalue()


def _pack_one(src: str, dst: str, sr: int, kbps: float) -> tuple[str, int, float]:
    import soundfile as sf

    x, sr_in = sf.read(src, dtype="float32", always_2d=True)
    data = encode_opus(x.mean(axis=1), sr_in, sr, kbps)
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, dst)
    return dst, len(data), len(x) / sr_in


def read_metadata(path: Path) -> list[dict[str, str]]:
    """Rows of a metadata.csv (file, artist, genre, lyrics[, split])."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_metadata(path: Path, rows: Sequence[dict[str, str]]) -> None:
    """A metadata.csv with columns file, artist, genre, lyrics, split (the dataset's format)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["file", "artist", "genre", "lyrics", "split"])
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in ("file", "artist", "genre", "lyrics", "split")})


def heldout_records(corpus: Path) -> list[dict[str, object]]:
    """The held-out songs' labels, lyrics and duration, from ``timing/<id>.json``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from sung_wer import timing_records

    return [{k: rec[k] for k in ("id", "artist", "genre", "lyrics", "duration")}
            for rec in timing_records(corpus, "test")]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, required=True, help="build_sung_corpus.py output")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--kbps", type=float, default=11.0, help="Opus bit rate in kbit/s (default 11)")
    ap.add_argument("--sample-rate", type=int, default=16000, choices=(8000, 12000, 16000, 24000, 48000))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="only the first N songs (tests)")
    args = ap.parse_args(argv)
    compression_level(args.kbps)  # validates
    rows = read_metadata(args.corpus / "songs" / "metadata.csv")
    if args.limit:
        rows = rows[: args.limit]
    if not rows:
        raise SystemExit(f"error: {args.corpus}/songs/metadata.csv lists no songs")
    args.out.mkdir(parents=True, exist_ok=True)
    jobs, out_rows = [], []
    for r in rows:
        name = Path(r["file"]).stem + ".opus"
        jobs.append((str(args.corpus / "songs" / r["file"]), str(args.out / name)))
        out_rows.append({**r, "file": name})
    total_bytes, total_s = 0, 0.0
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as ex:
        futs = [ex.submit(_pack_one, s, d, args.sample_rate, args.kbps) for s, d in jobs]
        for i, fut in enumerate(futs):
            _, n, secs = fut.result()
            total_bytes += n
            total_s += secs
            if (i + 1) % 20 == 0:
                print(f"{i + 1}/{len(futs)} songs, {total_bytes / 1e6:.1f} MB", file=sys.stderr, flush=True)
    write_metadata(args.out / "metadata.csv", out_rows)
    (args.out / "heldout.json").write_text(json.dumps(heldout_records(args.corpus), indent=1) + "\n")
    summary = {"songs": len(out_rows), "hours": round(total_s / 3600, 3), "audio_mb": round(total_bytes / 1e6, 2),
               "kbps": round(total_bytes * 8 / max(total_s, 1e-9) / 1000, 2), "sample_rate": args.sample_rate,
               "splits": {s: sum(r.get("split") == s for r in out_rows) for s in sorted({r.get("split", "")
                                                                                      for r in out_rows})}}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
