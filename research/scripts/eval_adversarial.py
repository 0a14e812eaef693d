"""What adversarial fine-tuning buys: reconstructions with and without it at equal training time, on held-out music.

Each arm starts from the same VQ-VAE (default: the embedded default model) and fine-tunes only the decoders of
``--levels`` against the frozen encoders and codebooks (``jukebox train vqvae --decoder-only``), on a few training
tracks of the corpus, for the same budget of *CPU/GPU process time* (the step count of each arm comes from a short
timing probe, so a slower adversarial step gets fewer steps):

- ``finetune``:    the VQ-VAE loss + mel L1 (``--decoder-only``)
- ``adversarial``: the same + multi-scale STFT / multi-period discriminators, hinge and feature-matching losses
                   (``--decoder-only --adversarial``)

plus ``original`` (no fine-tuning). Reconstructions of clips of held-out (``split=validation``) tracks from every
level are scored with multi-resolution STFT distance, mel L1, spectral convergence and SI-SDR; the codes are the
same for every arm (decoder-only), so only the decoders differ. Writes ``OUT/results.json`` and spectrogram PNGs.

    python research/scripts/eval_adversarial.py --budget-s 240 --out runs/adv_cpu --png-dir docs      # CPU, minutes
    python research/scripts/eval_adversarial.py --device cuda --levels 0,1,2 --budget-s 3600 ...       # the GPU run
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from jukebox.audio import audio_info, load_audio
from jukebox.checkpoint.model_dir import ModelDir
from jukebox.eval.reconstruction import reconstruction_metrics
from jukebox.train import TrainConfig, train_vqvae
from jukebox.ui.media import spectrogram_png
from jukebox.vqvae.discriminator import AdversarialConfig

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "src/jukebox/assets/default_model"


def _subset_corpus(corpus: Path, n_train: int, dest: Path, seed: int) -> list[str]:
    """A folder of links to ``n_train`` training tracks of ``corpus`` (metadata.csv split column); their names."""
    with open(corpus / "metadata.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("split") == "train"]
    rng = np.random.default_rng(seed)
    chosen = [rows[i] for i in sorted(rng.choice(len(rows), size=min(n_train, len(rows)), replace=False))]
    dest.mkdir(parents=True, exist_ok=True)
    lines = ["file,split"]
    for i, r in enumerate(chosen):
        src = corpus / r["file"]
        name = f"t{i}{src.suffix}"
        (dest / name).symlink_to(src.resolve())
        lines.append(f"{name},train")
    (dest / "metadata.csv").write_text("\n".join(lines) + "\n")
    return [r["file"] for r in chosen]


def _heldout_clips(corpus: Path, n: int, seconds: float, sr: int) -> tuple[list[str], torch.Tensor]:
    """Clips of ``seconds`` from the middle of the first ``n`` validation tracks: names, audio [n, 1, T]."""
    with open(corpus / "metadata.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("split") == "validation"]
    clips, names = [], []
    length = int(seconds * sr) // 128 * 128
    for r in rows:
        path = corpus / r["file"]
        dur = audio_info(path)[2]
        tries = []
        for frac in (0.5, 0.33, 0.67):  # the loudest of three positions (some tracks have silent stretches)
            x, _ = load_audio(path, sr, offset_seconds=max(0.0, dur * frac - seconds / 2),
                              duration_seconds=seconds + 0.1)
            tries.append(np.pad(x, (0, max(0, length - x.size)))[:length])
        x = max(tries, key=lambda a: float(np.sqrt(np.mean(a ** 2))))
        if np.sqrt(np.mean(x ** 2)) < 0.01:
            continue
        clips.append(x)
        names.append(r["file"])
        if len(clips) == n:
            break
    return names, torch.from_numpy(np.stack(clips))[:, None]


def _arm_config(name: str, levels: tuple[int, ...], args: argparse.Namespace) -> AdversarialConfig:
    on = name == "adversarial"
    return AdversarialConfig(adv_weight=args.adv_weight if on else 0.0, feat_weight=args.feat_weight if on else 0.0,
                             mel_weight=args.mel_weight, stft_channels=args.disc_channels,
                             mpd_channels=args.disc_channels, mpd_max_channels=16 * args.disc_channels,
                             levels=levels, decoder_only=True)


def _fresh_dir(src_model: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    md = ModelDir(dest, create=True)
    shutil.copytree(src_model / "vqvae", md.path / "vqvae")
    return dest


def _train(data: Path, model_dir: Path, steps: int, adv: AdversarialConfig, args: argparse.Namespace) -> dict:
    """Fine-tune for ``steps``; ``step_times`` are the process times at the end of every step."""
    cfg = TrainConfig(steps=steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=min(10, steps // 10),
                      decay="none", grad_clip=1.0, log_every=1, val_batches=1, workers=0, seed=args.seed)
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    stamps: list[float] = []

    def log(msg: str) -> None:
        if " loss " in msg and "validation" not in msg:
            stamps.append(time.perf_counter() if args.clock == "wall" else time.process_time())

    result = train_vqvae(data, model_dir, config=cfg, window=args.window, device=args.device, log_dir="none",
                         progress=False, adversarial=adv, log=log)
    return {"steps": result.step, "cpu_s": time.process_time() - t_cpu, "wall_s": time.perf_counter() - t_wall,
            "train_s": stamps[-1] - (t_wall if args.clock == "wall" else t_cpu) if stamps else None,
            "step_times": stamps,
            "last": result.history[-1] if result.history else {}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model directory with the VQ-VAE to start from")
    p.add_argument("--corpus", type=Path, default=Path("/work/corpus"), help="corpus with metadata.csv split column")
    p.add_argument("--levels", default="0", help="levels whose decoders are fine-tuned (default 0)")
    p.add_argument("--train-tracks", type=int, default=4)
    p.add_argument("--eval-tracks", type=int, default=4)
    p.add_argument("--eval-seconds", type=float, default=6.0)
    p.add_argument("--budget-s", type=float, default=240.0, help="training time (s) per arm, on --clock")
    p.add_argument("--clock", choices=("auto", "process", "wall"), default="auto",
                   help="what the budget counts: process CPU time (robust on a shared CPU) or wall time (GPU); "
                        "auto: process on cpu, wall otherwise")
    p.add_argument("--window", type=int, default=16384)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--mel-weight", type=float, default=5.0)
    p.add_argument("--adv-weight", type=float, default=1.0)
    p.add_argument("--feat-weight", type=float, default=2.0)
    p.add_argument("--disc-channels", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/eval_adversarial"))
    p.add_argument("--png-dir", type=Path, default=None, help="also write the spectrogram PNGs here (e.g. docs)")
    args = p.parse_args(argv)
    levels = tuple(int(v) for v in args.levels.split(","))
    if args.clock == "auto":
        args.clock = "process" if args.device == "cpu" else "wall"
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="eval_adv_"))
    try:
        data = work / "data"
        train_files = _subset_corpus(args.corpus, args.train_tracks, data, args.seed)
        report: dict = {"model": str(args.model), "levels_trained": levels, "train_tracks": train_files,
                        "budget_s": args.budget_s, "clock": args.clock, "device": args.device,
                        "threads": torch.get_num_threads(),
                        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                        "arms": {}}
        arms = ("finetune", "adversarial")
        for name in arms:  # timing probe: median process time of steps 2..4
            adv = _arm_config(name, levels, args)
            stamps = _train(data, _fresh_dir(args.model, work / "probe"), 4, adv, args)["step_times"]
            per_step = max(float(np.median(np.diff(stamps))), 1e-3)
            steps = max(1, int(args.budget_s / per_step))
            print(f"{name}: {per_step:.2f} {args.clock}-s/step -> {steps} steps", file=sys.stderr)
            info = _train(data, _fresh_dir(args.model, work / name), steps, adv, args)
            info["s_per_step_probe"] = per_step
            info.pop("step_times")
            report["arms"][name] = info
            print(f"{name}: trained {info['steps']} steps in {info['cpu_s']:.0f} process-s "
                  f"({info['wall_s']:.0f} s wall)", file=sys.stderr)

        models = {"original": ModelDir(args.model).load_vqvae("cpu")}
        models.update({name: ModelDir(work / name).load_vqvae("cpu") for name in arms})
        names, x = _heldout_clips(args.corpus, args.eval_tracks, args.eval_seconds, models["original"].sample_rate)
        report["eval_tracks"], report["eval_seconds"] = names, x.shape[-1] / models["original"].sample_rate
        sr = models["original"].sample_rate
        png_dirs = [args.out] + ([args.png_dir] if args.png_dir else [])
        for d in png_dirs:
            d.mkdir(parents=True, exist_ok=True)
            (d / "adv_input.png").write_bytes(spectrogram_png(x[0, 0].numpy(), sr))
        results: dict = {}
        with torch.no_grad():
            codes = models["original"].encode(x)
            for name in arms:
                assert all(torch.equal(a, b) for a, b in zip(codes, models[name].encode(x))), "codes changed"
            for name, vq in models.items():
                results[name] = {}
                for level in range(vq.levels):
                    y = vq.decode_level(codes[level], level)
                    per_track = [reconstruction_metrics(x[i:i + 1], y[i:i + 1], sr) for i in range(x.shape[0])]
                    mean = {k: float(np.mean([m[k] for m in per_track])) for k in per_track[0]}
                    results[name][f"level_{level}"] = {"mean": mean, "per_track": per_track}
                    if level in levels:
                        for d in png_dirs:
                            (d / f"adv_{name}_level{level}.png").write_bytes(spectrogram_png(y[0, 0].numpy(), sr))
        report["results"] = results
        (args.out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
        keys = ("multires_stft_distance", "mel_l1", "spectral_convergence", "si_sdr_db")
        print(f"{'arm':12s} {'level':5s} " + " ".join(f"{k:>22s}" for k in keys))
        for name, per_level in results.items():
            for level, r in per_level.items():
                print(f"{name:12s} {level[-1]:5s} " + " ".join(f"{r['mean'][k]:22.4f}" for k in keys))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
