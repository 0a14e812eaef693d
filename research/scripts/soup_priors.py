"""Interpolate two fine-tunes of the same prior (a weight "soup"): ``(1 - alpha) * A + alpha * B`` for every tensor,
written as a prior folder with B's config, labels and tempi (int8 matrices, as the embedded model stores them).

Both priors must come from one lineage (B fine-tuned from A, as v6 from v5), so that their weights lie in one
basin. Tensors whose first dimension grew in B (an artist table extended with new artists) take B's rows past A's
and interpolate the rest.

    python research/scripts/soup_priors.py A_PRIOR_DIR B_PRIOR_DIR OUT_PRIOR_DIR --alpha 0.5
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from jukebox.checkpoint.format import load_weights, quantize_for_storage, save_weights

KEEP = ("config.json", "labels.json", "tempi.json")


def soup(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * a + alpha * b`` per tensor (non-float tensors: b's); b's extra leading rows kept."""
    if set(a) != set(b):
        raise SystemExit(f"the priors differ in tensors: {sorted(set(a) ^ set(b))[:5]}")
    out = {}
    for name, tb in b.items():
        ta = a[name]
        if not tb.is_floating_point():
            out[name] = tb
            continue
        mix = tb.float().clone()
        if ta.shape != tb.shape:
            if ta.shape[1:] != tb.shape[1:] or ta.shape[0] > tb.shape[0]:
                raise SystemExit(f"{name}: shapes {tuple(ta.shape)} and {tuple(tb.shape)} do not mix")
            n = ta.shape[0]
            mix[:n] = (1 - alpha) * ta.float() + alpha * tb[:n].float()
        else:
            mix = (1 - alpha) * ta.float() + alpha * tb.float()
        out[name] = mix.half()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of B (0: A, 1: B)")
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; choose a new folder")
    args.out.mkdir(parents=True)
    for name in KEEP:
        if (args.b / name).exists():
            shutil.copy2(args.b / name, args.out / name)
    sd = soup(load_weights(args.a), load_weights(args.b), args.alpha)
    save_weights(args.out, quantize_for_storage(sd))
    print(f"wrote {args.out}: {len(sd)} tensors, alpha {args.alpha}")


if __name__ == "__main__":
    main()
