#!/usr/bin/env python3
"""Export a trained model directory for shipping: weights in fp16 (or, with ``--weights int8``, every large matrix in
int8 with per-row scales: about half the bytes), no training state, optionally as a tar split into parts (for
copies that limit the size of a file).

    python recipes/export_model.py runs/default OUT_DIR [--weights int8] [--tar-parts-mb 15]
    python recipes/export_model.py --join OUT_DIR/default_model.tar.part* DEST_DIR   # unpack parts here
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from jukebox.checkpoint.format import load_weights, quantize_for_storage, save_weights  # noqa: E402

KEEP = ("model.json", "config.json", "labels.json", "tempi.json")


EMBEDDED = Path(__file__).resolve().parents[1] / "src" / "jukebox" / "assets" / "default_model"


def export(src: Path, dst: Path, weights: str = "fp16", conv_levels: tuple[int, ...] = ()) -> None:
    """Copy ``src``'s model directory to ``dst`` with fp16 weights (``weights="int8"``: the priors' matrices in int8,
    the rest fp16; ``"int8-conv"``: the priors' convolution weights too; the VQ-VAE stays fp16). model.json keeps its
    ``sampling`` defaults; a model trained from scratch has none, and gets the embedded model's (the settings measured
    on the CPU in docs/performance.md), so a re-exported default model samples as fast as the one it replaces.
    ``conv_levels``: with ``"int8"``, the priors of these levels get their convolution weights in int8 as well (the
    embedded model's level-1 upsampler, whose conditioner is most of its weights)."""
    dst.mkdir(parents=True, exist_ok=True)
    meta = json.loads((src / "model.json").read_text(encoding="utf-8"))
    if "sampling" not in meta and (EMBEDDED / "model.json").exists():
        embedded = json.loads((EMBEDDED / "model.json").read_text(encoding="utf-8"))
        if "sampling" in embedded:
            meta["sampling"] = embedded["sampling"]
            print(f"model.json: sampling defaults taken from the embedded model: {meta['sampling']}")
    (dst / "model.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    for comp in sorted(p for p in src.iterdir() if p.is_dir() and (p / "config.json").exists()):
        out = dst / comp.name
        out.mkdir(exist_ok=True)
        for name in KEEP:
            if (comp / name).exists():
                shutil.copy2(comp / name, out / name)
        sd = {k: v.half() if v.is_floating_point() else v for k, v in load_weights(comp).items()}
        if weights.startswith("int8") and comp.name.startswith("prior_level_"):
            level = int(comp.name.rsplit("_", 1)[1])
            sd = quantize_for_storage(sd, convolutions=weights == "int8-conv" or level in conv_levels)
        save_weights(out, sd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--tar-parts-mb", type=float, default=0, help="write OUT/default_model.tar.partNN instead")
    ap.add_argument("--weights", choices=("fp16", "int8", "int8-conv"), default="fp16",
                    help="int8: the priors' matrices in int8 with per-row scales (about half the bytes); int8-conv: "
                         "their convolution weights too (the upsamplers' conditioners), one scale per output channel")
    ap.add_argument("--conv-levels", type=int, nargs="+", default=[], metavar="L",
                    help="with --weights int8: the convolutions of these levels' priors in int8 too")
    ap.add_argument("--join", action="store_true", help="join tar parts (all but the last path) into DEST")
    args = ap.parse_args()
    if args.conv_levels and args.weights != "int8":
        ap.error("--conv-levels goes with --weights int8")
    if args.join:
        *parts, dest = args.paths
        data = b"".join(Path(p).read_bytes() for p in sorted(parts))
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(dest, filter="data")
        print(f"unpacked {len(parts)} parts into {dest}")
        return
    src, dst = Path(args.paths[0]), Path(args.paths[1])
    if not args.tar_parts_mb:
        export(src, dst, args.weights, tuple(args.conv_levels))
        print(f"exported {src} -> {dst}")
        return
    tmp = dst / "_export"
    export(src, tmp, args.weights, tuple(args.conv_levels))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(tmp, arcname="default_model")
    shutil.rmtree(tmp)
    data, size = buf.getvalue(), int(args.tar_parts_mb * 1024 * 1024)
    for i in range(0, len(data), size):
        (dst / f"default_model.tar.part{i // size:02d}").write_bytes(data[i:i + size])
    print(f"exported {src} -> {dst} as {(len(data) + size - 1) // size} part(s), {len(data) / 1e6:.1f} MB")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
