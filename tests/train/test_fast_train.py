"""The fast training path: compiled regions (traced with aot_eager here; inductor in the slow test), pinned
batches, the foreach EMA, the synthetic tasks and the --compile flag."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from jukebox.config import vqvae_preset
from jukebox.errors import UsageError
from jukebox.prior import Prior
from jukebox.prior.config import prior_preset
from jukebox.train import ModelEMA, TrainConfig, Trainer
from jukebox.train.fast import CompiledRegions, compile_regions, pin_batch
from jukebox.train.synthetic import SyntheticAdversarialTask, SyntheticAudioTask, SyntheticPriorTask, markov_stream
from jukebox.vqvae import VQVAE
from jukebox.vqvae.discriminator import AdversarialConfig, Discriminator

TRACE = {"backend": "aot_eager"}  # dynamo + AOT autograd, no code generation: fast on a CPU
DYNAMO = {"backend": "eager"}  # dynamo's graphs run eagerly: the quickest check that regions trace and train


def _prior(preset: str = "tiny_top", seed: int = 0) -> Prior:
    torch.manual_seed(seed)
    return Prior(prior_preset(preset))


def _fit(model, task, tmp: Path, compile: str = "none", steps: int = 3, kwargs=TRACE, **cfg):
    config = TrainConfig(steps=steps, batch_size=task.batch_size, warmup_steps=1, log_every=100, workers=1,
                         compile=compile, **cfg)
    trainer = Trainer(model, task, config, tmp, progress=False, log=lambda m: None, compile_kwargs=kwargs)
    return trainer, trainer.fit()


def _losses(result) -> list[float]:
    return [row["loss"] for row in result.history]


def test_regions_are_blocks_levels_and_subdiscriminators() -> None:
    prior = _prior("tiny_upsampler")
    regions = compile_regions(prior)
    assert len(regions) == prior.config.transformer.depth
    assert all(type(r).__name__ == "TransformerBlock" for r in regions)
    vq = VQVAE(vqvae_preset("tiny"))
    assert [type(r).__name__ for r in compile_regions(vq)] == ["LevelEncoder"] * 3 + ["LevelDecoder"] * 3
    adv = AdversarialConfig(stft_n_ffts=(256, 128), periods=(2, 3), stft_channels=4, mpd_channels=4,
                            mpd_max_channels=8)
    names = [type(r).__name__ for r in compile_regions(Discriminator(adv))]
    assert names == ["STFTDiscriminator"] * 2 + ["PeriodDiscriminator"] * 2


def test_compiled_forward_only_inside_the_context() -> None:
    prior = _prior()
    regions = CompiledRegions([prior], "blocks", {"backend": "eager"})
    block = prior.decoder.transformer.blocks[0]
    assert "forward" not in block.__dict__
    with regions:
        assert "forward" in block.__dict__
        clone = None
    clone = copy.deepcopy(prior)
    assert "forward" not in block.__dict__
    assert all("forward" not in b.__dict__ for b in clone.decoder.transformer.blocks)
    assert set(prior.state_dict()) == set(clone.state_dict())  # names unchanged
    with pytest.raises(UsageError):
        CompiledRegions([prior], "none")


@pytest.mark.parametrize("mode", ["blocks", "model"])
def test_compiled_training_equals_eager(tmp_path: Path, mode: str) -> None:
    task = SyntheticPriorTask(prior_preset("tiny_top"), 2, "markov", stream_tokens=2048)
    eager_model, compiled_model = _prior(), _prior()
    _, eager = _fit(eager_model, task, tmp_path / "e")
    _, fast = _fit(compiled_model, task, tmp_path / "c", compile=mode)
    np.testing.assert_allclose(_losses(fast), _losses(eager), rtol=1e-6)
    for (name, a), b in zip(eager_model.state_dict().items(), compiled_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_compiled_training_resumes_bit_for_bit(tmp_path: Path) -> None:
    task = SyntheticPriorTask(prior_preset("tiny_upsampler"), 2, "markov", stream_tokens=2048)
    full = _prior("tiny_upsampler")
    _fit(full, task, tmp_path / "full", compile="blocks", steps=4)
    part = _prior("tiny_upsampler")
    config = TrainConfig(steps=4, batch_size=2, warmup_steps=1, log_every=100, workers=1, compile="blocks")
    Trainer(part, task, config, tmp_path / "part", progress=False, log=lambda m: None,
            compile_kwargs=TRACE).fit(stop_at=2)
    resumed = _prior("tiny_upsampler", seed=1)
    Trainer(resumed, task, config, tmp_path / "part", progress=False, log=lambda m: None,
            compile_kwargs=TRACE).fit(resume=True)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_bf16_autocast_on_cpu_with_compiled_blocks(tmp_path: Path) -> None:
    task = SyntheticPriorTask(prior_preset("tiny_top"), 2, "markov", stream_tokens=2048)
    _, eager = _fit(_prior(), task, tmp_path / "e", precision="bf16")
    _, fast = _fit(_prior(), task, tmp_path / "c", compile="blocks", precision="bf16")
    np.testing.assert_allclose(_losses(fast), _losses(eager), rtol=1e-3)


@pytest.mark.slow
def test_vqvae_training_with_compiled_regions(tmp_path: Path) -> None:
    cfg = vqvae_preset("tiny")
    audio = SyntheticAudioTask(2, 2048, cfg.sample_rate)
    torch.manual_seed(0)
    a, b = VQVAE(cfg), VQVAE(cfg)
    b.load_state_dict(a.state_dict())
    _, eager = _fit(a, audio, tmp_path / "e", steps=2)
    _, fast = _fit(b, audio, tmp_path / "c", compile="blocks", steps=2, kwargs=DYNAMO)
    np.testing.assert_allclose(_losses(fast), _losses(eager), rtol=1e-5)
    assert len(compile_regions(b)) == 6


@pytest.mark.slow
def test_adversarial_training_with_compiled_regions(tmp_path: Path) -> None:
    from jukebox.train.adversarial import GeneratorVQVAE

    cfg = vqvae_preset("tiny")
    audio = SyntheticAudioTask(2, 4096, cfg.sample_rate)
    adv = AdversarialConfig(stft_n_ffts=(256, 128), periods=(2, 3), stft_channels=4, mpd_channels=4,
                            mpd_max_channels=8, mel_n_ffts=(256,), mel_n_mels=(16,))
    rows = []
    for name, mode in (("e", "none"), ("c", "blocks")):
        torch.manual_seed(0)
        gen = GeneratorVQVAE(VQVAE(cfg), (0, 1, 2), decoder_only=False)
        task = SyntheticAdversarialTask(audio, adv, Discriminator(adv))
        _, result = _fit(gen, task, tmp_path / name, compile=mode, steps=2, kwargs=DYNAMO)
        rows.append(result.history)
    for e, c in zip(*rows):
        assert set(e) == set(c) and "disc_loss" in e
        np.testing.assert_allclose(c["loss"], e["loss"], rtol=1e-5)
        np.testing.assert_allclose(c["disc_loss"], e["disc_loss"], rtol=1e-5)


def test_pin_batch_walks_and_converts() -> None:
    pinned: list[torch.Tensor] = []

    def pin(t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        pinned.append(out)
        return out

    batch = {"z": torch.arange(4), "audio": np.zeros((2, 1, 8), np.float32), "ids": ["a@0", "b@1"], "y": None,
             "pair": (torch.ones(2), np.array(["x"]))}
    out = pin_batch(batch, pin)
    assert isinstance(out["audio"], torch.Tensor) and out["audio"].shape == (2, 1, 8)
    assert out["ids"] == ["a@0", "b@1"] and out["y"] is None
    assert isinstance(out["pair"], tuple) and isinstance(out["pair"][1], np.ndarray)  # strings stay numpy
    assert len(pinned) == 3
    assert torch.equal(out["z"], batch["z"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="page-locked memory needs CUDA")
def test_pin_batch_pins_on_cuda() -> None:
    out = pin_batch({"z": torch.arange(4), "audio": np.zeros(3, np.float32)})
    assert out["z"].is_pinned() and out["audio"].is_pinned()


def test_ema_foreach_equals_per_tensor_lerp() -> None:
    model = _prior()
    ema = ModelEMA(model, 0.9)
    reference = {k: v.clone() for k, v in ema.shadow.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    ema.update(model)
    params = dict(model.named_parameters())
    for name, value in model.state_dict().items():
        if name in ema.param_names and value.is_floating_point():
            reference[name].lerp_(params[name], 0.1)
        else:
            reference[name].copy_(value)
    for k in reference:
        assert torch.equal(reference[k], ema.shadow[k]), k


def test_synthetic_tasks_are_pure_and_learnable() -> None:
    cfg = prior_preset("tiny_upsampler")
    task = SyntheticPriorTask(cfg, 3, "markov", stream_tokens=4096)
    a, b = task.train_batch(5, 0, 0), task.train_batch(5, 0, 0)
    assert torch.equal(a["z"], b["z"]) and torch.equal(a["y"], b["y"])
    assert a["z"].shape == (3, cfg.n_ctx) and a["z_cond"].shape == (3, cfg.n_ctx // cfg.cond_downsample)
    assert not torch.equal(a["z"], task.train_batch(6, 0, 0)["z"])
    stream = markov_stream(20000, 64, seed=0)
    pairs = np.unique(stream[:-1] * 64 + stream[1:])
    assert len(pairs) <= 64 * 4  # each code has at most 4 successors
    x = SyntheticAudioTask(2, 512, 22050).train_batch(0, 0, 0)["audio"]
    assert x.shape == (2, 1, 512) and x.dtype == np.float32 and np.abs(x).max() < 1.0


def test_compile_flag_reaches_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from jukebox.cli import train as cli_train

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli_train.register(sub)
    args = parser.parse_args(["train", "prior", "-m", "x", "--level", "2", "--data", "d", "--steps", "5",
                              "--compile", "blocks"])
    assert cli_train._config(args).compile == "blocks"
    args = parser.parse_args(["train", "vqvae", "-o", "x", "--data", "d", "--steps", "5"])
    assert cli_train._config(args).compile == "none"
    with pytest.raises(UsageError, match="compile must be one of"):
        TrainConfig(compile="fast")


@pytest.mark.slow
def test_inductor_blocks_on_cpu_equal_eager(tmp_path: Path) -> None:
    task = SyntheticPriorTask(prior_preset("tiny_top"), 2, "markov", stream_tokens=2048)
    _, eager = _fit(_prior(), task, tmp_path / "e")
    _, fast = _fit(_prior(), task, tmp_path / "c", compile="blocks", kwargs=None)
    np.testing.assert_allclose(_losses(fast), _losses(eager), rtol=1e-5)


@pytest.mark.slow
def test_benchmark_script_smoke(tmp_path: Path) -> None:
    """bench_train_fast.py end to end on tiny shapes: its rows, table and the eager/compiled curves."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, str(root / "benchmarks" / "bench_train_fast.py"), "--smoke", "--device", "cpu",
                    "--compile-backend", "aot_eager", "--cases", "env,prior100m,curve", "--curve-steps", "4",
                    "--out", str(tmp_path)], check=True, cwd=root, capture_output=True)
    report = json.loads((tmp_path / "bench_train_fast.json").read_text())
    assert not report["errors"]
    rows = {(r["case"], r.get("compile")): r for r in report["rows"]}
    for mode in ("former", "none", "blocks"):
        assert rows[("prior100m", mode)]["tokens_per_second"] > 0
    curve = rows[("curve", None)]
    assert curve["steps"] == 4 and curve["max_abs_diff"] < 1e-4
    assert "curve: 4 steps" in (tmp_path / "bench_train_fast.txt").read_text()
