#!/usr/bin/env python3
"""Judge a folder of generated audio clips: is the asked genre heard, and how far is the audio from real music?

Input: a folder (or a .tar/.tar.gz of one) of mono clips named ``{index}_{genre}_{bpm}.ogg`` (``{index}_{genre}.ogg``
and .wav/.flac work too; any sample rate), or any names plus ``--labels JSON`` giving each clip's genre (a list or
``{"rows": [...]}`` of objects with ``genre`` in index order, or ``{file name or stem: genre or {"genre": ...}}``).
Every clip is cut or zero-padded to ``--seconds``.

1. **The judge** (as in ``eval_conditioning.py``, whose features and classifier it reuses): class-balanced logistic
   regression (L2 weight 0.03) on ``handlf+musicnn`` features (320 hand-made features without loudness, plus the
   MSD musicnn tagger's penultimate layer and tag probabilities), trained on ``--clips-per-track`` clips of
   ``--seconds`` from every *training-split* track of the five main genres (ambient, classical, electronic, folk,
   orchestral). It never sees a validation track; its accuracy on unseen training tracks (5 folds grouped by track)
   is reported as well.
2. **Real reference**: 3 clips of ``--seconds`` at 25/50/75% of every validation-split track (the real clips of the
   tempo measures, ``jukebox.eval.rhythm``), minus silent ones (below -60 dBFS; ``--keep-silent`` keeps them).
3. **Genre accuracy** of the generated clips (requested genre vs judged; overall, per genre, per asked tempo, and
   the confusion matrix), next to the judge's accuracy on the real validation clips.
4. **Frechet distances** on the same embedding as the earlier audio Frechet numbers: the judge's features,
   standardised and projected onto the first ``--fd-dims`` principal components, here those of the judge's training
   clips (fixed, so every set is measured in the same space); also on musicnn alone. Reported: generated vs the
   validation clips; the floor, validation half vs half (tracks split at random, repeated); what real music of the
   generated set's genre mix and size scores against the validation clips (training-split clips: the best a model
   can do); and generated vs all judge training clips.

If the generated clips have a lower sample rate than 22.05 kHz, the real clips are band-limited the same way
(resampled down to that rate and back) before the hand features, so the judge does not simply hear the missing
top octave. Real-clip features are cached in ``--cache``: the first run computes them (1,928 clips: about 10
minutes on two busy cores; each band-limited rate adds about 3.5 minutes of hand features), later runs only the
generated clips (240 clips of 10 s: about 2 minutes, mostly musicnn).

    .venv/bin/python research/scripts/judge_clips.py CLIPS_DIR_OR_TAR --musicnn-python /work/evalenv/bin/python \\
        --out-json judged.json
    .venv/bin/python research/scripts/judge_clips.py --musicnn-python PY     # real numbers only (no clips)

The musicnn environment: see ``musicnn_embed.py``. Prints a summary and writes everything to ``--out-json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import tarfile
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from eval_conditioning import (  # noqa: E402
    SR,
    Clip,
    FeatureCache,
    fit_logreg,
    frechet,
    hand_features,
    level_free,
    load_clip,
    matched_sample,
    musicnn_features,
    plan_clips,
    scores,
    stratified_group_folds,
)
from gen_conditioning_clips import MAIN_GENRES  # noqa: E402

AUDIO_EXT = (".ogg", ".wav", ".flac", ".mp3")
NAME_RE = re.compile(r"^(?P<index>\d+)_(?P<genre>[A-Za-z-]+)(?:_(?P<bpm>\d+(?:\.\d+)?|none))?$")
SILENT_DBFS = -60.0
VALIDATION_POSITIONS = (0.25, 0.5, 0.75)


# ---------------------------------------------------------------------------------------------- generated clips
def parse_name(stem: str) -> dict | None:
    """``12_folk_140`` -> {index 12, genre folk, bpm 140.0}; None if the name does not have that shape."""
    m = NAME_RE.match(stem)
    if not m:
        return None
    bpm = m["bpm"]
    return {"index": int(m["index"]), "genre": m["genre"].lower(),
            "bpm": float(bpm) if bpm and bpm != "none" else None}


def labels_from_json(path: Path, files: list[Path], items: list[dict | None]) -> list[dict]:
    """Fill in each clip's genre (and bpm) from a labels JSON (see the module docstring)."""
    data = json.loads(path.read_text())
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        data = data["rows"]
    out = []
    for i, (f, it) in enumerate(zip(files, items)):
        it = dict(it or {"index": i, "genre": None, "bpm": None})
        if isinstance(data, list):
            if not 0 <= it["index"] < len(data):
                raise SystemExit(f"error: {path}: no row {it['index']} for {f.name} ({len(data)} rows)")
            row = data[it["index"]]
        else:
            row = data.get(f.name, data.get(f.stem))
            if row is None:
                raise SystemExit(f"error: {path}: no entry for {f.name} (keys are file names or stems)")
        row = row if isinstance(row, dict) else {"genre": row}
        if row.get("genre"):
            it["genre"] = str(row["genre"]).lower()
        bpm = row.get("asked_bpm", row.get("bpm"))
        if bpm:
            it["bpm"] = float(bpm)
        out.append(it)
    return out


