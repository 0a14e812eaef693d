"""Weight-only 8-bit linears (:mod:`jukebox.nn.quant`): the quantisation, the dequantising Triton GEMV (in Triton's
CPU interpreter, ``TRITON_INTERPRET=1`` set here before triton is imported; skipped without triton) and the swap
of a transformer's block linears."""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from jukebox.nn import quant  # noqa: E402
from jukebox.nn.transformer import Transformer  # noqa: E402


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_quantize_weight_per_channel(fmt):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 40, generator=g) * torch.logspace(-2, 1, 24)[:, None]  # rows of very different ranges
    q, s = quant.quantize_weight(w, fmt)
    assert q.dtype == (torch.int8 if fmt == "int8" else torch.float8_e4m3fn) and s.shape == (24,)
    assert torch.allclose(q.float().abs().amax(1), torch.full((24,), quant.QMAX[fmt]))  # each row's max is exact
    err = (quant.dequantize(q, s) - w).abs() / w.abs().amax(1, keepdim=True)
    assert err.max() <= (0.5 / 127 if fmt == "int8" else 2 ** -4) + 1e-6  # half a step (int8), 3 mantissa bits
    assert err.mean() < (0.26 / 127 if fmt == "int8" else 0.02)


def test_int8_weights_equal_pytorch_per_channel_quantisation():
    """``int8`` weights are those of the ``decode="int8"`` path (``torch.quantize_per_channel``, same scales)."""
    w = torch.randn(16, 32, generator=torch.Generator().manual_seed(1))
    q, s = quant.quantize_weight(w, "int8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = torch.quantize_per_channel(w, s.double(), torch.zeros(16, dtype=torch.long), 0, torch.qint8)
    assert torch.equal(ref.int_repr(), q)


def test_bad_format_is_refused():
    with pytest.raises(ValueError, match="int8, fp8"):
        quant.quantize_weight(torch.ones(2, 2), "int4")


def _tiny_transformer() -> Transformer:
    torch.manual_seed(0)
    tr = Transformer(32, 2, 16, ["dense", "block", "transpose"], blocks=4).eval()
    for p in tr.parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.1)
    return tr


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_weight_only_linears_swap_and_restore(fmt):
    tr = _tiny_transformer()
    x = torch.randn(2, 16, 32)
    with torch.no_grad():
        ref = tr(x)
        with quant.weight_only_linears(tr, fmt) as copies:
            assert len(copies) == 12
            lin = tr.blocks[0].mlp.fc
            h = torch.randn(3, 32)
            assert torch.equal(lin(h), F.linear(h, copies[2].dense(torch.float32), lin.bias))
            out = tr(x)
        assert torch.equal(tr(x), ref)  # restored
    assert "forward" not in vars(tr.blocks[0].attn.qkv)
    rel = (out - ref).norm() / ref.norm()
    assert 0 < rel < (0.02 if fmt == "int8" else 0.1)


def test_native_changes_nothing():
    tr = _tiny_transformer()
    with quant.weight_only_linears(tr, "native") as copies:
        assert copies == [] and "forward" not in vars(tr.blocks[0].attn.qkv)


def test_cached_copy_follows_the_weight():
    lin = torch.nn.Linear(8, 4)
    a = quant.quantized_linear(lin, "int8")
    assert quant.quantized_linear(lin, "int8") is a
    with torch.no_grad():
        lin.weight.mul_(2)
    b = quant.quantized_linear(lin, "int8")
    assert b is not a and torch.allclose(b.scale, 2 * a.scale)


@pytest.fixture
def interpreted_triton():
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs Triton's interpreter (TRITON_INTERPRET=1) on a CPU")


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
@pytest.mark.parametrize("rows", [1, 2, 5, 8])
def test_gemv_equals_dequantised_matmul(fmt, rows, interpreted_triton):
    g = torch.Generator().manual_seed(rows)
    w, b, x = torch.randn(37, 300, generator=g), torch.randn(37, generator=g), torch.randn(rows, 300, generator=g)
    q, s = quant.quantize_weight(w, fmt)
    ref = x @ quant.dequantize(q, s).t()
    torch.testing.assert_close(quant.gemv(x, q, s, b), ref + b, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(quant.gemv(x, q, s), ref, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="gemv takes"):
        quant.gemv(torch.randn(quant.GEMV_MAX_ROWS + 1, 300), q, s)
