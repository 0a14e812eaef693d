#!/usr/bin/env python
"""The lyric experiment's training and evaluation data as top-level CODES in one small archive for the GPU machine.

A top prior trains on level-2 codes only, so the GPU needs neither audio nor an encoder pass. The sung songs are
encoded here (``encode_corpus_resumable.py``: one staged ``.npz`` per song with its codes and beats); this script
joins them with a genre-balanced share of an instrumental code folder (same VQ-VAE fingerprint, lyrics empty) into

    lyricpack/mix/     a portable code folder (index.json, manifest.json, tempo.json, level_2.bin):
                       ``jukebox train prior --data lyricpack/mix --level 2`` reads it as it is. Tracks
                       ``sung/<song>.flac`` (train and validation songs, their lyrics, artist = the festival voice,
                       genre = the accompaniment style; with ``--with-words``, the default, also the sung word
                       timings ``words`` [[word, start, end], ...] for ``jukebox train prior --align-loss``) and
                       ``inst/<path>`` (instrumental training tracks, lyrics "").
                       Validation = the sung validation songs only (so the training curve speaks of singing).
    lyricpack/eval/    a code folder of what training never sees: the held-out (``test``) songs and some
                       instrumental validation tracks; ``songs.json`` lists every evaluation song (held-out and
                       validation, which live in mix/) with its folder, path, labels, lyrics and sung word timing.
    lyricpack/heldout.json   the first ``--goal-songs`` held-out songs (id, artist, genre, lyrics, duration): the
                       songs the goals are measured on (``lyrics_models.py sample --heldout``)
    lyricpack/info.json      what went in: tracks, hours, tokens, shares, the selection rule

written as one xz-compressed tar (``--out``, e.g. ``.gpu/lyricpack.tar.xz``; LZMA2 with 2-byte alignment for the
int16 codes). ``unpack`` extracts it with Python's own ``tarfile`` (the GPU image needs no xz tool).

    python research/scripts/encode_corpus_resumable.py --data SUNG/songs --stage STAGE_SONGS --out CODES_SONGS
    python research/scripts/encode_corpus_resumable.py --data SUNG/heldout --stage STAGE_HELDOUT --out CODES_HELDOUT
    python research/scripts/lyrics_codepack.py build --sung-stage STAGE_SONGS --heldout-stage STAGE_HELDOUT \\
        --corpus SUNG --inst /work/data/codes_full --inst-hours 5 --out .gpu/lyricpack.tar.xz
    python research/scripts/lyrics_codepack.py unpack .gpu/lyricpack.tar.xz DEST     # DEST/lyricpack/...
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import lzma
import random
import shutil
import sys
import tarfile
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

LEVEL = 2
#: LZMA2 tuned for little-endian int16 codes (2-byte literal position), ~2 % smaller than ``xz -9e``.
FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 1, "lp": 1, "pb": 1}]


def _song_index(path: str) -> int:
    return int(Path(path).stem[4:])


def _stage(stage: Path, max_songs: int = 0) -> tuple[Any, dict[str, Path], dict[str, Any]]:
    """(manifest, {track path: staged npz}, info) of an ``encode_corpus_resumable.py`` stage; every track (with a
    song index below ``max_songs`` when given) staged."""
    from jukebox.data.dataset import Manifest

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from encode_corpus_resumable import stage_name

    manifest = Manifest.load(stage / "manifest.json")
    if max_songs:
        manifest = dataclasses.replace(manifest, tracks=[t for t in manifest.tracks if _song_index(t.path) < max_songs])
    info = json.loads((stage / "info.json").read_text())
    if info["level"] != LEVEL:
        raise SystemExit(f"error: {stage} holds level-{info['level']} codes; the top prior needs level {LEVEL}")
    files = {t.path: stage / "tracks" / stage_name(t.path) for t in manifest.tracks}
    missing = [p for p, f in files.items() if not f.is_file()]
    if missing:
        raise SystemExit(f"error: {len(missing)} tracks of {stage} are not encoded yet (e.g. {missing[0]})")
    return manifest, files, info


def _timing(corpus: Path) -> dict[str, dict[str, Any]]:
    """Every song's timing record by id (``timing/<id>.json``: split, labels, lyrics, sung word times)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((corpus / "timing").glob("song*.json"))}


