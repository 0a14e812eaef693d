"""Parity of jukebox.vqvae with the original OpenAI code, via the reference fixture vqvae.pt."""

from __future__ import annotations

import pytest
import torch

from conftest import load_reference
from jukebox.errors import JukeboxError
from jukebox.vqvae.openai import config_from_openai_hps, convert_openai_state_dict, vqvae_from_openai


@pytest.fixture(scope="module")
def ref():
    return load_reference("vqvae.pt")


@pytest.fixture(scope="module")
def model(ref):
    return vqvae_from_openai(ref["state_dict"], ref["hps"], ref["bandwidth"])


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the fixture was made single-threaded; keeps the argmin bitwise identical
    yield
    torch.set_num_threads(n)


def _audio(ref) -> torch.Tensor:
    return ref["inputs"]["x"].permute(0, 2, 1)  # original NTC -> our [B, 1, T]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_config_matches_tiny_preset(ref):
    from jukebox.config import vqvae_preset

    cfg = config_from_openai_hps(ref["hps"], ref["bandwidth"])
    assert cfg == vqvae_preset("tiny").replace(bandwidth_l1=0.25, bandwidth_l2=0.1, bandwidth_spec=50.0)


@torch.no_grad()
def test_codes_identical(ref, model):
    codes = model.encode(_audio(ref))
    assert len(codes) == 3
    for level, (ours, theirs) in enumerate(zip(codes, ref["outputs"]["zs"])):
        assert ours.dtype == torch.long
        assert torch.equal(ours, theirs.long()), f"level {level}: {(ours != theirs).sum()} codes differ"
    # partial level ranges and batch chunks give the same codes
    assert torch.equal(model.encode(_audio(ref), 1, 3, chunks=2)[1], ref["outputs"]["zs"][2].long())


@torch.no_grad()
def test_decodes_match(ref, model):
    zs = [z.long() for z in ref["outputs"]["zs"]]
    for level, theirs in enumerate(ref["outputs"]["x_ds"]):
        theirs = theirs.permute(0, 2, 1)
        ours = model.decode(zs[level:], start_level=level)
        assert ours.shape == theirs.shape
        assert _rel(ours, theirs) < 1e-5
        assert _rel(model.decode_level(zs[level], level), theirs) < 1e-5


@torch.no_grad()
def test_eval_forward_loss_and_metrics(ref, model):
    x_out, loss, metrics = model(_audio(ref))
    want = ref["outputs"]["forward_eval"]
    assert _rel(x_out, want["x_out"].permute(0, 2, 1)) < 1e-5
    assert float(loss) == pytest.approx(float(want["loss"]), rel=1e-4)
    assert set(metrics) == set(want["metrics"]) and len(metrics) == 17
    for name, value in want["metrics"].items():
        assert float(metrics[name]) == pytest.approx(float(value), rel=1e-4), name


def test_state_dict_layout_and_bad_keys(ref):
    cfg = config_from_openai_hps(ref["hps"], ref["bandwidth"])
    sd = dict(ref["state_dict"])
    assert len(sd) == 381
    ours = convert_openai_state_dict(sd, cfg)
    assert torch.equal(ours["codebooks.2.codebook"], sd["bottleneck.level_blocks.2.k"])
    assert torch.equal(ours["codebooks.2.ema_sum"], sd["bottleneck.level_blocks.2.k"])
    assert bool(ours["codebooks.0.initialised"])

    bad = dict(sd)
    del bad["decoders.1.out.bias"]
    bad["encoders.0.extra.weight"] = torch.zeros(1)
    bad["bottleneck.level_blocks.0.k"] = torch.zeros(32, 16)
    with pytest.raises(JukeboxError) as err:
        convert_openai_state_dict(bad, cfg)
    msg = str(err.value)
    assert "missing (1): decoders.1.out.bias" in msg
    assert "unexpected (1): encoders.0.extra.weight" in msg
    assert "bottleneck.level_blocks.0.k: expected (64, 16), got (32, 16)" in msg
