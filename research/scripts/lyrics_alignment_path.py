# research/results/lyrics_align/alignment_path.json and alignment_sampled_song00009.png were made by:
#   OMP_NUM_THREADS=2 .venv/bin/python research/scripts/lyrics_alignment_path.py OUT MODELS alignment_path.json \
#       alignment_sampled_song00009.png SUNG_CORPUS PACK_DIR/eval
# OUT: lyrics_models.py sample output; MODELS: folder with lyrics/ (lyrics_long.py restore); SUNG_CORPUS: the sung
# corpus (timing/*.json); PACK_DIR: `lyrics_codepack.py unpack .gpu/lyricpack_words.tar.xz DIR` (its eval/ codes).
"""Alignment path while sampling (argmax character per top-level frame) against the real song's word timing, and
the same head teacher-forced on the real codes of the first SECONDS of each song."""
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_lyrics as el  # noqa: E402
import lyrics_models as lm  # noqa: E402

torch.set_num_threads(2)
import jukebox  # noqa: E402

RES = Path(sys.argv[1])          # lyrics_models.py sample output (alignment.npz, sample_info.json)
MODELS = Path(sys.argv[2])
CORPUS = Path(sys.argv[5])
EVAL = Path(sys.argv[6])
OUT_JSON = Path(sys.argv[3])
OUT_PNG = Path(sys.argv[4])
BACK = [3, 10]                   # "backwards by more than a few characters"

info = json.loads((RES / "sample_info.json").read_text())
seconds = float(info["seconds"])
al = np.load(RES / "alignment.npz")
jb = jukebox.load_model(MODELS / "lyrics", device="cpu")
top = jb.top_level
spf = jb.hop_lengths[top] / jb.sample_rate
labeller = jb.labeller(top)
cfg = jb.prior(top).config
idx = json.loads((EVAL / "index.json").read_text())
codes_all = np.memmap(EVAL / "level_2.bin", dtype=np.int16, mode="r")


def clean_text(item):
    lab = labeller.batch_labels([{"artist": item["artist"], "genre": item["genre"], "lyrics": item["lyrics"],
                                  "total_length": int(round(item["total_seconds"] * jb.sample_rate)), "offset": 0}],
                                device="cpu")
    return lab.infos[0].lyrics


def real_char_path(text, words, t):
    """Character being sung at times t (s) in the real song: inside word k linearly over its characters,
    between words the end of the last word sung, before the first word 0. Also the word index (-1 outside)."""
    cw = el.char_words(text, [w["word"] for w in words])
    pos = np.zeros(len(t))
    for k, w in enumerate(words):
        chars = np.nonzero(cw == k)[0]
        if not len(chars):
            continue
        c0, c1 = chars[0], chars[-1] + 1
        inside = (t >= w["start"]) & (t < w["end"])
        pos[inside] = c0 + (t[inside] - w["start"]) / max(1e-6, w["end"] - w["start"]) * (c1 - c0)
        pos[t >= w["end"]] = np.maximum(pos[t >= w["end"]], c1)
    return pos, cw


