"""Training: tiny VQ-VAE + three priors through the CLI then sampling, resume bit for bit, DDP on gloo, LoRA,
vocabulary extension, the NaN guard and the code cache."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from jukebox.checkpoint.format import load_weights
from jukebox.checkpoint.model_dir import ModelDir
from jukebox.data.labels import LabelVocab
from jukebox.testing import make_tiny_model_dir
from jukebox.train import TrainConfig, TrainingDiverged, train_prior, train_vqvae

SR = 44100
ARTISTS = ("Alice Example", "Bob Demo", "Carol Test")
GENRES = ("folk", "rock")


def make_corpus(root: Path, n: int = 6, seconds: float = 1.0, artists=ARTISTS, seed: int = 0, genres=GENRES) -> Path:
    """A folder of generated tones with noise and a metadata.csv (artist, genre, lyrics): song i by
    ``artists[i % len(artists)]`` in ``genres[i % len(genres)]``."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = ["file,artist,genre,lyrics"]
    t = np.arange(int(seconds * SR)) / SR
    for i in range(n):
        x = 0.3 * np.sin(2 * np.pi * 110 * (i + 1) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(root / f"song{i}.wav", x.astype(np.float32), SR)
        rows.append(f"song{i}.wav,{artists[i % len(artists)]},{genres[i % len(genres)]},la la la song number {i}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("train") / "music")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    """A tiny random model directory whose code cache for ``corpus`` is already built (copied per test)."""
    path = tmp_path_factory.mktemp("tinymodel") / "model"
    make_tiny_model_dir(path)
    from jukebox.data.code_cache import ensure_code_cache
    from jukebox.train.runner import load_corpus

    md = ModelDir(path)
    manifest = load_corpus(corpus, SR)
    import hashlib

    key = hashlib.sha1(str(Path(manifest.root).resolve()).encode()).hexdigest()[:12]
    ensure_code_cache(manifest, md.load_vqvae(), md.path / "vqvae", md.path / "code_cache" / key)
    return path


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=2, lr=1e-3, warmup_steps=1, log_every=1, workers=1, val_batches=1)
    base.update(kw)
    return TrainConfig(**base)


def _cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    from jukebox.cli import main as cli_main

    if "train" not in cli_main.COMMAND_MODULES:
        monkeypatch.setattr(cli_main, "COMMAND_MODULES", (*cli_main.COMMAND_MODULES, "train"))
    return cli_main.main(argv)


# ---------------------------------------------------------------------------------------------------- end to end


def test_train_vqvae_and_three_priors_then_sample(tmp_path: Path, corpus: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "model"
    common = ["--steps", "2", "--batch-size", "2", "--log-dir", "none", "--device", "cpu", "--workers", "1"]
    assert _cli(["train", "vqvae", "--data", str(corpus), "--preset", "tiny", "--out", str(out),
                 "--window", "2048", *common, "--batch-size", "1", "--val-batches", "1"], monkeypatch) == 0
    md = ModelDir(out)
    assert md.has_vqvae() and md.vqvae_config().bandwidth_l2 != 1.0  # normalisers measured on the corpus
    for level in (2, 1, 0):
        assert _cli(["train", "prior", "--model", str(out), "--data", str(corpus), "--level", str(level),
                     *common], monkeypatch) == 0
    assert md.prior_levels() == [0, 1, 2]
    caches = list((out / "code_cache").iterdir())
    assert len(caches) == 1  # one cache shared by the three priors
    vocab = LabelVocab.load(out / "prior_level_2")
    assert set(vocab.list_artists()) - {"unknown"} == {"alice_example", "bob_demo", "carol_test"}

    from jukebox.api import load_model

    model = load_model(out, device="cpu")
    gen = model.generate(artist="Alice Example", genre="folk", seconds=0.05, levels=[2, 1, 0], seed=0)
    assert tuple(gen.audio.shape) == (1, 1, model.sample_length(0.05))
    assert torch.isfinite(torch.as_tensor(gen.audio)).all()


# ---------------------------------------------------------------------------------------------------- resume


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_weights(folder)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_prior_resume_is_bit_for_bit(tmp_path: Path, corpus: Path, tiny_dir: Path) -> None:
    a = _copy(tiny_dir, tmp_path / "a")
    b = _copy(tiny_dir, tmp_path / "b")
    kw = dict(level=2, log_dir="none", progress=False, device="cpu", record_batches=True)
    cfg = _cfg(steps=4, ema=0.9, save_every=2)
    full = train_prior(a, corpus, config=cfg, restart=True, **kw)
    part = train_prior(b, corpus, config=cfg, restart=True, stop_at=2, **kw)
    assert part.step == 2
    rest = train_prior(b, corpus, config=cfg, resume=True, **kw)
    assert rest.step == 4
    assert full.seen == part.seen + rest.seen  # the same data order
    assert [r["loss"] for r in full.history] == [r["loss"] for r in part.history + rest.history]
    for sub in ("prior_level_2/checkpoint", "prior_level_2"):
        assert _same(_weights(a / sub), _weights(b / sub)), sub
    from safetensors.torch import load_file

    sa = load_file(str(a / "prior_level_2/checkpoint/trainer.safetensors"))
    sb = load_file(str(b / "prior_level_2/checkpoint/trainer.safetensors"))
    assert _same({k: v for k, v in sa.items() if not k.startswith("rng")},
                 {k: v for k, v in sb.items() if not k.startswith("rng")})


def test_vqvae_resume_is_bit_for_bit(tmp_path: Path, corpus: Path) -> None:
    kw = dict(window=2048, log_dir="none", progress=False, device="cpu")
    cfg = _cfg(steps=2, batch_size=1, save_every=1, val_batches=1)
    train_vqvae(corpus, tmp_path / "a", config=cfg, **kw)
    train_vqvae(corpus, tmp_path / "b", config=cfg, stop_at=1, **kw)
    train_vqvae(corpus, tmp_path / "b", config=cfg, resume=True, **kw)
    assert _same(_weights(tmp_path / "a/vqvae"), _weights(tmp_path / "b/vqvae"))  # codebooks included


# ---------------------------------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, model: str, data: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from safetensors.torch import save_file

    import jukebox.train.loop as loop

    captured: dict[str, torch.nn.Module] = {}
    original = loop.Trainer.fit

    def fit(self, *a, **k):
        captured["model"] = self.model
        return original(self, *a, **k)

    loop.Trainer.fit = fit
    result = train_prior(model, data, level=1, config=_cfg(steps=3, workers=0), log_dir="none", progress=False,
                         device="cpu", record_batches=True, log=lambda m: None)
    state = {k: v.detach().clone() for k, v in captured["model"].state_dict().items()}  # unties weights
    save_file(state, f"{out}/rank{rank}.safetensors")
    Path(f"{out}/rank{rank}.json").write_text(json.dumps({"seen": result.seen, "step": result.step}))


def test_ddp_two_processes_gloo(tmp_path: Path, corpus: Path, tiny_dir: Path) -> None:
    import torch.multiprocessing as mp

    model = _copy(tiny_dir, tmp_path / "model")
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(model), str(corpus), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["step"] == r1["step"] == 3
    assert all(a != b for a, b in zip(r0["seen"], r1["seen"]))  # each step, the ranks saw different windows
    from safetensors.torch import load_file

    w0, w1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert _same(w0, w1)
    assert _same(w0, _weights(model / "prior_level_1"))  # rank 0 exported what both ranks hold
    assert not _same(w0, _weights(tiny_dir / "prior_level_1"))  # and it did train


# ---------------------------------------------------------------------------------------------------- LoRA


def _tiny_top_inputs(prior):
    c = prior.config
    g = torch.Generator().manual_seed(0)
    z = torch.randint(0, c.l_bins, (2, c.n_ctx), generator=g)
    y = torch.zeros(2, c.y_len, dtype=torch.long)
    y[:, 0], y[:, 2], y[:, 3], y[:, 4] = SR * 5, c.sample_length, 1, 1
    y[:, 5:] = -1
    return z, y


def test_lora_save_load_merge_round_trip(tmp_path: Path) -> None:
    from jukebox.prior import Prior, prior_preset
    from jukebox.prior.lora import apply_lora, load_lora, mark_only_lora_trainable, merge_lora, save_lora

    torch.manual_seed(0)
    base = Prior(prior_preset("tiny_top")).eval()
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    model = Prior(prior_preset("tiny_top")).eval()
    model.load_state_dict(base_state)
    names = apply_lora(model, rank=4, alpha=8)
    assert names and all(n.startswith("decoder.transformer.blocks.") for n in names)
    n_train = mark_only_lora_trainable(model)
    assert n_train == sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    z, y = _tiny_top_inputs(model)
    with torch.no_grad():
        assert torch.allclose(model.logits(z, None, y), base.logits(z, None, y))  # B = 0: starts as the base
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
        adapted = model.logits(z, None, y)
    assert not torch.allclose(adapted, base.logits(z, None, y))
    save_lora(model, tmp_path / "lora")
    assert sorted(p.name for p in (tmp_path / "lora").iterdir()) == ["adapter.json", "adapter.safetensors"]
    fresh = Prior(prior_preset("tiny_top")).eval()
    fresh.load_state_dict(base_state)
    load_lora(fresh, tmp_path / "lora")
    with torch.no_grad():
        assert torch.equal(fresh.logits(z, None, y), adapted)
        merge_lora(fresh)
        assert set(fresh.state_dict()) == set(base_state)  # plain linears again, base key names
        assert torch.allclose(fresh.logits(z, None, y), adapted, atol=1e-5)


def test_lora_training_through_cli(tmp_path: Path, corpus: Path, tiny_dir: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    model = _copy(tiny_dir, tmp_path / "model")
    before = _weights(model / "prior_level_2")
    args = ["train", "prior", "--model", str(model), "--data", str(corpus), "--level", "2", "--steps", "2",
            "--batch-size", "2", "--lora-rank", "2", "--log-dir", "none", "--device", "cpu", "--lr", "1e-2"]
    assert _cli(args, monkeypatch) == 0
    assert _same(before, _weights(model / "prior_level_2"))  # the base prior is untouched
    from safetensors.torch import load_file

    lora = load_file(str(model / "prior_level_2" / "lora" / "adapter.safetensors"))
    assert lora and all(".lora_" in k for k in lora)
    assert any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)  # trained
    assert _cli([*args, "--resume", "--steps", "3", "--merge-lora"], monkeypatch) == 0
    merged = _weights(model / "prior_level_2")
    assert merged.keys() == before.keys() and not _same(before, merged)


# ---------------------------------------------------------------------------------------------------- vocabulary


def test_extend_vocab_keeps_old_rows(tmp_path: Path) -> None:
    from jukebox.prior import Prior, prior_preset
    from jukebox.train import extend_prior_labels, extend_vocab

    old = LabelVocab.from_names(ARTISTS, ("folk", "rock"), version="v2")
    torch.manual_seed(0)
    prior = Prior(prior_preset("tiny_top"))
    new_artists = [f"New Artist {i}" for i in range(12)]  # more than the 10 artist bins of the preset
    vocab, new_a, new_g = extend_vocab(old, [*ARTISTS, *new_artists], ["folk", "jazz"])
    assert len(new_a) == 12 and len(new_g) == 1
    for name, i in old.artist_ids.items():
        assert vocab.artist_ids[name] == i  # old ids kept
    grown = extend_prior_labels(prior, old, vocab, new_a, new_g)
    a_old = prior.label_conditioner.artist_emb.weight
    a_new = grown.label_conditioner.artist_emb.weight
    assert a_new.shape[0] == vocab.y_bins[1] > a_old.shape[0]
    assert torch.equal(a_new[: a_old.shape[0]][[0, 1, 2, 3]], a_old[[0, 1, 2, 3]])
    mean = a_old[[1, 2, 3]].mean(0)
    assert torch.allclose(a_new[new_a], mean.expand(len(new_a), -1))
    assert torch.allclose(grown.label_conditioner.genre_emb.weight[new_g[0]],
                          prior.label_conditioner.genre_emb.weight[[1, 2]].mean(0))
    for k, v in prior.state_dict().items():
        if "_emb" not in k or "label_conditioner" not in k:
            assert torch.equal(v, grown.state_dict()[k]), k


def test_finetune_on_new_artists_extends_labels_json(tmp_path: Path, tiny_dir: Path) -> None:
    model = _copy(tiny_dir, tmp_path / "model")
    data = make_corpus(tmp_path / "new", n=4, artists=("Alice Example", "Dave New", "Erin New"), seed=1)
    old = LabelVocab.load(model / "prior_level_2")
    train_prior(model, data, level=2, config=_cfg(steps=1), log_dir="none", progress=False, device="cpu")
    new = LabelVocab.load(model / "prior_level_2")
    assert {k: v for k, v in new.artist_ids.items() if k in old.artist_ids} == old.artist_ids
    assert {"dave_new", "erin_new"} <= set(new.artist_ids)
    from jukebox.api import load_model

    load_model(model, device="cpu").generate(artist="Dave New", genre="folk", seconds=0.05, levels=[2], seed=0)


# ---------------------------------------------------------------------------------------------------- NaN guard


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path, corpus: Path, tiny_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    from jukebox.train.tasks import PriorTask

    model = _copy(tiny_dir, tmp_path / "model")
    calls = {"n": 0}
    original = PriorTask.loss

    def loss(self, m, batch, device):
        calls["n"] += 1
        value, metrics = original(self, m, batch, device)
        return (value * float("nan") if calls["n"] >= 3 else value), metrics

    monkeypatch.setattr(PriorTask, "loss", loss)
    with pytest.raises(TrainingDiverged, match=r"step 3.*last good checkpoint \(step 2\)"):
        train_prior(model, corpus, level=2, config=_cfg(steps=6, save_every=2), restart=True, log_dir="none",
                    progress=False, device="cpu")
    state = json.loads((model / "prior_level_2/checkpoint/trainer.json").read_text())
    assert state["step"] == 2
    ckpt = _weights(model / "prior_level_2/checkpoint")
    assert _same(ckpt, _weights(model / "prior_level_2"))
    assert all(torch.isfinite(v).all() for v in ckpt.values() if v.is_floating_point())
    calls["n"] = 0
    rc = _cli(["train", "prior", "--model", str(model), "--data", str(corpus), "--level", "2", "--steps", "6",
               "--batch-size", "2", "--log-dir", "none", "--device", "cpu"], monkeypatch)
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: prior_level_2: loss became nan at step 3")


# ---------------------------------------------------------------------------------------------------- code cache


def test_code_cache_matches_encoder_and_invalidates(tmp_path: Path, corpus: Path) -> None:
    from jukebox.audio import load_audio
    from jukebox.data.code_cache import CodeCache, CodeWindowSampler, encode_track, ensure_code_cache
    from jukebox.train.runner import load_corpus

    md = make_tiny_model_dir(tmp_path / "model", levels=(1,))
    vqvae = md.load_vqvae()
    manifest = load_corpus(corpus, SR)
    logs: list[str] = []
    cache = ensure_code_cache(manifest, vqvae, md.path / "vqvae", tmp_path / "cache", log=logs.append)
    assert len(logs) == 1 and "encoding" in logs[0]
    track = manifest.tracks[0]
    audio, _ = load_audio(manifest.track_path(track), sample_rate=SR)
    n = len(audio) // 128 * 128
    with torch.no_grad():
        direct = vqvae.encode(torch.from_numpy(audio[:n])[None, None])
    for level in range(3):
        assert np.array_equal(cache.codes(track.path, level), direct[level][0].numpy())
    chunked = encode_track(vqvae, audio, chunk=4096, margin=8192)
    for level in range(3):
        assert np.array_equal(chunked[level], direct[level][0].numpy()), level
    assert cache.codes(track.path, 0).dtype == np.int16
    # a window of the level-1 upsampler: codes, aligned upper codes, offset and total length for the labels
    sampler = CodeWindowSampler(cache, manifest, level=1, n_ctx=32, split=None, cond_downsample=4)
    w = sampler.window(5)
    start = w.offset // 32
    assert w.offset % 128 == 0 and w.total_length == len(load_audio(manifest.track_path(manifest.tracks[0]),
                                                                      sample_rate=SR)[0])
    assert np.array_equal(w.z, cache.codes(w.path, 1)[start:start + 32])
    assert np.array_equal(w.z_cond, cache.codes(w.path, 2)[start // 4:start // 4 + 8])
    # reused while the VQ-VAE is the same; rebuilt when its weights change
    logs.clear()
    ensure_code_cache(manifest, vqvae, md.path / "vqvae", tmp_path / "cache", log=logs.append)
    assert logs == []
    with torch.no_grad():
        vqvae.codebooks[0].codebook.mul_(-1.0)
    md.save_vqvae(vqvae)
    again = ensure_code_cache(manifest, vqvae, md.path / "vqvae", tmp_path / "cache", log=logs.append)
    assert logs and "VQ-VAE changed" in logs[0]
    assert again.fingerprint != cache.fingerprint and isinstance(again, CodeCache)


def test_tensorboard_logs_when_installed(tmp_path: Path, corpus: Path, tiny_dir: Path) -> None:
    pytest.importorskip("tensorboard")
    model = _copy(tiny_dir, tmp_path / "model")
    train_prior(model, corpus, level=2, config=_cfg(steps=1), log_dir=tmp_path / "tb", progress=False, device="cpu")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/bpd", "val/bpd"} <= set(tags["scalars"])
    assert "audio/sample" in tags["audio"]



def test_every_position_labels_upgrade_and_train(tmp_path: Path, tiny_dir: Path, corpus: Path) -> None:
    """--labels-every-position upgrades a trained prior without changing its output (zero projection); training
    then moves the projection, and the exported prior keeps the option."""
    from jukebox.data.labels import Labeller
    from jukebox.train.runner import with_labels_every_position

    model = _copy(tiny_dir, tmp_path / "model")
    prior = ModelDir(model).load_prior(2).eval()
    upgraded, cfg = with_labels_every_position(prior)
    assert cfg.labels.every_position and not prior.config.labels.every_position
    vocab = LabelVocab.load(model / "prior_level_2")
    lab = Labeller(vocab, cfg.labels.max_bow_genre_size, cfg.lyrics.n_tokens, cfg.sample_length)
    y = lab.batch_labels([{"artist": a, "genre": g, "lyrics": "", "total_length": 10 * SR, "offset": 0}
                          for a, g in (("Alice Example", "folk"), ("Bob Demo", "rock"))]).y
    z = torch.randint(0, cfg.l_bins, (2, cfg.n_ctx))
    with torch.no_grad():
        torch.testing.assert_close(upgraded.eval().logits(z, None, y), prior.logits(z, None, y))
    train_prior(model, corpus, level=2, config=_cfg(steps=3), log_dir="none", progress=False, device="cpu",
                label_dropout=0.5, labels_every_position=True)
    trained = ModelDir(model).load_prior(2)
    assert trained.config.labels.every_position
    assert trained.label_conditioner.label_proj.weight.abs().sum() > 0
    with torch.no_grad():  # the label now changes every position's prediction, not only through the start token
        a, b = trained.eval().logits(z[:1].expand(2, -1), None, y)
    assert not torch.allclose(a[-1], b[-1])


def test_label_dropout_nulls_artist_and_genre_reproducibly() -> None:
    from jukebox.data.code_cache import CodeWindow
    from jukebox.data.labels import Labeller, null_labels
    from jukebox.train.tasks import PriorTask

    vocab = LabelVocab.from_names(ARTISTS, GENRES, version="v3")
    lab = Labeller(vocab, 2, 0, 1024)

    class Windows:
        def __len__(self) -> int:
            return 3

        def window(self, i: int) -> CodeWindow:
            return CodeWindow(np.zeros(8, np.int64), None, ARTISTS[i], GENRES[i % 2], "", 0, 10 * SR, f"s{i}")

    task = PriorTask(2, _Fives(), None, lab, batch_size=400, seed=1, label_dropout=0.25)
    y = task.train_batch(0, 0, 0)["y"]
    dropped = (y[:, 3] == 0) & (y[:, 4] == 0) & (y[:, 5] == -1)
    assert 0.15 < dropped.float().mean() < 0.35
    assert (y[~dropped, 3] > 0).all() and (y[:, 0] == 10 * SR).all()  # timing kept on every row
    assert torch.equal(task.train_batch(0, 0, 0)["y"], y)  # a function of the step: resume-safe
    plain = PriorTask(2, _Fives(), None, lab, batch_size=400, seed=1).train_batch(0, 0, 0)["y"]
    assert torch.equal(plain[~dropped], y[~dropped]) and torch.equal(null_labels(plain, 2, dropped), y)
    with pytest.raises(ValueError, match="label_dropout"):
        PriorTask(2, _Fives(), None, lab, 4, label_dropout=1.0)


def test_bf16_autocast_on_cpu_when_asked(tmp_path: Path, tiny_dir: Path, corpus: Path, monkeypatch) -> None:
    """--precision bf16 on a CPU trains under CPU autocast (faster on CPUs with AVX512-BF16/AMX); auto stays fp32."""
    from jukebox.train import loop

    seen = []
    real = torch.autocast

    def spy(device_type, *a, **kw):
        seen.append((device_type, kw.get("dtype")))
        return real(device_type, *a, **kw)

    monkeypatch.setattr(loop.torch, "autocast", spy)
    model = _copy(tiny_dir, tmp_path / "model")
    before = ModelDir(model).load_prior(2).state_dict()
    result = train_prior(model, corpus, level=2, config=_cfg(steps=2, precision="bf16"), log_dir="none",
                         progress=False, device="cpu")
    assert ("cpu", torch.bfloat16) in seen and np.isfinite(result.history[-1]["loss"])
    after = ModelDir(model).load_prior(2).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    seen.clear()
    train_prior(_copy(tiny_dir, tmp_path / "m2"), corpus, level=2, config=_cfg(steps=1), log_dir="none",
                progress=False, device="cpu")
    assert not seen


def test_resume_with_label_dropout(tmp_path: Path, corpus: Path, tiny_dir: Path) -> None:
    """Label dropout is part of the data state: resuming with it gives the uninterrupted run's batches; resuming
    with another value says so."""
    a = _copy(tiny_dir, tmp_path / "a")
    b = _copy(tiny_dir, tmp_path / "b")
    kw = dict(level=2, log_dir="none", progress=False, device="cpu", label_dropout=0.5)
    cfg = _cfg(steps=4, save_every=2)
    full = train_prior(a, corpus, config=cfg, restart=True, **kw)
    train_prior(b, corpus, config=cfg, restart=True, stop_at=2, **kw)
    logs: list[str] = []
    rest = train_prior(b, corpus, config=cfg, resume=True, log=logs.append, **kw)
    assert not [m for m in logs if "label dropout" in m]
    assert [r["loss"] for r in full.history][2:] == [r["loss"] for r in rest.history]
    c = _copy(tiny_dir, tmp_path / "c")
    train_prior(c, corpus, config=cfg, restart=True, stop_at=2, **kw)
    logs.clear()
    train_prior(c, corpus, config=cfg, resume=True, log=logs.append, **{**kw, "label_dropout": 0.0})
    assert [m for m in logs if "label dropout" in m]


def test_options_are_stored_and_a_resume_keeps_them(tmp_path: Path, corpus: Path, tiny_dir: Path, capsys) -> None:
    """The training options travel as one TrainOptions stored in the checkpoint: a resume that gives none continues
    with the stored ones (the same batches as the uninterrupted run); bad options are refused in the flags' words."""
    from jukebox.cli.main import main
    from jukebox.train import TrainOptions
    from jukebox.train.state import read_checkpoint_extra

    a = _copy(tiny_dir, tmp_path / "a")
    b = _copy(tiny_dir, tmp_path / "b")
    kw = dict(level=2, log_dir="none", progress=False, device="cpu")
    cfg = _cfg(steps=4, save_every=2)
    full = train_prior(a, corpus, config=cfg, restart=True, options=TrainOptions(label_dropout=0.5), **kw)
    train_prior(b, corpus, config=cfg, restart=True, stop_at=2, label_dropout=0.5, **kw)
    stored = read_checkpoint_extra(b / "prior_level_2" / "checkpoint")["options"]
    assert TrainOptions.from_dict(stored) == TrainOptions(label_dropout=0.5)
    logs: list[str] = []
    rest = train_prior(b, corpus, config=cfg, resume=True, log=logs.append, **kw)
    assert not [m for m in logs if "label dropout" in m]
    assert [r["loss"] for r in full.history][2:] == [r["loss"] for r in rest.history]
    with pytest.raises(TypeError, match="unexpected training options"):
        train_prior(b, corpus, config=cfg, label_dropuot=0.1, **kw)
    for flags, want in ((["--label-dropout", "1.5"], "--label-dropout must be in [0, 1)"),
                        (["--merge-lora"], "--merge-lora needs --lora-rank"),
                        (["--balance", "genre", "--balance-power", "2"], "--balance-power must be in [0, 1]"),
                        (["--balance", "mood"], "--balance must be one of none, genre, artist")):
        assert main(["train", "prior", "-m", str(b), "--data", str(corpus), "--level", "2", "--steps", "1",
                     *flags]) == 2
        assert want in capsys.readouterr().err
    with pytest.raises(ValueError, match="input_noise"):
        TrainOptions(input_noise=-0.1)
    # balanced windows: the option is stored, logged, and draws other batches than the uniform run
    c = _copy(tiny_dir, tmp_path / "c")
    assert main(["train", "prior", "-m", str(c), "--data", str(corpus), "--level", "2", "--steps", "2",
                 "--restart", "--device", "cpu", "--log-dir", "none", "--no-progress", "--balance", "genre",
                 "--balance-power", "0.5", "--save-every", "2"]) == 0
    assert "windows balanced by genre (power 0.5)" in capsys.readouterr().err
    stored = read_checkpoint_extra(c / "prior_level_2" / "checkpoint")["options"]
    assert TrainOptions.from_dict(stored) == TrainOptions(balance="genre", balance_power=0.5)


class _Fives:
    """Three 64-code windows of code 5, one per artist (a CodeWindowSampler stand-in for PriorTask)."""

    def __len__(self) -> int:
        return 3

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(len(self), size=n)

    def window(self, i: int):
        from jukebox.data.code_cache import CodeWindow

        return CodeWindow(np.full(64, 5, np.int64), None, ARTISTS[i], GENRES[i % 2], "", 0, 10 * SR, f"s{i}")


def _top_prior_and_labels(tiny_dir: Path, dest: Path, n: int):
    """(copied model dir, its level-2 prior in eval mode, labels y [n, ...] for Alice Example / folk)."""
    from jukebox.data.labels import Labeller

    model = _copy(tiny_dir, dest)
    prior = ModelDir(model).load_prior(2).eval()
    cfg = prior.config
    lab = Labeller(LabelVocab.load(model / "prior_level_2"), cfg.labels.max_bow_genre_size, cfg.lyrics.n_tokens,
                   cfg.sample_length)
    y = lab.batch_labels([{"artist": "Alice Example", "genre": "folk", "lyrics": "", "total_length": 10 * SR,
                           "offset": 0}] * n).y
    return model, prior, y


def test_input_noise_corrupts_inputs_not_targets(tmp_path: Path, tiny_dir: Path, corpus: Path) -> None:
    """--input-noise p: the decoder reads a copy of the codes with about p of them random (reproducibly per step),
    the loss is against the real codes; clean inputs give the plain loss; training with it runs and resumes."""
    from jukebox.train.tasks import PriorTask

    task = PriorTask(2, _Fives(), None, None, batch_size=50, seed=1, input_noise=0.2, l_bins=64)
    batch = task.train_batch(0, 0, 0)
    assert (batch["z"] == 5).all()  # targets untouched
    changed = (batch["z_in"] != batch["z"]).float().mean().item()
    assert 0.15 < changed < 0.25 and int(batch["z_in"].max()) < 64
    assert torch.equal(task.train_batch(0, 0, 0)["z_in"], batch["z_in"])  # a function of the step
    assert "z_in" not in PriorTask(2, _Fives(), None, None, batch_size=4, seed=1).train_batch(0, 0, 0)
    with pytest.raises(ValueError, match="l_bins"):
        PriorTask(2, _Fives(), None, None, 4, input_noise=0.1)

    model, prior, y = _top_prior_and_labels(tiny_dir, tmp_path / "model", 2)
    cfg = prior.config
    z = torch.randint(0, cfg.l_bins, (2, cfg.n_ctx))
    noisy = torch.where(torch.rand(z.shape) < 0.5, torch.randint_like(z, cfg.l_bins), z)
    with torch.no_grad():
        plain, _ = prior(z, None, y)
        same, _ = prior(z, None, y, z_input=z.clone())
        other, _ = prior(z, None, y, z_input=noisy)
    assert torch.equal(plain, same) and not torch.equal(plain, other)
    kw = dict(level=2, log_dir="none", progress=False, device="cpu", input_noise=0.3)
    cfg = _cfg(steps=4, save_every=2)
    full = train_prior(model, corpus, config=cfg, restart=True, **kw)
    assert np.isfinite(full.history[-1]["loss"])
    b = _copy(tiny_dir, tmp_path / "b")
    train_prior(b, corpus, config=cfg, restart=True, stop_at=2, **kw)
    logs: list[str] = []
    rest = train_prior(b, corpus, config=cfg, resume=True, log=logs.append, **kw)
    assert [r["loss"] for r in full.history][2:] == [r["loss"] for r in rest.history]
    assert not [m for m in logs if "input noise" in m]


def test_scheduled_sampling_feeds_the_priors_own_guesses(tmp_path: Path, tiny_dir: Path, corpus: Path) -> None:
    """--scheduled-sampling p: about p of the decoder's inputs become tokens drawn from the prior's own
    teacher-forced prediction (reproducibly per step), the loss stays against the real codes; with the prior
    pushed to always predict code 7 every replaced input is 7; training with it runs, resumes and refuses bad p."""
    from jukebox.train.tasks import PriorTask

    _, prior, y = _top_prior_and_labels(tiny_dir, tmp_path / "model", 4)
    cfg = prior.config
    z = torch.randint(0, cfg.l_bins, (4, cfg.n_ctx))
    hit = torch.rand(z.shape) < 0.3
    u = torch.rand(z.shape)
    fed = PriorTask._self_fed(prior, z, None, y, None, hit, u)
    assert torch.equal(fed[~hit], z[~hit]) and fed.shape == z.shape and int(fed.max()) < cfg.l_bins
    assert (fed[hit] != z[hit]).float().mean() > 0.5  # an untrained prior rarely guesses the real code
    assert torch.equal(PriorTask._self_fed(prior, z, None, y, None, hit, u), fed)  # same uniforms, same draw
    noisy = torch.zeros_like(z)  # where not replaced, an input-noise copy is kept
    assert torch.equal(PriorTask._self_fed(prior, z, None, y, noisy, hit, u)[~hit], noisy[~hit])

    class Sure(torch.nn.Module):  # a prior that is certain the next code is 7
        def logits(self, z: torch.Tensor, z_cond: object, y: object) -> torch.Tensor:
            out = torch.zeros(*z.shape, cfg.l_bins)
            out[..., 7] = 50.0
            return out

    assert (PriorTask._self_fed(Sure(), z, None, y, None, hit, u)[hit] == 7).all()

    task = PriorTask(2, _Fives(), None, None, batch_size=50, seed=1, scheduled_sampling=0.25)
    batch = task.train_batch(0, 0, 0)
    assert 0.2 < batch["ss_hit"].float().mean() < 0.3 and torch.equal(task.train_batch(0, 0, 0)["ss_u"], batch["ss_u"])
    with pytest.raises(ValueError, match="scheduled_sampling"):
        PriorTask(2, _Fives(), None, None, 4, scheduled_sampling=1.0)

    kw = dict(level=2, log_dir="none", progress=False, device="cpu", scheduled_sampling=0.3)
    tcfg = _cfg(steps=4, save_every=2)
    b = _copy(tiny_dir, tmp_path / "b")
    full = train_prior(_copy(tiny_dir, tmp_path / "a"), corpus, config=tcfg, restart=True, **kw)
    assert np.isfinite(full.history[-1]["loss"])
    train_prior(b, corpus, config=tcfg, restart=True, stop_at=2, **kw)
    logs: list[str] = []
    rest = train_prior(b, corpus, config=tcfg, resume=True, log=logs.append, **kw)
    assert [r["loss"] for r in full.history][2:] == [r["loss"] for r in rest.history]
    assert not [m for m in logs if "scheduled sampling" in m]
    rest = train_prior(b, corpus, config=_cfg(steps=5, save_every=2), resume=True, log=logs.append,
                       **{**kw, "scheduled_sampling": 0.1})
    assert [m for m in logs if "scheduled sampling" in m]
