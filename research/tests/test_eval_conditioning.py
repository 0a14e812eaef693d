"""The conditioning judge's plumbing (research/scripts/eval_conditioning.py, gen_conditioning_clips.py): features,
grouped folds, classifier, scores, Frechet distance and the generated-clips format, on tiny synthetic data."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import load_script

ev = load_script("eval_conditioning")
gen = load_script("gen_conditioning_clips")


def _clip(kind: str, seed: int, seconds: float = 2.0) -> np.ndarray:
    """A synthetic 'genre': steady tones, or noise bursts at a tempo."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * ev.SR)) / ev.SR
    if kind == "tones":
        f = rng.uniform(200, 400)
        return (0.2 * np.sin(2 * np.pi * f * t) + 0.1 * np.sin(2 * np.pi * 1.5 * f * t)).astype(np.float32)
    env = (np.sin(2 * np.pi * rng.uniform(2, 3) * t) > 0.6).astype(np.float32)
    return (0.3 * env * rng.standard_normal(len(t))).astype(np.float32)


def test_hand_features_shape_finite_and_tell_kinds_apart():
    audio = np.stack([_clip("tones", 0), _clip("bursts", 1), np.zeros(2 * ev.SR, np.float32)])
    f = ev.hand_features(audio)
    assert f.shape == (3, 322) and f.dtype == np.float32 and np.isfinite(f).all()
    assert not np.allclose(f[0], f[1])
    full = (audio[0] + 0.05 * np.random.default_rng(0).standard_normal(audio.shape[1]))[None].astype(np.float32)
    loud, quiet = ev.hand_features(full), ev.hand_features(full * 0.1)
    assert np.abs(ev.level_free(quiet) - ev.level_free(loud)).max() < 1e-2  # loudness removed
    assert np.abs(quiet - loud).max() > 0.5
    s = ev.spectral_summary(audio[:2])
    assert s["flatness"][1] > s["flatness"][0]  # noise is flatter than tones
    assert s["pulse_clarity"][1] > s["pulse_clarity"][0]


def test_grouped_folds_keep_tracks_together_and_stratify():
    groups = [f"t{i // 3}" for i in range(60)]  # 20 tracks of 3 clips
    labels = ["a" if i < 30 else "b" for i in range(60)]
    folds = ev.stratified_group_folds(groups, labels, k=5)
    for g in set(groups):
        assert len({folds[i] for i in range(60) if groups[i] == g}) == 1
    for f in range(5):
        assert {labels[i] for i in range(60) if folds[i] == f} == {"a", "b"}


def test_classifier_cross_validation_and_scores():
    audio = np.stack([_clip("tones" if i % 2 else "bursts", i, 1.0) for i in range(16)])
    x = ev.hand_features(audio)
    y = np.array([i % 2 for i in range(16)])
    folds = ev.stratified_group_folds([f"t{i // 2}" for i in range(16)], [str(v) for v in y], k=3)
    pred = ev.cross_val_predict(x, y, folds, 2, 1e-2)
    s = ev.scores(y, pred, ["bursts", "tones"])
    assert s["balanced_accuracy"] >= 0.9 and s["chance"] == 0.5
    assert np.array(s["confusion"]).sum() == 16
    # restricted choice and a class absent from training never win
    clf = ev.fit_logreg(x, y, 3, 1e-2)
    assert set(clf.predict(x).tolist()) <= {0, 1}
    assert (clf.predict(x, allowed=[1]) == 1).all()


def test_frechet_is_zero_for_same_set_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 4))
    assert ev.frechet(a, a) == pytest.approx(0, abs=1e-6)
    assert ev.frechet(a + 2, a) == pytest.approx(16, rel=0.05)


