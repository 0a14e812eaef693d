#!/usr/bin/env python
"""Evaluate lyric conditioning on the synthetic sung corpus (issue 10), on the CPU.

Subcommands:

* ``roundtrip``: held-out mixes through a model's VQ-VAE (encode, decode from each level; ``--upsample``: also the
  real top-level codes through its upsamplers) and the sung-word check
  (``research/scripts/sung_wer.py``) on the original and on each reconstruction: do words survive the codec?
* ``samples``: the codes returned by ``STAGE=sample bash research/scripts/gpu_lyrics.sh`` decoded with the VQ-VAE; the
  sung-word check per arm (right lyrics / wrong lyrics / no-lyrics model) against the lyrics each sample was
  *meant* to sing (the right song's words), plus lyric alignment of the attention head against the held-out songs'
  word timings (``timing/<id>.json``), and alignment plots.
* ``alignment``: teacher-forced alignment of a lyric prior on the *real* held-out songs (their codes and lyrics)
  against the known word timings (the alignment head's quality, independent of sampling).

Usage::

    python research/scripts/eval_lyrics.py roundtrip --corpus /work/sung_corpus --n 6 --seconds 30 --levels 0 1 2
    python research/scripts/eval_lyrics.py samples --results DIR --corpus /work/sung_corpus --model MODEL_DIR
    python research/scripts/eval_lyrics.py alignment --corpus /work/sung_corpus --model MODEL_DIR --seconds 30

Prints JSON (and writes it with ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))
sys.path.insert(0, str(SCRIPTS.parents[1] / "src"))

import sung_wer  # noqa: E402


# ------------------------------------------------------------------------------------------------- helpers
def heldout_songs(corpus: Path, n: int | None = None) -> list[dict[str, Any]]:
    """The held-out (``test``) songs' timing records, in song order (at most ``n``)."""
    recs = _song_records(corpus, "test", n)
    if not recs:
        raise SystemExit(f"error: {corpus}/timing holds no held-out (test) songs")
    return recs


def words_until(rec: dict[str, Any], seconds: float | None, start: float = 0.0) -> list[str]:
    """The sung words of a timing record that start at or after ``start`` and end within ``start + seconds``."""
    return [w["word"] for w in rec["words"]
            if w["start"] >= start and (seconds is None or w["end"] <= start + seconds)]


class Scorer:
    """pocketsphinx (``sung_wer.Transcriber``) with the corpus vocabulary LM (``vocab``) or the default LM."""

    def __init__(self, corpus: Path, lm: str = "vocab") -> None:
        self._tmp = tempfile.TemporaryDirectory()
        path = None
        if lm == "vocab":
            words = json.loads((corpus / "syllables.json").read_text())["vocabulary"]
            path = sung_wer.vocab_lm([w.lower() for w in words], Path(self._tmp.name) / "vocab.arpa")
        self.lm = lm
        self.transcribe = sung_wer.Transcriber(path)

    def score(self, audio: np.ndarray, sr: int, reference: Sequence[str]) -> dict[str, Any]:
        """Transcript and edit counts of mono ``audio`` [T] against the reference words."""
        if not np.any(audio):
            hyp = ""
        else:
            hyp = self.transcribe(audio, sr)
        ref = sung_wer.normalize(" ".join(reference))
        s, d, i = sung_wer.edit_ops(ref, sung_wer.normalize(hyp))
        return {"hypothesis": hyp, "words": len(ref), "sub": s, "del": d, "ins": i,
                "wer": round((s + d + i) / max(1, len(ref)), 4)}


