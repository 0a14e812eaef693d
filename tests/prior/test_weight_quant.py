"""Sampling with weight-only 8-bit weights (``weights="int8"`` / ``"fp8"``): every CPU decode path agrees, the
int8 CPU decode keeps its own (identical) weights, the logits stay close to the native ones, settings are checked."""

from __future__ import annotations

import pytest
import torch
from test_fast_sampling import _inputs, _model

from jukebox.nn.transformer import int8_linear_supported
from jukebox.prior.sampler import sample_autoregressive
from jukebox.prior.settings import LevelSettings, SettingsError
from jukebox.runs import SamplingRequest
from jukebox.sampling.settings import SamplingSettings


def _run(model, name, **kw):
    _, z_cond, y = _inputs(model)
    cond = model.conditioning(z_cond, y)
    known = torch.randint(0, model.config.l_bins, (2, 9), generator=torch.Generator().manual_seed(5))
    return sample_autoregressive(model.decoder, 2, model.n_ctx, known, cond.start, cond.cond, top_k=1,
                                 return_logits=True, chunk_size=4, **kw)


def _kl(p_logits, q_logits):
    p, q = p_logits.float().log_softmax(-1), q_logits.float().log_softmax(-1)
    return (p.exp() * (p - q)).sum(-1).mean().item()


@pytest.mark.parametrize("name", ["tiny_top", "tiny_upsampler"])
@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_weight_only_paths_agree_and_stay_close(name, fmt):
    model = _model(name)
    with torch.no_grad():
        native, native_logits = _run(model, name)
        ref, ref_logits = _run(model, name, decode="module", weights=fmt)
        for decode in ("eager", "static"):
            seq, logits = _run(model, name, decode=decode, weights=fmt)
            assert torch.equal(seq, ref)
            torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
        again, again_logits = _run(model, name)  # the model's own linears are back
    assert torch.equal(again, native) and torch.equal(again_logits, native_logits)
    kl = _kl(native_logits, ref_logits)
    assert not torch.equal(ref_logits, native_logits) and kl < (1e-3 if fmt == "int8" else 1e-2)


@pytest.mark.skipif(not int8_linear_supported(), reason="no quantized CPU engine")
def test_int8_decode_has_the_same_weights():
    """``decode="int8"``: its own int8 weights equal ``weights="int8"`` (same samples either way); with ``fp8`` it
    runs the float step over the fp8 weights."""
    model = _model("tiny_top")
    with torch.no_grad():
        a, la = _run(model, "tiny_top", decode="int8")
        b, lb = _run(model, "tiny_top", decode="int8", weights="int8")
        assert torch.equal(a, b) and torch.equal(la, lb)
        c, lc = _run(model, "tiny_top", decode="int8", weights="fp8")
        d, ld = _run(model, "tiny_top", decode="eager", weights="fp8")
        assert torch.equal(c, d) and torch.equal(lc, ld)


def test_weights_setting_is_checked():
    assert LevelSettings().weights == "native"
    assert LevelSettings(weights="fp8", decode="graph").weights == "fp8"
    with pytest.raises(SettingsError, match="weights must be one of native, int8, fp8"):
        LevelSettings(weights="int4")
    assert LevelSettings(weights="int8", decode="triton").weights == "int8"  # the fused step has 8-bit weights
    s = SamplingSettings.for_levels([0, 1, 2]).replace(weights={2: "int8"})
    assert [s[lvl].weights for lvl in (0, 1, 2)] == ["native", "native", "int8"]
    assert SamplingSettings.from_dict(s.to_dict()) == s
    assert SamplingRequest(seconds=1.0, weights="fp8").overrides() == {"weights": "fp8"}