def pick_instrumental(tracks: Sequence[Any], hours: float, seed: int = 0) -> tuple[list[Any], float]:
    """Training tracks of the instrumental corpus, genre-balanced: every genre gets tracks (in a seeded order)
    while it holds less than ``cap`` hours, ``cap`` the water level at which the total is ``hours``. Returns
    (tracks in corpus order, cap)."""
    by_genre: dict[str, list[Any]] = defaultdict(list)
    for t in tracks:
        by_genre[t.genre].append(t)
    rng = random.Random(seed)
    for g in sorted(by_genre):
        rng.shuffle(by_genre[g])

    def take(cap: float) -> list[Any]:
        out = []
        for g in sorted(by_genre):
            got = 0.0
            for t in by_genre[g]:
                if got >= cap * 3600:
                    break
                out.append(t)
                got += t.duration
        return out

    lo, hi = 0.0, hours
    for _ in range(40):  # the smallest cap whose selection reaches ``hours``
        mid = (lo + hi) / 2
        if sum(t.duration for t in take(mid)) / 3600 >= hours:
            hi = mid
        else:
            lo = mid
    chosen = {t.path for t in take(hi)}
    return [t for t in tracks if t.path in chosen], hi


def _write_folder(root: Path, entries: Sequence[dict[str, Any]], fingerprint: str, cfg: Any) -> dict[str, Any]:
    """A portable level-2 code folder from ``entries`` (track, codes, total_length, beats or None)."""
    from jukebox.data.code_cache import CodeFolderWriter
    from jukebox.data.dataset import Manifest
    from jukebox.data.tempo import BeatTrack, save_beats

    beats = {}
    with CodeFolderWriter(root, fingerprint, cfg.sample_rate, cfg.hop_lengths, cfg.l_bins, levels=[LEVEL]) as w:
        for e in entries:
            codes = [np.zeros(0, np.int64) for _ in cfg.hop_lengths]
            codes[LEVEL] = np.asarray(e["codes"])
            w.add(e["track"].path, e["track"].duration, int(e["total_length"]), codes)
            if e["beats"] is not None:
                beats[e["track"].path] = e["beats"]
        save_beats(w.tmp, {k: BeatTrack(b.bpm, b.beats, b.pulse) for k, b in sorted(beats.items())})
        w.commit(Manifest(root="lyricpack", tracks=[e["track"] for e in entries], sample_rate=cfg.sample_rate))
    return {"tracks": len(entries), "hours": round(sum(e["track"].duration for e in entries) / 3600, 3),
            "tokens": int(sum(len(e["codes"]) for e in entries))}


def _sung_entry(track: Any, npz: Path, split: str | None = None, words: list[list[Any]] | None = None
                ) -> dict[str, Any]:
    from jukebox.data.tempo import BeatTrack
    from jukebox.data.word_timing import parse_words

    z = np.load(npz)
    beats = BeatTrack(float(z["bpm"]), z["beats"], float(z["pulse"])) if bool(z["beats_ok"]) else None
    t = dataclasses.replace(track, path=f"sung/{track.path}", split=split or track.split,
                            words=parse_words(words, f"{npz}: words") if words else ())
    return {"track": t, "codes": z["codes"].astype(np.int64), "total_length": int(z["total_length"]), "beats": beats}


def _words(rec: dict[str, Any]) -> list[list[Any]]:
    return [[w["word"], round(float(w["start"]), 3), round(float(w["end"]), 3)] for w in rec["words"]]