def read_generated(src: Path, labels: Path | None, seconds: float) -> tuple[np.ndarray, list[dict], int]:
    """Clips -> audio [N, T] at 22.05 kHz (T = ``seconds`` x 22050), items (file, index, genre, bpm, sample rate,
    seconds), and the lowest sample rate among the files."""
    import soundfile as sf

    from jukebox.audio import load_audio

    with tempfile.TemporaryDirectory() as tmp:
        folder = src
        if src.is_file():
            if not tarfile.is_tarfile(src):
                raise SystemExit(f"error: {src} is neither a folder nor a tar archive of clips")
            with tarfile.open(src) as tar:
                tar.extractall(tmp, filter="data")
            folder = Path(tmp)
        files = sorted((p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXT and p.is_file()),
                       key=lambda p: (parse_name(p.stem) or {"index": 1 << 30})["index"])
        if not files:
            raise SystemExit(f"error: no audio clips ({', '.join(AUDIO_EXT)}) in {src}")
        items = [parse_name(p.stem) for p in files]
        if labels is not None:
            items = labels_from_json(labels, files, items)
        bad = [f.name for f, it in zip(files, items) if not it or not it.get("genre")]
        if bad:
            raise SystemExit(f"error: no genre for {len(bad)} clips (e.g. {bad[0]}): name them {{index}}_{{genre}}_"
                             "{bpm}.ogg or pass --labels JSON")
        n = int(round(seconds * SR))
        audio, rates = np.zeros((len(files), n), np.float32), []
        for i, (f, it) in enumerate(zip(files, items)):
            rates.append(int(sf.info(str(f)).samplerate))
            a, _ = load_audio(f, sample_rate=SR, duration_seconds=seconds)
            audio[i, :min(n, len(a))] = a[:n]
            it.update(file=f.name, sample_rate=rates[-1], seconds=round(len(a) / SR, 2))
    short = [it["file"] for it in items if it["seconds"] < seconds - 0.05]
    if short:
        print(f"warning: {len(short)} clips shorter than {seconds:g} s (zero-padded), e.g. {short[0]}",
              file=sys.stderr)
    return audio, items, min(rates)


# ---------------------------------------------------------------------------------------------- real clips
def validation_clips(rows: list[dict], seconds: float) -> list[Clip]:
    """3 clips of ``seconds`` at 25, 50 and 75% of every validation track (those long enough)."""
    clips = []
    for r in rows:
        dur = float(r["seconds"])
        for j, f in enumerate(VALIDATION_POSITIONS):
            if f * dur + seconds <= dur:
                clips.append(Clip(r["file"], round(f * dur, 2), r["genre"].lower(), r["artist"], r["package"],
                                  r["split"], j))
    return clips


def band_limit(audio: np.ndarray, rate: int) -> np.ndarray:
    """Clips [B, T] at 22.05 kHz -> the same resampled to ``rate`` and back (nothing above rate/2 left)."""
    import soxr

    if rate >= SR:
        return audio
    n = audio.shape[1]
    out = [soxr.resample(soxr.resample(a, SR, rate), rate, SR)[:n] for a in audio]
    return np.stack([np.pad(o, (0, n - len(o))) for o in out]).astype(np.float32)


