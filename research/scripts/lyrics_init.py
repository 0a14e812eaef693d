#!/usr/bin/env python
"""Lyric top priors that start from an existing (lyric-free) top prior's weights: the model plays music from step 0.

``jukebox train prior --preset default_lyrics --init-from BASE`` does this growth inside the product
(jukebox.train.grow, which this script calls); this script does it once, outside the training loop, with its own
lyric encoder and n_tokens, reports the mapping and checks the logits, and writes an ordinary model directory
whose level-2 prior is the lyric prior, so that ``jukebox train prior --model OUT --level 2`` (without
``--restart``) then fine-tunes it like any existing prior (new artists and genres of the corpus extend its
vocabulary there).

Both styles keep every weight of the base prior in a layer of the same attention pattern and add layers whose
output projections (attention and MLP) start at zero, so an added layer is the identity until it trains:

* ``encoder_decoder`` (5b_lyrics style): ``attn_order`` 6 at depth ``D + D/3`` (D = 12: 16 layers, the pattern
  block, transpose, prev-block, cross repeated): the base's 12 layers keep their order and patterns at the
  non-cross positions, and a cross-attention layer over a new lyric encoder (dense, width 128, depth 4) follows
  every third one (layers 3, 7, 11, 15). The lyric prior's music logits equal the base prior's exactly at
  initialisation, whatever the lyrics (``check`` measures it).
* ``merged`` (1b_lyrics style): ``attn_order`` 12 at depth 16: the base's 12 layers, three new self-attention
  layers (12-14) and the "prime" layer 15 (music attends to the lyric tokens); the sequence is ``n_tokens`` lyric
  characters then the 1,024 codes. ``blocks`` is chosen so the block length stays the base's (64: 1,152 / 18), so
  the music keeps its block structure shifted by two whole blocks; token and position embeddings of the music are
  the base's (codes at ids ``n_vocab..``, positions ``n_tokens..``), the lyric rows are new. The transposed and
  previous-block layers now also see the lyric blocks, so the start is close to the base prior, not equal to it.

Labels (artist, genre, timing, every-position labels, tempo and beat phase) and their tables (labels.json, tempi)
are the base's.

    python research/scripts/lyrics_init.py make --base BASE_MODEL --out RUN/lyrics --style encoder_decoder
    python research/scripts/lyrics_init.py make --base BASE_MODEL --out RUN/merged --style merged
    python research/scripts/lyrics_init.py check --base BASE_MODEL --model RUN/lyrics   # logits vs the base

Prints JSON (parameters, mapping, the check's max |logit difference|).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from jukebox.checkpoint.model_dir import ModelDir  # noqa: E402
from jukebox.data.labels import LabelVocab  # noqa: E402
from jukebox.errors import UsageError  # noqa: E402
from jukebox.nn.attention import layer_patterns  # noqa: E402
from jukebox.prior import Prior  # noqa: E402
from jukebox.prior.config import LyricsConfig, PriorConfig, TransformerConfig  # noqa: E402
from jukebox.train.grow import base_layer_positions, grow_prior, lyric_growth_config  # noqa: E402

STYLES = ("encoder_decoder", "merged")
#: The lyric encoder of the ``encoder_decoder`` style (default_lyrics's: 0.31 M parameters at n_tokens 128).
ENCODER = TransformerConfig(width=128, depth=4, heads=2, attn_order=0, init_scale=0.7)


def _base_path(base: str) -> Path:
    if base == "default":
        return ROOT / "src" / "jukebox" / "assets" / "default_model"
    return Path(base)


def lyric_config(base: PriorConfig, style: str, n_tokens: int, n_vocab: int) -> tuple[PriorConfig, list[int]]:
    """The lyric prior's config grown from the lyric-free top prior ``base`` (jukebox.train.grow.lyric_growth_config
    with the ``ENCODER`` lyric encoder and ``n_vocab`` lyric characters) and, for each base layer, its index in the
    new stack. The base must use ``attn_order`` 2 (block, transpose, prev-block) with a depth divisible by 3."""
    if style not in STYLES:
        raise SystemExit(f"error: --style must be one of {STYLES}, got {style!r}")
    try:
        cfg = lyric_growth_config(base, LyricsConfig(style=style, n_tokens=n_tokens, n_vocab=n_vocab,
                                                     prime_loss_fraction=0.4, encoder=ENCODER))
        cfg = cfg.replace(lyrics=cfg.lyrics.replace(n_vocab=n_vocab))
        return cfg, base_layer_positions(base, cfg)
    except UsageError as e:
        raise SystemExit(f"error: {e}") from None


def grow(base: Prior, style: str, n_tokens: int, n_vocab: int, seed: int = 0) -> tuple[Prior, dict[str, Any]]:
    """The lyric prior (see the module docstring; jukebox.train.grow.grow_prior) with the base prior's weights;
    returns (prior, report)."""
    cfg, mapping = lyric_config(base.config, style, n_tokens, n_vocab)
    torch.manual_seed(seed)
    try:
        new = grow_prior(base, cfg)
    except UsageError as e:
        raise SystemExit(f"error: {e}") from None
    kept = set()
    for k in base.state_dict():
        if k.startswith("decoder.transformer.blocks."):
            i, rest = k[len("decoder.transformer.blocks."):].split(".", 1)
            k = f"decoder.transformer.blocks.{mapping[int(i)]}.{rest}"
        kept.add(k)
    fresh = set(new.state_dict()) - kept
    new_layers = sorted(set(range(cfg.transformer.depth)) - set(mapping))
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    report = {"style": style, "n_tokens": n_tokens, "n_vocab": n_vocab, "depth": cfg.transformer.depth,
              "attn_order": cfg.transformer.attn_order, "blocks": cfg.transformer.blocks,
              "base_layers_to": mapping, "new_layers": new_layers,
              "patterns": list(layer_patterns(cfg.transformer.attn_order, cfg.transformer.depth)),
              "alignment_layer": cfg.alignment_layer, "parameters": n(new), "base_parameters": n(base),
              "new_weights": sorted({k.rsplit(".", 1)[0] for k in fresh})[:12] + (["..."] if len(fresh) > 12 else [])}
    return new, report


def make(base_dir: Path, out: Path, style: str, n_tokens: int, seed: int = 0) -> dict[str, Any]:
    """``out``: a copy of the model directory ``base_dir`` (no caches, checkpoints or logs) whose level-2 prior is
    the lyric prior grown from the base's top prior."""
    md = ModelDir(base_dir)
    top = md.vqvae_config().levels - 1
    base = md.load_prior(top, "cpu")
    folder = base_dir / f"prior_level_{top}"
    vocab = LabelVocab.load(folder) if (folder / "labels.json").exists() else None
    if vocab is None:
        raise SystemExit(f"error: {folder} has no labels.json")
    new, report = grow(base, style, n_tokens, vocab.lyric_vocab.n_vocab, seed)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(base_dir, out, ignore=shutil.ignore_patterns("code_cache", "checkpoint", "checkpoint.old",
                                                                 "logs", "lora"))
    for f in (out / f"prior_level_{top}").glob("model*.safetensors*"):
        f.unlink()
    ModelDir(out).save_prior(new)
    return {"out": str(out), **report}