def pool(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pooled WER and word recall over scored rows."""
    n = sum(r["words"] for r in rows)
    s, d, i = (sum(r[k] for r in rows) for k in ("sub", "del", "ins"))
    return {"files": len(rows), "words": n, "wer": round((s + d + i) / max(1, n), 4),
            "word_recall": round(1 - (s + d) / max(1, n), 4), "sub": s, "del": d, "ins": i}


def load_audio(path: Path, sr: int, seconds: float | None = None, offset: float = 0.0) -> np.ndarray:
    """Mono float32 [T] at ``sr`` (resampled with the package's loader)."""
    from jukebox.audio import load_audio as _load

    x, _ = _load(path, sr, offset_seconds=offset, duration_seconds=seconds)
    return x


def _no_grad(fn: Any) -> Any:
    """Run ``fn`` without autograd (local state: importing this module or calling it leaves torch as it was)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper


def _emit(report: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(report, indent=1)
    if out is not None:
        out.write_text(text)
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=1))


# ------------------------------------------------------------------------------------------------- roundtrip
@_no_grad
def cmd_roundtrip(args: argparse.Namespace) -> int:
    """Original vs VQ-VAE reconstructions from each level: pooled WER / recall per version."""
    import torch

    import jukebox

    torch.set_num_threads(args.threads)
    model = jukebox.load_model(args.model, device="cpu")
    sr = model.sample_rate
    scorer = Scorer(args.corpus, args.lm)
    rows: list[dict[str, Any]] = []
    t0 = time.time()
    for rec in heldout_songs(args.corpus, args.n):
        ref = words_until(rec, args.seconds)
        sources = {"mix": args.corpus / rec["file"]}
        if args.vocals:
            sources["vocals"] = args.corpus / "stems" / "vocals" / f"{rec['id']}.flac"
        for stem, path in sources.items():
            x = load_audio(path, sr, args.seconds)
            versions = {"original": x}
            codes = model.encode(torch.from_numpy(x)[None, None])
            for lvl in args.levels:
                versions[f"level_{lvl}"] = model.decode(codes, lvl)[0, 0].numpy()[: len(x)]
            if args.upsample:  # the real top-level codes through the model's upsamplers (seeded), audio of levels 1, 0
                top = model.top_level
                gen = model.upsample({top: codes[top]}, genre=rec.get("genre", "unknown"), levels=[1, 0],
                                     seed=args.seed, alignment=False)
                versions["upsampled_1"] = model.decode({1: gen.codes[1]}, 1)[0, 0].numpy()[: len(x)]
                versions["upsampled_0"] = gen.audio[0, 0].numpy()[: len(x)]
            for name, audio in versions.items():
                r = scorer.score(audio, sr, ref)
                r.update(song=rec["id"], stem=stem, version=name)
                rows.append(r)
                print(f"{rec['id']} {stem} {name}: WER {r['wer']:.3f} ({time.time() - t0:.0f}s)", file=sys.stderr,
                      flush=True)
    summary = {}
    for stem in sorted({r["stem"] for r in rows}):
        for name in ["original"] + [f"level_{lvl}" for lvl in args.levels] + (
                ["upsampled_1", "upsampled_0"] if args.upsample else []):
            summary[f"{stem}/{name}"] = pool([r for r in rows if r["stem"] == stem and r["version"] == name])
    _emit({"lm": args.lm, "seconds": args.seconds, "model": str(args.model), "summary": summary, "results": rows},
          args.out)
    return 0


# ------------------------------------------------------------------------------------------------- alignment
_WORD_RE = __import__("re").compile(r"[A-Za-z0-9']+")


def char_words(text: str, words: Sequence[str]) -> np.ndarray:
    """Word index (into ``words``, the sung words in order) of every character of the cleaned lyric ``text``;
    -1 for spaces, punctuation and words that cannot be matched to the sung ones."""
    import difflib

    spans = [(m.start(), m.end(), m.group(0).lower()) for m in _WORD_RE.finditer(text)]
    ref = [w.lower() for w in words]
    out = np.full(len(text), -1, dtype=np.int64)
    sm = difflib.SequenceMatcher(a=[s[2] for s in spans], b=ref, autojunk=False)
    for a, b, n in sm.get_matching_blocks():
        for k in range(n):
            s, e, _ = spans[a + k]
            out[s:e] = b + k
    return out


def alignment_heads(prior: Any) -> list[tuple[int, int]]:
    """(layer, head) of every head that attends to the lyrics (cross or prime layers)."""
    from jukebox.nn.attention import layer_patterns

    t = prior.config.transformer
    pats = layer_patterns(t.attn_order, t.depth)
    return [(i, h) for i, p in enumerate(pats) if p in ("cross", "prime") for h in range(t.heads)]


@_no_grad
def all_head_alignments(jb: Any, z: Any, meta: dict[str, Any], hop_fraction: float = 0.5
                        ) -> tuple[dict[tuple[int, int], np.ndarray], str]:
    """Teacher-forced alignment matrices [T, n_chars] of every lyric head for top-level codes ``z`` [T] of one
    song (labels ``meta``: artist, genre, lyrics, total_length), windows as in sampling (earlier windows win),
    and the cleaned lyric text the columns index."""
    import torch

    from jukebox.sampling.schedule import window_starts

    top = jb.top_level
    prior, labeller = jb.prior(top), jb.labeller(top)
    labels = labeller.batch_labels([{**meta, "offset": 0}], device=jb.device)
    info = labels.infos[0]
    heads = alignment_heads(prior)
    layers = sorted({lyr for lyr, _ in heads})
    n_ctx, total = prior.n_ctx, int(z.shape[-1])
    zz = torch.as_tensor(z).long().reshape(1, -1).to(jb.device)
    if total < n_ctx:
        zz = torch.cat([zz, zz.new_zeros(1, n_ctx - total)], dim=1)
    length = zz.shape[1]
    out = {hd: np.zeros((length, len(info.full_tokens) + 1), np.float32) for hd in heads}
    starts = window_starts(length, n_ctx, max(1, int(hop_fraction * n_ctx)))
    attns = [prior.decoder.transformer.blocks[lyr].attn for lyr in layers]
    for start in reversed(starts):
        y, indices = labeller.window_y(labels, start, prior.raw_to_tokens)
        cols = np.asarray(indices[0])
        for a in attns:
            a.record_weights = True
        try:
            prior.logits(zz[:, start:start + n_ctx], None, y)
            weights = {lyr: a.last_weights for lyr, a in zip(layers, attns)}
        finally:
            for a in attns:
                a.record_weights, a.last_weights = False, None
        for lyr, h in heads:
            w = weights[lyr][0, h]
            if prior.style == "merged":
                w = w[prior.n_tokens:, :prior.n_tokens]
            out[(lyr, h)][start:start + n_ctx, cols] = w.float().cpu().numpy()
    return {hd: a[:total, :-1] for hd, a in out.items()}, info.lyrics


def alignment_metrics(align: np.ndarray, cw: np.ndarray, words: Sequence[dict[str, Any]], sec_per_frame: float,
                      seconds: float | None = None) -> dict[str, Any]:
    """Scores of an alignment [T, n_chars] against sung word times: ``frames_on_word`` (share of frames inside a
    sung word whose argmax character belongs to that word), ``within_one_word`` (the same +-1 word) and the median
    |onset error| (s) of each word's first character (its attention peak over time vs the word's start)."""
    t_frames = align.shape[0]
    times = (np.arange(t_frames) + 0.5) * sec_per_frame
    true = np.full(t_frames, -1, dtype=np.int64)
    for k, w in enumerate(words):
        true[(times >= w["start"]) & (times < w["end"])] = k
    sel = true >= 0
    arg = align.argmax(axis=1)
    pred = np.where(align.max(axis=1) > 0, cw[np.clip(arg, 0, len(cw) - 1)], -1) if len(cw) else np.full(t_frames, -1)
    on = float(np.mean(pred[sel] == true[sel])) if sel.any() else float("nan")
    near = float(np.mean(np.abs(pred[sel] - true[sel]) <= 1)) if sel.any() else float("nan")
    peak_t = align.argmax(axis=0) * sec_per_frame if align.size else np.zeros(0)
    errors = []
    for k, w in enumerate(words):
        if seconds is not None and w["end"] > seconds:
            continue
        chars = np.nonzero(cw == k)[0]
        if len(chars) and align[:, chars[0]].max() > 0:
            errors.append(abs(float(peak_t[chars[0]]) - w["start"]))
    return {"frames": int(sel.sum()), "frames_on_word": round(on, 4), "within_one_word": round(near, 4),
            "words": len(errors), "median_onset_error_s": round(float(np.median(errors)), 3) if errors else None}


def proportional_alignment(n_chars: int, t_frames: int, sec_per_frame: float, total_seconds: float) -> np.ndarray:
    """The baseline the lyric window itself implies: character c sung at ``c / n_chars * total_seconds``."""
    a = np.zeros((t_frames, n_chars), np.float32)
    if n_chars == 0:
        return a
    c = np.clip(((np.arange(t_frames) + 0.5) * sec_per_frame / total_seconds * n_chars).astype(int), 0, n_chars - 1)
    a[np.arange(t_frames), c] = 1.0
    return a


def _song_records(corpus: Path, split: str, n: int | None) -> list[dict[str, Any]]:
    recs = sung_wer.timing_records(corpus, split)
    return recs[:n] if n else recs


@_no_grad
def cmd_alignment(args: argparse.Namespace) -> int:
    """Teacher-forced alignment of the lyric prior on real songs: every lyric head scored against the word
    timings; the head is chosen on the validation songs and reported on the held-out songs."""
    import torch

    import jukebox

    torch.set_num_threads(args.threads)
    jb = jukebox.load_model(args.model, device="cpu")
    top = jb.top_level
    spf = jb.hop_lengths[top] / jb.sample_rate
    result: dict[str, Any] = {"model": str(args.model), "seconds": args.seconds, "splits": {}}
    per_head: dict[str, dict[tuple[int, int], list[dict[str, Any]]]] = {}
    for split in ("validation", "test"):
        rows: dict[tuple[int, int], list[dict[str, Any]]] = {}
        base_rows = []
        for rec in _song_records(args.corpus, split, args.n):
            x = load_audio(args.corpus / rec["file"], jb.sample_rate, args.seconds)
            z = jb.encode(torch.from_numpy(x)[None, None])[top][0]
            meta = {"artist": rec["artist"], "genre": rec["genre"], "lyrics": rec["lyrics"],
                    "total_length": int(round(rec["duration"] * jb.sample_rate))}
            aligns, text = all_head_alignments(jb, z, meta, args.hop_fraction)
            words = rec["words"]
            cw = char_words(text, [w["word"] for w in words])
            for hd, a in aligns.items():
                rows.setdefault(hd, []).append({"song": rec["id"], **alignment_metrics(a, cw, words, spf,
                                                                                         args.seconds)})
            base = proportional_alignment(len(text), len(z), spf, rec["duration"])
            base_rows.append({"song": rec["id"], **alignment_metrics(base, cw, words, spf, args.seconds)})
            print(f"{split} {rec['id']}: aligned {len(aligns)} heads", file=sys.stderr, flush=True)
        per_head[split] = rows
        result["splits"][split] = {"songs": len(base_rows), "proportional_baseline": _mean_metrics(base_rows),
                                   "heads": {f"{lyr}:{h}": _mean_metrics(r) for (lyr, h), r in rows.items()}}
    heads = result["splits"]["validation"]["heads"] or result["splits"]["test"]["heads"]
    best = max(heads, key=lambda k: heads[k]["frames_on_word"] or -1.0)
    result["best_head_on_validation"] = best
    result["test_with_best_head"] = result["splits"]["test"]["heads"][best]
    result["test_with_config_head"] = result["splits"]["test"]["heads"].get(
        f"{jb.prior(top).config.alignment_layer}:{jb.prior(top).config.alignment_head}")
    if args.plot:
        lyr, h = map(int, best.split(":"))
        rec = _song_records(args.corpus, "test", 1)[0]
        x = load_audio(args.corpus / rec["file"], jb.sample_rate, args.seconds)
        z = jb.encode(torch.from_numpy(x)[None, None])[top][0]
        meta = {"artist": rec["artist"], "genre": rec["genre"], "lyrics": rec["lyrics"],
                "total_length": int(round(rec["duration"] * jb.sample_rate))}
        aligns, text = all_head_alignments(jb, z, meta, args.hop_fraction)
        plot_alignment(aligns[(lyr, h)], text, rec["words"], spf, args.plot,
                       f"{rec['id']} (real audio, teacher-forced), head {lyr}:{h}")
        result["plot"] = str(args.plot)
    _emit(result, args.out)
    return 0


def _mean_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    def mean(key: str) -> float | None:
        vals = [r[key] for r in rows if r.get(key) is not None and r[key] == r[key]]
        return round(float(np.mean(vals)), 4) if vals else None

    return {"frames_on_word": mean("frames_on_word"), "within_one_word": mean("within_one_word"),
            "median_onset_error_s": mean("median_onset_error_s")}


def plot_alignment(align: np.ndarray, text: str, words: Sequence[dict[str, Any]] | None, sec_per_frame: float,
                   path: Path, title: str) -> None:
    """A small PNG: attention over lyric characters (x) against time (y), with the true word timing (words) as
    red marks at each word's first character and start time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = align.shape[0] * sec_per_frame
    used = np.nonzero(align.max(axis=0) > 0)[0]
    c_max = int(used.max()) + 1 if len(used) else align.shape[1]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=80)
    ax.imshow(align[:, :c_max], aspect="auto", origin="lower", cmap="gray_r", extent=(0, c_max, 0, t),
              interpolation="nearest")
    if words is not None:
        cw = char_words(text, [w["word"] for w in words])
        xs, ys = [], []
        for k, w in enumerate(words):
            chars = np.nonzero(cw == k)[0]
            if len(chars) and chars[0] < c_max and w["start"] < t:
                xs.append(chars[0])
                ys.append(w["start"])
        ax.plot(xs, ys, "r.", markersize=3, label="sung word starts (timing)")
        ax.legend(loc="upper left", fontsize=7)
    ax.set_xlabel("lyric character")
    ax.set_ylabel("time (s)")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------- samples
