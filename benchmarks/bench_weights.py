"""8-bit weights on the device: decode tokens/s of ``weights=int8|fp8`` against the native weights, and their KL.

    PYTHONPATH=src python benchmarks/bench_weights.py --json weights.json   # one H200: 23-31 s a model without the
        # GEMV tile sweep (--no-gemv-sweep); the sweep adds an untimed amount (one model per call keeps it bounded)

For each released prior (random weights, full size, ``--dtype``, batch ``--batch``): tokens/s per sequence of
``--decode`` steps with native weights (and of the fused ``triton`` step, today's fastest, for reference) and with
``weights=int8`` / ``fp8`` (the dequantising Triton GEMV of :mod:`jukebox.nn.quant` inside a CUDA graph), the
weight bytes one step reads and the bandwidth limit they imply; the KL divergence of teacher-forced next-token
distributions (``--kl-tokens`` positions) against the native weights; with ``--check``, the GEMV against the
dequantised matmul on the device for each linear shape (max relative error) and the 8-bit decode's greedy logits
against the module path with the same 8-bit weights. Prints one JSON object (``--json`` also writes it).

GEMV tiles (CUDA with Triton; ``--no-gemv-sweep`` skips them): for each distinct block linear shape of the model
(``qkv``/``q``, ``proj``, ``fc``, ``out``) and rows = ``--batch``, the 8-bit GEMV is timed for each candidate
``(block_n, block_k, split_k)`` of :func:`jukebox.nn.quant.gemv_candidates` (today's single pass first, the split-K
variants at ``--gemv-splits``, the default rule's pick; fp8 times today's, the default and int8's three fastest):
``--gemv-calls`` calls back to back in one captured CUDA graph, cycling over enough copies of the weights to
exceed twice the L2 cache (so they come from memory, as in a decode step), replayed ``--gemv-reps`` times between
CUDA events; reported per candidate as microseconds per call and GB/s of 8-bit weights and scales, with its
relative error against the dequantised matmul and PyTorch's bf16 ``F.linear`` of the same shape for reference
(``gemv_tiles``). The 8-bit decode is then timed three ways: the default tiles (``int8/graph``), the sweep's
fastest through :data:`jukebox.nn.quant.GEMV_CONFIG` (``int8/graph/best_tiles``, the config in
``gemv_best_config``) and today's single pass everywhere (``int8/graph/single_pass``); the same for fp8.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sampling import BANDWIDTH, build, decoder_inputs, make_inputs, time_decode  # noqa: E402

from jukebox.nn import quant  # noqa: E402
from jukebox.nn.triton_decode import graph_time_ms  # noqa: E402
from jukebox.prior.sampler import sample_autoregressive  # noqa: E402

MODELS = ("upsampler_level_0", "1b_lyrics", "5b_lyrics")


def step_bytes(model, fmt: str) -> int:
    """Weight bytes one decode step reads (block linears at 8 bits + scales for ``fmt``, the rest native)."""
    dec = model.decoder
    total = sum(p.numel() * p.element_size() for p in dec.parameters())
    if fmt == "native":
        return total
    for block in dec.transformer.blocks:
        for lin in quant.block_linears(block):
            total += lin.weight.numel() * (1 - lin.weight.element_size()) + lin.weight.shape[0] * 4
    return total


def linear_shapes(model) -> list[tuple[str, torch.nn.Linear]]:
    """(name, first linear) for each distinct weight shape [N, K] of the decoder's block linears: ``qkv`` (``q`` for
    cross-attention), ``proj`` (attention out), ``fc`` (MLP in), ``out`` (MLP out)."""
    seen: dict[tuple[int, int], tuple[str, torch.nn.Linear]] = {}
    for block in model.decoder.transformer.blocks:
        names = ("q" if block.attn.pattern == "cross" else "qkv", "proj", "fc", "out")
        for name, lin in zip(names, quant.block_linears(block)):
            seen.setdefault(tuple(lin.weight.shape), (name, lin))
    return list(seen.values())


def tile_key(tiles: tuple[int, int, int]) -> str:
    """``block_n x block_k x split_k``."""
    return "x".join(str(t) for t in tiles)


def graph_us(call: Callable[[int], object], calls: int, reps: int) -> float:
    """Microseconds per ``call(i)`` (i = 0 .. calls - 1), the calls captured back to back in one CUDA graph and
    replayed ``reps`` times between CUDA events (no Python launch overhead in the time)."""
    return graph_time_ms(lambda: [call(i) for i in range(calls)], reps) * 1e3 / calls


def _linear_call(x: torch.Tensor, ws: list[torch.Tensor], bias: torch.Tensor | None) -> Callable[[int], object]:
    return lambda i: F.linear(x, ws[i % len(ws)], bias)


def _gemv_call(x: torch.Tensor, qs: list[torch.Tensor], scale: torch.Tensor, bias: torch.Tensor | None,
               tiles: tuple[int, int, int]) -> Callable[[int], object]:
    return lambda i: quant.gemv(x, qs[i % len(qs)], scale, bias, tiles=tiles)


@torch.no_grad()
def sweep_gemv(model, device: str, rows: int, splits: tuple[int, ...], calls: int, reps: int,
               fmts: tuple[str, ...] = ("int8", "fp8"), top: int = 3) -> dict:
    """Device time of the 8-bit GEMV per candidate tile for each distinct block linear shape (see the module
    docstring): {"setup": ..., fmt: [one entry per shape]}."""
    props = torch.cuda.get_device_properties(device)
    sms, l2 = props.multi_processor_count, getattr(props, "L2_cache_size", 64 << 20)
    out: dict = {"setup": {"rows": rows, "sms": sms, "l2_bytes": l2, "calls_per_graph": calls, "reps": reps}}
    fastest: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    for fmt in fmts:
        out[fmt] = []
        for name, lin in linear_shapes(model):
            N, K = lin.weight.shape
            x = torch.randn(rows, K, device=device, dtype=lin.weight.dtype)
            bias = lin.bias
            entry: dict = {"linear": name, "N": N, "K": K, "rows": rows}
            if fmt == fmts[0]:  # PyTorch's F.linear in the model's dtype, the same rotation over copies
                wbytes = lin.weight.numel() * lin.weight.element_size()
                ws = [lin.weight.detach()] + [lin.weight.detach().clone()
                                              for _ in range(min(calls, math.ceil(2 * l2 / wbytes)) - 1)]
                t = graph_us(_linear_call(x, ws, bias), calls, reps)
                entry.update(native_us=round(t, 2), native_GBps=round(wbytes / t / 1e3))
                del ws
            ql = quant.QuantizedLinear(lin, fmt)
            qs = [ql.q] + [ql.q.clone() for _ in range(min(calls, math.ceil(2 * l2 / ql.nbytes)) - 1)]
            entry["copies"] = len(qs)
            ref = x.float() @ quant.dequantize(ql.q, ql.scale).t()
            if bias is not None:
                ref = ref + bias.float()
            today = (*quant.GEMV_TILES[1 << (rows - 1).bit_length()], 1)
            default = quant.gemv_tiles(rows, N, K, sms)
            if fmt == fmts[0]:
                cands = quant.gemv_candidates(rows, N, K, splits, sms)
            else:
                cands = [today, default] + fastest.get((N, K), [])
            cands = list(dict.fromkeys([today, default] + cands))
            us, gbps, err, failed = {}, {}, {}, {}
            for tiles in cands:
                key = tile_key(tiles)
                try:
                    got = quant.gemv(x, ql.q, ql.scale, bias, tiles=tiles).float()
                    err[key] = float((got - ref).norm() / ref.norm())
                    t = graph_us(_gemv_call(x, qs, ql.scale, bias, tiles), calls, reps)
                    us[key], gbps[key] = round(t, 2), round(ql.nbytes / t / 1e3)
                except Exception as e:  # keep the other candidates
                    failed[key] = f"{type(e).__name__}: {e}"[:200]
            good = {k: t for k, t in us.items() if err[k] < 1e-2}
            entry.update(us=us, GBps=gbps, rel_err={k: float(f"{v:.3g}") for k, v in err.items()},
                         today=tile_key(today), today_us=us.get(tile_key(today)),
                         default=tile_key(default), default_us=us.get(tile_key(default)))
            if failed:
                entry["failed"] = failed
            if good:
                best = min(good, key=good.get)
                entry.update(best=best, best_tiles=[int(v) for v in best.split("x")], best_us=good[best],
                             best_GBps=gbps[best])
                if fmt == fmts[0]:
                    order = sorted(good, key=good.get)[:top]
                    fastest[(N, K)] = [tuple(int(v) for v in k.split("x")) for k in order]
            out[fmt].append(entry)
            print(f"gemv {fmt} {name} {N}x{K} rows {rows}: best {entry.get('best')} {entry.get('best_us')} us "
                  f"({entry.get('best_GBps')} GB/s), today {entry['today']} {entry['today_us']} us, default "
                  f"{entry['default']} {entry['default_us']} us, native {entry.get('native_us')} us",
                  file=sys.stderr, flush=True)
            del qs, ql
    return out


def best_config(sweep: dict, fmt: str) -> dict[tuple[int, int, int], tuple[int, int, int]]:
    """:data:`jukebox.nn.quant.GEMV_CONFIG` entries of a sweep's fastest tiles for ``fmt``."""
    rows = sweep["setup"]["rows"]
    block_m = 1 << (rows - 1).bit_length()
    return {(block_m, e["N"], e["K"]): tuple(e["best_tiles"]) for e in sweep.get(fmt, []) if "best_tiles" in e}


