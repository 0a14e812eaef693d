#!/usr/bin/env python3
"""Does a model's generated audio have a pulse, and does it follow the asked tempo?

Generates ``--clips`` clips of ``--seconds`` s (all levels, or ``--levels``), cycling over ``--genres`` and, for
tempo models, over ``--bpms``; measures each clip with :func:`jukebox.eval.rhythm.audio_measures` (pulse clarity,
tempo, harmonic frames, chroma peak ratio, level, clipping) and prints/writes a JSON summary with per-clip rows.
Optionally keeps the first ``--keep`` clips as WAV files. ``--codes-out`` saves the sampled codes (and each clip's
genre and tempo) as an .npz; ``--from-codes`` measures those codes decoded by ``-m``'s VQ-VAE instead of sampling
(the same music through another decoder: a paired comparison of decoders at the cost of the decode alone). The .npz
holds every sampled level (``codes_L``); ``--decode-level`` decodes an upper one (the same music rendered from level 1).

    python research/scripts/eval_tempo.py -m MODEL_DIR --clips 240 --seconds 10 --out out/tempo.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import jukebox
from jukebox.eval.rhythm import audio_measures, tempo_matches
from jukebox.loudness import DEFAULT_LUFS

GENRES = ("electronic", "orchestral", "ambient", "folk", "classical")
BPMS = (70, 80, 90, 100, 110, 120, 130, 140, 150, 160)


def summarise(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float)) and not isinstance(rows[0][k], bool)]
    out = {f"mean_{k}": float(np.mean([r[k] for r in rows])) for k in keys}
    out.update({f"median_{k}": float(np.median([r[k] for r in rows])) for k in ("pulse_clarity",) if k in keys})
    asked = [r for r in rows if r.get("asked_bpm")]
    if asked:
        out["tempo_match"] = float(np.mean([r["tempo_match"] for r in asked]))
    out["clips"] = len(rows)
    out["clips_clipped"] = int(sum(r["clipped_fraction"] > 0 for r in rows))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=40, help="clips sampled together")
    ap.add_argument("--genres", default=",".join(GENRES))
    ap.add_argument("--bpms", default=",".join(map(str, BPMS)))
    ap.add_argument("--default-bpm", action="store_true", help="ask no tempo: the model's genre-typical default")
    ap.add_argument("--levels", default=None, help="e.g. 2 for top-level drafts (default all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--keep", type=int, default=0, help="write the first N clips as WAV next to --out")
    ap.add_argument("--out", default=None)
    ap.add_argument("--name", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="a sampling override, e.g. guidance=4 or temperature=[0.7,0.7,0.98] (repeatable)")
    ap.add_argument("--keep-dir", default=None,
                    help="write every clip as {index}_{genre}_{bpm}.ogg (mono, model rate) into this folder")
    ap.add_argument("--codes-out", default=None, help="save every clip's codes and labels to this .npz")
    ap.add_argument("--from-codes", default=None, help="decode the codes of a --codes-out .npz instead of sampling")
    ap.add_argument("--upsample", action="store_true",
                    help="with --from-codes: render its top-level codes through -m's upsamplers (the levels of "
                    "--levels below the top, default all), seed --seed + batch start, instead of decoding them")
    ap.add_argument("--decode-level", type=int, default=None,
                    help="with --from-codes: decode this level's codes (saved as codes_L; default: the last level)")
    args = ap.parse_args()
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)

    model = jukebox.load_model(args.model, device=args.device)
    genres = args.genres.split(",")
    bpms = [float(b) for b in args.bpms.split(",")] if model.has_tempo and not args.default_bpm else [None]
    items = []
    for i in range(args.clips):
        item = {"artist": "unknown", "genre": genres[i % len(genres)]}
        bpm = bpms[(i // len(genres)) % len(bpms)]
        if bpm is not None:
            item["bpm"] = bpm
        items.append(item)
    levels = None if args.levels is None else [int(v) for v in args.levels.split(",")]
    rows, t0 = [], time.time()
    saved_codes: dict[int, list[np.ndarray]] = {}
    code_level = 0
    if args.from_codes:
        with np.load(args.from_codes) as z:
            code_level = int(z["level"]) if args.decode_level is None else args.decode_level
            key = "codes" if args.decode_level is None else f"codes_{code_level}"
            if key not in z:
                sys.exit(f"error: {args.from_codes} has no {key} (saved: {sorted(z.files)})")
            codes_in = z[key]
            items = [{"genre": str(g), **({"bpm": float(b)} if b > 0 else {})} for g, b in zip(z["genres"], z["bpms"])]
        items = items[:args.clips]
    for start in range(0, len(items), args.batch):
        chunk = items[start:start + args.batch]
        if args.from_codes and args.upsample:
            batch_codes = torch.as_tensor(codes_in[start:start + len(chunk)]).long()
            gen = model.upsample({code_level: batch_codes}, items=chunk, levels=levels, seed=args.seed + start,
                                 **overrides)
            audio_t, labels = gen.audio, chunk
            for lvl, c in gen.codes.items():
                saved_codes.setdefault(int(lvl), []).append(c.numpy())
        elif args.from_codes:
            batch_codes = torch.as_tensor(codes_in[start:start + len(chunk)]).long()
            audio_t = model.decode({code_level: batch_codes}, code_level, loudness=DEFAULT_LUFS)
            labels = chunk
        else:
            gen = model.generate(items=chunk, n_samples=len(chunk), seconds=args.seconds, seed=args.seed + start,
                                 levels=levels, **overrides)
            audio_t, labels, code_level = gen.audio, gen.settings["items"], gen.level
            for lvl, c in gen.codes.items():
                saved_codes.setdefault(int(lvl), []).append(c.numpy())
        audio = audio_t.numpy()
        for j, item in enumerate(chunk):
            x = audio[j, 0]
            m = audio_measures(x, model.sample_rate)
            row = {"genre": item["genre"], "asked_bpm": item.get("bpm") or labels[j].get("bpm"), **m}
            if row["asked_bpm"]:
                row["tempo_match"] = bool(tempo_matches(m["tempo_bpm"], row["asked_bpm"]))
            rows.append(row)
            if start + j < args.keep and args.out:
                jukebox.save_audio(audio_t[j], Path(args.out).with_suffix("").as_posix() + f"_{start + j}.wav",
                                   model.sample_rate)
            if args.keep_dir:
                import soundfile

                Path(args.keep_dir).mkdir(parents=True, exist_ok=True)
                name = f"{start + j}_{item['genre']}_{int(round(row['asked_bpm'] or 0))}.ogg"
                soundfile.write(Path(args.keep_dir) / name, np.clip(x, -1, 1), model.sample_rate, format="OGG",
                                subtype="VORBIS")
        print(f"{len(rows)}/{len(items)} clips, {time.time() - t0:.0f} s", file=sys.stderr)
    if args.from_codes and args.upsample:
        code_level = min(saved_codes)
    if args.codes_out and saved_codes:
        genres_all = [r["genre"] for r in rows]
        bpms_all = [float(r["asked_bpm"] or 0) for r in rows]
        by_level = {f"codes_{lvl}": np.concatenate(c).astype(np.int16) for lvl, c in saved_codes.items()}
        np.savez_compressed(args.codes_out, codes=by_level[f"codes_{code_level}"], level=code_level,
                            genres=np.array(genres_all), bpms=np.array(bpms_all), **by_level)
    result = {"name": args.name or Path(args.model).name, "seconds": args.seconds, "levels": levels,
              "overrides": overrides, "seed": args.seed,
              "summary": summarise(rows), "rows": rows, "wall_seconds": time.time() - t0}
    text = json.dumps(result, indent=1, default=float)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(json.dumps({"name": result["name"], **result["summary"]}, indent=1))


if __name__ == "__main__":
    main()