def _given_words(lyrics: str, fraction: float) -> list[str]:
    """Words of ``lyrics`` whose first character lies in the first ``fraction`` of the text (the proportional
    lyric window's share for a clip covering that fraction of the song)."""
    return [m.group(0) for m in _WORD_RE.finditer(lyrics) if m.start() < fraction * len(lyrics)]


@_no_grad
def cmd_samples(args: argparse.Namespace) -> int:
    """WER per arm of the sampled codes, against the song's own sung words and against the words given."""
    import torch

    import jukebox

    torch.set_num_threads(args.threads)
    res = Path(args.results)
    info = json.loads((res / "sample_info.json").read_text())
    seconds = float(info["seconds"])
    timing = {p.stem: json.loads(p.read_text()) for p in sorted((args.corpus / "timing").glob("song*.json"))}
    scorer = Scorer(args.corpus, args.lm)
    models: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    t0 = time.time()
    arms = [a for a in info["arms"] if not args.arms or a["name"] in args.arms]
    for arm in arms:
        name = arm["model"]
        if name not in models:
            models[name] = jukebox.load_model(Path(args.models) / name, device="cpu")
        jb = models[name]
        npz = np.load(res / f"samples_{name}.npz")
        for lvl in args.levels:
            key = f"{arm['kind']}_level_{lvl}"
            if key not in npz:
                continue
            codes = torch.from_numpy(npz[key].astype(np.int64))
            for i, item in enumerate(arm["items"]):
                if args.n and i >= args.n:
                    break
                audio = jb.decode({lvl: codes[i: i + 1]}, lvl)[0, 0].numpy()
                rec = timing[item["song"]]
                song_ref = words_until(rec, seconds)
                r = scorer.score(audio, jb.sample_rate, song_ref)
                row = {"arm": arm["name"], "model": name, "kind": arm["kind"], "level": lvl, "song": item["song"],
                       **{f"song_{k}": v for k, v in r.items() if k != "hypothesis"}, "hypothesis": r["hypothesis"]}
                if item.get("lyrics"):
                    given = _given_words(item["lyrics"], seconds / float(item["total_seconds"]))
                    g = sung_wer.normalize(" ".join(given))
                    s, d, ins = sung_wer.edit_ops(g, sung_wer.normalize(r["hypothesis"]))
                    row.update(given_words=len(g), given_sub=s, given_del=d, given_ins=ins)
                rows.append(row)
                print(f"{arm['name']} L{lvl} {item['song']}: WER {r['wer']:.3f} ({time.time() - t0:.0f}s)",
                      file=sys.stderr, flush=True)
    summary: dict[str, Any] = {}
    for arm in arms:
        for lvl in args.levels:
            sel = [r for r in rows if r["arm"] == arm["name"] and r["level"] == lvl]
            if not sel:
                continue
            pooled = pool([{k[5:]: v for k, v in r.items() if k.startswith("song_")} for r in sel])
            entry = {"vs_song_words": pooled}
            given = [r for r in sel if "given_words" in r]
            if given:
                entry["vs_given_words"] = pool([{"words": r["given_words"], "sub": r["given_sub"],
                                                 "del": r["given_del"], "ins": r["given_ins"]} for r in given])
            summary[f"{arm['name']}/level_{lvl}"] = entry
    comparisons = {}
    for lvl in args.levels:
        for model in sorted({a["model"] for a in arms if a["kind"] != "none"}):
            for other in (f"{model}_wrong", "control_none"):
                c = paired_recall(rows, f"{model}_right", other, lvl)
                if c is not None:
                    comparisons[f"{model}_right-vs-{other}/level_{lvl}"] = c
    report: dict[str, Any] = {"lm": args.lm, "seconds": seconds, "summary": summary, "comparisons": comparisons,
                              "results": rows}
    if (res / "alignment.npz").exists():
        report["alignment"] = sample_alignment_summary(res, info, models, args)
    _emit(report, args.out)
    return 0


