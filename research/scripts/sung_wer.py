#!/usr/bin/env python
"""Offline sung-word check: transcribe singing with pocketsphinx and score word error rate against the lyrics.

pocketsphinx (``pip install pocketsphinx``, English acoustic model, dictionary and LM inside the wheel) decodes the
audio at 16 kHz in chunks of about ``--chunk`` seconds, cut at the quietest point near each boundary. Two language
models:

* ``--lm default``: pocketsphinx's general English trigram LM (open vocabulary, harsh on nonsense lyrics);
* ``--lm vocab``: a uniform unigram over a word list (``--vocab FILE``, one word a line; by default the vocabulary
  of the sung corpus, ``syllables.json`` beside the timing folder) - closed vocabulary, no word order knowledge, so
  it measures how well the *sounds* of the words come through.

Usage::

    python research/scripts/sung_wer.py song.wav --lyrics "the words as sung"            # one file
    python research/scripts/sung_wer.py --corpus /work/sung_corpus --split test --n 10 --max-seconds 40 --lm vocab
        # mixes and vocal stems of 10 held-out songs; reference = the words sung inside the first 40 s

Prints JSON (per file: reference, hypothesis, wer; totals pooled over words, with ``word_recall`` = 1 - (S + D) / N,
the share of sung words recognised, which insertions do not affect).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

_WORD = re.compile(r"[a-z0-9']+")


def normalize(text: str) -> list[str]:
    """Lower-case words (letters, digits, apostrophes); punctuation and line breaks dropped."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def edit_ops(ref: Sequence[str], hyp: Sequence[str]) -> tuple[int, int, int]:
    """(substitutions, deletions, insertions) of the minimum edit-distance alignment of ``hyp`` to ``ref``."""
    n, m = len(ref), len(hyp)
    # dp[j] = (cost, s, d, i) for ref[:row] vs hyp[:j]
    prev = [(j, 0, 0, j) for j in range(m + 1)]
    for r in range(1, n + 1):
        cur = [(r, 0, r, 0)]
        for j in range(1, m + 1):
            c, s, d, i = prev[j - 1]
            sub = (c + (ref[r - 1] != hyp[j - 1]), s + (ref[r - 1] != hyp[j - 1]), d, i)
            c, s, d, i = prev[j]
            dele = (c + 1, s, d + 1, i)
            c, s, d, i = cur[j - 1]
            ins = (c + 1, s, d, i + 1)
            cur.append(min(sub, dele, ins))
        prev = cur
    _, s, d, i = prev[m]
    return s, d, i


def wer(reference: str | Sequence[str], hypothesis: str | Sequence[str]) -> float:
    """Word error rate (S + D + I) / N of ``hypothesis`` against ``reference`` (strings are normalised)."""
    ref = normalize(reference) if isinstance(reference, str) else list(reference)
    hyp = normalize(hypothesis) if isinstance(hypothesis, str) else list(hypothesis)
    if not ref:
        return 0.0 if not hyp else float("inf")
    s, d, i = edit_ops(ref, hyp)
    return (s + d + i) / len(ref)


