"""Adversarial VQ-VAE training: discriminator shapes and gradients, losses, save/load, both CLI modes on a tiny
model, decoder-only leaves codes bitwise unchanged, and resume with the discriminator is bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from jukebox.checkpoint.format import load_weights
from jukebox.checkpoint.model_dir import ModelDir, load_discriminator, save_discriminator
from jukebox.errors import UsageError
from jukebox.train import TrainConfig, train_vqvae
from jukebox.vqvae.discriminator import (
    AdversarialConfig,
    Discriminator,
    MultiPeriodDiscriminator,
    MultiScaleSTFTDiscriminator,
    PeriodDiscriminator,
    STFTDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
    mel_loss,
)

SR = 44100
SMALL = dict(stft_channels=4, mpd_channels=4, mpd_max_channels=16)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("adv") / "music"
    root.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(SR // 2) / SR
    for i in range(4):
        x = 0.3 * np.sin(2 * np.pi * 220 * (i + 1) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(root / f"song{i}.wav", x.astype(np.float32), SR)
    return root


def _cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    from jukebox.cli import main as cli_main

    if "train" not in cli_main.COMMAND_MODULES:
        monkeypatch.setattr(cli_main, "COMMAND_MODULES", (*cli_main.COMMAND_MODULES, "train"))
    return cli_main.main(argv)


COMMON = ["--steps", "2", "--batch-size", "1", "--window", "2048", "--log-dir", "none", "--device", "cpu",
          "--workers", "1", "--val-batches", "1", "--warmup", "1"]


# ---------------------------------------------------------------------------------------------------- modules


DISCS = [STFTDiscriminator(512, 4), PeriodDiscriminator(3, 4, 16), MultiScaleSTFTDiscriminator((512, 256), 4),
         MultiPeriodDiscriminator((2, 3, 5), 4, 16)]


@pytest.mark.parametrize("disc", DISCS, ids=["stft", "period", "msstft", "mpd"])
def test_discriminator_shapes_and_gradients(disc: torch.nn.Module) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 1, 2000, requires_grad=True)  # not a multiple of any period: padded inside
    def run(a: torch.Tensor) -> list:
        out = disc(a)
        return out if isinstance(out, list) else [out]

    outs = run(x)
    for logits, feats in outs:
        assert logits.shape[0] == 2 and logits.dim() == 4 and len(feats) >= 4
        assert all(f.shape[0] == 2 and torch.isfinite(f).all() for f in feats)
    loss = generator_loss(outs) + feature_matching_loss(run(torch.randn(2, 1, 2000)), outs)
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in disc.parameters())


@pytest.mark.parametrize("kind", ["hinge", "lsgan"])
def test_losses_finite_and_sane(kind: str) -> None:
    torch.manual_seed(0)
    d = Discriminator(AdversarialConfig(stft_n_ffts=(256,), periods=(2, 3), loss=kind, **SMALL))
    real, fake = torch.randn(2, 1, 4096), torch.randn(2, 1, 4096)
    r, f = d(real), d(fake)
    assert len(r) == 3  # one STFT scale + two periods
    for v in (discriminator_loss(r, f, kind), generator_loss(f, kind), feature_matching_loss(r, f)):
        assert v.dim() == 0 and torch.isfinite(v) and v >= 0
    assert float(feature_matching_loss(r, d(real)).detach()) == 0.0
    assert float(mel_loss(real, real, SR)) == 0.0 and float(mel_loss(real, fake, SR)) > 0
    with pytest.raises(ValueError):
        generator_loss(f, "wasserstein")


def test_config_checks_and_save_load(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        AdversarialConfig(discriminators=("nope",))
    with pytest.raises(UsageError):
        AdversarialConfig(loss="wgan")
    with pytest.raises(UsageError):
        AdversarialConfig(levels=(3,)).trained_levels(3)
    cfg = AdversarialConfig(discriminators=("mpd",), periods=(2, 3), levels=(0,), **SMALL)
    assert AdversarialConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    d = Discriminator(cfg)
    save_discriminator(tmp_path / "disc", d)
    e = load_discriminator(tmp_path / "disc")
    assert e.config == cfg
    assert all(torch.equal(a, b) for a, b in zip(d.state_dict().values(), e.state_dict().values()))


# ---------------------------------------------------------------------------------------------------- CLI modes


def _codes(model_dir: Path, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return ModelDir(model_dir).load_vqvae("cpu").encode(x)


def test_cli_full_adversarial_then_decoder_only(tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "model"
    one_step = [*COMMON[:1], "1", *COMMON[2:]]
    assert _cli(["train", "vqvae", "--data", str(corpus), "--preset", "tiny", "--out", str(out), "--adversarial",
                 "--disc-channels", "2", "--json", *one_step], monkeypatch) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["step"] == 1 and np.isfinite(info["loss"])
    assert all(np.isfinite(v) for v in info["val"].values())
    assert {"adv_loss", "feat_loss", "mel_loss", "vqvae_loss"} <= set(info["val"])
    disc = load_discriminator(out / "discriminator")
    assert set(disc.discs) == {"msstft", "mpd"}
    state = load_weights(out / "vqvae/checkpoint")
    assert all(k.startswith("vqvae.") for k in state)  # the generator wrapper's weights

    x = torch.from_numpy(np.stack([sf.read(corpus / f"song{i}.wav", dtype="float32")[0][:4096] for i in range(2)])
                         )[:, None]
    before_w = load_weights(out / "vqvae")
    before_codes = _codes(out, x)
    assert _cli(["train", "vqvae", "--data", str(corpus), "--out", str(out), "--decoder-only", "--adversarial",
                 "--disc", "mpd", "--adv-loss", "lsgan", "--adv-levels", "0,2", "--disc-channels", "2", "--json",
                 *COMMON, "--lr", "1e-2"], monkeypatch) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.isfinite(info["loss"]) and "adv_loss_l1" in info["val"] and "adv_loss_l2" not in info["val"]
    after_w = load_weights(out / "vqvae")
    frozen = [k for k in before_w if not k.startswith(("decoders.0.", "decoders.2."))]
    assert all(torch.equal(before_w[k], after_w[k]) for k in frozen)  # encoders, codebooks (+EMA), decoder 1
    assert any(not torch.equal(before_w[k], after_w[k]) for k in before_w if k.startswith("decoders.0."))
    assert any(not torch.equal(before_w[k], after_w[k]) for k in before_w if k.startswith("decoders.2."))
    assert all(torch.equal(a, b) for a, b in zip(before_codes, _codes(out, x)))  # priors stay valid
    assert set(load_discriminator(out / "discriminator").discs) == {"mpd"}


def test_decoder_only_without_gan_and_needs_existing_vqvae(tmp_path: Path, corpus: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    assert _cli(["train", "vqvae", "--data", str(corpus), "--out", str(tmp_path / "new"), "--decoder-only",
                 *COMMON], monkeypatch) != 0
    assert "--decoder-only fine-tunes the decoders of an existing VQ-VAE" in capsys.readouterr().err
    out = tmp_path / "model"
    cfg = TrainConfig(steps=1, batch_size=1, warmup_steps=1, workers=1, val_batches=1)
    train_vqvae(corpus, out, config=cfg, window=2048, log_dir="none", progress=False, device="cpu")
    before = load_weights(out / "vqvae")
    assert _cli(["train", "vqvae", "--data", str(corpus), "--out", str(out), "--decoder-only", *COMMON],
                monkeypatch) == 0
    after = load_weights(out / "vqvae")
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("decoders."))
    assert not (out / "discriminator").exists()  # no discriminator without --adversarial


# ---------------------------------------------------------------------------------------------------- resume


def test_adversarial_resume_is_bit_for_bit(tmp_path: Path, corpus: Path) -> None:
    from safetensors.torch import load_file

    adv = AdversarialConfig(stft_n_ffts=(512, 256), periods=(2, 3), **SMALL)
    kw = dict(window=2048, log_dir="none", progress=False, device="cpu", adversarial=adv)
    cfg = TrainConfig(steps=3, batch_size=1, lr=1e-3, warmup_steps=1, save_every=1, log_every=1, workers=1,
                      val_batches=1)
    full = train_vqvae(corpus, tmp_path / "a", config=cfg, **kw)
    part = train_vqvae(corpus, tmp_path / "b", config=cfg, stop_at=1, **kw)
    # the resumed run takes its adversarial settings from the checkpoint
    rest = train_vqvae(corpus, tmp_path / "b", config=cfg, resume=True, **{**kw, "adversarial": None})
    assert [r["loss"] for r in full.history] == [r["loss"] for r in part.history + rest.history]
    assert [r["disc_loss"] for r in full.history] == [r["disc_loss"] for r in part.history + rest.history]
    for sub in ("vqvae", "vqvae/checkpoint", "discriminator"):
        wa, wb = load_weights(tmp_path / "a" / sub), load_weights(tmp_path / "b" / sub)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), sub
    sa = load_file(str(tmp_path / "a/vqvae/checkpoint/trainer.safetensors"))
    sb = load_file(str(tmp_path / "b/vqvae/checkpoint/trainer.safetensors"))
    assert any(k.startswith("disc/") for k in sa) and any(k.startswith("disc_optim/") for k in sa)
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if not k.startswith("rng"))
