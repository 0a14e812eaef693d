#!/usr/bin/env python
"""The long lyric-prior run on the GPU (``research/scripts/gpu_lyrics_long.sh``): per-style setup, fallback weights
that survive a cold machine, the training summary and the evaluation of the goals.

    python research/scripts/lyrics_long.py prepare --style lyrics --run RUN --state STATE --base BASE \\
        --lr L --warmup W --min-lr-ratio M --planned-s P --step-rate R --call-s C  # -> RUN/lyrics/train_args.txt
    python research/scripts/lyrics_long.py account --run RUN --style lyrics --seconds C   # after the call's training
    python research/scripts/lyrics_long.py pack-state --run RUN --style lyrics --out OUT/lyrics.q8.tar.xz
    python research/scripts/lyrics_long.py restore --pack STATE/lyrics.q8.tar.xz --base BASE --out RUN/lyrics
    python research/scripts/lyrics_long.py summary --run RUN --out RUN/logs/train_history.json
    python research/scripts/lyrics_long.py evaluate --model lyrics=RUN/lyrics --model merged=RUN/merged \\
        --base BASE --data RUN/data/lyricpack --out OUT/eval_results.json [--alignment-npz F]

``prepare`` decides how a style's training continues in this call: ``resume`` (the machine is still warm: its
checkpoint in ``RUN/<style>`` continues exactly), ``restored`` (a cold machine: the int8 weights an earlier call
returned, ``STATE/<style>.q8.tar.xz``, start a new run whose optimiser state starts over; the learning-rate schedule
continues where the packed step left it) or ``fresh`` (``lyrics_init.py``: the lyric prior grown from the base
model's top prior). The schedule is linear decay after a warm-up, ending when ``--planned-s`` seconds of training
(all calls) are spent; its total step count is re-planned every call from the rate ``account`` measured. A
continuation from step ``d`` is again a linear decay (from lr(d) to the same floor at the same final step) after a
short warm-up of the fresh moments.

Styles: ``lyrics`` = the encoder-decoder (5b_lyrics) style, ``merged`` = the merged-sequence (1b_lyrics) style.
The fallback packs use ``lyrics_models.py``'s format (int8 matrices with per-row scales, fp16 vectors, xz), so
``lyrics_models.py unpack`` and ``eval_lyrics.py samples`` read them; ``meta.json`` adds the global step and the
schedule.

``evaluate`` measures, per lyric model (and the base prior as a reference), on codes only:

* bits per token of every held-out song with its own lyrics, with another held-out song's lyrics (song i gets song
  (i + n // 2) mod n's, as ``lyrics_models.py`` arms), and with no lyrics; the gap (wrong - right) per song, its
  mean and the number of songs where the right lyrics cost fewer bits: on the goal songs (``heldout.json``), on all
  held-out songs and on the validation songs (where the style is chosen); instrumental validation tracks without
  lyrics (does the model still play?);
* teacher-forced alignment of every lyric head (cross or prime layers; ``eval_lyrics.all_head_alignments``) against
  the sung word timing: the head is chosen on the validation songs (share of frames whose attended character lies
  within one word of the sung word), then reported on the goal songs with the proportional-window baseline.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parents[1]
sys.path.insert(0, str(SCRIPTS))
sys.path.insert(0, str(ROOT / "src"))

STYLES = {"lyrics": "encoder_decoder", "merged": "merged"}
LEVEL = 2
RESTART_WARMUP = 50


# ------------------------------------------------------------------------------------------------- schedule
# A style's schedule (RUN/<style>/schedule.json, also in its fallback pack): the global plan, linear decay from
# ``lr`` after ``warmup`` steps to ``lr * min_lr_ratio`` at ``total_steps``, where ``total_steps`` is re-planned every
# call so that the decay ends when ``planned_s`` seconds of training have been spent (``trained_s`` so far, at the
# ``rate`` in optimiser steps per second of training time measured in the last call); ``offset``: the global step at
# which the current trainer run began (0, or the step of the weights a cold machine restarted from) and ``run``: that
# run's own arguments (its steps are local: global step = offset + local step).
def lr_at(step: int, lr: float, steps: int, warmup: int, min_ratio: float) -> float:
    """The linear schedule of ``jukebox train --decay linear`` at optimiser step ``step`` (0-based): the trainer's
    own :func:`jukebox.train.optim.lr_at`."""
    from jukebox.train import TrainConfig
    from jukebox.train.optim import lr_at as trainer_lr_at

    config = TrainConfig(steps=steps, lr=lr, warmup_steps=warmup, decay="linear", min_lr_ratio=min_ratio)
    return trainer_lr_at(step, config)


def plan_total(sched: dict[str, Any], done: int, call_s: float) -> int:
    """Total optimiser steps so that the decay ends when ``planned_s`` of training is spent; at least this call's
    worth of steps beyond ``done`` (training past the plan continues at the floor). A schedule with
    ``planned_steps`` (> 0) ends there instead, whatever the rate: runs compared at equal steps."""
    if int(sched.get("planned_steps") or 0) > 0:
        return max(int(sched["planned_steps"]), done)
    rate = float(sched["rate"])
    left = max(0.0, float(sched["planned_s"]) - float(sched["trained_s"]))
    return int(done + rate * max(left, call_s)) + 1


def run_args(sched: dict[str, Any]) -> list[str]:
    r = sched["run"]
    return ["--steps", str(r["steps"]), "--lr", f"{r['lr']:.6g}", "--warmup", str(r["warmup"]),
            "--min-lr-ratio", f"{r['min_lr_ratio']:.6g}", "--decay", "linear"]


def restart_run(sched: dict[str, Any], done: int, total: int) -> dict[str, Any]:
    """The arguments of a new trainer run (fresh optimiser) that continues the global schedule from step ``done``:
    a short warm-up to lr(done), then linear decay to the same floor at ``total``."""
    floor = sched["lr"] * sched["min_lr_ratio"]
    if done == 0:
        return {"steps": total, "lr": sched["lr"], "warmup": sched["warmup"], "min_lr_ratio": sched["min_lr_ratio"]}
    left = total - done
    if done < sched["warmup"]:  # still warming up: the rest of the warm-up (at least a short one), the same decay
        return {"steps": left, "lr": sched["lr"], "warmup": min(left, max(RESTART_WARMUP, sched["warmup"] - done)),
                "min_lr_ratio": sched["min_lr_ratio"]}
    lr_d = lr_at(done, sched["lr"], total, sched["warmup"], sched["min_lr_ratio"])
    return {"steps": left, "lr": lr_d, "warmup": min(RESTART_WARMUP, max(1, left // 10)),
            "min_lr_ratio": min(1.0, floor / lr_d)}


def checkpoint_step(model_dir: Path) -> int | None:
    """The local step of the style's training checkpoint, if any."""
    for ck in ("checkpoint", "checkpoint.old"):
        f = model_dir / f"prior_level_{LEVEL}" / ck / "trainer.json"
        try:
            return int(json.loads(f.read_text())["step"])
        except (OSError, ValueError, KeyError):
            continue
    return None