def build(args: argparse.Namespace) -> dict[str, Any]:
    from jukebox.checkpoint.model_dir import ModelDir
    from jukebox.data.code_cache import CodeCache, made_by, vqvae_fingerprint
    from jukebox.data.tempo import load_beats

    base = ROOT / "src" / "jukebox" / "assets" / "default_model" if args.model == "default" else Path(args.model)
    md = ModelDir(base)
    cfg = md.vqvae_config()
    fingerprint = vqvae_fingerprint(md.path / "vqvae")
    sung_m, sung_files, sung_info = _stage(args.sung_stage, args.max_songs)
    held_m, held_files, held_info = _stage(args.heldout_stage, args.max_songs)
    for info in (sung_info, held_info):
        if info["fingerprint"] != fingerprint:
            raise SystemExit("error: the sung songs were encoded by another VQ-VAE than --model's")
    inst = CodeCache(args.inst)
    if not made_by(inst.fingerprint, md.path / "vqvae"):
        raise SystemExit(f"error: {args.inst} was encoded by another VQ-VAE than --model's")
    inst_m = inst.manifest()
    inst_beats = load_beats(args.inst) or {}
    timing = _timing(args.corpus)

    def sid(path: str) -> str:
        return Path(path).stem

    # the sung train + validation songs, as their timing records say (the metadata split is the builder's)
    sung = []
    for t in sung_m.tracks:
        rec = timing.get(sid(t.path))
        if rec is None or rec["split"] not in ("train", "validation"):
            raise SystemExit(f"error: {t.path} has no train/validation timing record in {args.corpus}/timing")
        sung.append(_sung_entry(t, sung_files[t.path], rec["split"], _words(rec) if args.with_words else None))
    picked, cap = pick_instrumental(inst_m.split("train"), args.inst_hours, args.seed)
    inst_entries = []
    for t in picked:
        inst_entries.append({"track": dataclasses.replace(t, path=f"inst/{t.path}", lyrics=""),
                             "codes": inst.codes(t.path, LEVEL).astype(np.int64),
                             "total_length": inst.tracks[t.path].total_length, "beats": inst_beats.get(t.path)})
    held = []
    for t in held_m.tracks:
        rec = timing.get(sid(t.path))
        if rec is None or rec["split"] != "test":
            raise SystemExit(f"error: {t.path} is not a held-out (test) song of {args.corpus}")
        held.append(_sung_entry(t, held_files[t.path], "validation", _words(rec) if args.with_words else None))
    held.sort(key=lambda e: e["track"].path)
    inst_val = sorted(inst_m.split("validation"), key=lambda t: t.path)
    rng = random.Random(args.seed)
    inst_val = sorted(rng.sample(inst_val, min(args.inst_val_tracks, len(inst_val))), key=lambda t: t.path)
    inst_val_entries = [{"track": dataclasses.replace(t, path=f"inst/{t.path}", lyrics=""),
                         "codes": inst.codes(t.path, LEVEL).astype(np.int64),
                         "total_length": inst.tracks[t.path].total_length, "beats": inst_beats.get(t.path)}
                        for t in inst_val]

    work = Path(tempfile.mkdtemp(prefix="lyricpack."))
    try:
        pack = work / "lyricpack"
        pack.mkdir()
        mix = _write_folder(pack / "mix", sung + inst_entries, fingerprint, cfg)
        ev = _write_folder(pack / "eval", held + inst_val_entries, fingerprint, cfg)
        songs = []
        for e in sorted(sung, key=lambda e: e["track"].path):
            if e["track"].split == "validation":
                rec = timing[sid(e["track"].path)]
                songs.append({"id": sid(e["track"].path), "kind": "validation", "folder": "mix",
                              "path": e["track"].path, "artist": rec["artist"], "genre": rec["genre"],
                              "lyrics": rec["lyrics"], "duration": e["track"].duration, "words": _words(rec)})
        for e in held:
            rec = timing[sid(e["track"].path)]
            songs.append({"id": sid(e["track"].path), "kind": "test", "folder": "eval", "path": e["track"].path,
                          "artist": rec["artist"], "genre": rec["genre"], "lyrics": rec["lyrics"],
                          "duration": e["track"].duration, "words": _words(rec)})
        for e in inst_val_entries:
            t = e["track"]
            songs.append({"id": t.path, "kind": "instrumental", "folder": "eval", "path": t.path, "artist": t.artist,
                          "genre": t.genre, "lyrics": "", "duration": t.duration, "words": []})
        (pack / "eval" / "songs.json").write_text(json.dumps(songs, indent=0) + "\n")
        goal = [s for s in songs if s["kind"] == "test"][: args.goal_songs]
        (pack / "heldout.json").write_text(json.dumps(
            [{k: s[k] for k in ("id", "artist", "genre", "lyrics", "duration")} for s in goal], indent=1) + "\n")
        sung_train = [e for e in sung if e["track"].split == "train"]
        n_tok = lambda es: int(sum(len(e["codes"]) for e in es))  # noqa: E731
        g_hours: dict[str, float] = defaultdict(float)
        for e in inst_entries:
            g_hours[e["track"].genre] += e["track"].duration / 3600
        info = {
            "fingerprint": fingerprint, "level": LEVEL, "sample_rate": cfg.sample_rate,
            "mix": {**mix, "sung_train_songs": len(sung_train),
                    "sung_validation_songs": sum(e["track"].split == "validation" for e in sung),
                    "sung_train_hours": round(sum(e["track"].duration for e in sung_train) / 3600, 3),
                    "sung_train_tokens": n_tok(sung_train),
                    "sung_tracks_with_words": sum(bool(e["track"].words) for e in sung),
                    "instrumental_tracks": len(inst_entries), "instrumental_tokens": n_tok(inst_entries),
                    "instrumental_hours_by_genre": {g: round(h, 3) for g, h in sorted(g_hours.items())},
                    "instrumental_genre_cap_hours": round(cap, 3),
                    "sung_share_of_training_windows": round(n_tok(sung_train) / max(1, n_tok(sung_train)
                                                                                    + n_tok(inst_entries)), 3)},
            "eval": {**ev, "test_songs": len(held), "goal_songs": len(goal),
                     "validation_songs_in_mix": sum(s["kind"] == "validation" for s in songs),
                     "instrumental_validation_tracks": len(inst_val_entries)},
            "selection": f"sung: every train/validation song of the corpus (songs < {args.max_songs or 'all'}); "
                         f"instrumental: training tracks, genres capped at {cap:.2f} h each (seed {args.seed})",
        }
        (pack / "info.json").write_text(json.dumps(info, indent=1) + "\n")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(pack, arcname="lyricpack")
        tmp.write_bytes(lzma.compress(buf.getvalue(), format=lzma.FORMAT_XZ, filters=FILTERS))
        tmp.replace(args.out)
        info["archive_mb"] = round(args.out.stat().st_size / 1e6, 2)
        info["archive"] = str(args.out)
        return info
    finally:
        shutil.rmtree(work, ignore_errors=True)


