#!/usr/bin/env python3
"""Build a portable code folder (what `jukebox prepare --codes` writes) from per-track ``.npy`` code files.

For codes made outside `jukebox prepare`, e.g. by an encoding job of your own: one int16/int32 array of level-``L``
codes per track at ``NPY_ROOT/<file without extension>.npy``, made by the VQ-VAE of ``--model`` with the same
chunking as :func:`jukebox.data.code_cache.encode_track` (the track cut to whole top-level codes). Labels, lyrics
and splits come from a ``metadata.csv`` with columns file, artist, genre, lyrics, split and seconds (``file``
relative to the corpus root). The track lengths (for the lyric/timing labels) are read from the audio under
``--corpus`` when it is there (exactly the resampled length `jukebox` would load), else taken from ``seconds``
(and made consistent with the number of codes).

    python recipes/codes_from_npy.py --npy-root CODES/tracks --metadata CODES/metadata.csv \\
        --model src/jukebox/assets/default_model --level 2 --corpus CORPUS --out CODE_FOLDER [--val-fraction 0.05]

Then, on any machine with the model directory: ``jukebox train prior --model MODEL --data CODE_FOLDER
--level 2 ...``. Rows whose ``.npy`` is missing are an error unless ``--allow-missing`` (then skipped and
counted). The folder is written atomically; an existing ``--out`` is replaced only with ``--force``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from jukebox.checkpoint.model_dir import ModelDir
from jukebox.data.code_cache import CodeFolderWriter, vqvae_fingerprint
from jukebox.data.dataset import SPLITS, Manifest, Track, split_manifest
from jukebox.errors import JukeboxError


def resampled_length(frames: int, sr_in: int, sr_out: int) -> int:
    """Samples soxr gives for ``frames`` at ``sr_in`` resampled to ``sr_out`` (half up), as `load_audio` does."""
    if sr_in == sr_out:
        return frames
    return (2 * frames * sr_out + sr_in) // (2 * sr_in)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise JukeboxError(f"{path}: no rows")
    missing = [c for c in ("file", "artist", "genre", "seconds") if c not in rows[0]]
    if missing:
        raise JukeboxError(f"{path}: missing column(s) {', '.join(missing)}")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--npy-root", required=True, type=Path, help="folder of <file>.npy code arrays")
    p.add_argument("--metadata", required=True, type=Path, help="metadata.csv (file, artist, genre, lyrics, split, "
                   "seconds)")
    p.add_argument("--model", required=True, type=Path, help="model directory whose VQ-VAE made the codes")
    p.add_argument("--level", type=int, default=2, help="level of the codes (default 2)")
    p.add_argument("--corpus", type=Path, default=None, help="corpus root, for exact track lengths (optional)")
    p.add_argument("--out", required=True, type=Path, help="code folder to write")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="re-split: hold out this share of tracks for validation (seeded hash of the path) instead "
                   "of the metadata's split column (default 0: keep the column)")
    p.add_argument("--allow-missing", action="store_true", help="skip metadata rows without a .npy")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)
    try:
        return run(args)
    except JukeboxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.force:
        raise JukeboxError(f"{args.out} already exists; pass --force to replace it")
    md = ModelDir(args.model)
    vq = md.vqvae_config()
    level, sr = args.level, vq.sample_rate
    if not 0 <= level < vq.levels:
        raise JukeboxError(f"--level must be in 0..{vq.levels - 1}, got {level}")
    top, hop = vq.hop_lengths[-1], vq.hop_lengths[level]
    rows = read_rows(args.metadata)
    tracks: list[Track] = []
    skipped = adjusted = exact = 0
    seen: set[str] = set()
    with CodeFolderWriter(args.out, vqvae_fingerprint(md.path / "vqvae"), sr, vq.hop_lengths, vq.l_bins,
                          levels=[level]) as writer:
        for i, row in enumerate(rows):
            rel = row["file"]
            if rel in seen:
                raise JukeboxError(f"{args.metadata}: {rel} listed twice")
            seen.add(rel)
            npy = args.npy_root / (rel.rsplit(".", 1)[0] + ".npy")
            if not npy.is_file():
                if not args.allow_missing:
                    raise JukeboxError(f"{npy}: missing (pass --allow-missing to skip such rows)")
                skipped += 1
                continue
            try:
                codes = np.load(npy, allow_pickle=False)
            except (ValueError, OSError) as e:
                raise JukeboxError(f"{npy}: not a readable .npy ({e})") from None
            if codes.ndim != 1 or codes.dtype.kind not in "iu":
                raise JukeboxError(f"{npy}: expected a 1-D integer array, got {codes.dtype} {codes.shape}")
            seconds = float(row["seconds"])
            file_sr, channels = sr, 1
            audio = args.corpus / rel if args.corpus is not None else None
            if audio is not None and audio.is_file():
                import soundfile as sf

                info = sf.info(str(audio))
                file_sr, channels = int(info.samplerate), int(info.channels)
                seconds = info.frames / file_sr
                total = resampled_length(int(info.frames), file_sr, sr)
                exact += 1
            else:
                total = int(round(seconds * sr))
            if (total // top * top) // hop != len(codes):
                if audio is not None and audio.is_file():
                    raise JukeboxError(f"{npy}: {len(codes)} codes, but {rel} gives {(total // top * top) // hop}; "
                                       "made by another model or level?")
                total = len(codes) * hop + (top // 2 if hop == top else 0)  # consistent with the codes
                adjusted += 1
            split = (row.get("split") or "").strip() or None
            if split is not None and split not in SPLITS:
                raise JukeboxError(f"{args.metadata}: {rel}: unknown split {split!r}")
            per_level = [np.zeros(0, np.int64)] * vq.levels
            per_level[level] = codes
            writer.add(rel, seconds, total, per_level)
            tracks.append(Track(path=rel, duration=seconds, sample_rate=file_sr, channels=channels,
                                artist=row["artist"] or "unknown", genre=row["genre"] or "unknown",
                                lyrics=row.get("lyrics") or "", split=split, label_source="metadata"))
            if (i + 1) % 100 == 0:
                print(f"{i + 1}/{len(rows)} rows", file=sys.stderr, flush=True)
        if not tracks:
            raise JukeboxError("no track has codes")
        root = str(args.corpus) if args.corpus is not None else str(args.npy_root)
        manifest = Manifest(root=root, tracks=tracks, sample_rate=sr)
        if args.val_fraction > 0:
            manifest = split_manifest(manifest, val_fraction=args.val_fraction, keep_existing=False)
            tracks = manifest.tracks
        cache = writer.commit(manifest)
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    hours = sum(t.duration for t in tracks) / 3600
    splits = {s: sum(t.split == s for t in tracks) for s in (*SPLITS, None)}
    print(f"wrote {args.out}: {len(cache.tracks)} tracks ({hours:.2f} h; splits {splits}), level {level} only, "
          f"{size / 2**20:.1f} MiB; lengths from audio: {exact}, adjusted to the codes: {adjusted}; "
          f"rows without codes skipped: {skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