@torch.no_grad()
def check(base_dir: Path, model_dir: Path, batch: int = 2, seed: int = 0, codes: Path | None = None
          ) -> dict[str, Any]:
    """Max |music logit difference| between the lyric prior of ``model_dir`` and the base's top prior, and both
    priors' bits per token, on ``batch`` windows of codes (the first window of the first tracks of the code folder
    ``codes``, else random codes) with fixed labels and random lyrics: 0 up to float rounding for the
    encoder-decoder growth."""
    base_md, md = ModelDir(base_dir), ModelDir(model_dir)
    top = base_md.vqvae_config().levels - 1
    base, new = base_md.load_prior(top, "cpu"), md.load_prior(top, "cpu")
    g = torch.Generator().manual_seed(seed)
    c = base.config
    if codes is not None:
        from jukebox.data.code_cache import CodeCache

        cache = CodeCache(codes)
        paths = [t.path for t in cache.manifest().tracks][:batch]
        z = torch.stack([torch.from_numpy(cache.codes(p, top)[: c.n_ctx].astype("int64")) for p in paths])
    else:
        z = torch.randint(0, c.l_bins, (batch, c.n_ctx), generator=g)
    total = int(c.sample_length * 8)
    y = torch.zeros(batch, c.n_labels, dtype=torch.long)
    y[:, 0], y[:, 1], y[:, 2] = total, c.sample_length, c.sample_length
    y[:, 3], y[:, 4] = 1, 1
    if c.labels is not None and c.labels.tempo:
        y[:, 4 + c.labels.max_bow_genre_size] = 12000
        y[:, 5 + c.labels.max_bow_genre_size] = 1000
    lyr = torch.randint(1, new.n_vocab, (batch, new.n_tokens), generator=g)
    a = base.logits(z, None, y).float()
    b = new.logits(z, None, torch.cat([y, lyr], dim=1)).float()
    if new.style == "merged":
        b = b[:, new.n_tokens:, new.n_vocab:]
    ce = lambda lg: torch.nn.functional.cross_entropy(lg.transpose(1, 2), z).item() / 0.6931471805599453  # noqa: E731
    return {"max_abs_logit_diff": float((a - b).abs().max()), "bits_base": round(ce(a), 4),
            "bits_lyric_prior": round(ce(b), 4)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make", help="a model directory whose top prior is a lyric prior grown from BASE's")
    p.add_argument("--base", default="default", help="model directory ('default': the embedded model)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--style", choices=STYLES, required=True)
    p.add_argument("--n-tokens", type=int, default=128, help="lyric characters per window (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true", help="also compare the logits with the base's")
    p.add_argument("--codes", type=Path, default=None, help="code folder for --check (default: random codes)")
    p = sub.add_parser("check", help="music logits of a grown lyric prior vs the base prior")
    p.add_argument("--base", default="default")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--codes", type=Path, default=None, help="code folder of real windows (default: random codes)")
    p.add_argument("--batch", type=int, default=2)
    args = ap.parse_args(argv)
    if args.cmd == "make":
        rep = make(_base_path(args.base), args.out, args.style, args.n_tokens, args.seed)
        if args.check:
            rep["check"] = check(_base_path(args.base), args.out, codes=args.codes)
    else:
        rep = check(_base_path(args.base), args.model, batch=args.batch, codes=args.codes)
    print(json.dumps(rep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
