"""Registers and spills of the persistent decode kernel compiled for a GPU architecture, on any machine (no GPU).

    python benchmarks/kernel_resources.py                                  # batch 1, 16, 64; bf16 and int8
    python benchmarks/kernel_resources.py --batch 16 --rows 16 --warps 8 --chunk 64

Compiles :func:`jukebox.nn.triton_persistent._step_kernel` with Triton (which ships ptxas) for ``--arch`` at the
released upsampler's widths and prints registers per thread and bytes spilled to local memory per thread, as
``cuobjdump --dump-resource-usage`` reports them. A kernel that spills reads and writes local memory in every phase.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

from jukebox.nn import triton_persistent as tp  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--weights", nargs="+", default=["native", "int8"], choices=["native", "int8", "fp8"])
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--warps", type=int, default=None, help=f"default {tp.NUM_WARPS}")
    ap.add_argument("--chunk", type=int, default=None, help="input chunk (default: tp.default_chunk; 0: whole rows)")
    ap.add_argument("--arch", type=int, default=90)
    args = ap.parse_args()
    for batch in args.batch:
        for weights in args.weights:
            r = tp.compiled_resources(batch=batch, rows=args.rows, num_warps=args.warps, chunk=args.chunk,
                                      weights=weights, arch=args.arch)
            print(json.dumps(dict(batch=batch, weights=weights, rows=args.rows, warps=args.warps or tp.NUM_WARPS,
                                  chunk=args.chunk, arch=args.arch, **r)))


if __name__ == "__main__":
    main()
