"""Encode a corpus into a portable code folder (the format of ``jukebox prepare --codes --levels L``) track by
track, resumably: for long CPU runs that may be interrupted.

``jukebox prepare --codes`` writes the whole folder in one go (into a temporary folder swapped in at the end), so
an interrupted run starts over. This script instead stages one file per track (the level-L codes as int16, the
decoded length, the track's beats from ``jukebox.data.tempo``) in ``--stage``, each written atomically (temporary
name, then rename); a restart skips the staged tracks. When every track is staged it assembles ``--out`` with the
library's own writers (``CodeFolderWriter`` + ``save_beats``), so ``jukebox train prior --data OUT --tempo``
reads it like a folder written by ``prepare``. ``--assemble`` only assembles (``--partial``: from the tracks
staged so far).

``--reuse DIR``: per-track level-L codes encoded earlier by the same VQ-VAE (``DIR/<path with / as __>.npy``, as
``encode_track(vq, audio, levels=[L])`` gives them); the ``--verify-reuse`` shortest of them are encoded afresh
first and the run stops unless the codes are identical.

Run on one core: ``OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 15 python encode_corpus_resumable.py ...``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402


def log_to(path: Path | None):
    def log(msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        print(line, flush=True)
        if path is not None:
            with open(path, "a") as f:
                f.write(line + "\n")
    return log


def stage_name(track_path: str) -> str:
    return track_path.replace("/", "__") + ".npz"


def write_atomic_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_model(model: str):
    from jukebox.api import default_model_path
    from jukebox.checkpoint.model_dir import ModelDir

    path = default_model_path() if model == "default" else Path(model)
    if path is None:
        sys.exit("this install has no embedded default model")
    return ModelDir(path)


def stage_manifest(args: argparse.Namespace, sample_rate: int, log):
    """The corpus manifest, scanned once (as ``jukebox prepare``: min 1 s, metadata splits kept, the rest split
    0.1 by the seeded hash) and kept in the stage so a restart works on the same track list."""
    from jukebox.data.dataset import Manifest, scan_corpus, split_manifest

    f = args.stage / "manifest.json"
    if f.is_file():
        return Manifest.load(f)
    manifest = scan_corpus(args.data, sample_rate=sample_rate, min_seconds=1.0, workers=1)
    for s in manifest.skipped:
        log(f"skipped by the scan: {s.path}: {s.reason}")
    manifest = split_manifest(manifest, val_fraction=0.1, seed=0)
    manifest = dataclasses.replace(manifest, sample_rate=sample_rate)
    if args.only:
        by_length = sorted(manifest.tracks, key=lambda t: t.duration)
        val = [t for t in by_length if t.split == "validation"][:1]  # a test corpus with both splits
        train = [t for t in by_length if t.split != "validation"][:max(0, args.only - len(val))]
        keep_paths = {t.path for t in val + train}
        manifest = dataclasses.replace(manifest, tracks=[t for t in manifest.tracks if t.path in keep_paths])
    names = [stage_name(t.path) for t in manifest.tracks]
    if len(set(names)) != len(names):
        sys.exit("two tracks map to one staged file name")
    manifest.save(f)
    return manifest


def verify_reuse(args, vq, manifest, log) -> None:
    from jukebox.audio import load_audio
    from jukebox.data.code_cache import encode_track

    done_f = args.stage / "reuse_verified.json"
    if done_f.is_file() or not args.verify_reuse:
        return
    cands = sorted((t for t in manifest.tracks if (args.reuse / (t.path.replace("/", "__") + ".npy")).is_file()),
                   key=lambda t: t.duration)
    if not cands:
        return
    # the shortest and a median-length one (then evenly spread), each once
    picks = [cands[0], cands[len(cands) // 2]] if args.verify_reuse == 2 else \
        cands[:: max(1, len(cands) // args.verify_reuse)]
    picks = list({t.path: t for t in picks}.values())[:args.verify_reuse]
    results = []
    for t in picks:
        audio, _ = load_audio(manifest.track_path(t), sample_rate=vq.config.sample_rate)
        fresh = encode_track(vq, audio, levels=[args.level])[args.level]
        old = np.load(args.reuse / (t.path.replace("/", "__") + ".npy"))
        same = bool(np.array_equal(fresh, old.astype(np.int64)))
        results.append({"track": t.path, "seconds": round(t.duration, 2), "codes": len(fresh), "identical": same})
        log(f"reuse check {t.path} ({t.duration:.1f} s, {len(fresh)} codes): "
            f"{'identical' if same else 'DIFFERENT'}")
        if not same:
            sys.exit(f"{args.reuse}: codes differ from a fresh encoding ({t.path}); run without --reuse")
    done_f.write_text(json.dumps(results, indent=1) + "\n")


def encode_all(args: argparse.Namespace) -> bool:
    """Stage every track not staged yet; returns whether all are staged."""
    from jukebox.audio import load_audio
    from jukebox.data.code_cache import encode_track, vqvae_fingerprint
    from jukebox.data.tempo import track_beats
    from jukebox.errors import JukeboxError

    log = log_to(args.log)
    md = load_model(args.model)
    cfg = md.vqvae_config()
    sr, top_hop = cfg.sample_rate, cfg.hop_lengths[args.level]
    fingerprint = vqvae_fingerprint(md.path / "vqvae")
    (args.stage / "tracks").mkdir(parents=True, exist_ok=True)
    info_f = args.stage / "info.json"
    info = {"fingerprint": fingerprint, "level": args.level, "sample_rate": sr, "model": str(md.path)}
    if info_f.is_file():
        old = json.loads(info_f.read_text())
        if (old["fingerprint"], old["level"], old["sample_rate"]) != (fingerprint, args.level, sr):
            sys.exit(f"{args.stage} was staged with another VQ-VAE or level; use a new --stage")
    else:
        info_f.write_text(json.dumps(info, indent=1) + "\n")
    for tmp in (args.stage / "tracks").glob(".*.tmp"):  # a write cut short by an earlier interruption
        tmp.unlink()
    manifest = stage_manifest(args, sr, log)
    vq = md.load_vqvae("cpu").eval()
    for p in vq.parameters():
        p.requires_grad_(False)
    if args.reuse is not None:
        verify_reuse(args, vq, manifest, log)

    def reuse_file(t) -> Path | None:
        if args.reuse is None:
            return None
        f = args.reuse / (t.path.replace("/", "__") + ".npy")
        return f if f.is_file() else None

    staged = lambda t: (args.stage / "tracks" / stage_name(t.path)).is_file()  # noqa: E731
    todo = [t for t in manifest.tracks if not staged(t)]
    # reused tracks first (fast), then validation tracks, then the rest: an early partial folder has both splits
    todo.sort(key=lambda t: (reuse_file(t) is None, t.split != "validation"))
    total_s = sum(t.duration for t in manifest.tracks)
    done_s = sum(t.duration for t in manifest.tracks if staged(t))
    n_done = len(manifest.tracks) - len(todo)
    to_encode_s = sum(t.duration for t in todo if reuse_file(t) is None)
    log(f"start: {len(manifest.tracks)} tracks, {total_s / 3600:.2f} h; staged {n_done} ({done_s / 3600:.2f} h); "
        f"to do {len(todo)} ({sum(t.duration for t in todo) / 3600:.2f} h, of which {to_encode_s / 3600:.2f} h to "
        f"encode); pid {os.getpid()}, {torch.get_num_threads()} thread(s)")
    enc_audio_s, enc_wall_s, failures = 0.0, 0.0, 0
    for t in todo:
        t0 = time.time()
        try:
            audio, _ = load_audio(manifest.track_path(t), sample_rate=sr)
            src = reuse_file(t)
            if src is not None:
                codes = np.load(src)
                if len(codes) != len(audio) // top_hop:
                    src = None  # another length: encode afresh
            t1 = time.time()
            if src is None:
                codes = encode_track(vq, audio, levels=[args.level])[args.level]
            t2 = time.time()
            try:
                bt = track_beats(audio, sr)
                beats = dict(bpm=np.float64(bt.bpm), pulse=np.float64(bt.pulse), beats=bt.beats,
                             beats_ok=np.bool_(True))
            except JukeboxError as e:
                log(f"beats failed {t.path}: {e}")
                beats = dict(bpm=np.float64(0), pulse=np.float64(0), beats=np.zeros(0), beats_ok=np.bool_(False))
            codes = np.asarray(codes)
            if codes.size and (codes.min() < 0 or codes.max() >= cfg.l_bins):
                raise JukeboxError(f"codes outside 0..{cfg.l_bins - 1}")
            write_atomic_npz(args.stage / "tracks" / stage_name(t.path), codes=codes.astype(np.int16),
                             total_length=np.int64(len(audio)), **beats)
        except (JukeboxError, OSError, MemoryError) as e:
            failures += 1
            log(f"FAILED {t.path}: {e}")
            continue
        t3 = time.time()
        n_done += 1
        done_s += t.duration
        how = "reused"
        if src is None:
            enc_audio_s += t.duration
            enc_wall_s += t3 - t0
            to_encode_s -= t.duration
            how = f"encoded {t.duration / max(t2 - t1, 1e-9):.1f}x"
        speed = enc_audio_s / enc_wall_s if enc_wall_s else 0.0
        eta = f", ETA {to_encode_s / speed / 3600:.2f} h" if speed else ""
        log(f"[{n_done}/{len(manifest.tracks)}] {t.path} {t.duration:.1f} s {how}, beats {t3 - t2:.1f} s, "
            f"total {t3 - t0:.1f} s | {done_s / 3600:.2f}/{total_s / 3600:.2f} h staged, run speed "
            f"{speed:.1f}x realtime{eta}")
    complete = all(staged(t) for t in manifest.tracks)
    log(f"staging {'complete' if complete else f'incomplete ({failures} failed)'}: {n_done}/"
        f"{len(manifest.tracks)} tracks")
    return complete


def assemble(args: argparse.Namespace) -> None:
    """Build the code folder ``--out`` from the staged tracks with the library's writers."""
    from jukebox.data.code_cache import CodeFolderWriter, vqvae_fingerprint
    from jukebox.data.dataset import Manifest
    from jukebox.data.tempo import BeatTrack, save_beats

    log = log_to(args.log)
    md = load_model(args.model)
    cfg = md.vqvae_config()
    info = json.loads((args.stage / "info.json").read_text())
    fingerprint = vqvae_fingerprint(md.path / "vqvae")
    if info["fingerprint"] != fingerprint or info["level"] != args.level:
        sys.exit(f"{args.stage} was staged with another VQ-VAE or level")
    manifest = Manifest.load(args.stage / "manifest.json")
    files = {t.path: args.stage / "tracks" / stage_name(t.path) for t in manifest.tracks}
    have = [t for t in manifest.tracks if files[t.path].is_file()]
    if len(have) < len(manifest.tracks) and not args.partial:
        sys.exit(f"{len(manifest.tracks) - len(have)} tracks are not staged yet; finish the run or pass --partial")
    beats: dict[str, BeatTrack] = {}
    n_codes = 0
    with CodeFolderWriter(args.out, fingerprint, cfg.sample_rate, cfg.hop_lengths, cfg.l_bins,
                          levels=[args.level]) as w:
        for t in have:
            z = np.load(files[t.path])
            codes = [np.zeros(0, np.int64) for _ in cfg.hop_lengths]
            codes[args.level] = z["codes"]
            n_codes += len(z["codes"])
            w.add(t.path, t.duration, int(z["total_length"]), codes)
            if bool(z["beats_ok"]):
                beats[t.path] = BeatTrack(float(z["bpm"]), z["beats"], float(z["pulse"]))
        save_beats(w.tmp, dict(sorted(beats.items())))  # inside the folder before it is swapped in
        w.commit(dataclasses.replace(manifest, tracks=have, sample_rate=cfg.sample_rate))
    hours = sum(t.duration for t in have) / 3600
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    log(f"assembled {args.out}: {len(have)} tracks ({hours:.2f} h, {sum(t.split == 'validation' for t in have)} "
        f"validation), {n_codes} level-{args.level} codes, beats of {len(beats)} tracks "
        f"({sum(b.bpm > 0 for b in beats.values())} with a pulse), {size / 2**20:.1f} MiB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="corpus folder (audio + metadata.csv)")
    p.add_argument("--stage", type=Path, required=True, help="staging folder (one .npz per track)")
    p.add_argument("--out", type=Path, required=True, help="code folder to assemble")
    p.add_argument("--model", default="default", help="model directory ('default': the embedded model)")
    p.add_argument("--level", type=int, default=2, help="level to encode (default 2, the top)")
    p.add_argument("--reuse", type=Path, default=None, help="folder of earlier per-track level codes (.npy)")
    p.add_argument("--verify-reuse", type=int, default=2, help="reused tracks re-encoded and compared (default 2)")
    p.add_argument("--log", type=Path, default=None, help="progress log (appended)")
    p.add_argument("--only", type=int, default=0, help="test: only the N shortest tracks (fixed at the first run)")
    p.add_argument("--assemble", action="store_true", help="only assemble --out from the staged tracks")
    p.add_argument("--partial", action="store_true", help="with --assemble: from the tracks staged so far")
    p.add_argument("--no-assemble", action="store_true", help="do not assemble when staging completes")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    if args.assemble:
        assemble(args)
        return
    if encode_all(args) and not args.no_assemble:
        assemble(args)


if __name__ == "__main__":
    main()