def paired_recall(rows: Sequence[dict[str, Any]], arm_a: str, arm_b: str, level: int, n_boot: int = 2000,
                  seed: int = 0) -> dict[str, Any] | None:
    """Per-song word recall of arm ``a`` minus arm ``b`` (same songs, same reference words): mean difference,
    a bootstrap 95% interval over songs, and how many songs favour each arm."""
    def recall(r: dict[str, Any]) -> float:
        return 1 - (r["song_sub"] + r["song_del"]) / max(1, r["song_words"])

    a = {r["song"]: recall(r) for r in rows if r["arm"] == arm_a and r["level"] == level}
    b = {r["song"]: recall(r) for r in rows if r["arm"] == arm_b and r["level"] == level}
    songs = sorted(set(a) & set(b))
    if not songs:
        return None
    d = np.array([a[s] - b[s] for s in songs])
    rng = np.random.default_rng(seed)
    boots = rng.choice(d, size=(n_boot, len(d)), replace=True).mean(axis=1)
    return {"songs": len(songs), "mean_recall_diff": round(float(d.mean()), 4),
            "ci95": [round(float(np.quantile(boots, 0.025)), 4), round(float(np.quantile(boots, 0.975)), 4)],
            "a_better": int((d > 0).sum()), "b_better": int((d < 0).sum())}


