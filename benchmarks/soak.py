"""Soak test: generate for a given time with varied inputs and report failures and memory growth as JSON.

    python benchmarks/soak.py --minutes 30                 # tiny random model (fast, many requests)
    python benchmarks/soak.py --minutes 30 --model default # the embedded default model

Each request draws a random mode (ancestral, continue, upsample, draft top level only), length, artist, genre,
lyrics (ASCII, emoji, CJK, RTL, control characters), seed, temperature and top-p. Expected refusals (UsageError)
are counted apart; anything else that escapes is a failure. RSS is sampled after every request; ``rss_growth_mb``
compares the median of the last quarter of samples with the median of the second quarter (after warm-up).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

LYRICS = ["", "la la la", "🎵🎶 love 💖", "我爱你 日本語の歌詞", "שלום עולם مرحبا", "a\x01\x02\x1b[31mred\x00",
          "x" * 2000,
          "Hello darkness my old friend\nI've come to talk with you again"]


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            import os

            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--model", default="tiny", help="'tiny' (random tiny model), 'default' or a model directory")
    p.add_argument("--max-seconds", type=float, default=None, help="longest song asked for (default: per model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = p.parse_args(argv)

    import torch

    from jukebox.api import load_model
    from jukebox.errors import UsageError
    from jukebox.testing import ARTISTS, GENRES, make_tiny_model_dir

    torch.set_num_threads(max(1, torch.get_num_threads()))
    tmp = tempfile.TemporaryDirectory()
    if args.model == "tiny":
        path = make_tiny_model_dir(Path(tmp.name) / "tiny", lyrics="encoder_decoder").path
        max_s = args.max_seconds or 0.08
        artists, genres = list(ARTISTS) + ["Nobody Known"], list(GENRES) + ["polka jazz"]
    else:
        path = None if args.model == "default" else args.model
        max_s = args.max_seconds or 1.0
        artists, genres = ["unknown", "Nobody Known"], ["unknown", "zzz"]
    model = load_model(path, device="cpu")
    if model.vocab() is not None:
        artists += model.vocab().list_artists()[:5]
        genres += model.vocab().list_genres()[:5]
    rng = random.Random(args.seed)
    top = model.top_level
    min_s = max(model.hop_lengths[lvl] * model.model_dir.prior_config(lvl).n_ctx for lvl in model.prior_levels
                if lvl != top) / model.sample_rate if len(model.prior_levels) > 1 else 0.01
    deadline = time.monotonic() + args.minutes * 60
    counts = {"requests": 0, "ok": 0, "refused": 0, "failures": 0}
    by_mode: dict[str, int] = {}
    failures: list[dict[str, str]] = []
    rss: list[tuple[float, float]] = []
    t0 = time.monotonic()
    warnings_seen = 0
    import warnings

    while time.monotonic() < deadline:
        mode = rng.choice(["ancestral", "ancestral", "draft", "continue", "upsample", "bad"])
        seconds = round(rng.uniform(min_s, max(min_s, max_s)), 3)
        kw = dict(artist=rng.choice(artists), genre=rng.choice(genres), lyrics=rng.choice(LYRICS),
                  seed=rng.randrange(2**31), temperature=rng.choice([0.9, 0.99, 1.0]),
                  top_p=rng.choice([0.0, 0.9]), alignment=rng.random() < 0.3)
        counts["requests"] += 1
        by_mode[mode] = by_mode.get(mode, 0) + 1
        try:
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                if mode == "ancestral":
                    gen = model.generate(seconds=seconds, n_samples=rng.choice([1, 2]), **kw)
                elif mode == "draft":
                    gen = model.generate(seconds=seconds, levels=[top], **kw)
                elif mode == "continue":
                    first = model.generate(seconds=seconds, levels=[top], **kw)
                    gen = model.continue_(codes=first.codes, seconds=seconds * 2, levels=[top], **kw)
                elif mode == "upsample":
                    first = model.generate(seconds=seconds, levels=[top], **kw)
                    gen = model.upsample(first.codes, **kw)
                else:  # inputs that must be refused cleanly
                    bad = rng.choice([dict(seconds=-1.0), dict(seconds=float("nan")), dict(seconds=1e9),
                                      dict(seconds=seconds, total_seconds=seconds / 10), dict(seconds=1e-9)])
                    model.generate(**bad, **kw)
                    raise AssertionError(f"accepted bad input {bad}")
                warnings_seen += len(w)
            if mode != "bad":
                audio = torch.as_tensor(gen.audio)
                if not torch.isfinite(audio).all() or audio.abs().max() > 1.0 + 1e-4:
                    raise AssertionError("non-finite or out-of-range audio")
            counts["ok"] += 1
            del gen
        except UsageError:
            counts["refused" if mode == "bad" else "failures"] += 1
            if mode != "bad":
                failures.append({"mode": mode, "error": traceback.format_exc(limit=3)[-600:]})
        except Exception:  # noqa: BLE001 - a soak test counts every escape
            counts["failures"] += 1
            failures.append({"mode": mode, "seconds": str(seconds), "error": traceback.format_exc(limit=3)[-600:]})
        gc.collect()
        rss.append((round(time.monotonic() - t0, 1), round(rss_mb(), 1)))
    n = len(rss)
    values = [v for _, v in rss]
    q2 = values[n // 4: n // 2] or values
    q4 = values[3 * n // 4:] or values
    report = {
        "model": str(model.model_dir.path) if args.model != "tiny" else "tiny (random, lyrics)",
        "minutes": round((time.monotonic() - t0) / 60, 2), **counts, "by_mode": by_mode,
        "warnings": warnings_seen,
        "rss_mb_start": values[0] if values else None, "rss_mb_end": values[-1] if values else None,
        "rss_mb_max": max(values) if values else None,
        "rss_growth_mb": round(statistics.median(q4) - statistics.median(q2), 1) if values else None,
        "rss_timeline": rss[:: max(1, n // 20)],
        "failure_examples": failures[:5],
    }
    text = json.dumps(report, indent=1, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 1 if counts["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
