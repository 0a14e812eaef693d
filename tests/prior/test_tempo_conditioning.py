"""Tempo conditioning of a top-level prior: the tempo label and the beat phase at every position."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import jukebox
from jukebox.checkpoint.model_dir import ModelDir
from jukebox.data.labels import Labeller, LabelVocab
from jukebox.errors import UsageError
from jukebox.prior import Prior
from jukebox.testing import make_tiny_model_dir
from jukebox.train.runner import genre_tempi, with_tempo


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tempo") / "m")


def _tempo_model_dir(md: ModelDir, tempi: dict | None = None) -> ModelDir:
    """Give ``md``'s top prior tempo conditioning with non-zero embeddings (as if trained)."""
    prior, cfg = with_tempo(md.load_prior(2))
    torch.manual_seed(1)
    with torch.no_grad():
        prior.label_conditioner.tempo_emb.weight.normal_(std=0.5)
        prior.label_conditioner.phase_emb.weight.normal_(std=0.5)
    md.save_prior(prior.eval())
    if tempi is not None:
        md.save_tempi(2, tempi)
    return md


def _y(prior: Prior, bpm: float, beat0: int = 0, offset: int = 0) -> torch.Tensor:
    c = prior.config
    g = [0] * c.labels.max_bow_genre_size
    y = [10 * c.sample_length, offset, c.sample_length, 1, *g]
    if c.labels.tempo:
        y += [int(round(bpm * 100)), beat0]
    return torch.tensor([y + [0] * c.lyrics.n_tokens])


def test_added_tempo_leaves_the_prior_unchanged(tiny):
    prior = tiny.load_prior(2).eval()
    tempo_prior, cfg = with_tempo(prior)
    assert cfg.labels.tempo and cfg.n_labels == prior.config.n_labels + 2
    z = torch.randint(0, cfg.l_bins, (1, cfg.n_ctx))
    with torch.no_grad():
        before = prior.logits(z, y=_y(prior, 0))
        for bpm in (0.0, 95.0, 140.0):
            assert torch.equal(tempo_prior.eval().logits(z, y=_y(tempo_prior, bpm, beat0=300)), before)


def test_beat_phase_follows_the_grid(tiny):
    prior, cfg = with_tempo(tiny.load_prior(2))
    cond = prior.label_conditioner
    sr, hop = cfg.labels.sample_rate, cfg.raw_to_tokens
    bpm, beat0, offset = 97.0, 1234, 40 * hop
    seen = {}
    cond.phase_emb.weight.data = torch.arange(cfg.labels.phase_bins + 1, dtype=torch.float).view(-1, 1).expand(
        -1, cond.width).clone()
    cond.tempo_emb.weight.data.zero_()
    signal = cond.tempo_signal(_y(prior, bpm, beat0, offset)[:, :cfg.n_labels])[0, :, 0]
    period = 60.0 * sr / bpm
    for i in range(cfg.n_ctx):
        phase = ((offset + i * hop - beat0) % period) / period
        seen[i] = int(signal[i])
        assert seen[i] == min(int(math.floor(phase * cfg.labels.phase_bins)), cfg.labels.phase_bins - 1)
    no_pulse = cond.tempo_signal(_y(prior, 0.0, 0, offset)[:, :cfg.n_labels])[0, :, 0]
    assert torch.all(no_pulse == cfg.labels.phase_bins)  # the "none" row everywhere


def test_tempo_changes_a_trained_prior(tmp_path):
    md = _tempo_model_dir(make_tiny_model_dir(tmp_path / "m", levels=(2,)))
    prior = md.load_prior(2).eval()
    z = torch.randint(0, prior.config.l_bins, (1, prior.config.n_ctx))
    with torch.no_grad():
        a = prior.logits(z, y=_y(prior, 90.0))
        b = prior.logits(z, y=_y(prior, 150.0))
        c = prior.logits(z, y=_y(prior, 90.0, beat0=1000))
    assert not torch.allclose(a, b) and not torch.allclose(a, c)


