"""Where a decode step's time goes on the GPU: kernels per step, GPU time per step, the top kernels.

    python benchmarks/profile_decode.py --models upsampler_level_0 5b_lyrics --dtype bfloat16 --decode static graph
    python benchmarks/profile_decode.py --models upsampler_level_0 --decode graph triton   # + the fused Triton step

For each model and decode mode, runs :func:`jukebox.prior.sampler.sample_autoregressive` for ``--tokens`` steps after
a prefill of half the context under ``torch.profiler`` (CUDA activity) and reports: wall seconds per step (profiled,
so eager CPU-side numbers are inflated), GPU kernel time per step (the sum of kernel durations: what the step would
cost with zero launch gaps), kernels per step, and the kernels with the most total time, grouped by name. The ratio
of wall to kernel time shows how much of the step is launch/latency gaps rather than work. Prints JSON; ``--json``
writes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sampling import build, decode_mode, make_inputs  # noqa: E402

from jukebox.prior.sampler import sample_autoregressive  # noqa: E402


@torch.no_grad()
def run(model, batch: int, tokens: int, decode: str, device: str) -> dict:
    z_cond, y = make_inputs(model, batch, device)
    cond = model.conditioning(z_cond, y)
    dec = model.decoder
    position = dec.n_ctx // 2
    g = torch.Generator(device=device).manual_seed(0)
    prime = torch.randint(0, model.config.l_bins, (batch, position), generator=g, device=device)
    c, states = cond.cond, None
    if model.style == "merged":
        known, c = model.merged_sequence(cond.lyrics, prime, c)
    else:
        known = prime
        if model.style == "encoder_decoder":
            states = model.encode_lyrics(cond.lyrics)
    P = known.shape[1]

    def go(n: int) -> float:
        mode, ctx = decode_mode(decode)  # "triton": the graph mode with the fused step
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with ctx:
            sample_autoregressive(dec, batch, P + n, known, cond.start, c, states, top_k=0, decode=mode, generator=g)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    go(8)  # warm-up (graph capture, compile)
    t_small = go(8)
    t_big = go(8 + tokens)
    per_step_unprofiled = (t_big - t_small) / tokens
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        go(8 + tokens)
    with profile(activities=[ProfilerActivity.CUDA]) as prof_small:
        go(8)
    def kernels(p):
        out = defaultdict(lambda: [0, 0.0])
        for e in p.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                k = out[e.name]
                k[0] += 1
                k[1] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
        return out
    big, small = kernels(prof), kernels(prof_small)
    diff = {n: (big[n][0] - small.get(n, [0, 0.0])[0], big[n][1] - small.get(n, [0, 0.0])[1]) for n in big}
    n_k = sum(v[0] for v in diff.values()) / tokens
    t_k = sum(v[1] for v in diff.values()) / tokens / 1e6
    top = sorted(diff.items(), key=lambda kv: -kv[1][1])[:25]
    return dict(decode=decode, batch=batch, tokens=tokens, wall_s_per_step=per_step_unprofiled,
                kernel_s_per_step=t_k, kernels_per_step=n_k,
                gap_share=1 - t_k / per_step_unprofiled if per_step_unprofiled > 0 else None,
                top_kernels=[dict(name=n[:120], per_step=c / tokens, us_per_step=t / tokens) for n, (c, t) in top])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["upsampler_level_0"])
    ap.add_argument("--decode", nargs="+", default=["static", "graph"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--top", type=int, default=12, help="kernels printed per run")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    dtype = getattr(torch, a.dtype)
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "runs": {}}
    for name in a.models:
        model = build(name, dtype, "cuda")
        for d in a.decode:
            r = run(model, a.batch, a.tokens, d, "cuda")
            res["runs"][f"{name}/{d}"] = r
            print(f"{name}/{d}: {1 / r['wall_s_per_step']:.1f} tok/s, kernel time {r['kernel_s_per_step'] * 1e3:.2f} ms"
                  f"/step ({r['kernels_per_step']:.0f} kernels), wall {r['wall_s_per_step'] * 1e3:.2f} ms", flush=True)
            for k in r["top_kernels"][:a.top]:
                print(f"   {k['us_per_step']:9.1f} us  x{k['per_step']:6.1f}  {k['name']}", flush=True)
        del model
        torch.cuda.empty_cache()
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