def real_features(clips: list[Clip], corpus: Path, seconds: float, cache_dir: Path, rate: int,
                  musicnn_python: str, chunk: int = 256) -> dict[str, np.ndarray]:
    """Real clips -> {"hand" [N, 322], "musicnn" [N, 250], "rms_dbfs" [N]}, computed on audio band-limited to
    ``rate`` (musicnn hears 16 kHz audio, so its features are shared by every rate >= 16 kHz). Cached per clip in
    ``cache_dir`` (the same files as ``eval_conditioning.py`` for full-rate clips of the same length)."""
    hv = "raw" if rate >= SR else f"sr{rate}"
    mv = "raw" if rate >= 16000 else f"sr{rate}"
    caches = {"hand": FeatureCache(cache_dir / f"hand_{hv}_{seconds:g}s.npz"),
              "musicnn": FeatureCache(cache_dir / f"musicnn_{mv}_{seconds:g}s.npz"),
              "rms_dbfs": FeatureCache(cache_dir / f"rms_raw_{seconds:g}s.npz")}
    missing = [c for c in clips if any(c.key not in cc.data for cc in caches.values())]
    t0 = time.perf_counter()
    for b in range(0, len(missing), chunk):
        part = missing[b:b + chunk]
        raw = np.stack([load_clip(corpus, c, seconds) for c in part])
        audio = band_limit(raw, rate)
        keys = [c.key for c in part]
        rms = 20 * np.log10(np.sqrt(np.mean(np.square(raw.astype(np.float64)), axis=1)) + 1e-9)
        caches["rms_dbfs"].data.update(zip(keys, rms[:, None].astype(np.float32)))
        if any(k not in caches["hand"].data for k in keys):
            feats = np.concatenate([hand_features(audio[i:i + 32]) for i in range(0, len(audio), 32)])
            caches["hand"].data.update(zip(keys, feats))
        if any(k not in caches["musicnn"].data for k in keys):
            caches["musicnn"].data.update(zip(keys, musicnn_features(audio, musicnn_python)))
        for cc in caches.values():
            cc.save()
        print(f"  real clips: {b + len(part)}/{len(missing)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    out = {k: np.stack([cc.data[c.key] for c in clips]) for k, cc in caches.items()}
    out["rms_dbfs"] = out["rms_dbfs"][:, 0]
    return out


def judge_space(parts: dict[str, np.ndarray], name: str) -> np.ndarray:
    """The judge's features ``handlf+musicnn`` [N, 570], or ``musicnn`` alone [N, 250]."""
    if name == "musicnn":
        return parts["musicnn"]
    return np.concatenate([level_free(parts["hand"]), parts["musicnn"]], axis=1)


# ---------------------------------------------------------------------------------------------- distances
class Projection:
    """Standardise by a fixed set of clips [N, D] and keep its first ``dims`` principal components."""

    def __init__(self, x: np.ndarray, dims: int) -> None:
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-6
        _, _, vt = np.linalg.svd((x - self.mu) / self.sd, full_matrices=False)
        self.proj = vt[:dims].T

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mu) / self.sd) @ self.proj