def test_labeller_with_tempo():
    vocab = LabelVocab.from_names(["a"], ["folk"], version="v2")
    lab = Labeller(vocab, 5, 0, 1024, tempo=True)
    y = lab.batch_labels([dict(artist="a", genre="folk", lyrics="", total_length=50_000, offset=0, bpm=121.5,
                               beat0=300)]).y
    assert y.shape == (1, lab.label_width) == (1, 11)
    d = lab.describe(y[0])
    assert d["bpm"] == 121.5 and d["beat0"] == 300 and d["genre"] == "folk"
    moved, _ = lab.window_y(lab.batch_labels([dict(artist="a", genre="folk", lyrics="", total_length=50_000,
                                                    offset=0, bpm=121.5, beat0=300)]), 4, 128)
    assert moved[0, 1] == 4 * 128 and moved[0, 9] == 12150 and moved[0, 10] == 300
    from jukebox.data.labels import null_labels

    nulled = null_labels(y, 5, tempo=True)
    assert nulled[0, 3] == 0 and nulled[0, 9] == 0 and nulled[0, 10] == 0 and nulled[0, 1] == y[0, 1]
    assert null_labels(y, 5)[0, 9] == 12150  # a prior without tempo keeps those columns as they are
    none = lab.batch_labels([dict(artist="a", genre="folk", lyrics="", total_length=50_000, offset=0)]).y
    assert none[0, 9] == 0 and none[0, 10] == 0  # no tempo: no steady pulse
    with pytest.raises(UsageError, match="bpm"):
        lab.batch_labels([dict(artist="a", genre="folk", lyrics="", total_length=50_000, offset=0, bpm=-3)])
    plain = Labeller(vocab, 5, 0, 1024)
    assert plain.batch_labels([dict(artist="a", genre="folk", lyrics="", total_length=50_000, offset=0,
                                    bpm=120)]).y.shape == (1, 9)


def test_api_bpm_default_and_errors(tiny, tmp_path):
    plain = jukebox.load_model(tiny.path)
    assert not plain.has_tempo
    with pytest.raises(UsageError, match="takes no tempo"):
        plain.generate(genre="folk", seconds=0.2, bpm=120, levels=[2])

    md = _tempo_model_dir(make_tiny_model_dir(tmp_path / "t", levels=(2,)),
                          {"default": 111.0, "genres": {"folk": 96.0, "rock": 140.0}})
    model = jukebox.load_model(md.path)
    assert model.has_tempo
    assert model.default_bpm("folk") == 96.0 and model.default_bpm("Rock") == 140.0
    assert model.default_bpm("ambient") == 111.0
    fast = model.generate(genre="folk", seconds=0.4, bpm=150, levels=[2], seed=3)
    slow = model.generate(genre="folk", seconds=0.4, bpm=70, levels=[2], seed=3)
    assert fast.settings["items"][0]["bpm"] == 150.0
    assert not torch.equal(fast.codes[2], slow.codes[2])  # the tempo reaches the sampled codes
    default = model.generate(genre="folk", seconds=0.4, levels=[2], seed=3, n_samples=2,
                             items=[{"genre": "folk"}, {"genre": "rock", "bpm": 70}])
    assert [it["bpm"] for it in default.settings["items"]] == [96.0, 70.0]
    with pytest.raises(UsageError, match="between 20 and 400"):
        model.generate(genre="folk", seconds=0.2, bpm=float("nan"), levels=[2])