def cmd_prepare(args: argparse.Namespace) -> int:
    """Set up RUN/<style> for this call and write its schedule and training arguments (train_args.txt)."""
    import lyrics_init

    style, run = args.style, Path(args.run)
    model = run / style
    sched_f, args_f = model / "schedule.json", model / "train_args.txt"
    pack = Path(args.state) / f"{style}.q8.tar.xz" if args.state else None
    local = checkpoint_step(model) if model.is_dir() else None
    if local is not None and sched_f.is_file():
        sched = json.loads(sched_f.read_text())
        done = int(sched["offset"]) + local
        total = plan_total(sched, done, args.call_s)
        sched["run"]["steps"] = total - int(sched["offset"])
        mode, extra = "resume", ["--resume"]
        note = (f"{style}: resuming the warm run at step {done} (checkpoint step {local}, optimiser state kept); "
                f"schedule re-planned to {total} steps")
    elif pack is not None and pack.is_file():
        meta = restore(pack, Path(args.base), model)
        sched = dict(meta["schedule"])
        done = int(meta["step"])
        total = plan_total(sched, done, args.call_s)
        sched.update(offset=done, run=restart_run(sched, done, total))
        mode, extra = "restored", []
        note = (f"{style}: cold machine: the optimiser state starts over from the int8 weights of step {done} "
                f"({pack.name}); lr continues at {sched['run']['lr']:.3g} after {sched['run']['warmup']} warm-up "
                f"steps, {sched['run']['steps']} steps planned")
    else:
        if model.exists():
            shutil.rmtree(model)
        rep = lyrics_init.make(Path(args.base), model, STYLES[style], args.n_tokens, args.seed)
        sched = {"lr": args.lr, "warmup": args.warmup, "min_lr_ratio": args.min_lr_ratio,
                 "planned_s": args.planned_s, "trained_s": 0.0, "rate": args.step_rate, "offset": 0,
                 "planned_steps": args.planned_steps}
        done = 0
        total = plan_total(sched, done, args.call_s)
        sched["run"] = restart_run(sched, done, total)
        mode, extra = "fresh", []
        note = (f"{style}: new lyric prior grown from {args.base}'s top prior ({rep['parameters']} parameters, "
                f"layers {rep['new_layers']} added); {total} steps planned at a guessed {args.step_rate} steps/s")
    sched["mode"], sched["call_start_step"] = mode, done if mode != "fresh" else 0
    sched["total_steps"] = total
    sched_f.write_text(json.dumps(sched, indent=1) + "\n")
    if total <= done:  # a fixed plan already trained: nothing to do this call (the shell skips an empty file)
        args_f.write_text("")
        note += f"; the planned {total} steps are done"
    else:
        args_f.write_text("\n".join(run_args(sched) + extra) + "\n")
    print(note, flush=True)
    return 0


