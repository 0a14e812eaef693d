"""Classifier-free guidance: guided logits are uncond + w * (cond - uncond) of the same prefix, w = 0 samples the
unconditional prior, w = 1 is plain sampling; through the API, the CLI and the model's own default."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from jukebox.data.labels import Labeller, LabelVocab, null_labels
from jukebox.testing import make_tiny_model_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    md = make_tiny_model_dir(tmp_path_factory.mktemp("guid") / "m", n_ctx=32)
    prior = md.load_prior(2).eval()
    with torch.no_grad():  # make the labels matter: random, not tiny, label embeddings
        prior.label_conditioner.artist_emb.weight.normal_(0, 1.0)
        prior.label_conditioner.genre_emb.weight.normal_(0, 1.0)
    cfg = prior.config
    vocab = LabelVocab.load(md.path / "prior_level_2")
    lab = Labeller(vocab, cfg.labels.max_bow_genre_size, cfg.lyrics.n_tokens, cfg.sample_length)
    artists, genres = vocab.list_artists()[1:], vocab.list_genres()[1:]
    y = lab.batch_labels([{"artist": artists[i % len(artists)], "genre": genres[i % len(genres)], "lyrics": "",
                           "total_length": 4 * cfg.sample_length, "offset": 0} for i in range(3)]).y
    return md, prior, y


@pytest.mark.parametrize("decode", ["eager", "int8"])
def test_guided_logits_are_the_guidance_formula(tiny, decode):
    _, prior, y = tiny
    w = 3.0
    gen = torch.Generator().manual_seed(0)
    seq, logits = prior.sample_sequence(3, y=y, guidance=w, return_logits=True, generator=gen, decode=decode)
    assert seq.shape == (3, prior.n_ctx) and logits.shape[:2] == (3, prior.n_ctx)
    with torch.no_grad():
        cond = prior.logits(seq, None, y).float()
        uncond = prior.logits(seq, None, null_labels(y, prior.config.labels.max_bow_genre_size)).float()
    tol = 1e-4 if decode == "eager" else 0.15  # int8 decode: quantised weights
    torch.testing.assert_close(logits, uncond + w * (cond - uncond), atol=tol, rtol=tol)
    assert not torch.allclose(cond, uncond, atol=1e-2)  # the test has teeth: labels change the logits


def test_guidance_zero_is_unconditional_and_one_is_plain(tiny):
    _, prior, y = tiny
    y0 = null_labels(y, prior.config.labels.max_bow_genre_size)
    greedy = dict(top_k=1, return_logits=True)
    a, la = prior.sample_sequence(3, y=y, guidance=0.0, **greedy)
    b, lb = prior.sample_sequence(3, y=y0, **greedy)
    assert torch.equal(a, b)
    torch.testing.assert_close(la, lb, atol=1e-4, rtol=1e-4)
    c = prior.sample(3, y=y, guidance=1.0, generator=torch.Generator().manual_seed(1))
    d = prior.sample(3, y=y, generator=torch.Generator().manual_seed(1))
    assert torch.equal(c, d)
    e = prior.sample(3, y=y, guidance=4.0, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(c, e)


def test_guidance_through_api_cli_and_model_default(tiny, tmp_path):
    from jukebox.api import load_model
    from jukebox.errors import UsageError

    md, _, _ = tiny
    jb = load_model(md.path, device="cpu")
    seconds = 2 * 32 * 8 * 4 / jb.sample_rate
    out = jb.generate(seconds=seconds, seed=0, levels=[2], guidance=2.5, alignment=False)
    assert out.settings["guidance"] == 2.5 and out.settings["per_level"][2]["guidance"] == 2.5
    with pytest.raises(UsageError, match="guidance"):
        jb.generate(seconds=seconds, levels=[2], guidance=-1)
    meta = md.path / "model.json"
    info = json.loads(meta.read_text())
    info["sampling"] = {"guidance": 2.0}
    meta.write_text(json.dumps(info))
    jb = load_model(md.path, device="cpu")
    assert jb.sampling_defaults["guidance"] == 2.0
    full = jb.generate(seconds=seconds, seed=0, alignment=False)
    assert full.settings["per_level"][2]["guidance"] == 2.0
    assert full.settings["per_level"][1]["guidance"] == 1.0 == full.settings["per_level"][0]["guidance"]
    r = subprocess.run([sys.executable, "-m", "jukebox.cli.main", "sample", "-m", str(md.path), "--seconds",
                        str(seconds), "--levels", "2", "--guidance", "3", "--seed", "0", "-o", str(tmp_path / "o"),
                        "--quiet", "--device", "cpu"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    saved = json.loads((tmp_path / "o" / "metadata.json").read_text())
    assert saved["request"]["guidance"] == 3.0 and saved["settings"]["per_level"]["2"]["guidance"] == 3.0


def test_items_carry_their_own_total_seconds(tiny, tmp_path, monkeypatch):
    """items=[{..., "total_seconds": T}]: each song's timing labels use its own length (else the call's)."""
    from jukebox.api import load_model
    from jukebox.data.labels import Labeller
    from jukebox.errors import UsageError

    md, _, _ = tiny
    seen = []
    orig = Labeller.batch_labels

    def spy(self, metas, *a, **k):
        seen.append([m["total_length"] for m in metas])
        return orig(self, metas, *a, **k)

    monkeypatch.setattr(Labeller, "batch_labels", spy)
    jb = load_model(md.path, device="cpu")
    seconds = 2 * 32 * 8 * 4 / jb.sample_rate
    items = [{"artist": "unknown", "genre": "unknown", "total_seconds": 3.0}, {"artist": "unknown"}]
    jb.generate(items=items, n_samples=2, seconds=seconds, total_seconds=2.0, levels=[2], seed=0, alignment=False)
    assert seen[-1] == [round(3.0 * jb.sample_rate), round(2.0 * jb.sample_rate)]
    with pytest.raises(UsageError, match="total_seconds of item 0"):
        jb.generate(items=[{"total_seconds": "long"}], seconds=seconds, levels=[2])
    batch = tmp_path / "b.jsonl"
    batch.write_text('{"artist": "unknown", "total_seconds": 4}\n{"genre": "unknown"}\n')
    from jukebox.cli.common import read_batch_file

    assert read_batch_file(str(batch)) == [{"artist": "unknown", "total_seconds": 4.0}, {"genre": "unknown"}]


def test_upsampler_guidance_per_level(tiny, tmp_path):
    """``guidance`` as {level: w} guides upsamplers too (w = 1 there is plain sampling, other w change the codes);
    ``model.json`` may give a list indexed by level, and an invalid entry falls back to 1 (off)."""
    from jukebox.api import load_model
    from jukebox.errors import UsageError

    md, _, _ = tiny
    meta = md.path / "model.json"
    info = json.loads(meta.read_text())
    saved_sampling = info.get("sampling")
    try:
        jb = load_model(md.path, device="cpu")
        torch.manual_seed(0)
        for lvl in (0, 1):
            up = jb.prior(lvl)
            assert up.label_conditioner is not None
            with torch.no_grad():  # make the labels matter in the upsamplers as well
                up.label_conditioner.artist_emb.weight.normal_(0, 1.0)
                up.label_conditioner.genre_emb.weight.normal_(0, 1.0)
        seconds = 2 * 32 * 8 * 4 / jb.sample_rate
        vocab = jb.vocab()
        kw = dict(artist=vocab.list_artists()[1], genre=vocab.list_genres()[1], alignment=False)
        top = jb.generate(seconds=seconds, seed=0, levels=[2], **kw).codes[2]
        plain = jb.upsample({2: top}, seed=1, guidance=1.0, **kw)
        same = jb.upsample({2: top}, seed=1, guidance={0: 1.0, 1: 1.0}, **kw)
        guided = jb.upsample({2: top}, seed=1, guidance={0: 4.0, 1: 4.0}, **kw)
        assert torch.equal(plain.codes[0], same.codes[0]) and torch.equal(plain.codes[1], same.codes[1])
        assert not all(torch.equal(plain.codes[lvl], guided.codes[lvl]) for lvl in (0, 1))
        assert {lvl: s["guidance"] for lvl, s in guided.settings["per_level"].items()} == {0: 4.0, 1: 4.0}
        with pytest.raises(UsageError, match="level 0"):
            jb.upsample({2: top}, guidance={0: 25.0}, **kw)
        as_json = jb.upsample({2: top}, seed=1, guidance={"0": 4.0, "1": 4.0}, **kw)  # levels as JSON keys
        assert torch.equal(as_json.codes[0], guided.codes[0])
        with pytest.raises(UsageError, match="integers"):
            jb.upsample({2: top}, guidance={"low": 2.0}, **kw)
        for bad, want in (([2.0, "x", 3.0], 1.0), ([], 1.0), ([2.0, 1.5, 3.0], {0: 2.0, 1: 1.5, 2: 3.0})):
            info["sampling"] = {"guidance": bad}
            meta.write_text(json.dumps(info))
            assert load_model(md.path, device="cpu").sampling_defaults["guidance"] == want
        full = load_model(md.path, device="cpu").generate(seconds=seconds, seed=0, **kw)
        assert {lvl: s["guidance"] for lvl, s in full.settings["per_level"].items()} == {0: 2.0, 1: 1.5, 2: 3.0}
        assert full.settings["guidance"] == 3.0
    finally:
        if saved_sampling is None:
            info.pop("sampling", None)
        else:
            info["sampling"] = saved_sampling
        meta.write_text(json.dumps(info))


def _tempo_prior(tmp_path):
    """A tiny model dir whose top prior has tempo conditioning and labels that matter (random embeddings)."""
    from jukebox.train.runner import with_tempo

    md = make_tiny_model_dir(tmp_path / "m", levels=(2,), n_ctx=32)
    prior, _ = with_tempo(md.load_prior(2))
    torch.manual_seed(1)
    with torch.no_grad():
        for emb in ("tempo_emb", "phase_emb", "artist_emb", "genre_emb"):
            getattr(prior.label_conditioner, emb).weight.normal_(std=0.7)
    md.save_prior(prior.eval())
    c = prior.config
    genres = [1] + [-1] * (c.labels.max_bow_genre_size - 1)
    y = torch.tensor([[10 * c.sample_length, 0, c.sample_length, 1, *genres, bpm * 100, 0] + [0] * c.lyrics.n_tokens
                      for bpm in (90, 140)])
    return md, md.load_prior(2).eval(), y


def test_split_guidance_scales_labels_and_tempo_apart(tmp_path):
    """label_guidance L beside guidance W: logits u + L (l - u) + W (c - l), with l the labels without the tempo;
    L == W is plain guidance (same tokens); a prior without tempo refuses L."""
    from jukebox.prior.settings import SettingsError

    md, prior, y = _tempo_prior(tmp_path)
    mbgs = prior.config.labels.max_bow_genre_size
    seq, logits = prior.sample_sequence(2, y=y, guidance=3.0, label_guidance=6.0, return_logits=True,
                                        generator=torch.Generator().manual_seed(0))
    assert seq.shape == (2, prior.n_ctx) and logits.shape[:2] == (2, prior.n_ctx)
    with torch.no_grad():
        c = prior.logits(seq, None, y).float()
        label = prior.logits(seq, None, null_labels(y, mbgs, tempo=True, labels=False)).float()
        u = prior.logits(seq, None, null_labels(y, mbgs, tempo=True)).float()
    torch.testing.assert_close(logits, u + 6.0 * (label - u) + 3.0 * (c - label), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(c, label, atol=1e-2) and not torch.allclose(label, u, atol=1e-2)  # both matter
    same = [prior.sample(2, y=y, guidance=3.0, generator=torch.Generator().manual_seed(2), **k)
            for k in ({}, {"label_guidance": 3.0})]
    assert torch.equal(*same)
    apart = prior.sample(2, y=y, guidance=3.0, label_guidance=20.0, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(same[0], apart)
    # only the labels guided (W = 1): still three rows; the tempo rides along unscaled
    _, one = prior.sample_sequence(2, y=y, label_guidance=2.0, return_logits=True, top_k=1)
    with torch.no_grad():
        c1 = prior.logits(_, None, y).float()
        l1 = prior.logits(_, None, null_labels(y, mbgs, tempo=True, labels=False)).float()
        u1 = prior.logits(_, None, null_labels(y, mbgs, tempo=True)).float()
    torch.testing.assert_close(one, u1 + 2.0 * (l1 - u1) + (c1 - l1), atol=1e-4, rtol=1e-4)
    plain = make_tiny_model_dir(tmp_path / "plain", levels=(2,), n_ctx=32).load_prior(2).eval()
    with pytest.raises(SettingsError, match="label_guidance needs a prior with tempo"):
        plain.sample(1, y=y[:1, :plain.config.n_labels], guidance=3.0, label_guidance=5.0)


def test_label_guidance_through_api_cli_and_model_default(tmp_path):
    from jukebox.api import load_model
    from jukebox.errors import UsageError

    md, _, _ = _tempo_prior(tmp_path)
    jb = load_model(md.path, device="cpu")
    seconds = 2 * 32 * 8 * 4 / jb.sample_rate
    out = jb.generate(seconds=seconds, seed=0, guidance=2.0, label_guidance=4.0, bpm=100, alignment=False)
    assert out.settings["label_guidance"] == 4.0 and out.settings["per_level"][2]["label_guidance"] == 4.0
    with pytest.raises(UsageError, match="label_guidance"):
        jb.generate(seconds=seconds, label_guidance=30)
    meta = md.path / "model.json"
    info = json.loads(meta.read_text())
    info["sampling"] = {"guidance": 2.0, "label_guidance": 3.5}
    meta.write_text(json.dumps(info))
    jb = load_model(md.path, device="cpu")
    assert jb.sampling_defaults["label_guidance"] == 3.5
    assert jb.sampling_settings()[2].label_guidance == 3.5
    r = subprocess.run([sys.executable, "-m", "jukebox.cli.main", "sample", "-m", str(md.path), "--seconds",
                        str(seconds), "--label-guidance", "5", "--seed", "0", "-o", str(tmp_path / "o"),
                        "--quiet", "--device", "cpu"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    saved = json.loads((tmp_path / "o" / "metadata.json").read_text())
    assert saved["request"]["label_guidance"] == 5.0 and saved["settings"]["per_level"]["2"]["label_guidance"] == 5.0
    plain_dir = make_tiny_model_dir(tmp_path / "plain", n_ctx=32).path
    plain = load_model(plain_dir, device="cpu")
    with pytest.raises(UsageError, match="label_guidance needs a level-2 prior with tempo"):
        plain.sampling_settings(guidance=2.0, label_guidance=4.0)
    # a model.json default (e.g. copied by an export) is a tempo prior's setting: ignored without tempo
    info = json.loads((plain_dir / "model.json").read_text())
    info["sampling"] = {"guidance": 2.0, "label_guidance": 4.0}
    (plain_dir / "model.json").write_text(json.dumps(info))
    assert load_model(plain_dir, device="cpu").sampling_settings()[2].label_guidance is None
