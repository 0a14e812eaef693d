"""``jukebox encode``, ``jukebox decode`` and ``jukebox reconstruct``: the VQ-VAE from the command line."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..fileio import display
from ..loudness import DEFAULT_LUFS
from .common import add_device_arg, check_codes_range, load_codes_file, output_path, resolve_device
from .sample import loudness_arg

AUDIO_OUT = (".wav", ".flac")
#: The shortest audio ``reconstruct`` measures: its spectral metrics take 2048-point FFTs (centred, so more than
#: half a window of samples).
RECONSTRUCT_MIN_SAMPLES = 1025


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="encode audio into VQ-VAE codes (.npz with level_0, level_1, level_2)")
    p.add_argument("-m", "--model", required=True, help="model directory")
    p.add_argument("input", help="audio file (wav, flac, ogg, opus, mp3)")
    p.add_argument("-o", "--output", required=True, help="codes file to write (.npz)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    add_device_arg(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decode VQ-VAE codes (.npz) into audio")
    p.add_argument("-m", "--model", required=True, help="model directory")
    p.add_argument("codes", help="codes file written by `jukebox encode` or `jukebox sample`")
    p.add_argument("--level", type=int, default=None, help="level to decode from (default: the lowest present)")
    p.add_argument("-o", "--output", required=True, help="audio file to write (.wav or .flac); several items "
                   "are written as NAME_0.wav, NAME_1.wav, ...")
    p.add_argument("--loudness", type=loudness_arg, default=DEFAULT_LUFS, metavar="LUFS",
                   help="bring each item to this loudness (ITU-R BS.1770), true peak at most -1 dBTP, with a soft "
                   "limiter (default: %(default)s; 'off' writes the raw decode)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    add_device_arg(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("reconstruct", help="encode and decode audio through one level; print the error")
    p.add_argument("-m", "--model", required=True, help="model directory")
    p.add_argument("input", help="audio file")
    p.add_argument("--level", type=int, required=True, help="level to go through (0 = finest)")
    p.add_argument("-o", "--output", required=True, help="audio file to write (.wav or .flac)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_device_arg(p)
    p.set_defaults(func=cmd_reconstruct)


def _load_vqvae(args: argparse.Namespace):
    from ..checkpoint.model_dir import ModelDir

    device = resolve_device(args.device)
    return ModelDir(args.model).load_vqvae(device), device


def _load_input(path: str, vqvae, device):
    import torch

    from ..audio import load_audio

    audio, _ = load_audio(path, sample_rate=vqvae.config.sample_rate)
    return torch.from_numpy(audio)[None, None].to(device)  # [1, 1, T]


def _check_level(level: int, n_levels: int) -> None:
    if not 0 <= level < n_levels:
        raise UsageError(f"--level must be between 0 and {n_levels - 1}, got {level}")


def cmd_encode(args: argparse.Namespace) -> int:
    from ..codec import encode_audio

    out = output_path(args.output, args.force, (".npz",))
    vqvae, device = _load_vqvae(args)
    x = _load_input(args.input, vqvae, device)
    codes = encode_audio(vqvae, x)
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"level_{lvl}": c[0].cpu().numpy().astype(np.int64) for lvl, c in enumerate(codes)})
    from ..atomic import atomic_write_bytes

    atomic_write_bytes(out, buf.getvalue(), replace=args.force)  # a file that appeared meanwhile is kept
    shapes = ", ".join(f"level_{lvl} {tuple(c.shape[1:])}" for lvl, c in enumerate(codes))
    print(f"wrote {out} ({shapes})")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    import torch

    from ..audio import save_audio
    from ..codec import check_decode_size, decode_codes

    vqvae, device = _load_vqvae(args)
    codes = load_codes_file(args.codes)
    level = min(codes) if args.level is None else args.level
    _check_level(level, vqvae.config.levels)
    if level not in codes:
        raise UsageError(f"{args.codes} has no level_{level} (levels present: {sorted(codes)})")
    arr = codes[level]
    check_codes_range(arr, vqvae.config.l_bins, f"{args.codes} level_{level}")
    check_decode_size(arr.shape[0], arr.shape[1], vqvae.config.hop_lengths[level], vqvae.config.sample_rate,
                      f"{display(args.codes)} level_{level}")  # before any decoding
    out = Path(args.output)
    outs = [out] if arr.shape[0] == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(arr.shape[0])]
    for o in outs:
        output_path(o, args.force, AUDIO_OUT)
    audio = decode_codes(vqvae, torch.from_numpy(arr).to(device), level).float().cpu()  # [B, 1, T]
    sr = vqvae.config.sample_rate
    for i, o in enumerate(outs):
        item, note = audio[i], ""
        if args.loudness is not None:
            from ..loudness import normalize_loudness

            item, info = normalize_loudness(item, sr, args.loudness)
            note = (f", {info['input_lufs']:.1f} -> {info['output_lufs']:.1f} LUFS, true peak "
                    f"{info['output_true_peak_db']:.1f} dBTP" if info["applied"] else f", loudness left as is: "
                    f"{info['reason']}")
        save_audio(item, o, sr, force=args.force)
        print(f"wrote {o} ({audio.shape[-1] / sr:.2f} s from level {level}{note})")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from ..audio import save_audio
    from ..codec import decode_codes, encode_audio
    from ..eval.reconstruction import reconstruction_metrics

    out = output_path(args.output, args.force, AUDIO_OUT)
    vqvae, device = _load_vqvae(args)
    _check_level(args.level, vqvae.config.levels)
    x = _load_input(args.input, vqvae, device)
    need = max(RECONSTRUCT_MIN_SAMPLES, vqvae.config.hop_lengths[args.level])
    if x.shape[-1] < need:
        raise UsageError(f"{display(args.input)}: {x.shape[-1]} samples at {vqvae.config.sample_rate} Hz is too short "
                         f"to measure; reconstruct needs at least {need} samples "
                         f"({need / vqvae.config.sample_rate:.3f} s)")
    codes = encode_audio(vqvae, x, end_level=args.level + 1)
    y = decode_codes(vqvae, codes[args.level], args.level)
    n = min(x.shape[-1], y.shape[-1])
    if n < RECONSTRUCT_MIN_SAMPLES:
        raise UsageError(f"{display(args.input)}: only {n} samples come back through level {args.level}; reconstruct "
                         f"needs at least {RECONSTRUCT_MIN_SAMPLES} to measure")
    metrics = reconstruction_metrics(x[..., :n], y[..., :n], vqvae.config.sample_rate)
    save_audio(y[0, :, :n], out, vqvae.config.sample_rate, force=args.force)
    if args.json:
        print(json.dumps({"level": args.level, "output": str(out), **metrics}))
    else:
        print(f"wrote {out}; level {args.level}: spectral convergence {metrics['spectral_convergence_db']:.2f} dB")
    return 0
