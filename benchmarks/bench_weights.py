"""8-bit weights on the device: decode tokens/s of ``weights=int8|fp8`` against the native weights, and their KL.

    PYTHONPATH=src python benchmarks/bench_weights.py --json weights.json          # one H200: ~5 minutes

For each released prior (random weights, full size, ``--dtype``, batch ``--batch``): tokens/s per sequence of
``--decode`` steps with native weights (and of the fused ``triton`` step, today's fastest, for reference) and with
``weights=int8`` / ``fp8`` (the dequantising Triton GEMV of :mod:`jukebox.nn.quant` inside a CUDA graph), the
weight bytes one step reads and the bandwidth limit they imply; the KL divergence of teacher-forced next-token
distributions (``--kl-tokens`` positions) against the native weights; with ``--check``, the GEMV against the
dequantised matmul on the device for each linear shape (max relative error) and the 8-bit decode's greedy logits
against the module path with the same 8-bit weights. Prints one JSON object (``--json`` also writes it).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sampling import BANDWIDTH, build, decoder_inputs, make_inputs, time_decode  # noqa: E402

from jukebox.nn import quant  # noqa: E402
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
        cases = [("native", args.decode)] + ([("native", "triton")] if not args.no_triton and device == "cuda"
                                              and result["triton"] else []) + [("int8", args.decode),
                                                                               ("fp8", args.decode)]
        for fmt, decode in cases:
            key = f"{fmt}/{decode}"
            try:
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