def path_metrics(am, text_len, real_pos, total_seconds, t):
    n = len(am)
    last = max(1, int(round(1.0 / spf)))  # the last second
    end_pos = float(np.median(am[-last:]))
    real_end = float(real_pos[-1])
    prop_end = seconds / total_seconds * text_len
    d = np.diff(am)
    runmax = np.maximum.accumulate(am)
    runs = np.diff(np.flatnonzero(np.r_[True, d != 0, True]))
    out = {"frames": n, "end_char": round(end_pos, 1), "real_char_at_end": round(real_end, 1),
           "proportional_char_at_end": round(prop_end, 1),
           "progress_vs_real": round(end_pos / real_end, 3) if real_end > 0 else None,
           "max_char": int(am.max()), "distinct_chars": int(len(np.unique(am))),
           "longest_dwell_s": round(float(runs.max()) * spf, 2),
           "median_abs_dev_from_real_chars": round(float(np.median(np.abs(am - real_pos))), 1),
           "spearman_time_vs_char": None}
    from scipy.ndimage import median_filter
    sm = median_filter(am, size=max(1, int(round(0.25 / spf))) | 1, mode="nearest")
    sm_max = np.maximum.accumulate(sm)
    rl = np.diff(np.flatnonzero(np.r_[True, np.diff(np.floor(real_pos)) != 0, True]))
    out["real_longest_hold_s"] = round(float(rl.max()) * spf, 2)
    for b in BACK:
        out[f"smoothed_frames_within_{b}_of_furthest"] = round(float(np.mean(sm >= sm_max - b)), 4)
        out[f"steps_not_back_more_than_{b}"] = round(float(np.mean(d >= -b)), 4)
        out[f"frames_within_{b}_of_furthest"] = round(float(np.mean(am >= runmax - b)), 4)
    if np.ptp(am) > 0:
        from scipy.stats import spearmanr
        out["spearman_time_vs_char"] = round(float(spearmanr(np.arange(n), am).statistic), 3)
    return out


rows = {"right": [], "wrong": [], "teacher_forced_real": []}
paths = {}
for arm in info["arms"]:
    if arm["model"] != "lyrics":
        continue
    for i, item in enumerate(arm["items"]):
        key = f"argmax_{arm['kind']}_lyrics_{i}"
        am = al[key].astype(np.int64)
        t = (np.arange(len(am)) + 0.5) * spf
        rec = json.loads((CORPUS / "timing" / f"{item['song']}.json").read_text())
        text = clean_text(item)
        # the real song's timing: for the right arm the given lyrics are the song's own; for the wrong arm the
        # real reference is the given lyrics' own song's timing (what reading them at its pace would look like)
        src = json.loads((CORPUS / "timing" / f"{item['lyrics_of']}.json").read_text())
        real_pos, cw = real_char_path(text, src["words"], t)
        m = path_metrics(am, len(text), real_pos, item["total_seconds"], t)
        rows[arm["kind"]].append({"song": item["song"], "lyrics_of": item["lyrics_of"], "chars": len(text), **m})
        paths[(arm["kind"], item["song"])] = (am, real_pos)
        if arm["kind"] == "right":
            # teacher-forced: the same head (compact_alignment, as while sampling) on the song's real codes
            tr = idx["tracks"][f"sung/{item['song']}.flac"]
            s0, ln = tr["start"][2], tr["length"][2]
            z = torch.from_numpy(np.array(codes_all[s0:s0 + min(ln, len(am))], dtype=np.int64))[None]
            tf = lm.compact_alignment(jb, [item], z, seconds, "tf")["argmax_tf_0"].astype(np.int64)
            m2 = path_metrics(tf, len(text), real_pos[:len(tf)], item["total_seconds"], t[:len(tf)])
            dense = np.zeros((len(tf), len(text)), np.float32)
            dense[np.arange(len(tf)), np.clip(tf, 0, len(text) - 1)] = 1
            am_dense = np.zeros((len(am), len(text)), np.float32)
            am_dense[np.arange(len(am)), np.clip(am, 0, len(text) - 1)] = 1
            m2.update({f"real_timing_{k}": v for k, v in
                       el.alignment_metrics(dense, cw, rec["words"], spf, seconds).items() if k != "frames"})
            rows["right"][-1].update({f"real_timing_{k}": v for k, v in
                                      el.alignment_metrics(am_dense, cw, rec["words"], spf, seconds).items()
                                      if k != "frames"})
            prop = np.clip(((np.arange(len(am)) + 0.5) * spf / item["total_seconds"] * len(text)).astype(int), 0,
                           len(text) - 1)
            m3 = path_metrics(prop, len(text), real_pos, item["total_seconds"], t)
            pd = np.zeros((len(prop), len(text)), np.float32)
            pd[np.arange(len(prop)), prop] = 1
            m3.update({f"real_timing_{k}": v for k, v in
                       el.alignment_metrics(pd, cw, rec["words"], spf, seconds).items() if k != "frames"})
            rows.setdefault("proportional_window", []).append({"song": item["song"], "chars": len(text), **m3})
            rows["teacher_forced_real"].append({"song": item["song"], "chars": len(text), **m2})
            paths[("tf", item["song"])] = (tf, real_pos[:len(tf)])
        print(arm["kind"], item["song"], json.dumps(rows[arm["kind"]][-1]), flush=True)