def chunk_bounds(x: np.ndarray, sr: int, chunk: float = 8.0, search: float = 2.0) -> list[tuple[int, int]]:
    """Split ``x`` into pieces of about ``chunk`` s, each cut at the quietest 50-ms frame within ``search`` s."""
    hop = int(0.05 * sr)
    frames = len(x) // hop
    if frames == 0:
        return [(0, len(x))]
    energy = np.sqrt(np.mean(x[: frames * hop].reshape(frames, hop) ** 2, axis=1))
    bounds = [0]
    while len(x) - bounds[-1] > (chunk + search) * sr:
        target = bounds[-1] + int(chunk * sr)
        lo, hi = (target - int(search * sr)) // hop, (target + int(search * sr)) // hop
        k = lo + int(np.argmin(energy[lo:hi]))
        bounds.append(k * hop + hop // 2)
    bounds.append(len(x))
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def vocab_lm(words: Iterable[str], path: Path) -> Path:
    """Write a uniform unigram ARPA language model over ``words`` (plus sentence markers) to ``path``."""
    words = sorted(set(words))
    p = float(np.log10(1.0 / (len(words) + 1)))
    lines = ["\\data\\", f"ngram 1={len(words) + 2}", "", "\\1-grams:", f"{p:.4f} </s>", "-99.0000 <s> 0.0000"]
    lines += [f"{p:.4f} {w} 0.0000" for w in words]
    lines += ["", "\\end\\", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


class Transcriber:
    """pocketsphinx decoder wrapper; ``lm`` is None (the default English LM) or a path to an ARPA/binary LM."""

    def __init__(self, lm: Path | None = None) -> None:
        from pocketsphinx import Decoder

        kwargs = {"samprate": 16000, "loglevel": "FATAL"}
        if lm is not None:
            kwargs["lm"] = str(lm)
        self.decoder = Decoder(**kwargs)

    def __call__(self, audio: np.ndarray, sr: int, chunk: float = 8.0) -> str:
        """Transcript of mono float ``audio`` at ``sr`` Hz (chunks decoded independently, joined)."""
        import soxr

        x = soxr.resample(audio.astype(np.float32), sr, 16000) if sr != 16000 else audio.astype(np.float32)
        peak = float(np.abs(x).max()) or 1.0
        x = x * (0.9 / peak)
        out = []
        for a, b in chunk_bounds(x, 16000, chunk):
            pcm = (np.clip(x[a:b], -1, 1) * 32767).astype(np.int16).tobytes()
            self.decoder.start_utt()
            self.decoder.process_raw(pcm, full_utt=True)
            self.decoder.end_utt()
            hyp = self.decoder.hyp()
            if hyp is not None and hyp.hypstr:
                out.append(hyp.hypstr)
        return " ".join(out)


def _load(path: Path, max_seconds: float | None) -> tuple[np.ndarray, int]:
    import soundfile as sf

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if max_seconds:
        x = x[: int(max_seconds * sr)]
    return x, sr


def timing_records(corpus: Path, split: str = "all") -> list[dict]:
    """The sung corpus's timing records (``timing/song*.json``: labels, lyrics, word timings) of ``split``
    (``all``: every song), in song order, each with its ``id`` (the file's stem)."""
    recs = []
    for p in sorted((corpus / "timing").glob("song*.json")):
        rec = json.loads(p.read_text())
        if split == "all" or rec["split"] == split:
            recs.append({**rec, "id": p.stem})
    return recs


def _corpus_items(corpus: Path, split: str, n: int, max_seconds: float | None, stems: Sequence[str]) -> list[dict]:
    items = []
    for rec in timing_records(corpus, split):
        words = [w["word"] for w in rec["words"] if max_seconds is None or w["end"] <= max_seconds]
        sid = rec["id"]
        for stem in stems:
            path = corpus / rec["file"] if stem == "mix" else corpus / "stems" / stem / f"{sid}.flac"
            items.append({"song": sid, "kind": stem, "path": path, "reference": " ".join(words),
                          "artist": rec["artist"], "genre": rec["genre"]})
        if len({i["song"] for i in items}) >= n:
            break
    return items


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("audio", nargs="*", type=Path, help="audio files (with --lyrics)")
    ap.add_argument("--lyrics", default=None, help="reference lyrics (text, or @file)")
    ap.add_argument("--corpus", type=Path, default=None, help="sung corpus folder (build_sung_corpus.py output)")
    ap.add_argument("--split", default="test", help="train / validation / test / all (with --corpus)")
    ap.add_argument("--n", type=int, default=10, help="songs to score (with --corpus)")
    ap.add_argument("--stems", default="vocals,mix", help="comma list of vocals, mix, accomp (with --corpus)")
    ap.add_argument("--max-seconds", type=float, default=None, help="score only the first S seconds")
    ap.add_argument("--chunk", type=float, default=8.0, help="decode chunk length in seconds")
    ap.add_argument("--lm", choices=("default", "vocab"), default="default")
    ap.add_argument("--vocab", type=Path, default=None, help="word list for --lm vocab")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)

    if args.corpus is not None:
        items = _corpus_items(args.corpus, args.split, args.n, args.max_seconds, args.stems.split(","))
    elif args.audio and args.lyrics is not None:
        text = Path(args.lyrics[1:]).read_text() if args.lyrics.startswith("@") else args.lyrics
        items = [{"song": p.stem, "kind": "file", "path": p, "reference": text} for p in args.audio]
    else:
        ap.error("give audio files with --lyrics, or --corpus")
    lm_path = None
    tmp = tempfile.TemporaryDirectory()
    if args.lm == "vocab":
        if args.vocab is not None:
            words = args.vocab.read_text().split()
        elif args.corpus is not None and (args.corpus / "syllables.json").exists():
            words = json.loads((args.corpus / "syllables.json").read_text())["vocabulary"]
        else:
            words = sorted({w for it in items for w in normalize(it["reference"])})
        lm_path = vocab_lm([w.lower() for w in words], Path(tmp.name) / "vocab.arpa")
    tr = Transcriber(lm_path)
    results = []
    totals: dict[str, list[int]] = {}
    t0 = time.time()
    for it in items:
        x, sr = _load(it["path"], args.max_seconds)
        hyp = tr(x, sr, args.chunk)
        ref = normalize(it["reference"])
        s, d, i = edit_ops(ref, normalize(hyp))
        tot = totals.setdefault(it["kind"], [0, 0, 0, 0, 0])
        tot[0] += s
        tot[1] += d
        tot[2] += i
        tot[3] += len(ref)
        tot[4] += 1
        res = {k: (str(v) if isinstance(v, Path) else v) for k, v in it.items()}
        res.update(hypothesis=hyp, wer=round((s + d + i) / max(1, len(ref)), 4), subs=s, dels=d, ins=i)
        results.append(res)
        print(f"{it['song']} {it['kind']}: WER {res['wer']:.3f} ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    summary = {k: {"files": v[4], "words": v[3], "wer": round((v[0] + v[1] + v[2]) / max(1, v[3]), 4),
                   "word_recall": round(1 - (v[0] + v[1]) / max(1, v[3]), 4),
                   "sub": v[0], "del": v[1], "ins": v[2]} for k, v in totals.items()}
    report = {"lm": args.lm, "max_seconds": args.max_seconds, "chunk": args.chunk, "summary": summary,
              "results": results}
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