def test_plan_items_and_generated_clips_round_trip(tmp_path):
    from jukebox.testing import ARTISTS, make_tiny_model_dir

    meta = tmp_path / "metadata.csv"
    with open(meta, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "artist", "genre", "split"])
        w.writerows([["a.flac", ARTISTS[0], "folk", "train"], ["b.flac", ARTISTS[0], "folk", "train"],
                     ["c.flac", ARTISTS[1], "folk", "train"], ["d.flac", "Nobody", "folk", "train"],
                     ["e.flac", ARTISTS[2], "rock", "train"], ["f.flac", ARTISTS[2], "rock", "validation"]])
    plan = gen.plan_from_metadata(meta)
    assert plan["genres"]["folk"] == [[ARTISTS[0], 2], [ARTISTS[1], 1], ["Nobody", 1]]
    assert plan["genres"]["rock"] == [[ARTISTS[2], 1]]
    items = gen.choose_items(plan, ["folk", "rock"], 3, 4, lambda a: a != "Nobody")
    assert [it["artist"] for it in items] == [ARTISTS[0], ARTISTS[1], ARTISTS[0]] + [ARTISTS[2]] * 3
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    model_dir = tmp_path / "tiny"
    make_tiny_model_dir(model_dir)
    out = tmp_path / "clips"
    gen.main(["-m", str(model_dir), "--plan", str(plan_file), "--genres", "folk", "rock", "--per-genre", "2",
              "--seconds", "0.05", "--out", str(out), "--device", "cpu"])
    info = json.loads((out / gen.CLIPS_FILE.format(prefix="cond")).read_text())
    assert info["format"] == gen.FORMAT and len(info["items"]) == 4 and info["levels"] == [2, 1, 0]
    import jukebox

    model = jukebox.load_model(model_dir, device="cpu")
    audio, items, level, _ = ev.load_generated(out, model, None)
    assert level == 0 and audio.shape[0] == 4 and items == info["items"]
    audio2, _, level2, _ = ev.load_generated(out / "cond_clips.json", model, 2)
    assert level2 == 2 and audio2.shape == audio.shape
    other = tmp_path / "other"
    make_tiny_model_dir(other, seed=1)
    with pytest.raises(SystemExit, match="another VQ-VAE"):
        ev.load_generated(out, jukebox.load_model(other, device="cpu"), None)
    # render those clips' top level again through the upsamplers (--upsample): same items, same top codes
    gen.main(["-m", str(model_dir), "--upsample", str(out / "cond_clips.json"), "--prefix", "up", "--out", str(out),
              "--device", "cpu", "--upsampler-temperature", "0.5"])
    up = json.loads((out / "up_clips.json").read_text())
    assert up["items"] == info["items"] and up["levels"] == [2, 1, 0]
    assert up["settings"]["upsampler_temperature"] == 0.5
    a, b = np.load(out / "cond_codes.npz"), np.load(out / "up_codes.npz")
    assert np.array_equal(a["level_2"], b["level_2"]) and b["level_0"].shape == a["level_0"].shape


def test_code_judge_features_and_unseen_track_picking():
    import torch

    cj = load_script("eval_conditioning_codes")
    ll = load_script("eval_label_likelihood")
    g = torch.Generator().manual_seed(0)
    codebook = torch.randn(64, 8, generator=g)
    feats = cj.CodeFeatures(codebook, torch.ones(64), clusters=4)
    z = np.stack([np.repeat(np.arange(10), 10), np.random.default_rng(0).integers(0, 64, 100)])
    x = feats(z)
    assert x.shape == (2, 3 * 8 + 4 + 2) and np.isfinite(x).all()
    assert x[0, -2] > 0.8 and x[1, -2] < 0.2  # repetition rate: the first clip repeats each code ten times
    assert ll.track_key("audio/naev-data__ocean.ogg") == ll.track_key("naev-data/ocean.flac")
    rows = [{"file": f"p{i % 2}/t{i}.flac", "genre": "folk", "package": f"p{i % 2}", "seconds": "60"} for i in range(6)]
    rows.append({"file": "p0/short.flac", "genre": "folk", "package": "p0", "seconds": "3"})
    picked = ll.pick_tracks(rows, {ll.track_key("p0/t0.flac")}, ["folk"], 4, 10.0, seed=0)
    assert len(picked) == 4 and {r["package"] for r in picked} == {"p0", "p1"}
    assert all(r["file"] not in ("p0/t0.flac", "p0/short.flac") for r in picked)