def summarise(rs):
    keys = [k for k in rs[0] if isinstance(rs[0][k], (int, float)) and not isinstance(rs[0][k], bool)]
    out = {"items": len(rs)}
    for k in keys:
        v = np.array([r[k] for r in rs if r.get(k) is not None], float)
        if len(v):
            out[k] = {"median": round(float(np.median(v)), 4), "mean": round(float(np.mean(v)), 4),
                      "min": round(float(v.min()), 4), "max": round(float(v.max()), 4)}
    return out


report = {"seconds": seconds, "sec_per_frame": spf, "head": f"{cfg.alignment_layer}:{cfg.alignment_head}",
          "definitions": {
              "end_char": "median argmax character over the last second of the 24 s",
              "real_char_at_end": "character sung at 24 s in the real song (word timings; linear within a word)",
              "proportional_char_at_end": "24 s / song length x lyric characters (the lyric window's pace)",
              "progress_vs_real": "end_char / real_char_at_end",
              "steps_not_back_more_than_B": "share of frame-to-frame steps whose argmax falls by at most B chars",
              "frames_within_B_of_furthest": "share of frames whose argmax is within B chars of the furthest so far",
              "longest_dwell_s": "longest run of frames on one character (s)",
              "real_longest_hold_s": "the real song's longest time on one character (intro, rests, held notes)",
              "smoothed_frames_within_B_of_furthest": "as frames_within_B_of_furthest after a 0.25 s running "
                                                      "median of the argmax (flicker removed)",
              "proportional_window": "the path c = t / song length x characters (no attention at all)",
              "median_abs_dev_from_real_chars": "median |argmax - real song's character| over the frames",
              "real_timing_*": "eval_lyrics.alignment_metrics of the argmax path against the real song's timing",
              "wrong arm": "real reference = the timing of the song whose lyrics were given"},
          "summary": {k: summarise(v) for k, v in rows.items() if v}, "items": rows}
OUT_JSON.write_text(json.dumps(report, indent=1))

# picture: song00009
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

song = "song00009"
fig, ax = plt.subplots(figsize=(10, 5.5))
for k, lab, style in (("right", "sampled, right lyrics (head argmax)", dict(color="C0", lw=0.8)),
                      ("tf", "teacher-forced on the real codes (same head)", dict(color="C2", lw=0.8, alpha=0.8))):
    if (k, song) in paths:
        am, real = paths[(k, song)]
        ax.plot((np.arange(len(am)) + 0.5) * spf, am, label=lab, **style)
am, real = paths[("right", song)]
ax.plot((np.arange(len(am)) + 0.5) * spf, real, color="k", lw=1.6, label="real song: character sung (word timings)")
it = next(x for x in info["arms"][0]["items"] if x["song"] == song)
ax.plot([0, seconds], [0, seconds / it["total_seconds"] * rows["right"][0]["chars"]], "--", color="gray",
        label="proportional lyric window pace")
ax.set_xlabel("time (s)")
ax.set_ylabel("lyric character index")
ax.set_title(f"{song}: alignment head {report['head']} while sampling 24 s vs the real word timing")
ax.legend(loc="upper left", fontsize=8)
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(OUT_PNG, dpi=110)
print("wrote", OUT_JSON, OUT_PNG)
print(json.dumps(report["summary"], indent=1))
