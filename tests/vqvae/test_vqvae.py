"""Unit tests for jukebox.vqvae (tiny preset, CPU)."""

from __future__ import annotations

import pytest
import torch

from jukebox.config import VQVAEConfig, vqvae_preset
from jukebox.vqvae import VQVAE
from jukebox.vqvae.bottleneck import Codebook

TINY = vqvae_preset("tiny")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest single-threaded (and do not stall on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def model() -> VQVAE:
    torch.manual_seed(0)
    return VQVAE(TINY)


def test_openai_preset_parameter_count():
    with torch.device("meta"):
        m = VQVAE(vqvae_preset("openai"))
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == 1_485_763
    assert m.hop_lengths == (8, 32, 128)
    assert m.sample_rate == 44100


def test_round_trip_shapes_every_level(model):
    model.eval()
    x = torch.randn(2, 1, 1024) * 0.1
    with torch.no_grad():
        codes = model.encode(x)
        assert [tuple(c.shape) for c in codes] == [(2, 1024 // h) for h in model.hop_lengths]
        for level, c in enumerate(codes):
            assert c.dtype == torch.long and 0 <= int(c.min()) and int(c.max()) < TINY.l_bins
            assert model.decode(codes[level:], start_level=level).shape == (2, 1, 1024)
            assert model.decode_level(c, level).shape == (2, 1, 1024)
            assert torch.equal(model.encode(x, level, level + 1)[0], c)
        # batch chunking changes nothing
        assert all(torch.equal(a, b) for a, b in zip(model.encode(x, chunks=2), codes))
        torch.testing.assert_close(model.decode(codes, chunks=2), model.decode(codes))


def test_bad_inputs(model):
    with pytest.raises(ValueError, match=r"\[batch, 1, time\]"):
        model.encode(torch.zeros(2, 1024, 1))
    with pytest.raises(ValueError, match="code tensors"):
        model.decode([torch.zeros(1, 8, dtype=torch.long)], start_level=0)


def test_eval_forward_deterministic_and_no_codebook_change(model):
    model.eval()
    x = torch.randn(2, 1, 2048) * 0.1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        a = model(x)
        b = model(x)
    torch.testing.assert_close(a[0], b[0])
    assert float(a[1]) == float(b[1])
    assert len(a[2]) == 17
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_train_forward_inits_updates_and_restarts(model):
    model.train()
    x = torch.randn(2, 1, 2048) * 0.1
    assert not bool(model.codebooks[0].initialised)
    x_out, loss, metrics = model(x)
    assert x_out.shape == x.shape and loss.requires_grad
    for name in ("fit", "pn", "entropy", "used_curr", "usage", "dk"):
        assert name in metrics
    assert all(bool(cb.initialised) for cb in model.codebooks)
    loss.backward()
    # straight-through: the encoders get gradients
    assert model.encoders[0].blocks[0].stages[0].down.weight.grad.abs().sum() > 0

    cb = model.codebooks[2]
    k0 = cb.codebook.clone()
    model(x)
    assert not torch.equal(cb.codebook, k0)  # EMA update moved it


def test_dead_code_restart():
    torch.manual_seed(0)
    cb = Codebook(bins=8, width=4, mu=0.5, threshold=1.0)
    x = torch.randn(2, 4, 16)  # 32 vectors
    flat = Codebook.flatten(x)
    cb.init_from(flat)  # init from encoder outputs: every code is one of them
    assert all((flat - k).abs().sum(-1).min() < 1e-6 for k in cb.codebook)
    # a code far from all data is never used: its count decays below the threshold and it is restarted
    with torch.no_grad():
        cb.codebook[3] = 100.0
        cb.ema_sum[3] = 100.0
    metrics = {}
    for _ in range(3):
        _, _, _, metrics = cb(x, update=True)
    assert cb.codebook[3].abs().max() < 50
    assert float(metrics["usage"]) <= 8


def test_codebook_restore_ema():
    cb = Codebook(bins=4, width=2)
    cb.codebook.copy_(torch.arange(8.0).view(4, 2))
    cb.restore_ema(num_tokens=8, threshold=0.5)
    torch.testing.assert_close(cb.ema_count, torch.full((4,), 2.0))
    torch.testing.assert_close(cb.ema_sum, cb.codebook * 2)
    assert cb.threshold == 0.5 and bool(cb.initialised)


def test_config_json_round_trip(tmp_path):
    cfg = TINY.replace(bandwidth_l2=0.1, dilation_cycle=4, multispec_n_fft=(512, 256), multispec_hop_length=(64, 32),
                       multispec_window_size=(512, 256))
    cfg.save_json(tmp_path / "c.json")
    back = VQVAEConfig.load_json(tmp_path / "c.json")
    assert back == cfg and isinstance(back.downs_t, tuple)


def test_state_dict_save_load_round_trip(model, tmp_path):
    model.train()
    model(torch.randn(1, 1, 2048) * 0.1)  # initialise codebooks so buffers are non-trivial
    model.eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    other = VQVAE(TINY)
    other.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True), strict=True)
    other.eval()
    x = torch.randn(1, 1, 1024) * 0.1
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model.encode(x), other.encode(x)))
        torch.testing.assert_close(model.decode_level(model.encode(x)[1], 1), other.decode_level(other.encode(x)[1], 1))
    assert {"codebooks.0.codebook", "codebooks.0.ema_sum", "codebooks.0.ema_count",
            "codebooks.0.initialised"} <= set(other.state_dict())