def cmd_account(args: argparse.Namespace) -> int:
    """After a call's training: add its seconds to ``trained_s`` and measure the rate (steps per second)."""
    model = Path(args.run) / args.style
    sched_f = model / "schedule.json"
    sched = json.loads(sched_f.read_text())
    local = checkpoint_step(model)
    done = int(sched["offset"]) + (local or 0)
    steps = done - int(sched.get("call_start_step", 0))
    sched["trained_s"] = float(sched["trained_s"]) + args.seconds
    if local is not None and steps > 0 and args.seconds > 0:
        sched["rate"] = round(steps / args.seconds, 3)
    sched["done"] = done
    sched_f.write_text(json.dumps(sched, indent=1) + "\n")
    lr_now = lr_at(done, sched["lr"], sched["total_steps"], sched["warmup"], sched["min_lr_ratio"])
    print(f"{args.style}: step {done} ({steps} this call, {sched['rate']} steps/s), {sched['trained_s']:.0f} of "
          f"{sched['planned_s']:.0f} planned seconds trained, lr now ~{lr_now:.3g}", flush=True)
    return 0


# ------------------------------------------------------------------------------------------------- fallback packs
def pack_state(run: Path, style: str, out: Path) -> dict[str, Any] | None:
    """RUN/<style>'s exported prior as an int8 pack (``lyrics_models.py`` format plus tempi.json and the step)."""
    from lyrics_models import _tar_bytes, quantize
    from safetensors.torch import save as st_save

    from jukebox.checkpoint.format import load_weights

    model = run / style
    folder = model / f"prior_level_{LEVEL}"
    local = checkpoint_step(model)
    if local is None:
        return None
    sched = json.loads((model / "schedule.json").read_text())
    meta = {"name": style, "level": LEVEL, "step": int(sched["offset"]) + local, "local_step": local,
            "style": STYLES[style], "schedule": sched}
    files = {f"{style}/meta.json": json.dumps(meta).encode()}
    for extra in ("config.json", "labels.json", "tempi.json"):
        if (folder / extra).exists():
            files[f"{style}/{extra}"] = (folder / extra).read_bytes()
    files[f"{style}/model.q8.safetensors"] = st_save(quantize(load_weights(folder)))
    data = lzma.compress(_tar_bytes(files), preset=6)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return {**meta, "mb": round(len(data) / 1e6, 2)}


def restore(pack: Path, base: Path, dest: Path) -> dict[str, Any]:
    """A model directory ``dest``: the base model with the packed top prior (dequantised); returns the pack's meta."""
    from lyrics_models import _write_prior, read_component_tar

    meta, files, state = read_component_tar(pack)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(base, dest, ignore=shutil.ignore_patterns("code_cache", "checkpoint", "checkpoint.old", "logs"))
    _write_prior(dest / f"prior_level_{LEVEL}", files, state)
    return meta


