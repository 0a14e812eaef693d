#!/usr/bin/env python3
"""Does the top prior listen to its genre label? Score real, unseen music under every genre and see which fits.

For windows of real tracks that no prior was trained on (``--exclude`` lists the training metadata files), the
script encodes the audio with the model's VQ-VAE at the top level and computes the prior's bits per token under
each candidate label set: genre g with the most common training artist of g (the same artist for every window,
so the true genre gets no extra help from a known artist). A prior that uses its labels gives the true genre the
lowest bits per token. Reported:

* ``gap_bits``: mean over windows of (mean bits/token under the wrong genres) - (bits/token under the true genre);
  0 when the labels are ignored;
* ``accuracy``: how often the true genre has the lowest bits per token (the prior as a Bayes classifier; chance
  1 / number of genres), with its confusion matrix;
* ``artist`` (with ``--artists``): within each genre, the track's own artist against the other planned artists
  of that genre, for tracks whose artist the vocabulary knows.

This measures the prior alone (no sampling, no upsamplers, no decoder); `research/scripts/eval_conditioning.py`
judges the audio of the whole pipeline.

    python research/scripts/eval_label_likelihood.py -m MODEL --corpus /work/corpus --exclude TRAIN_METADATA.csv \\
        --tracks-per-genre 8 --windows-per-track 3 --out-json results.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2] / "recipes"))

from gen_conditioning_clips import MAIN_GENRES, pick_tracks  # noqa: E402
from select_training_subset import track_key  # noqa: E402  (one definition, shared with the recipe)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=None, help="model directory (default: the embedded model)")
    ap.add_argument("--corpus", default="/work/corpus", help="corpus folder with metadata.csv")
    ap.add_argument("--exclude", nargs="*", default=[], help="metadata.csv files of the training data: their "
                    "tracks are not scored")
    ap.add_argument("--genres", nargs="+", default=list(MAIN_GENRES))
    ap.add_argument("--tracks-per-genre", type=int, default=8)
    ap.add_argument("--windows-per-track", type=int, default=3)
    ap.add_argument("--plan", default=str(Path(__file__).with_name("conditioning_plan.json")))
    ap.add_argument("--artists", action="store_true", help="also score artists within genres")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out-json", default=None)
    args = ap.parse_args(argv)

    import torch

    import jukebox
    from jukebox.audio import load_audio

    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = Path(args.corpus)
    rows = list(csv.DictReader(open(corpus / "metadata.csv", encoding="utf-8")))
    excluded: set[str] = set()
    for path in args.exclude:
        excluded |= {track_key(r["file"]) for r in csv.DictReader(open(path, encoding="utf-8"))}
    genres = [g.lower() for g in args.genres]
    model = jukebox.load_model(args.model, device="cpu")
    top = model.top_level
    prior = model.prior(top)
    prior.eval()
    vocab = model.vocab()
    cfg = prior.config
    labeller = model.labeller(top)
    plan = json.loads(Path(args.plan).read_text(encoding="utf-8"))["genres"]
    known = {g: [a for a, _ in plan[g] if vocab.artist_id(a, warn=False) != 0] for g in genres}
    rep = {g: (known[g][0] if known[g] else "unknown") for g in genres}
    hop = model.hop_lengths[top]
    n_ctx = cfg.n_ctx
    win = n_ctx * hop
    tracks = pick_tracks(rows, excluded, genres, args.tracks_per_genre, win / model.sample_rate + 1, args.seed)
    print(f"{len(tracks)} unseen tracks: {dict(Counter(t['genre'] for t in tracks))}; representative artists "
          f"{rep}", file=sys.stderr)
    rng = np.random.default_rng(args.seed)
    records = []
    t0 = time.perf_counter()
    for ti, t in enumerate(tracks):
        audio, _ = load_audio(corpus / t["file"], sample_rate=model.sample_rate, mono=True)
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        total = len(audio)
        offsets = sorted(int(o) // hop * hop for o in rng.integers(0, total - win, size=args.windows_per_track))
        x = torch.from_numpy(np.stack([audio[o:o + win] for o in offsets]))[:, None]
        with torch.inference_mode():
            z = model.vqvae.encode(x, start_level=top, end_level=top + 1)[0]
            cands = [(g, rep[g]) for g in genres]
            if args.artists and t["artist"] in known[t["genre"].lower()]:
                cands += [(t["genre"].lower(), a) for a in known[t["genre"].lower()] if a != rep[t["genre"].lower()]]
            bits = {}
            for g, a in cands:
                y = labeller.batch_labels([{"artist": a, "genre": g, "lyrics": "", "total_length": total,
                                            "offset": o} for o in offsets]).y
                _, m = prior(z, None, y, reduction="none")
                bits[(g, a)] = m["bpd"].numpy()
        for w, o in enumerate(offsets):
            records.append({"file": t["file"], "genre": t["genre"].lower(), "artist": t["artist"], "offset": o,
                            "bits": {f"{g}|{a}": float(b[w]) for (g, a), b in bits.items()}})
        print(f"[{ti + 1}/{len(tracks)}] {t['file']}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    # genre: among the representative-artist candidates
    conf = np.zeros((len(genres), len(genres)), dtype=int)
    gaps = []
    for r in records:
        b = np.array([r["bits"][f"{g}|{rep[g]}"] for g in genres])
        i = genres.index(r["genre"])
        conf[i, int(np.argmin(b))] += 1
        gaps.append(float(np.delete(b, i).mean() - b[i]))
    per_genre = {g: {"windows": int(conf[i].sum()), "accuracy": round(float(conf[i, i] / conf[i].sum()), 3),
                     "gap_bits": round(float(np.mean([x for x, r in zip(gaps, records) if r["genre"] == g])), 4)}
                 for i, g in enumerate(genres) if conf[i].sum()}
    mean_bits = {g: round(float(np.mean([r["bits"][f"{g}|{rep[g]}"] for r in records])), 4) for g in genres}
    result = {
        "model": str(model.model_dir.path), "tracks": len(tracks), "windows": len(records),
        "window_seconds": round(win / model.sample_rate, 2), "genres": genres, "representative_artists": rep,
        "genre": {"accuracy": round(float(np.trace(conf) / conf.sum()), 3), "chance": round(1 / len(genres), 3),
                  "balanced_accuracy": round(float(np.mean([v["accuracy"] for v in per_genre.values()])), 3),
                  "gap_bits": round(float(np.mean(gaps)), 4), "gap_bits_std": round(float(np.std(gaps)), 4),
                  "confusion": conf.tolist(), "per_genre": per_genre, "mean_bits_per_label": mean_bits},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if args.artists:
        hits, n, agaps = 0, 0, []
        for r in records:
            g = r["genre"]
            cand = [k for k in r["bits"] if k.startswith(g + "|")]
            if len(cand) < 2 or f"{g}|{r['artist']}" not in r["bits"]:
                continue
            b = {k: r["bits"][k] for k in cand}
            true = f"{g}|{r['artist']}"
            hits += min(b, key=b.get) == true
            n += 1
            agaps.append(float(np.mean([v for k, v in b.items() if k != true]) - b[true]))
        result["artist"] = {"windows": n, "accuracy": round(hits / n, 3) if n else None,
                            "gap_bits": round(float(np.mean(agaps)), 4) if agaps else None}
    print(json.dumps({k: result[k] for k in ("model", "windows", "genre")}, indent=1))
    if args.out_json:
        Path(args.out_json).write_text(json.dumps({**result, "records": records}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