def test_losses_variants():
    from jukebox.vqvae.losses import reconstruction_loss, spectral_loss

    a, b = torch.randn(2, 1, 4096), torch.randn(2, 1, 4096)
    cfg = TINY.replace(lmix_l1=1.0, lmix_l2=0.0, lmix_linf=0.0)
    torch.testing.assert_close(reconstruction_loss("lmix", a, b, cfg), reconstruction_loss("l1", a, b, cfg))
    sc = spectral_loss(a, b, TINY.replace(use_nonrelative_specloss=False))
    assert 0 < float(sc) < 10
    with pytest.raises(ValueError):
        reconstruction_loss("l3", a, b, cfg)


def test_blocked_quantise_same_ids(monkeypatch):
    import jukebox.vqvae.bottleneck as bn

    cb = Codebook(bins=64, width=8)
    cb.codebook.normal_()
    x = torch.randn(1000, 8)
    ids, fit = cb.quantise(x)
    monkeypatch.setattr(bn, "QUANTISE_ROWS", 96)
    ids2, fit2 = cb.quantise(x)
    assert torch.equal(ids, ids2)
    torch.testing.assert_close(fit, fit2)


def test_restore_codebook_ema(model):
    model.restore_codebook_ema(sample_length=1024, world_size=2)
    for cb, hop in zip(model.codebooks, model.hop_lengths):
        expected = (1024 // hop) * 2 / TINY.l_bins
        torch.testing.assert_close(cb.ema_count, torch.full((TINY.l_bins,), expected))


def test_eval_metrics():
    from jukebox.eval.metrics import mel_l1, multires_stft_distance, si_sdr, spectral_convergence

    torch.manual_seed(0)
    ref = torch.randn(2, 1, 8192) * 0.1
    noisy = ref + 0.01 * torch.randn_like(ref)
    assert torch.all(spectral_convergence(ref, ref) == 0)
    sc = spectral_convergence(ref, noisy)
    assert sc.shape == (2,) and torch.all((sc > 0) & (sc < 0.5))
    assert torch.all(spectral_convergence(torch.zeros(1, 8192), noisy[:, 0]) == 0)  # silent reference masked
    assert torch.all(si_sdr(ref, noisy) > 15) and torch.all(si_sdr(ref, 3 * ref) > 100)  # scale-invariant
    assert torch.all(mel_l1(ref, ref, 44100) == 0) and torch.all(mel_l1(ref, noisy, 44100) > 0)
    assert torch.all(multires_stft_distance(ref, noisy) > multires_stft_distance(ref, ref))