def sample_alignment_summary(res: Path, info: dict[str, Any], models: dict[str, Any],
                             args: argparse.Namespace) -> dict[str, Any]:
    """From the device's compact alignment (argmax character per frame): how the attention moves through the
    given lyrics - Spearman correlation of argmax character and time (1: monotonic reading), and the median
    reading rate (characters per second) over the pace of the proportional lyric window (lyrics length / song
    length); plots for ``--plot-dir``."""
    from scipy.stats import spearmanr

    al = np.load(res / "alignment.npz")
    out: dict[str, Any] = {}
    for arm in info["arms"]:
        if arm["kind"] == "none":
            continue
        jb = models.get(arm["model"])
        spf = (jb.hop_lengths[jb.top_level] / jb.sample_rate) if jb is not None else 128 / 22050
        rhos, rates = [], []
        for i, item in enumerate(arm["items"]):
            key = f"argmax_{arm['kind']}_{arm['model']}_{i}"
            if key not in al:
                continue
            am = al[key].astype(np.int64)
            ok = am >= 0
            if ok.sum() > 10 and np.ptp(am[ok]) > 0:
                rhos.append(float(spearmanr(np.nonzero(ok)[0], am[ok]).statistic))
                slope = np.polyfit(np.nonzero(ok)[0] * spf, am[ok], 1)[0]
                window_rate = len(item["lyrics"]) / float(item["total_seconds"])  # the lyric window's pace
                rates.append(float(slope / window_rate))
        out[arm["name"]] = {"items": len(rhos), "spearman_time_vs_char": round(float(np.median(rhos)), 3)
                            if rhos else None, "rate_vs_window": round(float(np.median(rates)), 3) if rates else None}
    if args.plot_dir is not None:
        import torch

        args.plot_dir.mkdir(parents=True, exist_ok=True)
        for arm in info["arms"]:
            if arm["kind"] != "right" or arm["model"] not in models:
                continue
            jb = models[arm["model"]]
            npz = np.load(res / f"samples_{arm['model']}.npz")
            z = torch.from_numpy(npz[f"right_level_{jb.top_level}"].astype(np.int64))
            for i, item in enumerate(arm["items"][: args.plots]):
                meta = {"artist": item["artist"], "genre": item["genre"], "lyrics": item["lyrics"],
                        "total_length": int(round(item["total_seconds"] * jb.sample_rate))}
                cfg = jb.prior(jb.top_level).config
                aligns, text = all_head_alignments(jb, z[i], meta)
                hd = (args.head_layer, args.head) if args.head_layer is not None else (cfg.alignment_layer,
                                                                                       cfg.alignment_head)
                spf = jb.hop_lengths[jb.top_level] / jb.sample_rate
                path = args.plot_dir / f"lyrics_alignment_{arm['model']}_{item['song']}.png"
                plot_alignment(aligns[hd], text, None, spf, path,
                               f"{arm['model']}: generated {item['song']} (right lyrics), head {hd[0]}:{hd[1]}")
                out.setdefault("plots", []).append(str(path))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("roundtrip", help="held-out mixes through the VQ-VAE: WER per level")
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--model", default="default", help="model directory (default: the embedded default model)")
    p.add_argument("--n", type=int, default=6, help="held-out songs")
    p.add_argument("--seconds", type=float, default=30.0, help="first S seconds of each song")
    p.add_argument("--levels", type=int, nargs="+", default=[0, 1])
    p.add_argument("--vocals", action="store_true", help="also the clean vocal stems")
    p.add_argument("--upsample", action="store_true",
                   help="also the real top-level codes through the model's upsamplers (audio from levels 1 and 0)")
    p.add_argument("--seed", type=int, default=1, help="with --upsample")
    p.add_argument("--lm", choices=("vocab", "default"), default="vocab")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    p.set_defaults(fn=cmd_roundtrip)
    p = sub.add_parser("alignment", help="teacher-forced alignment of a lyric prior on real songs vs word timing")
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--model", required=True, help="model directory with a lyric top prior")
    p.add_argument("--n", type=int, default=0, help="songs per split (0: all)")
    p.add_argument("--seconds", type=float, default=30.0, help="first S seconds of each song")
    p.add_argument("--hop-fraction", type=float, default=0.5, help="window hop as a fraction of n_ctx")
    p.add_argument("--plot", type=Path, default=None, help="PNG of the first held-out song with the best head")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    p.set_defaults(fn=cmd_alignment)
    p = sub.add_parser("samples", help="WER per arm of the codes returned by STAGE=sample")
    p.add_argument("--results", type=Path, required=True, help="the files STAGE=sample wrote to $OUT")
    p.add_argument("--models", type=Path, required=True, help="lyrics_models.py unpack destination")
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--levels", type=int, nargs="+", default=[0],
                   help="decode from these levels (level 0 is the only one whose decodes keep recognisable words)")
    p.add_argument("--arms", nargs="*", default=None, help="only these arms (e.g. lyrics_right control_none)")
    p.add_argument("--n", type=int, default=0, help="items per arm (0: all)")
    p.add_argument("--lm", choices=("vocab", "default"), default="vocab")
    p.add_argument("--plot-dir", type=Path, default=None, help="alignment PNGs of the right-lyrics items")
    p.add_argument("--plots", type=int, default=2, help="items per lyric model to plot")
    p.add_argument("--head-layer", type=int, default=None, help="alignment layer for plots (default: config)")
    p.add_argument("--head", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    p.set_defaults(fn=cmd_samples)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