def test_cli_bpm_is_recorded(tmp_path):
    from jukebox.cli.main import main

    md = _tempo_model_dir(make_tiny_model_dir(tmp_path / "t", levels=(2,)))
    out = tmp_path / "out"
    assert main(["sample", "-m", str(md.path), "--genre", "folk", "--seconds", "0.3", "--levels", "2",
                 "--bpm", "128", "--seed", "1", "-o", str(out), "--quiet"]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["request"]["bpm"] == 128.0


def test_genre_tempi_from_beats():
    from types import SimpleNamespace

    tracks = [SimpleNamespace(path=f"t{i}", genre=g) for i, g in enumerate(["folk", "folk", "folk", "rock"])]
    manifest = SimpleNamespace(split=lambda name: tracks, tracks=tracks)
    beats = {"t0": SimpleNamespace(bpm=90.0), "t1": SimpleNamespace(bpm=100.0), "t2": SimpleNamespace(bpm=0.0),
             "t3": SimpleNamespace(bpm=150.0)}
    out = genre_tempi(manifest, beats)
    assert out["genres"] == {"folk": 95.0, "rock": 150.0}
    assert out["default"] == float(np.median([90.0, 100.0, 150.0]))


def _click_corpus(root, bpms=(90.0, 120.0, 150.0, 100.0), seconds=6.0, sr=22050):
    """Click tracks at known tempi (two genres, one validation track)."""
    import soundfile as sf

    root.mkdir(parents=True)
    rows = ["file,artist,genre,lyrics,split"]
    for i, bpm in enumerate(bpms):
        x = np.zeros(int(seconds * sr), np.float32)
        for t in np.arange(0.1, seconds, 60.0 / bpm):
            n = int(t * sr)
            x[n:n + 200] += np.hanning(200).astype(np.float32) * np.sin(np.arange(200) * 0.9).astype(np.float32)
        sf.write(root / f"c{i}.wav", 0.5 * x, sr)
        rows.append(f"c{i}.wav,Alice Example,{('folk', 'rock')[i % 2]},,{'validation' if i == 3 else 'train'}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def test_train_prior_with_tempo_from_audio_and_code_folder(tmp_path):
    from jukebox.data.code_cache import CodeCache, build_code_cache, vqvae_fingerprint
    from jukebox.data.tempo import load_beats, save_beats, track_beats
    from jukebox.train import TrainConfig, train_prior
    from jukebox.train.runner import load_corpus

    corpus = _click_corpus(tmp_path / "music")
    md = make_tiny_model_dir(tmp_path / "model", levels=(2,))
    cfg = TrainConfig(steps=2, batch_size=2, lr=1e-3, warmup_steps=1, log_every=1, workers=1, val_batches=1)
    # audio folder: the beats are tracked once into the code cache
    train_prior(md.path, corpus, level=2, config=cfg, device="cpu", progress=False, log_dir="none", tempo=True)
    prior = md.load_prior(2)
    assert prior.config.labels.tempo
    tempi = md.tempi(2)
    assert tempi is not None and set(tempi["genres"]) == {"folk", "rock"}
    assert abs(tempi["genres"]["folk"] - 120.0) < 3 and abs(tempi["genres"]["rock"] - 120.0) < 31
    caches = list((md.path / "code_cache").iterdir())
    beats = load_beats(caches[0])
    assert beats is not None and len(beats) == 4
    # a code folder: its tempo.json labels the windows, and a missing one is a usage error
    vq = md.load_vqvae()
    manifest = load_corpus(corpus, vq.config.sample_rate, log=lambda m: None)
    codes = tmp_path / "codes"
    build_code_cache(manifest, vq, codes, vqvae_fingerprint(md.path / "vqvae"), levels=[2], portable=True)
    with pytest.raises(UsageError, match="--beats-only"):
        train_prior(md.path, codes, level=2, config=cfg, device="cpu", progress=False, log_dir="none")
    save_beats(codes, {t.path: track_beats(*_load(manifest.track_path(t))) for t in manifest.tracks})
    assert train_prior(md.path, codes, level=2, config=cfg, device="cpu", progress=False, log_dir="none").step == 2
    # windows long enough for four beats carry the grid fitted to them
    from jukebox.data.code_cache import CodeWindowSampler

    sampler = CodeWindowSampler(CodeCache(codes), manifest, 2, 1024, "train", beats=load_beats(codes))
    bpms = [sampler.window(i).bpm for i in range(0, len(sampler), 4)]
    assert all(any(abs(b - t) < 0.03 * t for t in (90, 120, 150, 180, 60, 75)) for b in bpms), bpms
    gen = jukebox.load_model(md.path).generate(genre="rock", seconds=0.5, levels=[2], seed=0)
    assert gen.settings["items"][0]["bpm"] == tempi["genres"]["rock"]


def _load(path):
    from jukebox.audio import load_audio

    return load_audio(path, sample_rate=22050)


def test_continue_keeps_the_prompts_tempo_and_beat(tmp_path):
    """A tempo model continuing an audio prompt without an asked bpm takes the prompt's tempo and beat grid."""
    md = _tempo_model_dir(make_tiny_model_dir(tmp_path / "t", levels=(2,)))
    model = jukebox.load_model(md.path)
    sr, bpm, first = model.sample_rate, 100.0, 0.23
    x = np.zeros(int(6 * sr), np.float32)
    for t in np.arange(first, 6.0, 60.0 / bpm):
        n = int(t * sr)
        x[n:n + 300] += np.hanning(300).astype(np.float32) * np.sin(np.arange(300) * 0.7).astype(np.float32)
    prompt = torch.from_numpy(0.5 * x)
    out = model.continue_(prompt, seconds=6.5, levels=[2], seed=0, alignment=False)
    item = out.settings["items"][0]
    assert abs(item["bpm"] - bpm) < 1.5
    period = 60.0 * sr / item["bpm"]
    phase = ((first * sr - item["beat0"]) % period) / period
    assert min(phase, 1 - phase) < 0.05  # the grid's beats fall on the prompt's clicks
    asked = model.continue_(prompt, seconds=6.5, levels=[2], seed=0, alignment=False, bpm=140)
    assert asked.settings["items"][0]["bpm"] == 140.0 and "beat0" not in asked.settings["items"][0]
