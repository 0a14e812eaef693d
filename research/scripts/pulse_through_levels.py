#!/usr/bin/env python3
"""How much of real music's pulse does the VQ-VAE keep at each level? The reference for generated drafts.

Generated audio is measured at the level it was sampled to (`eval_tempo.py --levels 2` drafts, `--levels 2,1`,
all levels); each level's decoder also smears the audio in its own way. This script passes real validation music
through the same VQ-VAE: each clip is encoded and decoded from level 2, 1 and 0, and measured with
:func:`jukebox.eval.rhythm.audio_measures` like generated clips (pulse clarity, harmonic frames, chroma peak ratio),
beside the original audio. Clips: 10 s at 25, 50 and 75% of every validation track of the five judged genres (the
real reference of `research/tempo.md`; silent clips skipped).

``--upsample``: also render each clip's real level-2 codes through the model's upsamplers (its sampling settings,
the clip's genre, seed ``--seed``) and measure the audio from the sampled level-1 and level-0 codes: what the
upsamplers keep of a pulse that is really in the top-level codes, to set beside generated drafts.
``--save-codes F.npz`` keeps the clips' level-2 codes (and genres, files); ``--from-codes F.npz`` then upsamples
those codes with another model (e.g. on a GPU without the corpus) and measures only the upsampled audio.

    python research/scripts/pulse_through_levels.py -m src/jukebox/assets/default_model \
        --corpus /work/data/corpus --out research/results/v6/pulse_through_levels.json
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch

import jukebox
from jukebox.audio import load_audio
from jukebox.eval.rhythm import audio_measures

GENRES = ("ambient", "classical", "electronic", "folk", "orchestral")
POSITIONS = (0.25, 0.5, 0.75)
KEYS = ("pulse_clarity", "harmonic_fraction", "chroma_peak_ratio")


def keep(folder: Path, index: int, genre: str, audio: np.ndarray, sr: int) -> None:
    """One clip as ``folder/{index}_{genre}_0.ogg`` (Vorbis, as eval_tempo.py --keep-dir writes them)."""
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    soundfile.write(folder / f"{index}_{genre}_0.ogg", np.clip(audio, -1, 1), sr, format="OGG", subtype="VORBIS")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--corpus", default=None, help="folder with metadata.csv")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--save-codes", default=None, help="write the clips' level-2 codes to this .npz")
    ap.add_argument("--from-codes", default=None, help="upsample the level-2 codes of this .npz (no corpus)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--upsample", action="store_true", help="also upsample the real level-2 codes (see above)")
    ap.add_argument("--batch", type=int, default=20, help="clips upsampled together")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="a sampling override for the upsampling, e.g. temperature=[0.5,0.5,0.9] (repeatable)")
    ap.add_argument("--real-level-1", action="store_true",
                    help="with --upsample (corpus clips): give the level-0 upsampler the clips' real level-1 codes too "
                    "(only level 0 sampled: the level-0 upsampler's own loss)")
    ap.add_argument("--keep-dir", default=None, help="write each clip's level-0 audio (codec: KEEP_DIR/codec/, "
                    "upsampled: KEEP_DIR/upsampled/) as {index}_{genre}_0.ogg, for judge_clips.py; level 1's in "
                    "KEEP_DIR/codec_level_1/ and KEEP_DIR/upsampled_level_1/")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    model = jukebox.load_model(args.model, device=args.device)
    sr = model.sample_rate
    n = int(args.seconds * sr) // model.hop_lengths[-1] * model.hop_lengths[-1]
    rows, tops, mids = [], [], []
    tracks = []
    if args.from_codes:
        saved = np.load(args.from_codes)
        rows = [{"file": str(f), "genre": str(g), "at": float(a)} for f, g, a in
                zip(saved["files"], saved["genres"], saved["at"])]
        tops = list(torch.as_tensor(saved["codes"]).long())
        args.upsample = True
    elif args.corpus is None:
        raise SystemExit("error: give --corpus (real clips) or --from-codes")
    else:
        corpus = Path(args.corpus)
        with open(corpus / "metadata.csv", newline="", encoding="utf-8") as fh:
            tracks = [r for r in csv.DictReader(fh) if r["split"] == "validation" and r["genre"].lower() in GENRES]
    for t in tracks:
        audio, _ = load_audio(corpus / t["file"], sample_rate=sr)
        for f in POSITIONS:
            start = int(f * len(audio))
            x = np.ascontiguousarray(audio[start:start + n], dtype=np.float32)
            if len(x) < n or float(np.sqrt(np.mean(x ** 2))) < 1e-3:
                continue
            row = {"file": t["file"], "genre": t["genre"].lower(), "at": f, "real": audio_measures(x, sr)}
            codes = model.encode(torch.as_tensor(x)[None, None], levels=3)
            for level in (2, 1, 0):
                y = model.decode({level: codes[level]}, level)[0, 0, :n].float().numpy()
                row[f"level_{level}"] = audio_measures(y, sr)
                if args.keep_dir and level == 1:
                    keep(Path(args.keep_dir) / "codec_level_1", len(rows), row["genre"], y, sr)
            if args.keep_dir:
                keep(Path(args.keep_dir) / "codec", len(rows), row["genre"], y, sr)
            rows.append(row)
            tops.append(codes[2][0].cpu())
            mids.append(codes[1][0].cpu())
            print(t["file"], f, {k: round(row[k]["pulse_clarity"], 3) for k in ("real", "level_2", "level_1",
                                                                                 "level_0")}, flush=True)
    overrides = {k: json.loads(v) for k, v in (x.split("=", 1) for x in args.set)}
    kinds = [] if args.from_codes else ["real", "level_2", "level_1", "level_0"]
    if args.save_codes:
        np.savez(args.save_codes, codes=torch.stack(tops).numpy().astype(np.int16), genres=[r["genre"] for r in rows],
                 files=[r["file"] for r in rows], at=[r["at"] for r in rows])
    if args.upsample:
        kinds += ["upsampled_1", "upsampled_0"]
        for b in range(0, len(rows), args.batch):
            part = rows[b:b + args.batch]
            z = torch.stack(tops[b:b + args.batch])
            given = {2: z}
            if args.real_level_1:
                given[1] = torch.stack(mids[b:b + args.batch])
            gen = model.upsample(given, items=[{"genre": r["genre"]} for r in part], levels=[1, 0] if 1 not in given
                                 else [0], seed=args.seed + b, alignment=False, **overrides)
            y1 = model.decode({1: gen.codes[1].to(args.device)}, 1)[:, 0, :n].float().cpu().numpy()
            y0 = gen.audio[:, 0, :n].float().cpu().numpy()
            for i, (r, a1, a0) in enumerate(zip(part, y1, y0)):
                r["upsampled_1"], r["upsampled_0"] = audio_measures(a1, sr), audio_measures(a0, sr)
                if args.keep_dir:
                    keep(Path(args.keep_dir) / "upsampled", b + i, r["genre"], a0, sr)
                    keep(Path(args.keep_dir) / "upsampled_level_1", b + i, r["genre"], a1, sr)
            print(f"upsampled {b + len(part)}/{len(rows)}: pulse level 1 "
                  f"{np.mean([r['upsampled_1']['pulse_clarity'] for r in part]):.3f}, level 0 "
                  f"{np.mean([r['upsampled_0']['pulse_clarity'] for r in part]):.3f}", flush=True)
    summary = {k: {m: round(float(np.mean([r[k][m] for r in rows])), 4) for m in KEYS} for k in kinds}
    summary["clips"] = len(rows)
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
