"""Registers and spills of the persistent decode kernel compiled for a GPU architecture, on any machine (no GPU).

    python benchmarks/kernel_resources.py                                  # batch 1, 16, 64; bf16 and int8
    python benchmarks/kernel_resources.py --batch 16 --rows 16 --warps 8 --chunk 64
    python benchmarks/kernel_resources.py --batch 1 3 --rows 64 --width 4800 1200 4800 --head-dim 150   # 5b_lyrics

Compiles :func:`jukebox.nn.triton_persistent._step_kernel` with Triton (which ships ptxas) for ``--arch`` at the
released upsampler's widths and prints registers per thread and bytes spilled to local memory per thread, as
``cuobjdump --dump-resource-usage`` reports them. A kernel that spills reads and writes local memory in every phase.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile

os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from jukebox.nn import triton_persistent as tp  # noqa: E402


def compiled_resources(batch: int = 1, rows: int = 16, num_warps: int | None = None, chunk: int | None = None,
                       weights: str = "native", width: int = 2048, attn_width: int = 512, mlp_width: int = 2048,
                       head_dim: int = 64, arch: int = 90) -> dict[str, int]:
    """Registers per thread and bytes of local memory per thread (spills) of :func:`tp._step_kernel` compiled for
    ``sm_{arch}`` with bf16 activations, no GPU needed (Triton ships ptxas and cuobjdump): ``{"registers",
    "stack"}``."""
    block_b = 1 if batch == 1 else max(16, triton.next_power_of_2(batch))
    chunk = tp.default_chunk(block_b, rows) if chunk is None else chunk
    nxt = triton.next_power_of_2

    def k(n: int) -> int:
        return nxt(n) if not chunk else min(nxt(n), chunk)

    wt = {"native": "*bf16", "int8": "*i8", "fp8": "*fp8e4nv"}[weights]
    sig = {"tab": "*i64", "eps_ptr": "*fp32", "x_ptr": "*bf16", "h_ptr": "*bf16", "q_ptr": "*bf16", "a_ptr": "*bf16",
           "g_ptr": "*bf16", "pos_ptr": "*i64", "bar_ptr": "*i32", "wt_ptr": wt, "s_ptr": "*fp32", "B": "i32",
           "n_layers": "i32", "W": "i32", "S": "i32", "F": "i32", "H": "i32", "D": "i32", "scale": "fp32",
           "NPROG": "i32", "PH_LO": "i32", "PH_HI": "i32", "L_LO": "i32", "L_HI": "i32"}
    consts = dict(NC=tp.NCOL, HAS_SCALE=weights != "native", L2=True, SYNC=True, R=rows, BB=block_b, BD=nxt(head_dim),
                  BLOCK_N=max(16, min(64, 16384 // nxt(head_dim))), KW=k(width), KS=k(attn_width), KF=k(mlp_width),
                  DOT=block_b > 1, DOT_F32=False)
    sig.update({name: "constexpr" for name in consts})
    compiled = triton.compile(ASTSource(fn=tp._step_kernel, signature=sig, constexprs=consts),
                              target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": num_warps or tp.NUM_WARPS, "num_stages": 1,
                                       "launch_cooperative_grid": True})
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        out = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True, check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", out)
    if m is None:
        raise RuntimeError(f"no resource usage in cuobjdump's output: {out[:200]!r}")
    return {"registers": int(m.group(1)), "stack": int(m.group(2))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--weights", nargs="+", default=["native", "int8"], choices=["native", "int8", "fp8"])
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--warps", type=int, default=None, help=f"default {tp.NUM_WARPS}")
    ap.add_argument("--chunk", type=int, default=None, help="input chunk (default: tp.default_chunk; 0: whole rows)")
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--head-dim", type=int, default=64, help="attention head size (5b_lyrics: 150)")
    ap.add_argument("--width", type=int, nargs=3, default=[2048, 512, 2048], metavar=("W", "ATTN", "MLP"),
                    help="widths of the model, its attention and its MLP (default: 1b_lyrics' sizes, the widest "
                         "layers of 2,048 the upsamplers share)")
    args = ap.parse_args()
    for batch in args.batch:
        for weights in args.weights:
            r = compiled_resources(batch=batch, rows=args.rows, num_warps=args.warps, chunk=args.chunk,
                                   weights=weights, width=args.width[0], attn_width=args.width[1],
                                   mlp_width=args.width[2], head_dim=args.head_dim, arch=args.arch)
            print(json.dumps(dict(batch=batch, weights=weights, rows=args.rows, warps=args.warps or tp.NUM_WARPS,
                                  chunk=args.chunk, arch=args.arch, **r)))


if __name__ == "__main__":
    main()