def cmd_pack_state(args: argparse.Namespace) -> int:
    rep = pack_state(Path(args.run), args.style, Path(args.out))
    print(json.dumps(rep if rep else {"style": args.style, "packed": False, "why": "no checkpoint"}))
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """A model directory from a fallback pack, with a schedule.json saying its global step (for ``evaluate``)."""
    meta = restore(Path(args.pack), Path(args.base), Path(args.out))
    sched = {**meta.get("schedule", {}), "offset": int(meta["step"]), "mode": "restored"}
    (Path(args.out) / "schedule.json").write_text(json.dumps(sched, indent=1) + "\n")
    print(json.dumps({k: meta[k] for k in ("name", "step", "style") if k in meta}))
    return 0


# ------------------------------------------------------------------------------------------------- summary
def cmd_summary(args: argparse.Namespace) -> int:
    """Curves of this call's logs (steps counted globally) appended to the run's history."""
    from lyrics_models import parse_log

    run = Path(args.run)
    hist_f = Path(args.out)
    hist = json.loads(hist_f.read_text()) if hist_f.is_file() else {"calls": []}
    call: dict[str, Any] = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "styles": {}}
    for style in STYLES:
        log = run / "logs" / f"train_{style}.log"
        sched_f = run / style / "schedule.json"
        if not log.is_file() or not sched_f.is_file():
            continue
        sched = json.loads(sched_f.read_text())
        off = int(sched["offset"])
        cur = parse_log(log.read_text(errors="replace"))
        for rows in (cur["train"], cur["val"]):
            for r in rows:
                r["step"] += off
        call["styles"][style] = {"mode": sched.get("mode"), "first_step": off, "last_step": cur["last_step"] + off
                                 if cur["last_step"] else None, "checkpoint_step": (checkpoint_step(run / style) or 0)
                                 + off, "tokens_per_s": cur["tokens_per_s"], "val": cur["val"],
                                 "train": cur["train"]}
    hist["calls"].append(call)
    hist_f.write_text(json.dumps(hist, indent=1) + "\n")
    short = {s: {k: v for k, v in d.items() if k != "train"} | {"val": d["val"][-3:]}
             for s, d in call["styles"].items()}
    print(json.dumps(short))
    return 0


# ------------------------------------------------------------------------------------------------- evaluation
def _load_songs(data: Path) -> tuple[list[dict[str, Any]], list[str]]:
    songs = json.loads((data / "eval" / "songs.json").read_text())
    goal = [s["id"] for s in json.loads((data / "heldout.json").read_text())]
    return songs, goal


class CodeSource:
    """Level-2 codes and beats of the evaluation songs (mix/ and eval/ code folders)."""

    def __init__(self, data: Path) -> None:
        from jukebox.data.code_cache import CodeCache
        from jukebox.data.tempo import load_beats

        self.caches = {f: CodeCache(data / f) for f in ("mix", "eval")}
        self.beats = {f: load_beats(data / f) or {} for f in ("mix", "eval")}

    def codes(self, song: dict[str, Any]) -> np.ndarray:
        return np.asarray(self.caches[song["folder"]].codes(song["path"], LEVEL), dtype=np.int64)

    def total_length(self, song: dict[str, Any]) -> int:
        return int(self.caches[song["folder"]].tracks[song["path"]].total_length)

    def grid(self, song: dict[str, Any], start_s: float, end_s: float) -> tuple[float, int]:
        """(bpm, beat0 in samples) of the beat grid fitted to the song's beats in [start_s, end_s)."""
        from jukebox.data.tempo import fit_grid

        b = self.beats[song["folder"]].get(song["path"])
        if b is None:
            return 0.0, 0
        bpm, first = fit_grid(b.beats, start_s, end_s)
        sr = self.caches[song["folder"]].sample_rate
        return float(bpm), int(round(first * sr)) if bpm else 0


def song_bits(jb: Any, src: CodeSource, song: dict[str, Any], lyrics_list: Sequence[str], batch: int = 64
              ) -> list[float]:
    """Mean bits per token of the song's real codes under the top prior for each lyrics in ``lyrics_list`` (its own
    labels otherwise): non-overlapping windows of n_ctx codes, each with the beat grid fitted to its beats."""
    import torch

    top = jb.top_level
    prior, labeller = jb.prior(top), jb.labeller(top)
    n_ctx, hop = prior.n_ctx, jb.hop_lengths[top]
    sr = jb.sample_rate
    z = src.codes(song)
    total = src.total_length(song)
    starts = list(range(0, len(z) - n_ctx + 1, n_ctx)) or [0]
    if len(z) < n_ctx:
        raise SystemExit(f"error: {song['id']} is shorter than one window")
    grids = [src.grid(song, s * hop / sr, (s + n_ctx) * hop / sr) for s in starts]
    out = []
    for lyr in lyrics_list:
        bits = []
        for i in range(0, len(starts), batch):
            sl = starts[i:i + batch]
            metas = [{"artist": song["artist"], "genre": song["genre"], "lyrics": lyr, "total_length": total,
                      "offset": s * hop, "bpm": grids[i + k][0], "beat0": grids[i + k][1]} for k, s in enumerate(sl)]
            y = labeller.batch_labels(metas, device=jb.device, warn=False).y
            zz = torch.from_numpy(np.stack([z[s:s + n_ctx] for s in sl])).to(jb.device)
            with torch.no_grad():
                _, m = prior(zz, None, y, reduction="none")
            bits.extend(m["bpd"].float().cpu().tolist())
        out.append(float(np.mean(bits)))
    return out