def unpack(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into ``dest`` (``dest/lyricpack``), replacing an older extraction; returns the folder."""
    out = dest / "lyricpack"
    stamp = dest / ".lyricpack.stamp"
    key = f"{archive.stat().st_size}:{int(archive.stat().st_mtime)}"
    if out.is_dir() and stamp.is_file() and stamp.read_text() == key:
        return out
    if out.exists():
        shutil.rmtree(out)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:xz") as tar:
        tar.extractall(dest, filter="data")
    stamp.write_text(key)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("build", help="the code archive from the staged sung songs and an instrumental code folder")
    p.add_argument("--sung-stage", type=Path, required=True, help="stage of SUNG/songs (train + validation)")
    p.add_argument("--heldout-stage", type=Path, required=True, help="stage of SUNG/heldout")
    p.add_argument("--corpus", type=Path, required=True, help="the sung corpus (timing/*.json)")
    p.add_argument("--inst", type=Path, required=True, help="instrumental code folder (level 2, same VQ-VAE)")
    p.add_argument("--inst-hours", type=float, default=5.0, help="hours of instrumental training tracks")
    p.add_argument("--inst-val-tracks", type=int, default=10, help="instrumental validation tracks for eval/")
    p.add_argument("--goal-songs", type=int, default=15, help="held-out songs the goals use (heldout.json)")
    p.add_argument("--max-songs", type=int, default=0, help="only songs with index < N (0: all)")
    p.add_argument("--model", default="default", help="model directory whose VQ-VAE made the codes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--with-words", action=argparse.BooleanOptionalAction, default=True,
                   help="store the sung songs' word timings in the manifests (for --align-loss; default on)")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("unpack", help="extract an archive (DEST/lyricpack)")
    p.add_argument("archive", type=Path)
    p.add_argument("dest", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "build":
        print(json.dumps(build(args), indent=1))
    else:
        print(unpack(args.archive, args.dest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
