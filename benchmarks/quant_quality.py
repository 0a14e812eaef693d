"""Quality cost of 8-bit weights: KL divergence of next-token distributions against the native weights, and bits
per token of real codes, on a CPU.

    python benchmarks/quant_quality.py --json quant_quality.json                  # everything (a few minutes)
    python benchmarks/quant_quality.py --skip-released --audio a.flac b.flac     # the embedded model only

Weights: ``int8`` and ``fp8`` (weight-only, one scale per output channel, :mod:`jukebox.nn.quant`; the transformer
blocks' linears, the rest native), ``int8-stored`` (the embedded model only: every large matrix, embeddings
included, saved and loaded as a model directory exported with ``--weights int8``; zero for a model already
stored that way, as the shipped one is since its fp16 weights measured 1.9e-4 / 1.1e-4 / 3.1e-4 nats per token at
levels 0 / 1 / 2) and ``int8-dyn`` (the CPU's
``decode="int8"`` path: int8 weights and activations quantised per call). Every figure is a teacher-forced pass (the
next-token distributions of all positions).

1. Released prior shapes with random weights (their own init) at reduced depth (released width, heads, context and
   blocks; ``--depth`` layers, enough for every attention pattern of the preset): 1b_lyrics and 5b_lyrics top
   priors, the upsampler, ``--tokens`` positions each. Random weights give flat distributions (small KL by nature),
   so the relative error of the logits is given too.
2. The embedded default model's real weights: codes of real audio (``--audio`` files, ``--seconds`` each, encoded
   with the model's VQ-VAE), every level: KL over the first window and bits per token over all windows (as
   ``jukebox score``), native against 8-bit.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from jukebox.checkpoint.format import load_into, quantize_for_storage, save_weights
from jukebox.nn.attention import layer_patterns
from jukebox.nn.quant import weight_only_linears
from jukebox.nn.transformer import int8_linear_supported
from jukebox.prior.config import prior_preset
from jukebox.prior.model import Prior
from jukebox.prior.sampler import _int8_linears

FORMATS = ("int8", "fp8", "int8-dyn")
#: Reduced depths with every attention pattern of the preset (1b_lyrics: its prime layer is layer 15), except
#: 5b_lyrics' cross-attention layer (layer 18: its query linear is an ordinary block linear).
RELEASED = {"1b_lyrics": 16, "5b_lyrics": 6, "upsampler_level_0": 3}


def weights_ctx(transformer, fmt: str, prior: Prior | None = None):
    if fmt == "int8-dyn":
        return _int8_linears(transformer)
    if fmt == "int8-stored":
        return stored_int8(prior)
    return weight_only_linears(transformer, fmt) if fmt != "native" else nullcontext()


@contextmanager
def stored_int8(prior: Prior):
    """Inside: ``prior``'s weights as a model directory stored with ``--weights int8`` loads them (every large
    matrix, embeddings included, through int8 with per-row scales: :func:`quantize_for_storage`)."""
    original = {k: v.clone() for k, v in prior.state_dict().items()}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            save_weights(tmp, quantize_for_storage(original))
            load_into(prior, tmp)
        yield
    finally:
        prior.load_state_dict(original)


def kl_stats(ref: torch.Tensor, out: torch.Tensor) -> dict:
    """Mean and max over positions of KL(ref || out) in nats per token, and the relative L2 error of the logits."""
    p, q = ref.double().log_softmax(-1), out.double().log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1).flatten()
    return {"kl_nats_per_token": float(kl.mean()), "kl_max": float(kl.max()),
            "logits_rel_err": float((out.double() - ref.double()).norm() / ref.double().norm()),
            "top1_agree": float((ref.argmax(-1) == out.argmax(-1)).double().mean())}


def random_inputs(model: Prior, tokens: int, batch: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    z = torch.randint(0, c.l_bins, (batch, tokens), generator=g)
    z_cond = None
    if c.is_upsampler:
        z_cond = torch.randint(0, c.l_bins, (batch, tokens // c.cond_downsample), generator=g)
    lab = c.labels
    genres = torch.full((batch, lab.max_bow_genre_size), -1)
    genres[:, 0] = torch.randint(0, lab.genre_bins, (batch,), generator=g)
    y = torch.cat([torch.tensor([[int(120 * lab.sample_rate), int(10 * lab.sample_rate), c.sample_length]] * batch),
                   torch.randint(0, lab.artist_bins, (batch, 1), generator=g), genres,
                   torch.randint(0, max(c.lyrics.n_vocab, 1), (batch, c.lyrics.n_tokens), generator=g)], dim=1)
    return z, z_cond, y


@torch.no_grad()
def released(name: str, depth: int, tokens: int, formats) -> dict:
    base = prior_preset(name)
    t = base.transformer.replace(depth=depth, checkpoint=False)
    cfg = base.replace(transformer=t)
    if cfg.lyrics.encoder is not None:
        cfg = cfg.replace(lyrics=cfg.lyrics.replace(encoder=cfg.lyrics.encoder.replace(depth=2, checkpoint=False)))
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = Prior(cfg).eval()
    z, z_cond, y = random_inputs(model, tokens)
    tr = model.decoder.transformer
    ref = model.logits(z, z_cond, y).float()
    row = {"prior": name, "depth": depth, "released_depth": base.transformer.depth, "width": t.width,
           "heads": t.heads, "n_ctx": cfg.n_ctx, "tokens": tokens,
           "patterns": sorted(set(layer_patterns(t.attn_order, depth)))}
    for fmt in formats:
        with weights_ctx(tr, fmt):
            row[fmt] = kl_stats(ref, model.logits(z, z_cond, y).float())
    row["seconds"] = round(time.perf_counter() - t0, 1)
    del model
    return row


@torch.no_grad()
def embedded(audio_files: list[str], seconds: float, formats) -> dict:
    from jukebox.api import load_model
    from jukebox.audio import load_audio
    from jukebox.cli.score import score_codes

    model = load_model(None, device="cpu")
    sr = model.sample_rate
    clips = []
    for path in audio_files:
        a, _ = load_audio(path, sample_rate=sr, offset_seconds=30.0, duration_seconds=seconds)
        clips.append(torch.from_numpy(a[: int(seconds * sr)]))
    n = min(c.shape[0] for c in clips)
    hop = model.vqvae.hop_lengths[-1] if hasattr(model.vqvae, "hop_lengths") else 1
    n -= n % max(hop, 1)
    x = torch.stack([c[:n] for c in clips])[:, None]
    codes = model.encode(x)
    metas = [dict(artist="unknown", genre="unknown", lyrics="", total_length=int(180 * sr), offset=int(30 * sr))
             for _ in clips]
    out = {"files": [Path(p).name for p in audio_files], "seconds_each": seconds, "levels": {}}
    for level in model.prior_levels:
        prior = model.prior(level)
        tr = prior.decoder.transformer
        z = codes[level]
        res = {"tokens_per_item": int(z.shape[1]), "n_ctx": prior.n_ctx}
        # KL over the first window
        n_ctx = min(prior.n_ctx, z.shape[1])
        z_cond = None
        if prior.cond_downsample is not None:
            z_cond = codes[level + 1][:, :prior.n_ctx // prior.cond_downsample]
            n_ctx = prior.n_ctx
        labeller = model.labeller(level)
        y = None
        if labeller is not None:
            y = labeller.window_y(labeller.batch_labels(metas, device=model.device), 0, prior.raw_to_tokens)[0]
        zw = z[:, :n_ctx]
        ref = prior.logits(zw, z_cond, y).float()
        res["native_bits_per_token"] = sum(r["bits_per_token"] for r in score_codes(model, level, codes, metas)) / len(
            clips)
        ce = F.cross_entropy(ref.transpose(1, 2), zw, reduction="none") / math.log(2)
        res["native_window_bits"] = float(ce.mean())
        for fmt in formats:
            if fmt == "int8-dyn" and not int8_linear_supported():
                continue
            with weights_ctx(tr, fmt, prior):
                q = prior.logits(zw, z_cond, y).float()
                bits = sum(r["bits_per_token"] for r in score_codes(model, level, codes, metas)) / len(clips)
            res[fmt] = {**kl_stats(ref, q), "bits_per_token": bits,
                        "bits_delta": bits - res["native_bits_per_token"]}
        out["levels"][level] = res
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--tokens", type=int, default=256, help="positions per released-shape pass")
    ap.add_argument("--skip-released", action="store_true")
    ap.add_argument("--skip-embedded", action="store_true")
    ap.add_argument("--audio", nargs="+", default=[])
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--formats", default=None,
                    help=f"comma-separated, from {', '.join(FORMATS)} and (embedded model) int8-stored; default all")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
              "threads": args.threads, "released": [], "embedded": None}
    wanted = args.formats.split(",") if args.formats else [*FORMATS, "int8-stored"]
    formats = [f for f in wanted if f != "int8-dyn" or int8_linear_supported()]
    if not args.skip_released:
        for name, depth in RELEASED.items():
            row = released(name, depth, args.tokens, [f for f in formats if f != "int8-stored"])
            print(json.dumps(row), file=sys.stderr)
            result["released"].append(row)
    if not args.skip_embedded and args.audio:
        result["embedded"] = embedded(args.audio, args.seconds, formats)
        print(json.dumps(result["embedded"]), file=sys.stderr)
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
