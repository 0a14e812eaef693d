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


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
@pytest.mark.parametrize(("rows", "tiles"), [(1, (16, 64, 1)), (1, (16, 64, 3)), (2, (8, 32, 4)), (5, (32, 16, 5)),
                                             (8, (4, 128, 2)), (8, (8, 64, 16))])
def test_gemv_split_k_equals_dequantised_matmul(fmt, rows, tiles, interpreted_triton):
    """Split-K (K = 300 not a multiple of block_k x split_k, N = 37 not one of block_n) equals the matmul, with and
    without bias, deterministically; split 1 is the single-pass kernel."""
    g = torch.Generator().manual_seed(10 + rows)
    w, b, x = torch.randn(37, 300, generator=g), torch.randn(37, generator=g), torch.randn(rows, 300, generator=g)
    q, s = quant.quantize_weight(w, fmt)
    ref = x @ quant.dequantize(q, s).t()
    got = quant.gemv(x, q, s, b, tiles=tiles)
    torch.testing.assert_close(got, ref + b, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(quant.gemv(x, q, s, tiles=tiles), ref, rtol=1e-5, atol=1e-4)
    assert torch.equal(quant.gemv(x, q, s, b, tiles=tiles), got)  # slices summed in a fixed order


def test_gemv_split_k_in_half_precision(interpreted_triton):
    """bf16 activations: the fp32 partials are summed before the one rounding to bf16 (as the single pass)."""
    g = torch.Generator().manual_seed(3)
    w, b, x = torch.randn(24, 200, generator=g), torch.randn(24, generator=g), torch.randn(2, 200, generator=g)
    q, s = quant.quantize_weight(w, "int8")
    xb, bb = x.bfloat16(), b.bfloat16()
    ref = (xb.float() @ quant.dequantize(q, s).t() + bb.float()).bfloat16()
    for tiles in [(16, 64, 1), (8, 32, 3)]:
        got = quant.gemv(xb, q, s, bb, tiles=tiles)
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got, ref, rtol=1.6e-2, atol=1e-2)


def test_gemv_split_that_whole_chunks_cannot_make_is_the_single_pass(interpreted_triton, monkeypatch):
    g = torch.Generator().manual_seed(4)
    w, b, x = torch.randn(20, 200, generator=g), torch.randn(20, generator=g), torch.randn(1, 200, generator=g)
    q, s = quant.quantize_weight(w, "fp8")
    single = quant.gemv(x, q, s, b, tiles=(16, 256, 1))
    assert torch.equal(quant.gemv(x, q, s, b, tiles=(16, 256, 4)), single)  # K <= block_k: one slice
    monkeypatch.setitem(quant.GEMV_CONFIG, (1, 20, 200), (16, 256, 1))  # the override reaches the default call
    assert torch.equal(quant.gemv(x, q, s, b), single)


def test_split_slices():
    assert quant.split_slices(1920, 256, 8) == (256, 8)
    assert quant.split_slices(1920, 256, 1) == (2048, 1)
    assert quant.split_slices(300, 64, 3) == (128, 3)  # 128 + 128 + 44
    assert quant.split_slices(300, 64, 16) == (64, 5)  # no slice below one block_k chunk
    assert quant.split_slices(4800, 256, 4) == (1280, 4)
    assert quant.split_slices(200, 256, 4) == (256, 1)


def test_gemv_config_holds_valid_tiles():
    """The tiles timed on a device for the released shapes are ones :func:`gemv` accepts."""
    assert quant.GEMV_CONFIG
    for (block_m, n, k), (block_n, block_k, split_k) in quant.GEMV_CONFIG.items():
        assert block_m in quant.GEMV_TILES and n > 0 and k > 0
        assert block_n & (block_n - 1) == 0 and block_k & (block_k - 1) == 0 and split_k >= 1
        assert quant.split_slices(k, block_k, split_k)[1] == split_k  # the split is the slices it makes
        assert quant.gemv_tiles(block_m, n, k) == (block_n, block_k, split_k)


def test_gemv_tiles_rule_and_override(monkeypatch):
    monkeypatch.setattr(quant, "GEMV_CONFIG", {})  # the rule alone
    # 1,920 channels at batch 1: 120 programs of 16 channels; split to 8 slices of one 256-chunk (960 programs)
    assert quant.gemv_tiles(1, 1920, 1920, sms=132) == (16, 256, 8)
    assert quant.gemv_tiles(1, 4800, 4800, sms=132) == (16, 256, 4)  # 300 programs x 4 slices
    assert quant.gemv_tiles(8, 1920, 1920, sms=132) == (8, 64, 5)
    assert quant.gemv_tiles(1, 1920, 200, sms=132) == (16, 256, 1)  # K within one chunk: the single pass
    wide = 16 * quant.GEMV_PROGRAMS_PER_SM * 132  # enough programs already: the single pass
    assert quant.gemv_tiles(1, wide, 4096, sms=132) == (16, 256, 1)
    monkeypatch.setitem(quant.GEMV_CONFIG, (1, 1920, 1920), (32, 128, 4))
    assert quant.gemv_tiles(1, 1920, 1920) == (32, 128, 4)
    assert quant.gemv_tiles(2, 1920, 1920)[:2] == quant.GEMV_TILES[2]  # another row bucket: the rule