def frechet_report(train: np.ndarray, train_genres: np.ndarray, train_tracks: np.ndarray, val: np.ndarray,
                   val_tracks: np.ndarray, gen: np.ndarray | None, want: Counter, dims: int, draws: int = 20,
                   seed: int = 0) -> dict:
    """Frechet distances in one embedding space ([N, D] sets; see the module docstring). ``want``: clips per genre
    of the generated set, for the training-clip baseline of the same size and mix."""
    rng = np.random.default_rng(seed)
    z = Projection(train, dims)
    zval, ztrain = z(val), z(train)
    out: dict = {"dims": dims, "validation_clips": int(len(val))}
    if gen is not None:
        out["generated_vs_validation"] = round(frechet(z(gen), zval), 2)
        out["generated_vs_train_clips"] = round(frechet(z(gen), ztrain), 2)
    halves = []
    uniq = np.unique(val_tracks)
    for _ in range(draws):
        a = set(rng.permutation(uniq)[:len(uniq) // 2])
        m = np.array([t in a for t in val_tracks])
        halves.append(frechet(zval[m], zval[~m]))
    out["validation_half_vs_half"] = {"mean": round(float(np.mean(halves)), 2), "sd": round(float(np.std(halves)), 2)}
    base = []
    for _ in range(draws):
        pick = matched_sample(train_genres, train_tracks, want, rng)
        base.append(frechet(ztrain[pick], zval))
    out["train_clips_vs_validation"] = {"mean": round(float(np.mean(base)), 2), "sd": round(float(np.std(base)), 2),
                                        "clips": int(sum(want.values())), "genre_mix": dict(want)}
    return out


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="?", default=None, help="folder or tar of generated clips (none: real numbers only)")
    ap.add_argument("--labels", default=None, help="JSON with each clip's genre, if the file names lack it")
    ap.add_argument("--musicnn-python", required=True, help="a Python with musicnn (see musicnn_embed.py)")
    ap.add_argument("--corpus", default="/work/data/corpus", help="corpus folder with metadata.csv")
    ap.add_argument("--cache", default="/work/evalcache", help="real-clip feature cache folder")
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length, real and generated")
    ap.add_argument("--clips-per-track", type=int, default=4, help="judge training clips per training track")
    ap.add_argument("--wd", type=float, default=0.03, help="the judge's L2 weight")
    ap.add_argument("--fd-dims", type=int, default=32, help="principal components for the Frechet distances")
    ap.add_argument("--sample-rate", type=int, default=None, help="band-limit the real clips to this rate "
                    "(default: the lowest rate among the generated clips)")
    ap.add_argument("--keep-silent", action="store_true", help="keep silent real validation clips (< -60 dBFS)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--out-json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    corpus, cache = Path(args.corpus), Path(args.cache)
    meta = corpus / "metadata.csv"
    if not meta.exists():
        raise SystemExit(f"error: {meta} not found: pass --corpus, the folder with the corpus's metadata.csv")
    if not Path(args.musicnn_python).exists():
        raise SystemExit(f"error: {args.musicnn_python} not found: make the musicnn environment (musicnn_embed.py)")
    genres = list(MAIN_GENRES)
    gid = {g: i for i, g in enumerate(genres)}
    with open(meta, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["genre"].lower() in gid]

    # --- generated clips first (a bad folder fails before any long work)
    gen_audio, items, rate = None, [], SR
    if args.clips:
        t0 = time.perf_counter()
        gen_audio, items, rate = read_generated(Path(args.clips), Path(args.labels) if args.labels else None,
                                                args.seconds)
        unknown = sorted({it["genre"] for it in items} - set(gid))
        if unknown:
            raise SystemExit(f"error: the judge knows {', '.join(genres)}; clips ask for {', '.join(unknown)}")
        if len(items) < 2:
            raise SystemExit("error: need at least 2 clips (a Frechet distance needs a covariance)")
        timing["read_generated"] = round(time.perf_counter() - t0, 1)
    rate = min(args.sample_rate or rate, SR)

    # --- real clips: the judge's (training split) and the reference (validation split)
    t0 = time.perf_counter()
    train_clips = plan_clips([r for r in rows if r["split"] == "train"], args.seconds, args.clips_per_track)
    val_clips = validation_clips([r for r in rows if r["split"] == "validation"], args.seconds)
    feats = real_features(train_clips + val_clips, corpus, args.seconds, cache, rate, args.musicnn_python)
    timing["real_features"] = round(time.perf_counter() - t0, 1)
    nt = len(train_clips)
    tr = {k: v[:nt] for k, v in feats.items()}
    va = {k: v[nt:] for k, v in feats.items()}
    silent = va["rms_dbfs"] < SILENT_DBFS
    keep_val = np.ones(len(val_clips), bool) if args.keep_silent else ~silent
    va = {k: v[keep_val] for k, v in va.items()}
    val_kept = [c for c, k in zip(val_clips, keep_val) if k]

    # --- the judge
    t0 = time.perf_counter()
    x_tr = judge_space(tr, "judge")
    y_tr = np.array([gid[c.genre] for c in train_clips])
    tracks_tr = np.array([c.file for c in train_clips])
    folds = stratified_group_folds(list(tracks_tr), [c.genre for c in train_clips])
    cv = np.full(len(y_tr), -1)
    for f in np.unique(folds):
        clf = fit_logreg(x_tr[folds != f], y_tr[folds != f], len(genres), args.wd)
        cv[folds == f] = clf.predict(x_tr[folds == f])
    judge = fit_logreg(x_tr, y_tr, len(genres), args.wd)
    timing["judge_fit"] = round(time.perf_counter() - t0, 1)
    x_va = judge_space(va, "judge")
    y_va = np.array([gid[c.genre] for c in val_kept])
    result: dict = {
        "judge": {"features": "handlf+musicnn", "wd": args.wd, "genres": genres, "clip_seconds": args.seconds,
                  "train_clips": nt, "train_tracks": int(len(set(tracks_tr))),
                  "train_clips_per_genre": dict(Counter(c.genre for c in train_clips)),
                  "band_limit_hz": rate // 2 if rate < SR else None},
        "judge_train_split_grouped_by_track": scores(y_tr, cv, genres),
        "real_validation": scores(y_va, judge.predict(x_va), genres)
        | {"silent_clips": int(silent.sum()), "silent_excluded": not args.keep_silent,
           "tracks": int(len({c.file for c in val_kept}))},
    }

    # --- generated clips
    gen_x = {}
    if gen_audio is not None:
        t0 = time.perf_counter()
        hand = np.concatenate([hand_features(gen_audio[i:i + 32]) for i in range(0, len(gen_audio), 32)])
        timing["generated_hand_features"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        gparts = {"hand": hand, "musicnn": musicnn_features(gen_audio, args.musicnn_python)}
        timing["generated_musicnn"] = round(time.perf_counter() - t0, 1)
        gen_x = {"judge": judge_space(gparts, "judge"), "musicnn": gparts["musicnn"]}
        y_g = np.array([gid[it["genre"]] for it in items])
        pred = judge.predict(gen_x["judge"])
        g = scores(y_g, pred, genres)
        rms = 20 * np.log10(np.sqrt(np.mean(np.square(gen_audio.astype(np.float64)), axis=1)) + 1e-9)
        g |= {"clips": len(items), "silent_clips": int((rms < SILENT_DBFS).sum()),
              "sample_rates": dict(Counter(it["sample_rate"] for it in items))}
        by_bpm: dict = defaultdict(list)
        for it, yy, pp in zip(items, y_g, pred):
            by_bpm[it["bpm"]].append(yy == pp)
        g["accuracy_by_asked_bpm"] = {("none" if k is None else f"{k:g}"): round(float(np.mean(v)), 3)
                                      for k, v in sorted(by_bpm.items(), key=lambda kv: kv[0] or 0)}
        result["generated"] = g
        result["generated_clips"] = [{**it, "judged": genres[p]} for it, p in zip(items, pred)]
        want = Counter(it["genre"] for it in items)
    else:
        want = Counter({g: 48 for g in ("electronic", "orchestral", "ambient", "folk", "classical")})

    # --- Frechet distances
    t0 = time.perf_counter()
    g_tr = np.array([c.genre for c in train_clips])
    t_va = np.array([c.file for c in val_kept])
    result["frechet"] = {space: frechet_report(judge_space(tr, space), g_tr, tracks_tr, judge_space(va, space), t_va,
                                               gen_x.get(space), want, args.fd_dims)
                         for space in ("judge", "musicnn")}
    timing["frechet"] = round(time.perf_counter() - t0, 1)
    timing["total"] = round(time.perf_counter() - t_start, 1)
    result["seconds"] = timing
    if args.out_json:
        Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out_json).write_text(json.dumps(result, indent=1, default=float) + "\n", encoding="utf-8")
    print_summary(result)


def print_summary(r: dict) -> None:
    """The headline numbers."""
    j = r["judge"]
    print(f"judge: {j['features']}, wd {j['wd']:g}, {j['train_clips']} training-split clips of {j['clip_seconds']:g} s"
          f" from {j['train_tracks']} tracks" + (f", band-limited to {j['band_limit_hz']} Hz" if j["band_limit_hz"]
                                                  else ""))
    for name in ("judge_train_split_grouped_by_track", "real_validation", "generated"):
        if name not in r:
            continue
        s = r[name]
        extra = f", {s['silent_clips']} silent" + (" (excluded)" if s.get("silent_excluded") else "") \
            if "silent_clips" in s else ""
        print(f"{name}: {s['n']} clips{extra}: accuracy {s['accuracy']}, balanced {s['balanced_accuracy']} "
              f"(chance {s['chance']}), recall {({k: float(v) for k, v in s['recall'].items()})}")
    if "generated" in r:
        g = r["generated"]
        print("  by asked bpm:", g["accuracy_by_asked_bpm"])
        print("  confusion (rows: asked, columns: judged):", g["labels"])
        for lab, row in zip(g["labels"], g["confusion"]):
            print(f"    {lab:12s} {row}")
    for space, f in r["frechet"].items():
        line = f"frechet [{space}, {f['dims']} PCs]:"
        if "generated_vs_validation" in f:
            line += f" generated vs validation {f['generated_vs_validation']};"
        h, b = f["validation_half_vs_half"], f["train_clips_vs_validation"]
        line += (f" floor: validation half vs half {h['mean']} +- {h['sd']}; real training clips ({b['clips']}, "
                 f"same genre mix) vs validation {b['mean']} +- {b['sd']}")
        if "generated_vs_train_clips" in f:
            line += f"; generated vs all judge training clips {f['generated_vs_train_clips']}"
        print(line)
    print("seconds:", r["seconds"])


if __name__ == "__main__":
    main()
