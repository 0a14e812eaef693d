"""The persistent decode step (:mod:`jukebox.nn.triton_persistent`) in Triton's CPU interpreter: its phases run as
separate launches in order (the grid-wide barriers of the GPU launch are not exercised here; the device check is
``benchmarks/bench_sampling.py --persistent on --check``)."""

from __future__ import annotations

import copy
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")

from jukebox.errors import UsageError  # noqa: E402
from jukebox.nn import triton_decode as td  # noqa: E402
from jukebox.nn import triton_persistent as tp  # noqa: E402
from jukebox.nn.quant import weight_only_linears  # noqa: E402

if os.environ.get("TRITON_INTERPRET", "0") in ("", "0") and not torch.cuda.is_available():
    pytest.skip("needs TRITON_INTERPRET=1 or a CUDA device", allow_module_level=True)

from tests.nn.test_triton_decode import _decoder_inputs, _model, _rel  # noqa: E402


def _steps(name: str, steps: int, weights: str = "native", **kw):
    """Logits [steps, 1, V] of step_static and of the persistent step from the same prefilled cache (batch 1)."""
    model = _model(name, torch.float32)
    dec = model.decoder
    with torch.no_grad():
        known, start, cond, states = _decoder_inputs(model, 1, 3)
        P = known.shape[1]
        cache = dec.make_cache(1)
        prev = torch.cat([known[:, :1], known[:, :-1]], dim=1)
        dec.step(prev, cache, start, cond, states)
        cache2 = copy.deepcopy(cache)
        step = td.TritonDecodeStep(dec, cache2, cond, 1, weights=weights, persistent=True)
        step.persistent = tp.PersistentStack(step, **kw) if kw else step.persistent
        toks = torch.randint(0, model.config.l_bins, (steps, 1, 1), generator=torch.Generator().manual_seed(2))
        refs, gots = [], []
        for i, t in enumerate(range(P, P + steps)):
            pos = torch.tensor([t])
            with weight_only_linears(dec.transformer, weights):
                refs.append(dec.step_static(toks[i], pos, cache, cond).float())
            gots.append(step(toks[i], pos).float())
        same = all(torch.allclose(a.key, b.key, atol=1e-5, rtol=1e-4) and torch.allclose(a.value, b.value, atol=1e-5,
                                                                                         rtol=1e-4)
                   for a, b in zip(cache.layers, cache2.layers))
    return torch.stack(refs), torch.stack(gots), same


@pytest.mark.parametrize("name", ["tiny_top", "tiny_upsampler"])
def test_persistent_step_equals_static_step(name):
    """fp32: every layer's five phases in one kernel give step_static's logits over positions crossing block edges
    (block, previous-block and transpose patterns; ring and column caches), and write the caches alike."""
    ref, got, same = _steps(name, 6)
    assert _rel(got, ref) < 1e-5 and same


def test_persistent_step_8bit_weights_and_several_rows_per_program():
    """int8 weights widened in the kernel; 4 programs of many rows each, inputs read in chunks of 16 (the first
    one ahead) give the same logits."""
    ref, got, same = _steps("tiny_upsampler", 4, weights="int8", programs=4, chunk=16)
    assert _rel(got, ref) < 1e-5 and same


def test_persistent_step_whole_rows_ahead():
    """chunk 0: each program's whole rows are read one phase ahead."""
    ref, got, same = _steps("tiny_top", 3, chunk=0)
    assert _rel(got, ref) < 1e-5 and same


def test_persistent_refuses_what_it_cannot_run():
    model = _model("tiny_lyrics", torch.float32)  # a cross-attention lyric decoder
    dec = model.decoder
    step = td.TritonDecodeStep(dec, dec.make_cache(1), None, 1)
    assert "cross-attention" in tp.supported(step)
    with pytest.raises(UsageError, match="persistent"):
        tp.PersistentStack(step)
    step2 = td.TritonDecodeStep(_model("tiny_top", torch.float32).decoder,
                                _model("tiny_top", torch.float32).decoder.make_cache(2), None, 2)
    assert "batch 2" in tp.supported(step2)
