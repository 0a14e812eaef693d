"""Picture of a lyric prior's teacher-forced alignment on one held-out song, against the words' true times.

Reads the per-frame argmax character and its weight of the best head (`eval_alignment.npz` of
`gpu_lyrics_long.sh STAGE=eval`, keys ``argmax_<style>_<song>`` / ``peak_<style>_<song>``), rebuilds the cleaned
lyric text the columns index with the model's own labeller, and draws: the attended character per frame (dots,
darker = more weight), the characters of the word being sung (grey band, from the corpus's timing file) and the
proportional baseline (the lyric window's own guess: character c at c / n x duration).

    python research/scripts/plot_lyrics_alignment.py --npz eval_alignment.npz --model runs/ll_models/lyrics \
        --style lyrics --song song00009 --timing /work/sung_corpus/timing --out alignment_song00009.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import eval_lyrics as ev
    import matplotlib.pyplot as plt

    import jukebox

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--npz", type=Path, required=True)
    p.add_argument("--model", type=Path, required=True, help="the lyric model directory (its labeller)")
    p.add_argument("--style", required=True, help="the key's style part: lyrics or merged")
    p.add_argument("--song", required=True)
    p.add_argument("--timing", type=Path, required=True)
    p.add_argument("--head", default="", help="shown in the title, e.g. 7:1")
    p.add_argument("--seconds", type=float, default=60.0, help="draw the first S seconds")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    z = np.load(args.npz)
    arg = z[f"argmax_{args.style}_{args.song}"].astype(np.int64)
    peak = z[f"peak_{args.style}_{args.song}"].astype(np.float32)
    t = json.loads((args.timing / f"{args.song}.json").read_text())
    jb = jukebox.load_model(str(args.model), device="cpu")
    top = jb.top_level
    spf = jb.hop_lengths[top] / jb.sample_rate
    labels = jb.labeller(top).batch_labels([{"artist": t["artist"], "genre": t["genre"], "lyrics": t["lyrics"],
                                             "total_length": int(t["duration"] * jb.sample_rate), "offset": 0}],
                                           device="cpu", warn=False)
    text = labels.infos[0].lyrics
    words = t["words"]
    cw = ev.char_words(text, [w["word"] for w in words])
    n = min(len(arg), int(args.seconds / spf))
    times = (np.arange(n) + 0.5) * spf
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    for k, w in enumerate(words):
        chars = np.nonzero(cw == k)[0]
        if len(chars) and w["start"] < times[-1]:
            ax.fill_between([w["start"], w["end"]], chars[0], chars[-1] + 1, color="0.75", lw=0)
    ax.scatter(times, arg[:n], s=1.5, c=np.clip(peak[:n] / max(1e-6, float(peak[:n].max())), 0.05, 1.0),
               cmap="Blues", vmin=0, vmax=1, label="attended character (best head)")
    ax.plot(times, times / t["duration"] * len(text), "r--", lw=1, label="proportional baseline")
    ax.fill_between([], [], [], color="0.75", label="word being sung (true)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("character of the lyrics")
    top_char = max(int(arg[:n].max()), int(times[-1] / t["duration"] * len(text))) + 10
    ax.set_ylim(0, top_char)
    ax.set_xlim(0, times[-1])
    ax.set_title(f"{args.style} prior, head {args.head}, held-out {args.song} (teacher-forced)")
    ax.legend(loc="upper left", fontsize=8, markerscale=6)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
