"""``jukebox score``: how typical a piece's codes are for an artist and genre, in bits per token."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..sampling.schedule import window_starts
from .common import add_device_arg, check_codes_range, load_codes_file, resolve_device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="bits per token of codes under a prior (how typical for an artist/genre)")
    p.add_argument("-m", "--model", required=True, help="model directory")
    p.add_argument("codes", help="codes .npz (level_0..level_2 of shape [T] or [batch, T])")
    p.add_argument("--level", type=int, required=True, help="level to score (its prior must exist)")
    p.add_argument("--artist", default="unknown")
    p.add_argument("--genre", default="unknown")
    p.add_argument("--lyrics", default="", help="lyrics text")
    p.add_argument("--lyrics-file", default=None, help="file with the lyrics (UTF-8)")
    p.add_argument("--total-seconds", type=float, required=True, help="length of the whole song, in seconds")
    p.add_argument("--offset-seconds", type=float, default=0.0, help="where the codes start in the song")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_device_arg(p)
    p.set_defaults(func=cmd_score)


@torch.no_grad()
def score_codes(model, level: int, codes: dict[int, torch.Tensor], metas: list[dict]) -> list[dict]:
    """Per item: music bits per token of ``codes[level]`` [B, T] (each token scored once, with as much context
    as the prior's window allows) and, where the prior predicts lyrics, the lyric bits per character."""
    prior = model.prior(level)
    z = codes[level].to(model.device)
    n, total = z.shape
    labeller = model.labeller(level)
    labels = None if labeller is None else labeller.batch_labels(metas, device=model.device)
    n_ctx = min(prior.n_ctx, total)
    music_bits = torch.zeros(n, device=model.device, dtype=torch.float64)
    lyric_bits, windows, scored = torch.zeros(n, dtype=torch.float64, device=model.device), 0, 0
    for start in window_starts(total, n_ctx, n_ctx):
        z_win = z[:, start:start + n_ctx]
        z_cond = None
        if prior.cond_downsample is not None:
            down = prior.cond_downsample
            upper = codes.get(level + 1)
            if upper is None:
                raise UsageError(f"scoring level {level} needs the level_{level + 1} codes it is conditioned on")
            z_cond = upper[:, start // down:(start + prior.n_ctx) // down].to(model.device)
            if z_cond.shape[1] * down != z_win.shape[1]:
                raise UsageError(f"level_{level + 1} is too short for level_{level} in the codes file")
        y = None if labels is None else labeller.window_y(labels, start, prior.raw_to_tokens)[0]
        logits = prior.logits(z_win, z_cond, y).float()
        if prior.style == "merged":
            logits, target = logits[:, prior.n_tokens:], z_win + prior.n_vocab
        else:
            target = z_win
        ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none") / math.log(2)  # [B, T] bits
        new = start + n_ctx - scored  # tokens this window adds (the last window may overlap the previous)
        music_bits += ce[:, -new:].double().sum(1)
        scored += new
        if prior.style != "none":
            _, metrics = prior(z_win, z_cond, y, reduction="none")
            lyric_bits += metrics["prime_loss"].double()
            windows += 1
    results = []
    for i in range(n):
        item = {"item": i, "level": level, "tokens": total, "bits_per_token": float(music_bits[i] / total)}
        if prior.style != "none":
            item["lyrics_bits_per_token"] = float(lyric_bits[i] / windows)
        results.append(item)
    return results


def cmd_score(args: argparse.Namespace) -> int:
    from ..api import load_model

    if not math.isfinite(args.total_seconds) or args.total_seconds <= 0:
        raise UsageError(f"--total-seconds must be a positive number of seconds, got {args.total_seconds}")
    if not (math.isfinite(args.offset_seconds) and 0 <= args.offset_seconds < args.total_seconds):
        raise UsageError(f"--offset-seconds must lie in [0, --total-seconds), got {args.offset_seconds}")
    lyrics = args.lyrics
    if args.lyrics_file:
        try:
            lyrics = Path(args.lyrics_file).read_text(encoding="utf-8")
        except (FileNotFoundError, UnicodeDecodeError):
            raise UsageError(f"{args.lyrics_file}: not a readable UTF-8 file") from None
    model = load_model(args.model, device=resolve_device(args.device))
    model._check_seconds(args.total_seconds, "--total-seconds")  # the same range as `jukebox sample`'s
    if args.level not in model.prior_levels:
        raise UsageError(f"the model has no prior for level {args.level} (it has {model.prior_levels})")
    arrays = load_codes_file(args.codes)
    if args.level not in arrays:
        raise UsageError(f"{args.codes} has no level_{args.level}")
    for lvl, arr in arrays.items():
        check_codes_range(arr, model.vqvae.config.l_bins, f"{args.codes} level_{lvl}")
    codes = {lvl: torch.from_numpy(a) for lvl, a in arrays.items()}
    n = codes[args.level].shape[0]
    sr = model.sample_rate
    meta = dict(artist=args.artist, genre=args.genre, lyrics=lyrics, total_length=int(args.total_seconds * sr),
                offset=int(args.offset_seconds * sr))
    results = score_codes(model, args.level, codes, [meta] * n)
    if args.json:
        print(json.dumps({"artist": args.artist, "genre": args.genre, "items": results}))
    else:
        for r in results:
            extra = f", lyrics {r['lyrics_bits_per_token']:.3f} bits/char" if "lyrics_bits_per_token" in r else ""
            print(f"item {r['item']}: level {r['level']}, {r['tokens']} tokens: "
                  f"{r['bits_per_token']:.3f} bits/token{extra}")
    return 0