def single_pass_config(model, rows: int) -> dict[tuple[int, int, int], tuple[int, int, int]]:
    """:data:`jukebox.nn.quant.GEMV_CONFIG` entries giving every block linear today's single-pass tiles."""
    block_m = 1 << (rows - 1).bit_length()
    tiles = (*quant.GEMV_TILES[block_m], 1)
    return {(block_m, *lin.weight.shape): tiles for _, lin in linear_shapes(model)}


@contextlib.contextmanager
def gemv_config(entries: dict) -> Iterator[None]:
    """:data:`jukebox.nn.quant.GEMV_CONFIG` with ``entries`` added, restored on exit."""
    saved = dict(quant.GEMV_CONFIG)
    quant.GEMV_CONFIG.update(entries)
    try:
        yield
    finally:
        quant.GEMV_CONFIG.clear()
        quant.GEMV_CONFIG.update(saved)


@torch.no_grad()
def kl(model, tokens: int, fmt: str, device: str) -> dict:
    z_cond, y = make_inputs(model, 1, device)
    g = torch.Generator(device=device).manual_seed(1)
    z = torch.randint(0, model.config.l_bins, (1, tokens), generator=g, device=device)
    if z_cond is not None:
        z_cond = z_cond[:, :tokens // model.config.cond_downsample]
    ref = model.logits(z, z_cond, y).double().log_softmax(-1)
    with quant.weight_only_linears(model.decoder.transformer, fmt):
        out = model.logits(z, z_cond, y).double().log_softmax(-1)
    k = (ref.exp() * (ref - out)).sum(-1)
    return {"kl_nats_per_token": float(k.mean()), "kl_max": float(k.max()),
            "top1_agree": float((ref.argmax(-1) == out.argmax(-1)).double().mean())}


@torch.no_grad()
def check_gemv(model, device: str) -> dict:
    out = {}
    for fmt in ("int8", "fp8"):
        worst = 0.0
        blocks = model.decoder.transformer.blocks
        shapes = {tuple(lin.weight.shape): lin for b in blocks for lin in quant.block_linears(b)}
        for (_n, k), lin in shapes.items():
            ql = quant.QuantizedLinear(lin, fmt)
            for rows in (1, 2, 8):
                x = torch.randn(rows, k, device=device, dtype=lin.weight.dtype)
                got = quant.gemv(x, ql.q, ql.scale, ql.bias).float()
                ref = x.float() @ quant.dequantize(ql.q, ql.scale).t() + ql.bias.float()
                worst = max(worst, float((got - ref).norm() / ref.norm()))
        out[fmt] = worst
    return out


@torch.no_grad()
def check_decode(model, device: str, decode: str, fmt: str, steps: int = 8) -> dict:
    dec = model.decoder
    known, start, c, states = decoder_inputs(model, 1, device, 64)
    P = known.shape[1]
    runs = {m: sample_autoregressive(dec, 1, P + steps, known, start, c, states, top_k=1, decode=m, weights=fmt,
                                     return_logits=True) for m in ("module", decode)}
    (ta, la), (tb, lb) = runs["module"], runs[decode]
    a, b = la[:, P:].float(), lb[:, P:].float()
    return {"tokens_equal": bool(torch.equal(ta, tb)), "logits_rel_err": float((a - b).norm() / a.norm())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--decode", default="graph", choices=["graph", "compile", "static", "eager"])
    ap.add_argument("--no-triton", action="store_true", help="skip the native fused triton step")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=16)
    ap.add_argument("--position", type=int, default=1024)
    ap.add_argument("--kl-tokens", type=int, default=1024)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--no-gemv-sweep", action="store_true", help="skip the 8-bit GEMV tile sweep (CUDA only)")
    ap.add_argument("--gemv-splits", type=int, nargs="+", default=[2, 4, 8, 16],
                    help="split_k values of the sweep's candidates (besides today's single pass)")
    ap.add_argument("--gemv-calls", type=int, default=50, help="GEMV calls captured in one CUDA graph")
    ap.add_argument("--gemv-reps", type=int, default=10, help="replays of that graph timed")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor()
    bw = next((v for k, v in BANDWIDTH.items() if k in name), None)
    result = {"device": name, "torch": torch.__version__, "python": platform.python_version(),
              "dtype": args.dtype, "batch": args.batch, "decode": args.decode, "models": []}
    try:
        import triton
        result["triton"] = triton.__version__
    except ImportError:
        result["triton"] = None
    for mname in args.models:
        t0 = time.perf_counter()
        model = build(mname, dtype, device)
        row = {"model": mname, "runs": {}}
        cases = [("native", args.decode, "", {})] + ([("native", "triton", "", {})] if not args.no_triton
                                                     and device == "cuda" and result["triton"] else [])
        cases += [(fmt, args.decode, "", {}) for fmt in ("int8", "fp8")]
        if args.batch > quant.GEMV_MAX_ROWS:
            row["gemv_tiles"] = {"skipped": f"batch above {quant.GEMV_MAX_ROWS}: the 8-bit weights dequantise"}
        elif device == "cuda" and result["triton"] and not args.no_gemv_sweep:
            try:
                row["gemv_tiles"] = sweep_gemv(model, device, args.batch, tuple(args.gemv_splits), args.gemv_calls,
                                               args.gemv_reps)
                row["gemv_best_config"] = {}
                for fmt in ("int8", "fp8"):
                    best = best_config(row["gemv_tiles"], fmt)
                    row["gemv_best_config"][fmt] = {",".join(map(str, k)): list(v) for k, v in best.items()}
                    cases.append((fmt, args.decode, "/best_tiles", best))
                    cases.append((fmt, args.decode, "/single_pass", single_pass_config(model, args.batch)))
            except Exception as e:
                row["gemv_tiles"] = {"error": f"{type(e).__name__}: {e}"[:400]}
        for fmt, decode, suffix, tiles in cases:
            key = f"{fmt}/{decode}{suffix}"
            try:
                with gemv_config(tiles):
                    r = time_decode(model, args.batch, device, args.position, args.tokens, args.warmup, decode,
                                    weights=fmt)
                r["tokens_per_s"] = 1.0 / r["seconds_per_step"]
                r["weight_bytes_per_step"] = step_bytes(model, fmt)
                if bw:
                    r["bandwidth_limit_steps_per_s"] = bw / r["weight_bytes_per_step"]
                    r["pct_of_limit"] = 100 * r["tokens_per_s"] / r["bandwidth_limit_steps_per_s"]
            except Exception as e:  # keep the other cases' numbers
                r = {"error": f"{type(e).__name__}: {e}"[:400]}
            row["runs"][key] = r
            print(mname, key, json.dumps(r)[:300], file=sys.stderr, flush=True)
        for fmt in ("int8", "fp8"):
            try:
                row[f"kl_{fmt}"] = kl(model, min(args.kl_tokens, model.n_ctx), fmt, device)
            except Exception as e:
                row[f"kl_{fmt}"] = {"error": f"{type(e).__name__}: {e}"[:400]}
        if args.check:
            try:
                row["gemv_rel_err"] = check_gemv(model, device)
                row["decode_vs_module"] = {f: check_decode(model, device, args.decode, f) for f in ("int8", "fp8")}
            except Exception as e:
                row["check_error"] = f"{type(e).__name__}: {e}"[:400]
        if device == "cuda":
            row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
        row["seconds"] = time.perf_counter() - t0
        result["models"].append(row)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
