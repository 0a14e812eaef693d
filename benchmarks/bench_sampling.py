"""Decode throughput of the priors: tokens/s per sequence and in total, random weights at given shapes.

    python benchmarks/bench_sampling.py --models upsampler_level_0 1b_lyrics --batch 1 16 --dtype bfloat16 \\
        --device cuda --decode graph
    python benchmarks/bench_sampling.py --models cpu_small --device cpu --reference   # + the unoptimised path

Each case builds ``Prior(prior_preset(name))`` on the device (random weights), prefills ``--position`` tokens
(default: half the context) and times ``--tokens`` decode steps of :func:`jukebox.prior.sampler.
sample_autoregressive` (top-k 0, temperature 1: the real draw path), after ``--warmup`` steps. ``--reference``
also times the unoptimised path (full-context caches, masks rebuilt per layer per step) and reports the ratio.
``--check`` first verifies on a small shape that greedy fp32 samples of the fast path(s) and the reference path
are identical. Prints one JSON object (``--json`` also writes it) and a table.

``--decode triton``: the fused Triton step (:mod:`jukebox.nn.triton_decode`) replayed from a CUDA graph; its
GEMV tiles are chosen at the first step by timing the whole step with each candidate (reported as
``triton_tiles``). ``--weights native int8 fp8`` times each weight format (8-bit: weight-only, widened in the
kernels; the bandwidth limit then counts the 8-bit bytes), ``--pdl on off`` the fused step with and without
programmatic dependent launch. With ``--check`` each timed case also
compares the logits of its first decode steps with PyTorch's static step in the same dtype
(``logits_rel_err_vs_static``: relative L2 over the steps until the greedy tokens first differ), and the greedy
fp32 check runs on shapes with the released head sizes (480, 256, 150) too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

from jukebox.prior.config import PriorConfig, prior_preset
from jukebox.prior.model import Prior
from jukebox.prior.sampler import sample_autoregressive

try:
    from jukebox.nn import triton_decode
except ImportError:  # pragma: no cover
    triton_decode = None

#: Extra shapes for CPU runs (same structure as the released models, smaller).
EXTRA = {
    "cpu_small": dict(base="upsampler_level_0", n_ctx=1024, width=256, depth=12, heads=2, blocks=16),
    "cpu_medium": dict(base="upsampler_level_0", n_ctx=2048, width=512, depth=24, heads=2, blocks=32),
    # Released head sizes at a few layers (greedy checks of --decode triton): 480 (upsamplers), 256 with a
    # ``prime`` layer (1b_lyrics, layer 15), 150 with a cross-attention layer (5b_lyrics, layer 18).
    "check_up": dict(base="upsampler_level_0", n_ctx=1024, width=1920, depth=3, heads=1, blocks=16),
    "check_1b": dict(base="1b_lyrics", n_ctx=1024, width=2048, depth=16, heads=2, blocks=16),
    "check_5b": dict(base="5b_lyrics", n_ctx=1024, width=1200, depth=19, heads=2, blocks=16),
}
#: Memory bandwidth (bytes/s) used for the roofline column, by device name fragment: the data sheets' figures, except
#: the H200's, which is what a device-to-device copy measures on one (4.27 TB/s; the data sheet says 4.8).
BANDWIDTH = {"H100": 3.35e12, "H200": 4.27e12, "A100": 2.0e12}


def make_config(name: str) -> PriorConfig:
    if name in EXTRA:
        e = EXTRA[name]
        base = prior_preset(e["base"])
        t = base.transformer.replace(width=e["width"], depth=e["depth"], heads=e["heads"], blocks=e["blocks"])
        up = base.upsampler.replace(width=e["width"], depth=4) if base.upsampler else None
        return base.replace(n_ctx=e["n_ctx"], transformer=t, upsampler=up)
    return prior_preset(name)


def build(name: str, dtype: torch.dtype, device: str) -> Prior:
    torch.manual_seed(0)
    with torch.device(device):
        model = Prior(make_config(name)).eval()
        with torch.no_grad():
            for p in model.parameters():  # no all-zero projections (they would make every logit equal)
                if p.dim() > 1 and p.abs().max() == 0:
                    p.normal_(std=0.02)
    return model.to(dtype)


def make_inputs(model: Prior, batch: int, device: str, seed: int = 0) -> tuple[torch.Tensor | None, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c = model.config
    z_cond = None
    if c.is_upsampler:
        z_cond = torch.randint(0, c.l_bins, (batch, c.n_ctx // c.cond_downsample), generator=g).to(device)
    lab = c.labels
    genres = torch.full((batch, lab.max_bow_genre_size), -1)
    genres[:, 0] = 1
    total = int(180 * lab.sample_rate)
    y = torch.cat([
        torch.tensor([[total, 0, c.sample_length]] * batch),
        torch.ones(batch, 1, dtype=torch.long),
        genres,
        torch.randint(1, max(c.lyrics.n_vocab, 2), (batch, c.lyrics.n_tokens), generator=g),
    ], dim=1).to(device)
    return z_cond, y


def decode_mode(decode: str, tune: bool = True, pdl: bool = True, persistent: bool | str = False):
    """(mode passed to the sampler, context it runs in): ``triton`` is the fused step replayed from a CUDA graph
    (its GEMV tiles timed at the first step unless ``tune`` is off; programmatic dependent launch where the device
    has it unless ``pdl`` is off; the stack as one persistent kernel at batch 1 with ``persistent``: True, or
    ``"ROWSxWARPS"`` for its rows and warps per program)."""
    if decode != "triton":
        return decode, contextlib.nullcontext()
    if triton_decode is None or triton_decode.triton is None:
        raise RuntimeError("--decode triton needs the triton package")
    return "triton", _triton_tuning(tune, pdl, persistent)


@contextlib.contextmanager
def _triton_tuning(tune: bool, pdl: bool, persistent: bool | str):
    from jukebox.nn import triton_persistent as tp
    from jukebox.prior import sampler

    before = (sampler.TRITON_TUNE, triton_decode.PDL, triton_decode.PERSISTENT, tp.ROWS, tp.NUM_WARPS,
              tp.L2_PREFETCH, tp.CHUNK)
    sampler.TRITON_TUNE, triton_decode.PDL, triton_decode.PERSISTENT = tune, pdl, bool(persistent)
    if isinstance(persistent, str) and "x" in persistent:
        spec = [int(v) for v in persistent.split("x")]
        tp.ROWS, tp.NUM_WARPS = spec[:2]
        tp.L2_PREFETCH = bool(spec[2]) if len(spec) > 2 else tp.L2_PREFETCH
        tp.CHUNK = spec[3] if len(spec) > 3 else tp.CHUNK
    try:
        yield
    finally:
        (sampler.TRITON_TUNE, triton_decode.PDL, triton_decode.PERSISTENT, tp.ROWS, tp.NUM_WARPS,
         tp.L2_PREFETCH, tp.CHUNK) = before


def decoder_inputs(model: Prior, batch: int, device: str, position: int):
    """(known [B, P] or None, start, cond, encoder states) of the decoder after ``position`` music tokens."""
    z_cond, y = make_inputs(model, batch, device)
    cond = model.conditioning(z_cond, y)
    states, c, known = None, cond.cond, None
    g = torch.Generator(device=device).manual_seed(0)
    prime = torch.randint(0, model.config.l_bins, (batch, position), generator=g, device=device)
    if model.style == "merged":
        known, c = model.merged_sequence(cond.lyrics, prime, c)
    else:
        known = prime if position else None
        if model.style == "encoder_decoder":
            states = model.encode_lyrics(cond.lyrics)
    return known, cond.start, c, states


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def time_decode(model: Prior, batch: int, device: str, position: int, tokens: int, warmup: int, decode: str,
                reference: bool = False, top_k: int = 0, weights: str = "native", pdl: bool = True,
                persistent: bool | str = False) -> dict:
    """Seconds per decode step after a prefill of ``position`` tokens (the real sampler, via its progress hook)."""
    dec = model.decoder
    known, start, c, states = decoder_inputs(model, batch, device, position)
    g = torch.Generator(device=device).manual_seed(0)
    P = 0 if known is None else known.shape[1]
    total = min(P + warmup + tokens, dec.n_ctx)
    marks: dict[int, float] = {}

    def progress(done: int, todo: int) -> None:
        if done in (warmup, todo):
            _sync(device)
            marks[done] = time.perf_counter()

    mode, ctx = decode_mode(decode, pdl=pdl, persistent=persistent)
    t0 = time.perf_counter()
    with ctx:
        sample_autoregressive(dec, batch, total, known, start, c, states, temperature=1.0, top_k=top_k,
                              chunk_size=None if device.startswith("cuda") else 256, progress=progress,
                              decode=mode, compact_cache=not reference, generator=g, weights=weights)
    wall = time.perf_counter() - t0
    steps = total - P - warmup
    sec = (marks[total - P] - marks[warmup]) / steps
    out = dict(seconds_per_step=sec, steps=steps, wall_s=wall)
    if decode == "triton":  # GEMV tiles timed at the first step (shapes of this model, this batch)
        shapes = {tuple(m.weight.shape) for m in dec.transformer.modules() if isinstance(m, torch.nn.Linear)}
        dt = str(dec.pos_emb.dtype).split(".")[-1]
        use_pdl = pdl and triton_decode.pdl_supported(device)
        out["triton_tiles"] = [e for e in triton_decode.TUNE_LOG
                               if e["batch"] == batch and e["dtype"] == dt and (e["N"], e["K"]) in shapes
                               and e["weights"] == weights and e["pdl"] == use_pdl]
        out["pdl"] = use_pdl
    return out


@torch.no_grad()
def compare_logits(model: Prior, batch: int, device: str, position: int, decode: str, steps: int = 8,
                   weights: str = "native", pdl: bool = True, persistent: bool | str = False) -> dict:
    """Greedy decode of ``steps`` tokens by ``decode`` and by the PyTorch static step (same dtype, same weights,
    same prefill): relative L2 error of the logits over the steps before the tokens first differ, and that number
    of steps."""
    dec = model.decoder
    known, start, c, states = decoder_inputs(model, batch, device, position)
    P = 0 if known is None else known.shape[1]
    total = min(P + steps, dec.n_ctx)
    runs = {}
    for name in ("static", decode):
        mode, ctx = decode_mode(name, pdl=pdl, persistent=persistent)
        with ctx:
            runs[name] = sample_autoregressive(dec, batch, total, known, start, c, states, top_k=1, decode=mode,
                                               return_logits=True, weights=weights)
    (ta, la), (tb, lb) = runs["static"], runs[decode]
    differ = (ta[:, P:] != tb[:, P:]).any(0).nonzero()
    n = int(differ[0]) + 1 if len(differ) else total - P  # the step where tokens first differ still compares
    a, b = la[:, P:P + n].float(), lb[:, P:P + n].float()
    return dict(logits_rel_err_vs_static=((a - b).norm() / a.norm()).item(), logits_steps_compared=n)


def weight_bytes(model: Prior, weights: str = "native") -> int:
    """Bytes of the decoder's parameters read per step: with 8-bit ``weights`` its block linears count one byte per
    weight and four per row scale."""
    total = sum(p.numel() * p.element_size() for p in model.decoder.parameters())
    if weights != "native":
        from jukebox.nn.quant import block_linears

        for block in model.decoder.transformer.blocks:
            for lin in block_linears(block):
                w = lin.weight
                total += w.numel() * (1 - w.element_size()) + w.shape[0] * 4
    return total


@torch.no_grad()
def check_greedy_identical(device: str, decodes: list[str], persistent: bool = False) -> dict:
    """fp32 greedy samples of the fast path(s) equal those of the reference path on small shapes (and, for
    ``triton``, shapes with the released head sizes; 40 tokens after a prefix crossing a few blocks; with
    ``persistent`` also the persistent step at batch 1 on the upsampler's head size)."""
    out = {}
    if persistent and "triton" in decodes:
        model = build("check_up", torch.float32, device)
        known, start, c, states = decoder_inputs(model, 1, device, 100)
        n = known.shape[1] + 40
        ref, _ = sample_autoregressive(model.decoder, 1, n, known, start, c, states, top_k=1, compact_cache=False)
        mode, ctx = decode_mode("triton", tune=False, persistent=True)
        with ctx:
            got, _ = sample_autoregressive(model.decoder, 1, n, known, start, c, states, top_k=1, decode=mode)
        out["check_up/triton/persistent/batch1"] = bool(torch.equal(got, ref))
        del model
    names = ["cpu_small"] + (["check_up", "check_1b", "check_5b"] if "triton" in decodes else [])
    for name in names:
        model = build(name, torch.float32, device)
        if name == "cpu_small":
            known, start, c, states = decoder_inputs(model, 2, device, 0)
            n = 200
        else:
            known, start, c, states = decoder_inputs(model, 2, device, 100)
            n = known.shape[1] + 40
        ref, _ = sample_autoregressive(model.decoder, 2, n, known, start, c, states, top_k=1, compact_cache=False)
        for decode in decodes if name == "cpu_small" else ["triton"]:
            mode, ctx = decode_mode(decode, tune=False)  # fp32 checks: default tiles (no compile of every tile)
            with ctx:
                got, _ = sample_autoregressive(model.decoder, 2, n, known, start, c, states, top_k=1, decode=mode)
            out[f"{name}/{decode}"] = bool(torch.equal(got, ref))
        del model
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["cpu_small"])
    ap.add_argument("--batch", nargs="+", type=int, default=[1])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--decode", nargs="+", default=["eager"], choices=["eager", "static", "graph", "compile", "triton"])
    ap.add_argument("--position", type=int, default=None, help="prefilled tokens (default: half the context)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--weights", nargs="+", default=["native"], choices=["native", "int8", "fp8"])
    ap.add_argument("--pdl", nargs="+", default=["on"], choices=["on", "off"],
                    help="--decode triton: with / without programmatic dependent launch")
    ap.add_argument("--persistent", nargs="+", default=["off"],
                    help="--decode triton: on / off / ROWSxWARPS[xL2[xCHUNK]] (e.g. 16x8, 16x8x0x256): the stack as "
                         "one persistent kernel (batch 1, no cross-attention), with its weight rows and warps per "
                         "program, L2 prefetch 1 / 0 and input chunk")
    ap.add_argument("--reference", action="store_true", help="also time the unoptimised path")
    ap.add_argument("--check", action="store_true", help="greedy fp32 equality of fast and reference paths")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    dev_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    result: dict = dict(device=args.device, device_name=dev_name, torch=torch.__version__, dtype=args.dtype,
                        threads=torch.get_num_threads(), python=sys.version.split()[0], cases=[])
    if args.check:
        result["greedy_identical"] = check_greedy_identical(args.device, [d for d in args.decode],
                                                            any(p != "off" for p in args.persistent))
    bw = next((v for k, v in BANDWIDTH.items() if k in dev_name), None)
    for name in args.models:
        model = build(name, dtype, args.device)
        n_params = sum(p.numel() for p in model.decoder.parameters())
        pos = args.position if args.position is not None else model.n_ctx // 2
        for batch in args.batch:
            variants = [(d, w, p, k, False) for w in args.weights for d in args.decode
                        for p in (args.pdl if d == "triton" else ["on"])
                        for k in (args.persistent if d == "triton" else ["off"])]
            variants += [("eager", "native", "on", "off", True)] if args.reference else []
            for decode, weights, pdl, persistent, ref in variants:
                pdl = pdl == "on"
                persistent = persistent if "x" in persistent else persistent == "on"
                try:
                    r = time_decode(model, batch, args.device, pos, args.tokens, args.warmup, decode, ref,
                                    weights=weights, pdl=pdl, persistent=persistent)
                except Exception as e:  # noqa: BLE001 - report and go on with the other cases
                    r = dict(error=f"{type(e).__name__}: {e}"[:300])
                if args.check and decode not in ("eager", "static") and not ref and "error" not in r:
                    try:
                        r.update(compare_logits(model, batch, args.device, pos, decode, weights=weights, pdl=pdl,
                                                persistent=persistent))
                    except Exception as e:  # noqa: BLE001
                        r["check_error"] = f"{type(e).__name__}: {e}"[:300]
                label = "reference" if ref else decode + ("" if weights == "native" else f"/{weights}") + (
                    "" if decode != "triton" or pdl else "/nopdl") + (
                    "" if not persistent else "/persistent" + (f"-{persistent}" if persistent is not True else ""))
                case = dict(model=name, params=n_params, batch=batch, decode=label, weights=weights,
                            position=pos, **r)
                if "seconds_per_step" in r:
                    case["tokens_per_s_per_seq"] = 1.0 / r["seconds_per_step"]
                    case["tokens_per_s_total"] = batch / r["seconds_per_step"]
                    case["weight_bytes_per_step"] = wbytes = weight_bytes(model, weights)
                    if bw:
                        limit = bw / wbytes  # steps/s if each step only read the weights once
                        case["bandwidth_limit_steps_per_s"] = limit
                        case["fraction_of_limit"] = case["tokens_per_s_per_seq"] / limit
                result["cases"].append(case)
                print(json.dumps(case), file=sys.stderr, flush=True)
                if args.json:
                    args.json.write_text(json.dumps(result, indent=1))
        del model
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    for case in result["cases"]:
        ref = next((c for c in result["cases"] if c["model"] == case["model"] and c["batch"] == case["batch"]
                    and c["decode"] == "reference" and "seconds_per_step" in c), None)
        if ref and "seconds_per_step" in case:
            case["speedup_vs_reference"] = ref["seconds_per_step"] / case["seconds_per_step"]
    print(json.dumps(result, indent=1))
    print(f"\n{'model':<20}{'params':>8}{'batch':>6}{'decode':>18}{'tok/s/seq':>11}{'tok/s':>10}{'x ref':>7}"
          f"{'of BW':>7}{'logit err':>11}")
    for c in result["cases"]:
        if "error" in c:
            print(f"{c['model']:<20}{'':>8}{c['batch']:>6}{c['decode']:>18}  {c['error'][:60]}")
            continue
        sp = c.get("speedup_vs_reference")
        fr = c.get("fraction_of_limit")
        le = c.get("logits_rel_err_vs_static")
        print(f"{c['model']:<20}{c['params'] / 1e6:>7.0f}M{c['batch']:>6}{c['decode']:>18}"
              f"{c['tokens_per_s_per_seq']:>11.1f}{c['tokens_per_s_total']:>10.1f}"
              f"{'' if sp is None else f'{sp:.1f}':>7}{'' if fr is None else f'{fr:.0%}':>7}"
              f"{'' if le is None else f'{le:.1e}':>11}")
    for c in result["cases"]:
        for e in c.get("triton_tiles", []):
            print(f"  {c['model']} B{c['batch']} {c['decode']} {e['linear']:>5} {e['N']}x{e['K']} "
                  f"({e['layers']} layers): {e['best']}, step {e['best_step_us']} us")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
