"""``jukebox train``: train the VQ-VAE (``train vqvae``) or a prior (``train prior``) on a folder of music.

Runs as one process or under ``torchrun --nproc-per-node N -m jukebox train ...`` (DDP).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import UsageError


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="DIR",
                   help="folder of audio files (optional metadata.csv/jsonl), a manifest from `jukebox prepare -o`, "
                   "or (train prior only) a code folder from `jukebox prepare --codes` (no audio needed)")
    p.add_argument("--steps", type=int, required=True, help="optimiser steps to train to (a resumed run counts "
                   "the steps already done)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per process per micro-step (default 4)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-steps per optimiser step (default 1)")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default 3e-4)")
    p.add_argument("--warmup", type=int, default=None, help="warmup steps (default: min(100, steps // 10))")
    p.add_argument("--decay", choices=("cosine", "linear", "none"), default="cosine", help="LR decay after warmup")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="final LR as a fraction of --lr (default 0.1)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay on matrices (default 0)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="gradient-norm clip (0 = off; default 1)")
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights, e.g. 0.999 (default off)")
    p.add_argument("--val-every", type=int, default=0, help="validate every N steps (default: at the end)")
    p.add_argument("--val-batches", type=int, default=4, help="validation batches (default 4)")
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (default: at the end)")
    p.add_argument("--log-every", type=int, default=10, help="log averages every N steps (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the data order")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 autocast on CUDA for priors, fp32 for the VQ-VAE and on CPUs; bf16 on a CPU: "
                   "autocast there too (faster on CPUs with AVX512-BF16 or AMX)")
    p.add_argument("--workers", type=int, default=2, help="data-loading threads (default 2)")
    p.add_argument("--compile", choices=("none", "blocks", "model"), default="none",
                   help="torch.compile the training step: blocks (each transformer block / VQ-VAE level "
                   "encoder and decoder on its own; quick to build, the fast path on a GPU), model (the whole "
                   "forward) or none (eager; default)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of tracks held out when the data has no split yet (default 0.1)")
    p.add_argument("--resume", action="store_true", help="continue the training checkpoint exactly")
    p.add_argument("--stop-at", type=int, default=None,
                   help="stop (and checkpoint) after this step, keeping the LR schedule of --steps; --resume "
                        "continues later exactly as if never stopped")
    p.add_argument("--restart", action="store_true", help="start over from the preset even if weights exist")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (torchrun: each process its local GPU)")
    p.add_argument("--log-dir", default=None,
                   help="TensorBoard folder (default MODEL_DIR/logs/<component> when tensorboard is installed; "
                        "'none' to disable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines instead)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the VQ-VAE or a prior on your own music",
                       description="Train a model directory on a folder of music: first `train vqvae`, then "
                       "`train prior` for the top level and each upsampler. Under torchrun it uses every process.")
    tsub = p.add_subparsers(dest="what", metavar="WHAT")
    tsub.required = True

    v = tsub.add_parser("vqvae", help="train (or continue) the VQ-VAE of a model directory",
                        description="Create MODEL_DIR with a new VQ-VAE (or fine-tune/continue the one in it).")
    v.add_argument("--out", "-o", required=True, metavar="MODEL_DIR", help="model directory to create or update")
    v.add_argument("--preset", default="tiny", help="VQ-VAE preset for a new model: tiny or openai (default tiny)")
    v.add_argument("--window", type=int, default=None,
                   help="training window in samples, a multiple of the top hop (default: 8192 tiny, 262144 openai)")
    g = v.add_argument_group("adversarial training (see docs/adversarial.md)")
    g.add_argument("--adversarial", action="store_true",
                   help="train with discriminators (multi-scale STFT + multi-period), adversarial, feature-matching "
                        "and mel losses; the discriminator is saved in MODEL_DIR/discriminator/")
    g.add_argument("--decoder-only", action="store_true",
                   help="fine-tune only the decoders of the existing VQ-VAE against its frozen encoders and "
                        "codebooks (codes unchanged, so trained priors stay valid); without --adversarial: the "
                        "VQ-VAE loss + mel loss only")
    g.add_argument("--disc", choices=("both", "msstft", "mpd"), default="both",
                   help="discriminators: msstft (EnCodec multi-scale STFT), mpd (HiFi-GAN periods) or both")
    g.add_argument("--adv-loss", choices=("hinge", "lsgan"), default="hinge", help="adversarial loss (default hinge)")
    g.add_argument("--adv-levels", default=None, metavar="L,..",
                   help="levels whose reconstructions are judged (and, with --decoder-only, trained); default all")
    for name, default, what in (("recon", 1.0, "the VQ-VAE's own loss"), ("mel", 5.0, "multi-scale mel L1"),
                                ("adv", 1.0, "adversarial loss"), ("feat", 2.0, "feature matching")):
        g.add_argument(f"--{name}-weight", type=float, default=default, help=f"weight of {what} (default {default})")
    g.add_argument("--disc-lr", type=float, default=0.0, help="discriminator peak learning rate (default: --lr)")
    g.add_argument("--disc-channels", type=int, default=32,
                   help="channels of the STFT discriminators and first channels of the period ones (default 32)")
    _add_common(v)
    v.set_defaults(func=cmd_train_vqvae)

    q = tsub.add_parser("prior", help="add or continue one level's prior in a model directory",
                        description="Encode the corpus once with the model's VQ-VAE (cached, reused by every "
                        "level) and train the level-L prior on the codes. --data may also be a code folder made by "
                        "`jukebox prepare --codes` on another machine: then no audio is read.")
    q.add_argument("--model", "-m", required=True, metavar="MODEL_DIR", help="model directory with a VQ-VAE")
    q.add_argument("--level", type=int, required=True, help="level to train (top = levels - 1; 0 = bottom)")
    q.add_argument("--preset", default=None,
                   help="prior preset for a new prior (tiny VQ-VAE default: tiny_top / tiny_upsampler)")
    q.add_argument("--n-ctx", type=int, default=None, help="context length of a new prior (default: the preset's)")
    q.add_argument("--init-from", default=None, metavar="BASE_MODEL_DIR",
                   help="grow the new top-level lyric prior (--preset default_lyrics: encoder-decoder, or "
                   "default_merged) from BASE_MODEL_DIR's lyric-free prior of --level, keeping its music: the config "
                   "is the base's (width, heads, context, labels) with the preset's lyric settings, deepened as the "
                   "style needs (new layers start as the identity); the base's labels.json and tempi come with it. "
                   "MODEL_DIR must be another folder (made as a copy of the base's when it does not exist)")
    q.add_argument("--lora-rank", type=int, default=None, help="train LoRA adapters of this rank only (default off)")
    q.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default: the rank)")
    q.add_argument("--merge-lora", action="store_true", default=None,
                   help="fold the adapters into the prior's weights at the end")
    q.add_argument("--label-dropout", type=float, default=None, metavar="P",
                   help="replace each item's artist and genre by 'unknown' with probability P, so the prior also "
                   "learns to sample without labels: needed for --guidance when sampling (e.g. 0.1; default 0)")
    q.add_argument("--input-noise", type=float, default=None, metavar="P",
                   help="the prior reads each input code replaced by a random one with probability P (targets stay "
                   "real), so it learns to recover from its own sampling slips (e.g. 0.1; default 0)")
    q.add_argument("--scheduled-sampling", type=float, default=None, metavar="P",
                   help="like --input-noise with the prior's own sampled guesses (drawn from a teacher-forced pass, "
                   "about 30%% slower per step) in place of random codes (e.g. 0.3; default 0)")
    q.add_argument("--labels-every-position", action="store_true", default=None,
                   help="add the artist/genre embedding to every position, not only the start token (stronger "
                   "conditioning; an existing prior is upgraded with a zero-initialised projection)")
    q.add_argument("--tempo", action="store_true", default=None,
                   help="condition the top-level prior on tempo and beat phase (beats from the code folder's "
                   "tempo.json written by `jukebox prepare`, or tracked from the audio); an existing prior is "
                   "upgraded with zero-initialised embeddings; sampling then takes --bpm")
    q.add_argument("--min-pulse", type=float, default=None, metavar="X",
                   help="with --tempo: tracks whose pulse clarity (tempo.json) is below X train with the 'no steady "
                   "pulse' label, so that a tempo label means a clear pulse (e.g. 0.3; default 0: every track with "
                   "beats)")
    q.add_argument("--balance", default=None, metavar="{none,genre,artist}",  # checked by TrainOptions
                   help="draw training windows so that each genre (or artist) gets a share of the batches that goes "
                   "as its amount of music to the power --balance-power (default none: uniform over all windows)")
    q.add_argument("--balance-power", type=float, default=None, metavar="A",
                   help="with --balance: 0 gives every group the same share, 1 the share of its music, 0.5 between "
                   "(default 0)")
    q.add_argument("--align-loss", type=float, default=None, metavar="W",
                   help="encoder-decoder lyric priors: pull one lyric cross-attention head onto the characters of "
                   "the word being sung, on tracks whose metadata has word timings ('words': [[word, start_s, "
                   "end_s], ...]); W weighs the term added to the loss (e.g. 1; default 0: off)")
    q.add_argument("--align-layer", type=int, default=None, metavar="L",
                   help="with --align-loss: the cross-attention layer (default: the prior's alignment layer, else "
                   "its last cross-attention layer)")
    q.add_argument("--align-head", type=int, default=None, metavar="H",
                   help="with --align-loss: the head (default: the prior's alignment head, else 0)")
    q.add_argument("--cache", default=None, metavar="DIR", help="code cache folder (default MODEL_DIR/code_cache/..)")
    q.add_argument("--rebuild-cache", action="store_true", help="re-encode the corpus even if the cache is valid")
    q.add_argument("--checkpoint-activations", action=argparse.BooleanOptionalAction, default=None,
                   help="recompute transformer blocks in backward to save memory (default: the preset's choice)")
    q.add_argument("--fsdp", action="store_true",
                   help="shard weights, gradients and optimiser state over the torchrun processes (FSDP2, bf16 "
                   "on GPUs): full fine-tuning of priors too large for one GPU; sharded checkpoints (see "
                   "`train export-fsdp`)")
    _add_common(q)
    q.set_defaults(func=cmd_train_prior)

    x = tsub.add_parser("export-fsdp", help="write the prior of a sharded --fsdp checkpoint into its model directory",
                        description="Re-assemble the weights of a sharded training checkpoint (`train prior --fsdp`) "
                        "in one process on the CPU and write them as MODEL_DIR/prior_level_L (what sampling loads).")
    x.add_argument("--model", "-m", required=True, metavar="MODEL_DIR", help="model directory of the training")
    x.add_argument("--level", type=int, required=True, help="level of the trained prior")
    x.add_argument("--checkpoint", default=None, metavar="DIR",
                   help="the sharded checkpoint (default MODEL_DIR/prior_level_L/checkpoint)")
    x.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                   help="the EMA weights (default: them when the checkpoint has them)")
    x.add_argument("--json", action="store_true", help="print the summary as JSON")
    x.set_defaults(func=cmd_export_fsdp)


def _config(args: argparse.Namespace):
    from ..train import TrainConfig

    warmup = args.warmup if args.warmup is not None else min(100, args.steps // 10)
    return TrainConfig(steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
                       warmup_steps=warmup, decay=args.decay, min_lr_ratio=args.min_lr_ratio,
                       weight_decay=args.weight_decay, grad_clip=args.grad_clip, ema=args.ema,
                       val_every=args.val_every, val_batches=args.val_batches, save_every=args.save_every,
                       log_every=args.log_every, seed=args.seed, precision=args.precision, workers=args.workers,
                       compile=args.compile, fsdp=bool(getattr(args, "fsdp", False)))


def _device(name: str):
    from .common import resolve_device

    if name == "auto":
        return None
    return resolve_device(name)


def _summary(args: argparse.Namespace, result, where: str) -> None:
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    last = result.history[-1] if result.history else {}
    val = result.val_history[-1] if result.val_history else {}
    info = {"model": where, "step": result.step, "loss": last.get("loss"),
            "val": {k: v for k, v in val.items() if k != "step"}, "tokens_per_second": round(
                result.tokens_per_second, 1)}
    if args.json:
        print(json.dumps(info))
    else:
        v = f", validation loss {val['loss']:.4g}" if "loss" in val else ""
        loss = f", loss {last['loss']:.4g}" if "loss" in last else ""
        print(f"trained to step {result.step}{loss}{v} ({result.tokens_per_second:.0f} tokens/s); saved in {where}")


def _check(args: argparse.Namespace) -> None:
    if args.resume and args.restart:
        raise UsageError("--resume and --restart exclude each other")
    if args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")


def _adversarial(args: argparse.Namespace):
    """The AdversarialConfig of ``--adversarial`` / ``--decoder-only`` (None for plain VQ-VAE training)."""
    if not (args.adversarial or args.decoder_only):
        return None
    from ..vqvae.discriminator import AdversarialConfig

    try:
        levels = tuple(int(v) for v in args.adv_levels.split(",") if v.strip()) if args.adv_levels else ()
    except ValueError:
        raise UsageError(f"--adv-levels takes comma-separated level numbers, got {args.adv_levels!r}") from None
    on = args.adversarial
    return AdversarialConfig(
        discriminators=("msstft", "mpd") if args.disc == "both" else (args.disc,), loss=args.adv_loss,
        recon_weight=args.recon_weight, mel_weight=args.mel_weight, adv_weight=args.adv_weight if on else 0.0,
        feat_weight=args.feat_weight if on else 0.0, stft_channels=args.disc_channels,
        mpd_channels=args.disc_channels, mpd_max_channels=max(16 * args.disc_channels, args.disc_channels),
        disc_lr=args.disc_lr, levels=levels, decoder_only=args.decoder_only)


def cmd_train_vqvae(args: argparse.Namespace) -> int:
    from ..train import train_vqvae

    _check(args)
    result = train_vqvae(args.data, args.out, preset=args.preset, config=_config(args), window=args.window,
                         resume=args.resume, restart=args.restart, device=_device(args.device),
                         log_dir=args.log_dir, progress=not args.no_progress and sys.stderr.isatty(),
                         val_fraction=args.val_fraction, stop_at=args.stop_at, adversarial=_adversarial(args))
    _summary(args, result, f"{args.out}/vqvae")
    return 0


def prior_options(args: argparse.Namespace):
    """The :class:`~jukebox.train.TrainOptions` flags given on the command line, by name (a resumed run keeps its
    own for the others)."""
    from ..train import TrainOptions
    from ..train.options import OPTION_NAMES, OptionError

    given = {name: getattr(args, name) for name in OPTION_NAMES
             if name not in ("preset", "val_fraction") and getattr(args, name, None) is not None}
    try:
        TrainOptions.of(**given)  # checked now, in the flags' words
    except OptionError as e:
        text = str(e)
        for name in OPTION_NAMES:
            text = text.replace(name, "--" + name.replace("_", "-"))
        raise UsageError(text) from None
    return given


def cmd_train_prior(args: argparse.Namespace) -> int:
    from ..train import train_prior

    _check(args)
    result = train_prior(args.model, args.data, args.level, preset=args.preset, config=_config(args),
                         resume=args.resume, restart=args.restart, cache_dir=args.cache,
                         rebuild_cache=args.rebuild_cache, device=_device(args.device), log_dir=args.log_dir,
                         progress=not args.no_progress and sys.stderr.isatty(), stop_at=args.stop_at,
                         val_fraction=args.val_fraction, init_from=args.init_from, **prior_options(args))
    _summary(args, result, f"{args.model}/prior_level_{args.level}")
    return 0


def cmd_export_fsdp(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..checkpoint.model_dir import ModelDir, prior_folder
    from ..data.labels import LabelVocab
    from ..train.fsdp import export_sharded_checkpoint

    md = ModelDir(args.model)
    folder = md.path / prior_folder(args.level)
    prior, extra = export_sharded_checkpoint(Path(args.checkpoint) if args.checkpoint else folder / "checkpoint",
                                             args.ema)
    if prior.config.level != args.level:
        raise UsageError(f"the checkpoint holds a level-{prior.config.level} prior, not level {args.level}")
    md.save_prior(prior)
    if extra.get("labels"):
        LabelVocab.from_dict(extra["labels"]).save(folder)
    n = sum(p.numel() for p in prior.parameters())
    if args.json:
        print(json.dumps({"model": str(folder), "parameters": n}))
    else:
        print(f"wrote the level-{args.level} prior ({n / 1e6:.2f}M parameters) to {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m jukebox.cli.train vqvae ...``: the train command alone (until it is registered in main)."""
    from . import main as cli_main

    modules = cli_main.COMMAND_MODULES
    if "train" not in modules:
        cli_main.COMMAND_MODULES = (*modules, "train")
    return cli_main.main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
