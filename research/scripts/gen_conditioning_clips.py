#!/usr/bin/env python3
"""Generate clips for the conditioning judge: N clips per requested genre, each with a real artist of that genre.

Runs where the model runs fast (the GPU machine), returns only codes (small) and the requested labels; the judge
(`research/scripts/eval_conditioning.py --generated DIR`) decodes the codes with the model's VQ-VAE on the CPU.

Which artists: the plan (`research/scripts/conditioning_plan.json`, written by this script's ``--write-plan`` from the
corpus's metadata.csv) lists, per genre, the artists of the training split ordered by their number of tracks.
Clip i of a genre asks for the (i mod k)-th of the first k (``--artists-per-genre``) planned artists that the
model's vocabulary knows, so several clips share an artist and the judge can also check artists.

Output (the "conditioning clips" format, read by the judge), in ``--out``, named by ``--prefix`` (default
``cond``; flat names, so several runs can share one output folder):

* ``cond_codes.npz``: ``level_L`` int16 arrays [N, T_L] for every sampled level L (compressed);
* ``cond_clips.json``: ``{"format": "jukebox.conditioning_clips", "version": 1, "items": [{"genre", "artist"}]
  (one per row of the arrays), "seconds", "sample_rate", "hop_lengths", "levels", "vqvae_sha256",
  "model", "settings": {...}, "timing": {...}}``.

    python research/scripts/gen_conditioning_clips.py -m MODEL_DIR --per-genre 16 --seconds 8 --out OUT
    python research/scripts/gen_conditioning_clips.py --write-plan research/scripts/conditioning_plan.json \\
        --corpus CORPUS

``--real-top``: the control for the upsamplers. Instead of sampling the top level, take the top-level codes of
real clips (``--per-genre`` unseen tracks per genre, one window each; ``--exclude`` lists the training metadata)
and only upsample them. The judge then says whether genre survives the upsamplers and the decoder: if these
clips are not recognised, no top prior can be.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "jukebox.conditioning_clips"
CODES_FILE = "{prefix}_codes.npz"
CLIPS_FILE = "{prefix}_clips.json"
PLAN_FILE = Path(__file__).with_name("conditioning_plan.json")
MAIN_GENRES = ("ambient", "classical", "electronic", "folk", "orchestral")


def pick_tracks(rows: list[dict], excluded: set[str], genres: list[str], per_genre: int, min_seconds: float,
                seed: int) -> list[dict]:
    """Up to ``per_genre`` unseen tracks per genre, spread over packages (round robin over packages)."""
    sys.path.insert(1, str(Path(__file__).resolve().parents[2] / "recipes"))
    from select_training_subset import track_key  # one definition, shared with the recipe

    rng = np.random.default_rng(seed)
    out = []
    for g in genres:
        by_pkg: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            if r["genre"].lower() == g and track_key(r["file"]) not in excluded and float(r["seconds"]) >= min_seconds:
                by_pkg[r["package"]].append(r)
        for lst in by_pkg.values():
            rng.shuffle(lst)
        chosen: list[dict] = []
        pkgs = sorted(by_pkg)
        while len(chosen) < per_genre and any(by_pkg[p] for p in pkgs):
            for p in pkgs:
                if by_pkg[p] and len(chosen) < per_genre:
                    chosen.append(by_pkg[p].pop())
        out += chosen
    return out


def plan_from_metadata(metadata: Path) -> dict:
    """Per genre, the training-split artists ordered by track count: {"genres": {genre: [[artist, n], ...]}}."""
    counts: dict[str, Counter] = defaultdict(Counter)
    with open(metadata, encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["split"] == "train":
                counts[row["genre"].lower()][row["artist"]] += 1
    return {"format": "jukebox.conditioning_plan", "version": 1, "source": "metadata.csv, split train",
            "genres": {g: [[a, n] for a, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))]
                       for g, c in sorted(counts.items())}}


def vqvae_sha256(model_dir: Path) -> str:
    """Hash of the VQ-VAE weights: the judge refuses codes of another codec."""
    h = hashlib.sha256()
    with open(model_dir / "vqvae" / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_clips(clips_file: Path, model_dir: Path | None = None) -> tuple[dict, Any]:
    """A ``PREFIX_clips.json`` file's info and its ``PREFIX_codes.npz`` (``level_L`` arrays); with ``model_dir``,
    refuses clips whose codes another VQ-VAE made."""
    if not clips_file.name.endswith("_clips.json") or not clips_file.exists():
        raise SystemExit(f"error: {clips_file}: expected a PREFIX_clips.json file")
    info = json.loads(clips_file.read_text(encoding="utf-8"))
    if info.get("format") != FORMAT:
        raise SystemExit(f"error: {clips_file} is not a conditioning-clips file")
    if model_dir is not None and info.get("vqvae_sha256") != vqvae_sha256(model_dir):
        raise SystemExit(f"error: the clips of {clips_file} were made with another VQ-VAE than {model_dir}'s")
    return info, np.load(clips_file.with_name(clips_file.name[:-len("_clips.json")] + "_codes.npz"))


def choose_items(plan: dict, genres: list[str], per_genre: int, artists_per_genre: int, known) -> list[dict]:
    """One {genre, artist} per clip: clip i of a genre gets the (i mod k)-th known planned artist of it.

    ``known(artist) -> bool`` says whether the model's vocabulary has the artist; a genre with no known
    artist falls back to ``unknown``.
    """
    items = []
    for g in genres:
        if g not in plan["genres"]:
            raise SystemExit(f"error: genre {g!r} is not in the plan (has {sorted(plan['genres'])})")
        artists = [a for a, _ in plan["genres"][g] if known(a)][:artists_per_genre] or ["unknown"]
        items += [{"genre": g, "artist": artists[i % len(artists)]} for i in range(per_genre)]
    return items


def real_top_codes(model, corpus: Path, exclude: list[str], genres: list[str], per_genre: int, seconds: float,
                   seed: int) -> tuple[list[dict], dict]:
    """Items (genre, artist, file, offset) and top-level codes {top: [N, T]} of one window of ``seconds`` from
    each of ``per_genre`` unseen tracks per genre (tracks of the ``exclude`` metadata files are skipped)."""
    import torch
    sys.path.insert(1, str(Path(__file__).resolve().parents[2] / "recipes"))
    from select_training_subset import track_key

    from jukebox.audio import load_audio

    rows = list(csv.DictReader(open(corpus / "metadata.csv", encoding="utf-8")))
    excluded = {track_key(r["file"]) for p in exclude for r in csv.DictReader(open(p, encoding="utf-8"))}
    top = model.top_level
    hop = model.hop_lengths[top]
    length = model.sample_length(seconds)
    rng = np.random.default_rng(seed)
    items, windows = [], []
    for t in pick_tracks(rows, excluded, genres, per_genre, length / model.sample_rate + 1, seed):
        audio, _ = load_audio(corpus / t["file"], sample_rate=model.sample_rate, mono=True)
        offset = int(rng.integers(0, len(audio) - length)) // hop * hop
        windows.append(np.asarray(audio[offset:offset + length], dtype=np.float32))
        items.append({"genre": t["genre"].lower(), "artist": t["artist"], "file": t["file"], "offset": offset})
    x = torch.from_numpy(np.stack(windows))[:, None]
    with torch.inference_mode():
        z = model.vqvae.encode(x.to(model.device), start_level=top, end_level=top + 1)[0]
    return items, {top: z.cpu()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=None, help="model directory (default: the embedded default model)")
    ap.add_argument("--plan", default=str(PLAN_FILE), help="conditioning plan JSON (default: %(default)s)")
    ap.add_argument("--genres", nargs="+", default=list(MAIN_GENRES), help="genres to ask for; 'all': every "
                    "genre of the plan (default: %(default)s)")
    ap.add_argument("--per-genre", type=int, default=16)
    ap.add_argument("--artists-per-genre", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--total-seconds", type=float, default=120.0, help="song length the timing labels describe")
    ap.add_argument("--levels", type=int, nargs="+", default=None, help="levels to sample (default: all)")
    ap.add_argument("--temperature", type=float, default=0.98)
    ap.add_argument("--upsampler-temperature", type=float, default=None,
                    help="temperature of the upsampler levels (default: --temperature)")
    ap.add_argument("--guidance", type=float, default=None,
                    help="classifier-free guidance of the top level (default: the model's)")
    ap.add_argument("--upsampler-guidance", type=float, default=None,
                    help="classifier-free guidance of the upsamplers too (for upsamplers trained with label dropout; "
                         "default: the model's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=0, help="clips per generate call (default: all at once)")
    ap.add_argument("--max-batch-size", type=int, default=512, help="rows per sampler call (windows x clips)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--decode", default=None, choices=["eager", "int8", "graph", "compile", "triton"],
                    help="decode step (default: the model's sampling default for the device)")
    ap.add_argument("--out", default=None, help="output folder (PREFIX_codes.npz, PREFIX_clips.json)")
    ap.add_argument("--prefix", default="cond", help="file name prefix (default: %(default)s)")
    ap.add_argument("--write-plan", default=None, help="write the plan from --corpus's metadata.csv and stop")
    ap.add_argument("--corpus", default="/work/corpus")
    ap.add_argument("--real-top", action="store_true", help="upsample real top-level codes of unseen tracks of "
                    "--corpus instead of sampling the top level (the upsamplers' control)")
    ap.add_argument("--upsample", default=None, metavar="PREFIX_clips.json",
                    help="render the top-level codes of earlier clips through the upsamplers (same items)")
    ap.add_argument("--exclude", nargs="*", default=[], help="with --real-top: training metadata.csv files whose "
                    "tracks are not used")
    args = ap.parse_args(argv)

    if args.write_plan:
        plan = plan_from_metadata(Path(args.corpus) / "metadata.csv")
        genres = ",\n".join(f"  {json.dumps(g)}: {json.dumps(a, ensure_ascii=False)}"
                             for g, a in plan["genres"].items())
        head = json.dumps({k: v for k, v in plan.items() if k != "genres"}, ensure_ascii=False)[:-1]
        Path(args.write_plan).write_text(f'{head}, "genres": {{\n{genres}\n}}}}\n', encoding="utf-8")
        print(f"wrote {args.write_plan}: {', '.join(f'{g} ({len(a)} artists)' for g, a in plan['genres'].items())}")
        return
    if not args.out:
        raise SystemExit("error: give --out (or --write-plan)")
    if args.per_genre < 1 or args.seconds <= 0:
        raise SystemExit("error: --per-genre must be >= 1 and --seconds > 0")
    import torch

    import jukebox

    plan = json.loads(Path(args.plan).read_text(encoding="utf-8"))
    genres = sorted(plan["genres"]) if args.genres == ["all"] else [g.lower() for g in args.genres]
    t0 = time.perf_counter()
    model = jukebox.load_model(args.model, device=args.device, dtype=getattr(torch, args.dtype))
    vocab = model.vocab()
    known = (lambda a: vocab.artist_id(a, warn=False) != 0) if vocab is not None else (lambda a: False)
    items = choose_items(plan, genres, args.per_genre, args.artists_per_genre, known)
    start_codes: dict[int, torch.Tensor] = {}
    if args.upsample:
        src_info, npz = read_clips(Path(args.upsample), model.model_dir.path)
        items = src_info["items"]
        start_codes = {model.top_level: torch.from_numpy(npz[f"level_{model.top_level}"].astype(np.int64))}
        args.seconds = src_info["seconds"]
        args.total_seconds = src_info.get("total_seconds", args.total_seconds)
    elif args.real_top:
        items, start_codes = real_top_codes(model, Path(args.corpus), args.exclude, genres, args.per_genre,
                                            args.seconds, args.seed)
        for it in items:  # artists the vocabulary lacks: the genre's first planned artist (as generated clips)
            if not known(it["artist"]):
                it["artist"] = choose_items(plan, [it["genre"]], 1, 1, known)[0]["artist"]
    total_seconds = min(max(args.total_seconds, args.seconds), model.max_seconds)
    levels = sorted(args.levels or model.prior_levels, reverse=True)
    if args.real_top or args.upsample:
        levels = [lvl for lvl in levels if lvl != model.top_level]
    batch = args.batch or len(items)
    up_temp = args.temperature if args.upsampler_temperature is None else args.upsampler_temperature
    guidance = args.guidance
    if args.upsampler_guidance is not None:  # one scale for the top level (given or the model's), one for the rest
        g = model.sampling_defaults["guidance"] if guidance is None else guidance
        g_top = g.get(model.top_level, 1.0) if isinstance(g, dict) else g
        guidance = {lvl: g_top if lvl == model.top_level else args.upsampler_guidance for lvl in model.prior_levels}
    codes: dict[int, list[np.ndarray]] = defaultdict(list)
    reports = []
    t_load = time.perf_counter() - t0
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    sha = vqvae_sha256(model.model_dir.path)

    def write(n_items: int, done_levels: list[int]) -> None:
        """Save the first ``n_items`` clips' codes of ``done_levels`` (called after every level: a run stopped
        early still leaves its finished levels)."""
        np.savez_compressed(out_dir / CODES_FILE.format(prefix=args.prefix),
                            **{f"level_{lvl}": np.concatenate(codes[lvl]) for lvl in done_levels})
        info = {
            "format": FORMAT, "version": 1, "items": items[:n_items], "seconds": args.seconds,
            "total_seconds": total_seconds, "sample_rate": model.sample_rate,
            "hop_lengths": list(model.hop_lengths), "levels": done_levels, "model": str(model.model_dir.path),
            "vqvae_sha256": sha,
            "settings": {"temperature": args.temperature, "upsampler_temperature": up_temp,
                         "guidance": model.sampling_defaults["guidance"] if guidance is None else guidance,
                         "seed": args.seed, "batch": batch, "dtype": args.dtype,
                         "decode": args.decode, "device": str(model.device), "upsample_mode": "parallel",
                         "levels_requested": levels},
            "timing": {"load_seconds": round(t_load, 1), "total_seconds": round(time.perf_counter() - t0, 1),
                       "batches": reports},
        }
        text = json.dumps(info, indent=1, ensure_ascii=False) + "\n"
        (out_dir / CLIPS_FILE.format(prefix=args.prefix)).write_text(text, encoding="utf-8")

    for b in range(0, len(items), batch):
        chunk = items[b:b + batch]
        t_chunk = time.perf_counter()
        level_seconds: dict[int, float] = {}

        def level_done(level: int, cs: dict, b=b, chunk=chunk, t_chunk=t_chunk, level_seconds=level_seconds):
            codes[level].append(cs[level].numpy().astype(np.int16))
            level_seconds[level] = round(time.perf_counter() - t_chunk, 1)
            print(f"clips {b}-{b + len(chunk) - 1}: level {level} done at {level_seconds[level]} s", file=sys.stderr)
            write(b + len(chunk), sorted(level_seconds, reverse=True))

        opts = dict(items=[dict(lyrics="", **{k: it[k] for k in ("genre", "artist")}) for it in chunk],
                    total_seconds=total_seconds, seed=args.seed + b, guidance=guidance,
                    temperature={lvl: (args.temperature if lvl == model.top_level else up_temp)
                                 for lvl in levels},
                    levels=levels, alignment=False, upsample_mode="parallel", max_batch_size=args.max_batch_size,
                    decode=args.decode, on_level_done=level_done)
        if start_codes:
            top = max(start_codes)
            level_done(top, {top: start_codes[top][b:b + batch]})
            model.upsample({top: start_codes[top][b:b + batch]}, **opts)
        else:
            model.generate(n_samples=len(chunk), seconds=args.seconds, **opts)
        reports.append({"items": len(chunk), "level_done_at_seconds": level_seconds})
    write(len(items), sorted(codes, reverse=True))
    print(json.dumps({"clips": len(items), "genres": genres, "levels": levels, "out": str(out_dir),
                      "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