def _derange(items: Sequence[Any]) -> list[Any]:
    n = len(items)
    shift = max(1, n // 2)
    return [items[(i + shift) % n] for i in range(n)]


def bits_report(jb: Any, src: CodeSource, songs: Sequence[dict[str, Any]], lyric_model: bool) -> dict[str, Any]:
    """Per song bits with right / wrong (a derangement within ``songs``) / no lyrics; gaps and counts."""
    wrong = _derange(songs)
    rows = []
    for s, w in zip(songs, wrong):
        if lyric_model:
            r, wr, e = song_bits(jb, src, s, [s["lyrics"], w["lyrics"], ""])
            rows.append({"song": s["id"], "wrong_lyrics_of": w["id"], "right": round(r, 4), "wrong": round(wr, 4),
                         "none": round(e, 4), "gap": round(wr - r, 4)})
        else:
            (r,) = song_bits(jb, src, s, [""])
            rows.append({"song": s["id"], "bits": round(r, 4)})
    if not rows:
        return {"songs": 0}
    if not lyric_model:
        return {"songs": len(rows), "mean_bits": round(float(np.mean([r["bits"] for r in rows])), 4), "per_song": rows}
    gaps = np.array([r["gap"] for r in rows])
    return {"songs": len(rows), "mean_right": round(float(np.mean([r["right"] for r in rows])), 4),
            "mean_wrong": round(float(np.mean([r["wrong"] for r in rows])), 4),
            "mean_none": round(float(np.mean([r["none"] for r in rows])), 4),
            "mean_gap": round(float(gaps.mean()), 4), "songs_right_better": int((gaps > 0).sum()),
            "per_song": rows}


def alignment_report(jb: Any, src: CodeSource, val: Sequence[dict[str, Any]], test: Sequence[dict[str, Any]],
                     hop_fraction: float, seconds: float | None, keep: dict[str, np.ndarray] | None, tag: str,
                     deadline: float | None = None) -> dict[str, Any]:
    """Every lyric head scored on the validation songs (until ``deadline``, at least one); the best (share of frames
    within one word of the sung word, then median onset error) reported on ``test`` next to the proportional
    baseline; the best head's argmax character and its weight per frame of each test song into ``keep``."""
    import eval_lyrics as ev

    top = jb.top_level
    spf = jb.hop_lengths[top] / jb.sample_rate
    tokens = int(seconds / spf) if seconds else None

    def run(songs: Sequence[dict[str, Any]], until: float | None = None
            ) -> tuple[dict[tuple[int, int], list[dict[str, Any]]], list, dict]:
        rows: dict[tuple[int, int], list[dict[str, Any]]] = {}
        base_rows, arrays = [], {}
        for s in songs:
            if until and time.time() > until and base_rows:
                break
            z = src.codes(s)[:tokens]
            bpm, beat0 = src.grid(s, 0.0, float(s["duration"]))
            meta = {"artist": s["artist"], "genre": s["genre"], "lyrics": s["lyrics"],
                    "total_length": src.total_length(s), "bpm": bpm, "beat0": beat0}
            aligns, text = ev.all_head_alignments(jb, z, meta, hop_fraction)
            words = [{"word": w, "start": a, "end": b} for w, a, b in s["words"]]
            cw = ev.char_words(text, [w["word"] for w in words])
            for hd, a in aligns.items():
                rows.setdefault(hd, []).append({"song": s["id"], **ev.alignment_metrics(a, cw, words, spf, seconds)})
                arrays[(s["id"], hd)] = (a.argmax(axis=1).astype(np.int16), a.max(axis=1).astype(np.float16))
            base = ev.proportional_alignment(len(text), len(z), spf, float(s["duration"]))
            base_rows.append({"song": s["id"], **ev.alignment_metrics(base, cw, words, spf, seconds)})
        return rows, base_rows, arrays

    vrows, vbase, _ = run(val, deadline)  # the held-out songs are always aligned in full
    heads = {f"{lyr}:{h}": ev._mean_metrics(r) for (lyr, h), r in vrows.items()}
    if not heads:
        return {"error": "no validation song aligned before the deadline"}
    best = max(heads, key=lambda k: (heads[k]["within_one_word"] or -1.0,
                                     -(heads[k]["median_onset_error_s"] or 1e9)))
    trows, tbase, tarr = run(test)
    lyr, h = map(int, best.split(":"))
    test_best = trows.get((lyr, h), [])
    if keep is not None:
        for (sid, hd), (arg, peak) in tarr.items():
            if hd == (lyr, h):
                keep[f"argmax_{tag}_{sid}"], keep[f"peak_{tag}_{sid}"] = arg, peak
    return {"validation_songs": len(vbase), "heads_on_validation": heads, "best_head_on_validation": best,
            "validation_proportional_baseline": ev._mean_metrics(vbase),
            "test_songs": len(tbase), "test_with_best_head": ev._mean_metrics(test_best),
            "test_proportional_baseline": ev._mean_metrics(tbase),
            "test_heads": {f"{a}:{b}": ev._mean_metrics(r) for (a, b), r in trows.items()},
            "test_per_song_best_head": test_best, "seconds": seconds}


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    import jukebox

    t0 = time.time()
    deadline = t0 + args.deadline if args.deadline else None
    data = Path(args.data)
    songs, goal_ids = _load_songs(data)
    by_id = {s["id"]: s for s in songs}
    goal = [by_id[i] for i in goal_ids]
    test = [s for s in songs if s["kind"] == "test"]
    val = [s for s in songs if s["kind"] == "validation"]
    inst = [s for s in songs if s["kind"] == "instrumental"]
    if args.n_songs:
        goal, test, val, inst = goal[:args.n_songs], test[:args.n_songs], val[:args.n_songs], inst[:args.n_songs]
    src = CodeSource(data)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    res: dict[str, Any] = {"device": device, "goal_songs": [s["id"] for s in goal], "models": {}}
    keep: dict[str, np.ndarray] = {}

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.1f}s] {msg}", flush=True)

    def save() -> None:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")

    if args.base:
        jb = jukebox.load_model(args.base, device=device)
        res["base"] = {"goal": bits_report(jb, src, goal, False), "instrumental": bits_report(jb, src, inst, False)}
        log(f"base: goal songs {res['base']['goal'].get('mean_bits')} bits/token, instrumental "
            f"{res['base']['instrumental'].get('mean_bits')}")
        save()
    for spec in args.model:
        name, path = spec.split("=", 1)
        sched_f = Path(path) / "schedule.json"
        step = None
        if sched_f.is_file():
            s = json.loads(sched_f.read_text())
            step = int(s["offset"]) + (checkpoint_step(Path(path)) or 0)
        jb = jukebox.load_model(path, device=device)
        r: dict[str, Any] = {"path": path, "step": step}
        r["bits_goal"] = bits_report(jb, src, goal, True)
        r["bits_validation"] = bits_report(jb, src, val, True)
        r["bits_all_test"] = bits_report(jb, src, test, True) if len(test) > len(goal) else "= goal"
        r["bits_instrumental"] = bits_report(jb, src, inst, False)
        g = r["bits_goal"]
        r["goal_bits"] = {"mean_gap": g["mean_gap"], "songs_right_better": g["songs_right_better"],
                          "of": g["songs"], "met": bool(g["mean_gap"] >= 0.05 and g["songs_right_better"]
                                                         >= int(np.ceil(0.8 * g["songs"])))}
        log(f"{name} (step {step}): goal gap {g['mean_gap']} bits/token, right better on {g['songs_right_better']}/"
            f"{g['songs']}; validation gap {r['bits_validation']['mean_gap']}")
        res["models"][name] = r
        save()
        if not args.no_alignment:
            left = [m for m in args.model[args.model.index(spec):]]
            until = None if deadline is None else time.time() + max(0.0, deadline - time.time()) / len(left)
            a = alignment_report(jb, src, val[:args.align_val] if args.align_val else val, goal, args.hop_fraction,
                                 args.seconds or None, keep, name, until)
            r["alignment"] = a
            tb = a.get("test_with_best_head") or {}
            r["goal_alignment"] = {"head": a.get("best_head_on_validation"), **tb,
                                   "met": bool((tb.get("within_one_word") or 0) >= 0.5
                                               and (tb.get("median_onset_error_s") or 1e9) <= 1.0)}
            log(f"{name}: best head {a.get('best_head_on_validation')} on held-out: {tb}")
            save()
        del jb
        if device == "cuda":
            torch.cuda.empty_cache()
    lyric = {k: v for k, v in res["models"].items()}
    if lyric:  # the style kept: the larger right-vs-wrong gap on the validation songs, then lower validation bits
        best = max(lyric, key=lambda k: (lyric[k]["bits_validation"]["mean_gap"],
                                         -lyric[k]["bits_validation"]["mean_right"]))
        res["chosen_on_validation"] = best
    res["seconds"] = round(time.time() - t0, 1)
    save()
    if args.alignment_npz and keep:
        buf = io.BytesIO()
        np.savez_compressed(buf, **keep)
        Path(args.alignment_npz).write_bytes(buf.getvalue())
    log(f"done; chosen on validation: {res.get('chosen_on_validation')}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="set up one style's model directory and training arguments for this call")
    p.add_argument("--style", choices=tuple(STYLES), required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--state", default="", help="folder with <style>.q8.tar.xz from an earlier call")
    p.add_argument("--base", required=True)
    p.add_argument("--lr", type=float, required=True, help="peak learning rate (new runs)")
    p.add_argument("--warmup", type=int, required=True, help="warm-up steps (new runs)")
    p.add_argument("--min-lr-ratio", type=float, required=True, help="final lr as a fraction of --lr (new runs)")
    p.add_argument("--planned-s", type=float, required=True, help="seconds of training over which lr decays "
                   "(new runs; the sum of the calls' time boxes)")
    p.add_argument("--step-rate", type=float, required=True, help="guessed optimiser steps per second until a call "
                   "has measured it (new runs)")
    p.add_argument("--call-s", type=float, required=True, help="this call's training time box (seconds)")
    p.add_argument("--planned-steps", type=int, default=0, help="new runs: end the decay at this many steps "
                   "instead of after --planned-s (0: by time)")
    p.add_argument("--n-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_prepare)
    p = sub.add_parser("account", help="add this call's training seconds and measured rate to the schedule")
    p.add_argument("--run", required=True)
    p.add_argument("--style", choices=tuple(STYLES), required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.set_defaults(fn=cmd_account)
    p = sub.add_parser("pack-state", help="int8 fallback pack of a style's exported prior")
    p.add_argument("--run", required=True)
    p.add_argument("--style", choices=tuple(STYLES), required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_pack_state)
    p = sub.add_parser("restore", help="a model directory from a fallback pack")
    p.add_argument("--pack", required=True)
    p.add_argument("--base", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_restore)
    p = sub.add_parser("summary", help="append this call's curves to the run history")
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_summary)
    p = sub.add_parser("evaluate", help="bits per token right/wrong/no lyrics and head alignment, on codes")
    p.add_argument("--model", action="append", default=[], metavar="NAME=DIR", help="a lyric model directory")
    p.add_argument("--base", default="", help="the lyric-free base model, scored as a reference")
    p.add_argument("--data", required=True, help="the extracted lyricpack folder")
    p.add_argument("--out", required=True)
    p.add_argument("--alignment-npz", default="", help="the best head's per-frame argmax of each goal song")
    p.add_argument("--device", default="auto")
    p.add_argument("--hop-fraction", type=float, default=0.5)
    p.add_argument("--seconds", type=float, default=0.0, help="align only the first S seconds (0: whole songs)")
    p.add_argument("--n-songs", type=int, default=0, help="only the first N songs of each set (tests)")
    p.add_argument("--no-alignment", action="store_true")
    p.add_argument("--deadline", type=float, default=0.0, help="no new validation song is aligned after S seconds "
                   "(shared equally by the models still to align; 0: none)")
    p.add_argument("--align-val", type=int, default=20, help="validation songs for the head choice (0: all)")
    p.set_defaults(fn=cmd_evaluate)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