@pytest.mark.parametrize(("rows", "n", "k"), [(1, 1920, 1920), (1, 2048, 512), (2, 4800, 1200), (8, 3600, 4800)])
def test_gemv_candidates(rows, n, k):
    cands = quant.gemv_candidates(rows, n, k)
    block_n, block_k = quant.GEMV_TILES[1 << (rows - 1).bit_length()]
    assert cands[0] == (block_n, block_k, 1)  # today's single pass first
    assert quant.gemv_tiles(rows, n, k) in cands and len(set(cands)) == len(cands)
    assert all(quant.split_slices(k, bk, sk)[1] == sk for _, bk, sk in cands)  # each split is the slices it makes
    assert any(sk > 1 for *_, sk in cands)
    assert len(cands) <= 16


def test_gemv_bad_tiles_are_refused(monkeypatch):
    x, q, s = torch.randn(1, 64), torch.zeros(8, 64, dtype=torch.int8), torch.ones(8)
    for tiles in [(16, 100, 1), (16, 64, 0), (16, 64)]:
        with pytest.raises(ValueError, match="block_n and block_k powers of two"):
            quant.gemv(x, q, s, tiles=tiles)
    monkeypatch.setitem(quant.GEMV_CONFIG, (1, 8, 64), (12, 64, 2))
    with pytest.raises(ValueError, match="got \\(12, 64, 2\\)"):
        quant.gemv(x, q, s)


def _bench_weights():
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "benchmarks"
    sys.path.insert(0, str(root))
    try:
        spec = importlib.util.spec_from_file_location("bench_weights", root / "bench_weights.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(root))
    return mod


def test_bench_weights_gemv_sweep_helpers():
    """The CPU-side helpers of ``benchmarks/bench_weights.py``'s GEMV tile sweep (the timing itself needs CUDA)."""
    from types import SimpleNamespace

    bench = _bench_weights()
    tr = _tiny_transformer()
    model = SimpleNamespace(decoder=SimpleNamespace(transformer=tr))
    shapes = [(name, tuple(lin.weight.shape)) for name, lin in bench.linear_shapes(model)]
    assert shapes == [("qkv", (24, 32)), ("proj", (32, 8)), ("fc", (32, 32))]  # MLP out is [32, 32] too: once
    assert bench.tile_key((16, 256, 4)) == "16x256x4"
    sweep = {"setup": {"rows": 3}, "int8": [{"N": 24, "K": 32, "best_tiles": [32, 128, 2]}, {"N": 32, "K": 32}]}
    assert bench.best_config(sweep, "int8") == {(4, 24, 32): (32, 128, 2)}
    assert bench.best_config(sweep, "fp8") == {}
    single = bench.single_pass_config(model, 1)
    assert single == {(1, n, k): (16, 256, 1) for n, k in [(24, 32), (32, 8), (32, 32)]}
    quant.GEMV_CONFIG[(8, 1, 1)] = (8, 64, 1)
    before = dict(quant.GEMV_CONFIG)
    try:
        with bench.gemv_config(single):
            assert quant.GEMV_CONFIG[(1, 24, 32)] == (16, 256, 1) and quant.GEMV_CONFIG[(8, 1, 1)] == (8, 64, 1)
        assert quant.GEMV_CONFIG == before  # restored
    finally:
        quant.GEMV_CONFIG.pop((8, 1, 1), None)


def test_bench_weights_gemv_sweep_logic(interpreted_triton, monkeypatch):
    """The sweep's bookkeeping on a tiny model, the GEMVs in Triton's interpreter and the device timing replaced by
    a fake clock (each timing faster than the last)."""
    from itertools import count
    from types import SimpleNamespace

    bench = _bench_weights()
    torch.manual_seed(0)
    tr = Transformer(128, 1, 16, ["dense"], blocks=4).eval()  # K = 128: split-K candidates at 4 rows
    model = SimpleNamespace(decoder=SimpleNamespace(transformer=tr))
    clock = count(100.0, -1.0)
    monkeypatch.setattr(bench, "graph_us", lambda call, calls, reps: (call(0), next(clock))[1])
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device: SimpleNamespace(multi_processor_count=4, L2_cache_size=32768))
    with torch.no_grad():
        for lin in bench.quant.block_linears(model.decoder.transformer.blocks[0]):
            lin.bias.normal_()
    sweep = bench.sweep_gemv(model, "cpu", 4, (2, 4), calls=3, reps=1)
    assert sweep["setup"] == {"rows": 4, "sms": 4, "l2_bytes": 32768, "calls_per_graph": 3, "reps": 1}
    fc8 = next(e for e in sweep["int8"] if e["linear"] == "fc")
    assert fc8["today"] == "16x64x1" and list(fc8["us"])[0] == "16x64x1" and "failed" not in fc8
    cands = quant.gemv_candidates(4, 128, 128, (2, 4), 4)
    assert set(fc8["us"]) == {bench.tile_key(t) for t in cands} and any(t[2] > 1 for t in cands)
    assert fc8["best"] == list(fc8["us"])[-1] and fc8["best_us"] == min(fc8["us"].values())  # the fake clock
    assert max(fc8["rel_err"].values()) < 1e-5 and fc8["copies"] == 3 and fc8["native_us"] > 0  # 2 L2 / 16.9 kB, capped
    fc_fp8 = next(e for e in sweep["fp8"] if e["linear"] == "fc")
    assert fc8["best"] in fc_fp8["us"] and "native_us" not in fc_fp8
    assert bench.best_config(sweep, "int8")[(4, 128, 128)] == tuple(fc8["best_tiles"])
