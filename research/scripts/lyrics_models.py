#!/usr/bin/env python
"""Model transport and sampling for the lyrics experiment (issue 10); used by ``research/scripts/gpu_lyrics.sh``.

The GPU machine returns at most 16 MiB a file and takes ~25 MB of carried data, so the trained priors travel as
int8 (per-row absmax scales, fp16 for vectors) in one xz-compressed tar per prior (about 0.8 byte a parameter);
``unpack`` turns them back into ordinary model directories (the base model's VQ-VAE, the fine-tuned upsamplers
where present, else the base's).

    python research/scripts/lyrics_models.py pack RUN OUT  # RUN/{lyrics,merged,control,up1,up0} -> OUT/*.q8.tar.xz
    python research/scripts/lyrics_models.py unpack DIR DEST [--base B]  # DIR/*.q8.tar.xz -> DEST/{lyrics,...}
    python research/scripts/lyrics_models.py summary LOGDIR OUT.json  # steps, tokens/s, validation curves
    python research/scripts/lyrics_models.py sample --models DEST --heldout .sung/heldout.json --out OUT [--seconds 24]

``sample`` draws, for every held-out song, (a) the lyric model with the song's lyrics, (b) the same model with
another held-out song's lyrics, (c) the no-lyrics control (and (d)/(e) as (a)/(b) with the merged-style model when
present); each item keeps its song's artist, genre and total length. The top level of every arm comes first
(saved at once), then the upsamplers (parallel windows) while ``--deadline`` allows.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import re
import shutil
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from jukebox.checkpoint.format import load_weights, save_weights  # noqa: E402

#: Trained priors of a run: name -> (run sub-folder, level).
COMPONENTS = {"lyrics": ("lyrics", 2), "merged": ("merged", 2), "control": ("control", 2),
              "up1": ("up1", 1), "up0": ("up0", 0)}
#: Top-level models that ``unpack`` assembles into model directories.
TOPS = ("lyrics", "merged", "control")
Q8, SCALE = "::q8", "::scale"


# ------------------------------------------------------------------------------------------------- int8 weights
def quantize(state: dict[str, torch.Tensor], min_numel: int = 1024) -> dict[str, torch.Tensor]:
    """int8 copy of a state dict: float tensors with >= 2 dims and ``min_numel`` elements as int8 [same shape]
    plus an fp16 absmax scale per leading row (``name::q8``, ``name::scale`` [rows]); other floats in fp16."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if v.is_floating_point() and v.dim() >= 2 and v.numel() >= min_numel:
            w = v.detach().float().reshape(v.shape[0], -1)
            scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
            out[k + Q8] = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(v.shape)
            out[k + SCALE] = scale.half()
        elif v.is_floating_point():
            out[k] = v.detach().half()
        else:
            out[k] = v.detach()
    return out


