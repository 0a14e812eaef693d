"""How much of the sung words do top-level codes carry? A probe, on the CPU.

A lyric prior can only lower the bits of a song's codes with its words if the codes depend on the words. This probe
asks that directly, with the alignment given for free: a small convolutional classifier reads the level-2 codes
around each frame (about +-0.2 s) and predicts the letter being sung there (each word's letters spread evenly over its
sung span, from the corpus's timing files). Trained on the training songs' sung frames, scored on the held-out songs:

    information (bits/frame) = H(letter) - cross-entropy(letter | codes)

H(letter) is the entropy of the training letters' marginal. Two controls, each scored against its own marginal:
`other_song` gives every song the letters and timing of another song (the codes cannot know either: the probe's
floor), `same_timing` keeps the song's own sung spans and fills them with another song's words (what the codes tell
of *when* letters change, from onsets and note lengths, without the words). What `right` gains over `same_timing`
is what the codes carry of the words themselves: a lower bound (a small probe, little data); near zero means the
codec's top level keeps too little of the singing for any lyric prior to use.

    python research/scripts/lyrics_code_probe.py --codes /work/lyr_stage --timing /work/sung_corpus/timing \
        --out research/results/lyrics_long/code_probe.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

LETTERS = "abcdefghijklmnopqrstuvwxyz"
N_CLASSES = len(LETTERS)


def letter_track(timing: dict, n_frames: int, rate: float, words_from: dict | None = None) -> np.ndarray:
    """Per-frame letter ids (-1 where nothing is sung), shape (n_frames,). With ``words_from`` (another song's
    timing), each word span of ``timing`` is filled with the letters of the other song's word at the same index
    (cycled): the same sung spans and onsets, other words."""
    out = np.full(n_frames, -1, dtype=np.int64)
    other = [w["word"] for w in words_from["words"]] if words_from else None
    for k, w in enumerate(timing["words"]):
        word = other[k % len(other)] if other else w["word"]
        letters = [LETTERS.index(c) for c in word.lower() if c in LETTERS]
        if not letters:
            continue
        a, b = int(round(w["start"] * rate)), int(round(w["end"] * rate))
        a, b = max(a, 0), min(b, n_frames)
        if b <= a:
            continue
        idx = np.minimum(((np.arange(a, b) - a) * len(letters)) // (b - a), len(letters) - 1)
        out[a:b] = np.asarray(letters)[idx]
    return out


def load(codes_dir: Path, timing_dir: Path, rate: float) -> dict[str, list[tuple[str, np.ndarray, dict]]]:
    """Songs per split: (name, codes (T,), timing dict)."""
    sets: dict[str, list] = {"train": [], "validation": [], "test": []}
    for sub in ("songs", "heldout"):
        for f in sorted((codes_dir / sub / "tracks").glob("*.npz")):
            name = f.name.split(".")[0]
            t = json.loads((timing_dir / f"{name}.json").read_text())
            split = t["split"] if t["split"] in sets else "test"
            sets[split].append((name, np.load(f)["codes"].astype(np.int64), t))
    return sets


class Probe(nn.Module):
    """codes (B, T) -> letter logits (B, T, 26); receptive field 2 * n_layers * (kernel // 2) + 1 frames."""

    def __init__(self, n_bins: int, width: int = 96, kernel: int = 9, n_layers: int = 4) -> None:
        super().__init__()
        self.emb = nn.Embedding(n_bins, width)
        self.convs = nn.ModuleList(nn.Conv1d(width, width, kernel, padding=kernel // 2) for _ in range(n_layers))
        self.out = nn.Linear(width, N_CLASSES)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        x = self.emb(codes).transpose(1, 2)
        for c in self.convs:
            x = x + torch.relu(c(x))
        return self.out(x.transpose(1, 2))


def windows(songs, labels, length: int, rng: np.random.Generator, n: int):
    """n random windows with at least one sung frame: codes (n, length), letters (n, length)."""
    xs, ys = [], []
    while len(xs) < n:
        i = int(rng.integers(len(songs)))
        codes, lab = songs[i][1], labels[i]
        s = int(rng.integers(0, max(1, len(codes) - length)))
        y = lab[s:s + length]
        if len(y) < length or (y >= 0).sum() == 0:
            continue
        xs.append(codes[s:s + length])
        ys.append(y)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def evaluate(model: Probe, songs, labels) -> tuple[float, float, int]:
    """Cross-entropy (bits/frame) and accuracy over every sung frame of the songs."""
    model.eval()
    tot, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for (_, codes, _), lab in zip(songs, labels):
            logits = model(torch.from_numpy(codes)[None])[0]
            y = torch.from_numpy(lab)
            m = y >= 0
            tot += nn.functional.cross_entropy(logits[m], y[m], reduction="sum").item()
            correct += int((logits[m].argmax(-1) == y[m]).sum())
            n += int(m.sum())
    model.train()
    return tot / n / math.log(2), correct / n, n


def run(sets, labels_of, args, tag: str) -> dict:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train, lab_train = sets["train"], labels_of["train"]
    model = Probe(args.bins)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    t0 = time.time()
    best = (float("inf"), 0)
    for step in range(1, args.steps + 1):
        x, y = windows(train, lab_train, args.length, rng, args.batch)
        loss = nn.functional.cross_entropy(model(x).reshape(-1, N_CLASSES), y.reshape(-1), ignore_index=-1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.val_every == 0 or step == args.steps:
            v, acc, _ = evaluate(model, sets["validation"], labels_of["validation"])
            print(f"[{tag}] step {step} train {loss.item() / math.log(2):.3f} val {v:.3f} bits acc {acc:.3f} "
                  f"({time.time() - t0:.0f}s)", flush=True)
            if v < best[0]:
                best = (v, step)
                state = {k: t.clone() for k, t in model.state_dict().items()}
    model.load_state_dict(state)
    te, acc, n = evaluate(model, sets["test"], labels_of["test"])
    va, vacc, _ = evaluate(model, sets["validation"], labels_of["validation"])
    return {"best_step": best[1], "validation_bits": round(va, 4), "validation_accuracy": round(vacc, 4),
            "test_bits": round(te, 4), "test_accuracy": round(acc, 4), "test_frames": n,
            "seconds": round(time.time() - t0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--codes", type=Path, required=True, help="encoded stage: songs/ and heldout/ code folders")
    p.add_argument("--timing", type=Path, required=True, help="the corpus's timing/*.json")
    p.add_argument("--rate", type=float, default=22050 / 128, help="level-2 frames per second")
    p.add_argument("--bins", type=int, default=2048)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--arms", nargs="+", default=["right", "same_timing", "other_song"],
                   choices=["right", "same_timing", "other_song"])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sets = load(args.codes, args.timing, args.rate)
    labels = {k: [letter_track(t, len(c), args.rate) for _, c, t in v] for k, v in sets.items()}
    arms = {"right": labels,
            "other_song": {k: [letter_track(v[(i + 1) % len(v)][2], len(v[i][1]), args.rate) for i in range(len(v))]
                           for k, v in sets.items()},
            "same_timing": {k: [letter_track(v[i][2], len(v[i][1]), args.rate, words_from=v[(i + 1) % len(v)][2])
                                for i in range(len(v))] for k, v in sets.items()}}
    counts = np.bincount(np.concatenate([lab[lab >= 0] for lab in labels["train"]]), minlength=N_CLASSES)
    prob = counts / counts.sum()
    h = float(-(prob[prob > 0] * np.log2(prob[prob > 0])).sum())

    def marginal_bits(labs) -> float:  # the training marginal's cross-entropy on these test letters
        y = np.concatenate([lab[lab >= 0] for lab in labs])
        return float(-np.log2(prob[y]).mean())

    print({k: len(v) for k, v in sets.items()}, f"H(letter) {h:.3f} bits", flush=True)
    res: dict = {"songs": {k: len(v) for k, v in sets.items()}, "entropy_letter_bits": round(h, 4),
                 "frames_per_s": args.rate, "receptive_field_frames": 2 * 4 * 4 + 1, "steps": args.steps,
                 "batch": args.batch, "length": args.length}
    for name in args.arms:
        r = run(sets, arms[name], args, name)
        r["marginal_test_bits"] = round(marginal_bits(arms[name]["test"]), 4)
        r["information_bits_per_frame"] = round(r["marginal_test_bits"] - r["test_bits"], 4)
        res[name] = r
        print(name, r, flush=True)
    if "right" in res and "same_timing" in res:
        res["words_bits_per_frame"] = round(res["right"]["information_bits_per_frame"]
                                            - res["same_timing"]["information_bits_per_frame"], 4)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
