#!/usr/bin/env python3
"""Does a top prior keep the rhythm of real music it continues? (issue 9's rhythm diagnosis, session 6)

Windows of real top-level codes are taken from a portable code folder (`jukebox prepare --codes`, or
``recipes/codes_from_npy.py``): the first ``--prime-seconds`` prime the prior, which then samples the rest of one
context (``prior.sample`` with each window's true artist, genre and timing labels). Reported per temperature:

- ``agreement``: the share of continued tokens equal to the real ones (a prior that reproduces the track: ~1);
- ``pulse``: pulse clarity of the continued part decoded from the top level (the highest normalised onset
  autocorrelation between 40 and 240 BPM, as in ``eval_conditioning.py``), against the real continuation's;
- the teacher-forced bits per token of the real windows (true labels, and labels at offset 0);
- with ``--context-use``: how far back the prior looks. Bits per token on the last quarter of each window when
  every code before the last k real ones is replaced by a random code (k = all, 512, 128, 16, 0; k = 0 leaves
  only the scored quarter itself real). Session 7: the shipped top prior gains 0.25 bits from everything before
  the scored quarter (7.98 -> 7.73) and 0.09 from the 496 codes before the last 16, so it is nearly a local model.

    python research/scripts/eval_continuation.py -m src/jukebox/assets/default_model --codes CODE_FOLDER --tracks 12 \\
        [--windows-per-track 2] [--prime-seconds 3] [--temperature 0.98 0.5] [--device cuda] [--out-json R.json]

Session 6 found that every prior tried, including one that memorised 12 tracks to 0.49 bits per token, loses
the pulse at once (real 0.40 -> about 0.2) and reproduces only 3-6% of the tokens (docs/default-model.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_conditioning import spectral_summary  # noqa: E402


def pick_windows(cache, manifest, level: int, n_ctx: int, tracks: int, per_track: int, seed: int):
    """[(track, start token)] from ``tracks`` tracks long enough for ``per_track`` windows of ``n_ctx`` codes,
    evenly spaced between 20% and 80% of each track."""
    usable = [t for t in manifest.tracks if cache.tracks[t.path].length[level] >= 2 * n_ctx]
    rng = np.random.default_rng(seed)
    chosen = [usable[i] for i in sorted(rng.permutation(len(usable))[:tracks])]
    out = []
    for t in chosen:
        n = cache.tracks[t.path].length[level]
        for f in np.linspace(0.2, 0.8, per_track + 2)[1:-1] if per_track > 1 else [0.5]:
            out.append((t, min(int(n * f), n - n_ctx)))
    return out


def context_use(prior, z: torch.Tensor, y: torch.Tensor, l_bins: int, seed: int) -> dict[str, float]:
    """Bits per token on the last quarter of windows z [B, n_ctx] when all codes before the last k real ones are
    random: {k: bits} for k in all / 512 / 128 / 16 / 0 (counted back from the start of the scored quarter)."""
    n = z.shape[1]
    start = n - n // 4
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k in (None, 512, 128, 16, 0):
        zi = z.clone()
        if k is not None and start - k > 0:
            zi[:, :start - k] = torch.randint(0, l_bins, (z.shape[0], start - k), generator=gen).to(z.device)
        with torch.no_grad():
            logits = prior.logits(z, None, y, z_input=zi)
        ce = F.cross_entropy(logits.float().transpose(1, 2), z, reduction="none")[:, start:]
        out["all" if k is None else str(k)] = round(ce.mean().item() / np.log(2), 4)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default=None, help="model directory (default: the embedded default model)")
    ap.add_argument("--codes", required=True, help="a code folder holding the top level (with its manifest)")
    ap.add_argument("--tracks", type=int, default=12)
    ap.add_argument("--windows-per-track", type=int, default=2)
    ap.add_argument("--prime-seconds", type=float, default=3.0)
    ap.add_argument("--eval-seconds", type=float, default=None,
                    help="judge only the first seconds of the continuation (default: all of it; use the same value "
                         "to compare top levels of different hops)")
    ap.add_argument("--temperature", type=float, nargs="+", default=[0.98, 0.5])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--context-use", action="store_true", help="also report bits per token with the far context "
                    "replaced by random codes (see above)")
    ap.add_argument("--out-json", default=None)
    args = ap.parse_args(argv)

    import jukebox
    from jukebox.data.code_cache import CodeCache

    model = jukebox.load_model(args.model, device=args.device)
    top = model.top_level
    prior, labeller = model.prior(top), model.labeller(top)
    hop, n_ctx = model.hop_lengths[top], prior.n_ctx
    cache = CodeCache(args.codes)
    cache.require_levels(top)
    windows = pick_windows(cache, cache.manifest(), top, n_ctx, args.tracks, args.windows_per_track, args.seed)
    if not windows:
        raise SystemExit(f"error: no track in {args.codes} holds two contexts ({2 * n_ctx} codes) at level {top}")
    z = torch.from_numpy(np.stack([cache.codes(t.path, top)[s:s + n_ctx].astype(np.int64) for t, s in windows]))
    z = z.to(model.device)
    prime = int(args.prime_seconds * model.sample_rate) // hop
    if not 0 < prime < n_ctx:
        raise SystemExit(f"error: --prime-seconds must leave part of the {n_ctx * hop / model.sample_rate:.1f}-s "
                         "context to sample")

    def labels(true: bool) -> torch.Tensor:
        metas = [dict(artist=t.artist, genre=t.genre, lyrics="", offset=s * hop if true else 0,
                      total_length=cache.tracks[t.path].total_length) for t, s in windows]
        return labeller.batch_labels(metas, device=model.device, warn=False).y

    end = n_ctx if args.eval_seconds is None else min(n_ctx, prime + int(args.eval_seconds * model.sample_rate) // hop)

    def pulse(codes: torch.Tensor) -> float:
        audio = model.decode({top: codes[:, prime:end].cpu()}, top)[:, 0].numpy()
        return float(spectral_summary(audio, model.sample_rate)["pulse_clarity"].mean())

    report = {"model": str(model.model_dir.path), "codes": args.codes, "windows": len(windows),
              "prime_tokens": prime, "judged_tokens": end - prime, "n_ctx": n_ctx, "hop": hop,
              "real_pulse": round(pulse(z), 4), "sampled": []}
    y = labels(True)
    with torch.no_grad():
        for name, lab in (("true_labels", y), ("offset0_labels", labels(False))):
            logits = prior.logits(z, None, lab)
            bits = F.cross_entropy(logits.float().transpose(1, 2), z).item() / np.log(2)
            report["teacher_forced_bits_" + name] = round(bits, 4)
    if args.context_use:
        report["context_use_bits"] = context_use(prior, z, y, prior.config.l_bins, args.seed)
    for temp in args.temperature:
        gen = torch.Generator(device=model.device).manual_seed(args.seed)
        out = prior.sample(len(windows), y=y, prime=z[:, :prime], sample_tokens=n_ctx, temperature=temp,
                           generator=gen)
        agree = (out[:, prime:end] == z[:, prime:end]).float().mean().item()
        report["sampled"].append({"temperature": temp, "agreement": round(agree, 4), "pulse": round(pulse(out), 4)})
    print(json.dumps(report, indent=1))
    if args.out_json:
        Path(args.out_json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