def dequantize(state: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Inverse of :func:`quantize` (floats in ``dtype``)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.endswith(SCALE):
            continue
        if k.endswith(Q8):
            name = k[: -len(Q8)]
            scale = state[name + SCALE].float()
            w = v.float().reshape(v.shape[0], -1) * scale[:, None]
            out[name] = w.reshape(v.shape).to(dtype)
        elif v.is_floating_point():
            out[k] = v.to(dtype)
        else:
            out[k] = v
    return out


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def pack_component(folder: Path, name: str, level: int, meta: dict[str, Any] | None = None) -> bytes:
    """One prior folder (config.json, labels.json, weights) as an int8 tar (bytes)."""
    from safetensors.torch import save as st_save

    files = {f"{name}/meta.json": json.dumps({"name": name, "level": level, **(meta or {})}).encode()}
    for extra in ("config.json", "labels.json"):
        if (folder / extra).exists():
            files[f"{name}/{extra}"] = (folder / extra).read_bytes()
    files[f"{name}/model.q8.safetensors"] = st_save(quantize(load_weights(folder)))
    return _tar_bytes(files)


def _checkpoint_step(folder: Path) -> int | None:
    """The step of the prior's training checkpoint (``checkpoint/trainer.json``), if any."""
    for ck in (folder / "checkpoint", folder / "checkpoint.old"):
        try:
            return int(json.loads((ck / "trainer.json").read_text())["step"])
        except (OSError, ValueError, KeyError):
            continue
    return None


def _trained(folder: Path) -> bool:
    return _checkpoint_step(folder) is not None


def cmd_pack(args: argparse.Namespace) -> int:
    """RUN/<component>/prior_level_L -> OUT/<component>.q8.tar for every trained component."""
    run, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {}
    for name, (sub, level) in COMPONENTS.items():
        folder = run / sub / f"prior_level_{level}"
        if not _trained(folder):  # never trained in this run (the base's copy): nothing to send
            continue
        data = lzma.compress(pack_component(folder, name, level, {"step": _checkpoint_step(folder)}), preset=3)
        (out / f"{name}.q8.tar.xz").write_bytes(data)
        report[name] = round(len(data) / 1e6, 2)
    print(json.dumps({"packed_mb": report, "total_mb": round(sum(report.values()), 2)}))
    return 0


def read_component_tar(path: Path) -> tuple[dict[str, Any], dict[str, bytes], dict[str, torch.Tensor]]:
    """(meta, other files by name, dequantized state dict) of a ``*.q8.tar.xz`` (or uncompressed ``*.q8.tar``)."""
    from safetensors.torch import load as st_load

    files: dict[str, bytes] = {}
    with tarfile.open(path, "r:*") as tar:
        for m in tar.getmembers():
            if m.isfile():
                f = tar.extractfile(m)
                assert f is not None
                files[Path(m.name).name] = f.read()
    if "meta.json" not in files or "model.q8.safetensors" not in files:
        raise SystemExit(f"error: {path} is not a lyrics_models.py pack")
    meta = json.loads(files.pop("meta.json"))
    state = dequantize(st_load(files.pop("model.q8.safetensors")))
    return meta, files, state


def _write_prior(dest: Path, files: dict[str, bytes], state: dict[str, torch.Tensor]) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name, data in files.items():
        (dest / name).write_bytes(data)
    save_weights(dest, state)


def unpack(src: Path, dest: Path, base: Path) -> dict[str, Any]:
    """Model directories DEST/<top> for every top-level pack in ``src``: the base's VQ-VAE, fine-tuned
    upsamplers where packed (else the base's), the packed top prior."""
    packs = {p.name.split(".q8.tar")[0]: p for p in sorted(src.glob("*.q8.tar*"))}
    unknown = set(packs) - set(COMPONENTS)
    if unknown:
        raise SystemExit(f"error: unknown packs {sorted(unknown)} in {src}")
    ups = {}
    for name in ("up1", "up0"):
        if name in packs:
            ups[COMPONENTS[name][1]] = read_component_tar(packs[name])
    made = {}
    for top in TOPS:
        if top not in packs:
            continue
        meta, files, state = read_component_tar(packs[top])
        out = dest / top
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(base, out, ignore=shutil.ignore_patterns("code_cache", "checkpoint", "logs"))
        _write_prior(out / "prior_level_2", files, state)
        for level, (_, ufiles, ustate) in ups.items():
            _write_prior(out / f"prior_level_{level}", ufiles, ustate)
        made[top] = {"step": meta.get("step"), "upsamplers": "fine-tuned " + ",".join(
            str(lv) for lv in sorted(ups)) if ups else "base"}
    if not made:
        raise SystemExit(f"error: {src} holds no top-level packs (lyrics/merged/control .q8.tar.xz)")
    return made


def cmd_unpack(args: argparse.Namespace) -> int:
    base = Path(args.base) if args.base != "default" else ROOT / "src" / "jukebox" / "assets" / "default_model"
    print(json.dumps(unpack(Path(args.src), Path(args.dest), base)))
    return 0


# ------------------------------------------------------------------------------------------------- log summary
_STEP = re.compile(r"step (\d+)/\d+ loss ([\d.eE+-]+) lr [\d.eE+-]+ (\d+) tokens/s")
_VAL = re.compile(r"step (\d+) validation: (.*)$")


def parse_log(text: str) -> dict[str, Any]:
    """Training curve of one ``jukebox train`` log: last step, tokens/s, losses and validation rows."""
    train, val = [], []
    for line in text.splitlines():
        m = _VAL.search(line)
        if m:
            parts = m.group(2).split()
            pairs = {parts[i]: float(parts[i + 1]) for i in range(0, len(parts) - 1, 2)}
            val.append({"step": int(m.group(1)), **pairs})
            continue
        m = _STEP.search(line)
        if m:
            train.append({"step": int(m.group(1)), "loss": float(m.group(2)), "tokens_per_s": int(m.group(3))})
    return {"last_step": train[-1]["step"] if train else 0,
            "tokens_per_s": train[-1]["tokens_per_s"] if train else 0,
            "train": train[:: max(1, len(train) // 40)] + train[-1:], "val": val}


def cmd_summary(args: argparse.Namespace) -> int:
    logs = {p.stem: parse_log(p.read_text(errors="replace")) for p in sorted(Path(args.logdir).glob("train_*.log"))}
    out = {k.removeprefix("train_"): v for k, v in logs.items()}
    tops = {k: v for k, v in out.items() if k in TOPS and v["val"]}
    if len(tops) > 1:  # the original's rule: validation bits per token at equal steps
        common = min(max(r["step"] for r in v["val"]) for v in tops.values())
        at = {k: next((r for r in reversed(v["val"]) if r["step"] <= common), None) for k, v in tops.items()}
        out["_compare"] = {"step": common, "bpd": {k: r and r.get("bpd") for k, r in at.items()}}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: ({"last_step": v["last_step"], "tokens_per_s": v["tokens_per_s"],
                           "val_last": v["val"][-1] if v["val"] else None} if not k.startswith("_") else v)
                      for k, v in out.items()}))
    return 0


# ------------------------------------------------------------------------------------------------- sampling
def arms_for(songs: Sequence[dict[str, Any]], models: Sequence[str]) -> list[dict[str, Any]]:
    """The sampling arms: per lyric model ``right`` and ``wrong`` lyrics (song i sings song (i + n//2) mod n's
    lyrics: a derangement for n >= 2), ``none`` for the control; every item keeps its own song's labels."""
    n = len(songs)
    shift = max(1, n // 2)
    arms = []
    for model in models:
        kinds = ("none",) if model == "control" else ("right", "wrong")
        for kind in kinds:
            items = []
            for i, s in enumerate(songs):
                src = songs[(i + shift) % n] if kind == "wrong" else s
                items.append({"song": s["id"], "artist": s["artist"], "genre": s["genre"],
                              "total_seconds": float(s["duration"]),
                              "lyrics": "" if kind == "none" else src["lyrics"], "lyrics_of": None if kind == "none"
                              else src["id"]})
            arms.append({"model": model, "kind": kind, "name": f"{model}_{kind}", "items": items})
    return arms


def sample_items(jb: Any, items: Sequence[dict[str, Any]], seconds: float, levels: Sequence[int], seed: int,
                 decode: str, upsample_mode: str, codes: dict[int, torch.Tensor] | None = None,
                 max_batch_size: int = 512, temperature: float = 1.0) -> dict[int, torch.Tensor]:
    """Sample ``levels`` for ``items`` (each with its own ``total_seconds``: the timing label and the proportional
    lyric window then match each song), upsampling ``codes`` where given, with the original's draw, prefill chunks
    and no guidance whatever the model directory's defaults. Returns {level: LongTensor [B, T_level]} on the CPU.
    """
    n = len(items)
    labels = [{"artist": it["artist"], "genre": it["genre"], "lyrics": it["lyrics"],
               "total_seconds": max(float(it["total_seconds"]), seconds)} for it in items]
    opts = dict(items=labels, levels=list(levels), seed=seed, decode=decode, upsample_mode=upsample_mode,
                max_batch_size=max_batch_size, temperature=temperature, alignment=False, chunk_size=32,
                draw="multinomial", guidance=1.0)
    if codes:
        gen = jb.upsample({lvl: torch.as_tensor(c).long() for lvl, c in codes.items()}, **opts)
    else:
        gen = jb.generate(n_samples=n, seconds=seconds, **opts)
    return {lvl: c.cpu() for lvl, c in gen.codes.items() if c.shape[1] > 0}


def compact_alignment(jb: Any, items: Sequence[dict[str, Any]], z: torch.Tensor, seconds: float, tag: str
                      ) -> dict[str, np.ndarray]:
    """Per item i: ``argmax_<tag>_<i>``, the alignment head's argmax character for every top-level frame (int16),
    and ``peak_<tag>_<i>``, its weight (fp16), from :func:`jukebox.sampling.alignment.lyric_alignment`."""
    from jukebox.sampling.alignment import lyric_alignment
    from jukebox.sampling.pipeline import DEFAULT_HOP_FRACTIONS

    top = jb.top_level
    lab = jb.item_labels(top, items, jb.sample_length(seconds))
    aligns = lyric_alignment(jb.prior(top), z.to(jb.device), lab, jb.labeller(top), DEFAULT_HOP_FRACTIONS[top])
    out = {}
    for i, a in enumerate(aligns):
        out[f"argmax_{tag}_{i}"] = a.argmax(axis=1).astype(np.int16) if a.shape[1] else np.zeros(len(a), np.int16)
        out[f"peak_{tag}_{i}"] = a.max(axis=1).astype(np.float16) if a.shape[1] else np.zeros(len(a), np.float16)
    return out


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


@torch.no_grad()
def cmd_sample(args: argparse.Namespace) -> int:
    import jukebox

    t_start = time.time()
    deadline = t_start + args.deadline if args.deadline else None
    models_dir, out = Path(args.models), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    songs = json.loads(Path(args.heldout).read_text())
    if args.n_songs:
        songs = songs[: args.n_songs]
    present = [m for m in TOPS if (models_dir / m / "prior_level_2").exists()]
    if "control" not in present or not ({"lyrics", "merged"} & set(present)):
        raise SystemExit(f"error: {models_dir} needs control/ and lyrics/ or merged/ model directories")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if args.bf16 and device == "cuda" else None
    decode = args.decode if device == "cuda" else "eager"
    arms = arms_for(songs, present)
    info: dict[str, Any] = {"seconds": args.seconds, "seed": args.seed, "device": device, "decode": decode,
                            "dtype": str(dtype), "songs": [s["id"] for s in songs], "arms": [], "timings": {}}
    loaded: dict[str, Any] = {}

    def model(name: str):
        if name not in loaded:
            loaded[name] = jukebox.load_model(models_dir / name, device=device, dtype=dtype)
        return loaded[name]

    def log(msg: str) -> None:
        print(f"[{time.time() - t_start:6.1f}s] {msg}", flush=True)

    def write_info() -> None:
        (out / "sample_info.json").write_text(json.dumps(info, indent=1))

    codes: dict[str, dict[int, torch.Tensor]] = {}
    aligns: dict[str, np.ndarray] = {}

    def save_codes(model_name: str) -> None:
        arrays = {}
        for arm in arms:
            if arm["model"] == model_name and arm["name"] in codes:
                for lvl, c in codes[arm["name"]].items():
                    arrays[f"{arm['kind']}_level_{lvl}"] = c.numpy().astype(np.int16)
        _save_npz(out / f"samples_{model_name}.npz", arrays)

    # 1. the top level of every arm (one batch per model: its arms together)
    for name in present:
        jb = model(name)
        group = [a for a in arms if a["model"] == name]
        items = [it for a in group for it in a["items"]]
        t0 = time.time()
        try:
            z = sample_items(jb, items, args.seconds, [jb.top_level], args.seed, decode, "parallel",
                             temperature=args.temperature)
        except Exception as e:  # noqa: BLE001 - a graph-capture failure must not cost the run
            if decode == "eager":
                raise
            log(f"{name}: decode {decode} failed ({type(e).__name__}: {e}); retrying eager")
            decode = info["decode"] = "eager"
            z = sample_items(jb, items, args.seconds, [jb.top_level], args.seed, decode, "parallel",
                             temperature=args.temperature)
        info["timings"][f"{name}_top"] = round(time.time() - t0, 1)
        k = 0
        for a in group:
            codes[a["name"]] = {lvl: c[k: k + len(a["items"])] for lvl, c in z.items()}
            k += len(a["items"])
        save_codes(name)
        log(f"{name}: top level of {len(items)} items in {info['timings'][f'{name}_top']} s")
        if jb.prior(jb.top_level).n_tokens > 0:
            t0 = time.time()
            for a in group:
                aligns.update(compact_alignment(jb, a["items"], codes[a["name"]][jb.top_level], args.seconds,
                                                f"{a['kind']}_{name}"))
            _save_npz(out / "alignment.npz", aligns)
            info["timings"][f"{name}_alignment"] = round(time.time() - t0, 1)
        for a in group:
            info["arms"].append({k: v for k, v in a.items()})
        write_info()

    # 2. the upsamplers, arm by arm in order of importance, while the deadline allows (estimated from the first)
    levels = [lvl for lvl in args.levels if lvl < 2]
    order = {"lyrics_right": 0, "control_none": 1, "lyrics_wrong": 2, "merged_right": 3, "merged_wrong": 4}
    per_arm = None
    for a in sorted(arms, key=lambda a: order.get(a["name"], 9)):
        jb = model(a["model"])
        if not levels or any(lvl not in jb.prior_levels for lvl in levels):
            continue
        left = deadline - time.time() if deadline else None
        if left is not None and per_arm is not None and left < 1.2 * per_arm:
            log(f"skipping the upsampling of {a['name']}: {left:.0f} s left, one arm takes ~{per_arm:.0f} s")
            info.setdefault("skipped_upsampling", []).append(a["name"])
            continue
        t0 = time.time()
        try:
            z = sample_items(jb, a["items"], args.seconds, levels, args.seed + 1, decode, args.upsample_mode,
                             codes=codes[a["name"]], temperature=args.temperature)
        except Exception as e:  # noqa: BLE001 - as above: fall back to the eager decode step once
            if decode == "eager":
                raise
            log(f"{a['name']}: decode {decode} failed while upsampling ({type(e).__name__}: {e}); retrying eager")
            decode = info["decode"] = "eager"
            z = sample_items(jb, a["items"], args.seconds, levels, args.seed + 1, decode, args.upsample_mode,
                             codes=codes[a["name"]], temperature=args.temperature)
        codes[a["name"]].update(z)
        per_arm = time.time() - t0 if per_arm is None else max(per_arm, time.time() - t0)
        info["timings"][f"{a['name']}_upsample"] = round(time.time() - t0, 1)
        save_codes(a["model"])
        write_info()
        log(f"{a['name']}: levels {levels} in {time.time() - t0:.0f} s")
    info["total_seconds"] = round(time.time() - t_start, 1)
    write_info()
    log("done")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="int8 tars of the trained priors of a run")
    p.add_argument("run")
    p.add_argument("out")
    p.set_defaults(fn=cmd_pack)
    p = sub.add_parser("unpack", help="model directories from the int8 tars")
    p.add_argument("src")
    p.add_argument("dest")
    p.add_argument("--base", default="default", help="model directory giving the VQ-VAE and default upsamplers")
    p.set_defaults(fn=cmd_unpack)
    p = sub.add_parser("summary", help="training curves of LOGDIR/train_*.log as JSON")
    p.add_argument("logdir")
    p.add_argument("out")
    p.set_defaults(fn=cmd_summary)
    p = sub.add_parser("sample", help="the sampling arms on the held-out songs")
    p.add_argument("--models", required=True, help="folder with lyrics/, merged/, control/ model directories")
    p.add_argument("--heldout", required=True, help="heldout.json (pack_sung_audio.py)")
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=24.0)
    p.add_argument("--levels", type=int, nargs="+", default=[2, 1, 0])
    p.add_argument("--n-songs", type=int, default=0, help="only the first N held-out songs (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--bf16", action="store_true", help="bf16 priors on CUDA")
    p.add_argument("--decode", default="graph", help="decode step on CUDA (eager, static, graph, compile)")
    p.add_argument("--upsample-mode", default="parallel", choices=("parallel", "sequential"))
    p.add_argument("--deadline", type=float, default=0, help="seconds from the start after which no new "
                   "upsampling arm begins (0: none)")
    p.set_defaults(fn=cmd_sample)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
