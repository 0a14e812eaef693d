"""Time per hop of the top level's windowed sampling on a CPU (the embedded default model by default).

    python benchmarks/bench_top_hops.py --seconds 10 60 --json hops.json

Samples the top level only (``levels=[top]``, the model's own settings, ``--seed``) and times every window of
:func:`jukebox.prior.sampler.sample_autoregressive`: its re-prefill (the known tokens of the window run through the
model to fill the KV cache) and its decode steps (the new tokens). Prints one JSON object with per-hop means and
a hash of the codes (equal hashes: the same samples)."""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_song import hop_summary, time_sampler_calls  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("--seconds", nargs="+", type=float, default=[10.0, 60.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--weights", default=None, choices=["native", "int8", "fp8"])
    args = ap.parse_args()

    from jukebox.api import load_model

    model = load_model(args.model, device=args.device)
    top = model.top_level
    calls: list[dict] = []
    time_sampler_calls(calls, torch.device(args.device).type == "cuda")
    result = {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
              "level": top, "runs": []}
    for seconds in args.seconds:
        calls.clear()
        t0 = time.perf_counter()
        gen = model.generate(seconds=seconds, levels=[top], seed=args.seed, alignment=False, loudness=None,
                             weights=args.weights)
        total = time.perf_counter() - t0
        codes = gen.codes[top].numpy()
        summary = hop_summary(calls)
        run = {"seconds": seconds, "tokens": int(codes.shape[-1]), "windows": summary["calls"],
               "hops": summary["hops"], "wall_s": round(total, 2),
               "sampling_s": round(sum(r.seconds for r in gen.reports), 2),
               "codes_sha1": hashlib.sha1(codes.tobytes()).hexdigest()[:16]}
        if "per_hop" in summary:
            run["per_hop"] = summary["per_hop"]
            run["per_hop"]["total_s"] = round(run["per_hop"]["prefill_s"] + run["per_hop"]["tokens_s"], 4)
        print(json.dumps(run), file=sys.stderr)
        result["runs"].append(run)
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
