"""Triton decode step (``decode="triton"``): kernels and the fused step against the PyTorch static step.

Runs the kernels in Triton's CPU interpreter (``TRITON_INTERPRET=1``, set here before triton is imported);
skipped when triton is not installed.
"""

from __future__ import annotations

import copy
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

pytest.importorskip("triton")

from jukebox.errors import UsageError  # noqa: E402
from jukebox.nn import triton_decode as td  # noqa: E402
from jukebox.nn.kv_cache import LayerKVCache  # noqa: E402
from jukebox.prior.config import prior_preset  # noqa: E402
from jukebox.prior.model import Prior  # noqa: E402

if os.environ.get("TRITON_INTERPRET", "0") in ("", "0") and not torch.cuda.is_available():
    pytest.skip("needs TRITON_INTERPRET=1 or a CUDA device", allow_module_level=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 3])
def test_fused_linear_ln_gelu_residual(dtype, batch):
    g = torch.Generator().manual_seed(batch)
    K, N = 40, 24
    x, w, b = (torch.randn(s, generator=g).to(dtype) for s in ((batch, K), (N, K), (N,)))
    lw, lb, r = (torch.randn(s, generator=g).to(dtype) for s in ((K,), (K,), (batch, N)))
    out = torch.empty(batch, N, dtype=dtype)
    td.fused_linear(x, w * 0.1, b, out, ln=(lw, lb, 1e-5), gelu=True, res=r, config=td.LinearConfig(8, 16))
    y = F.linear(F.layer_norm(x, (K,), lw, lb, 1e-5), w * 0.1, b)
    ref = r + y * torch.sigmoid(1.702 * y)
    tol = 1e-5 if dtype == torch.float32 else 0.05
    assert torch.allclose(out.float(), ref.float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("tile", [(8, 16), (4, 64), (2, 128)])  # 3 chunks of the inputs, one chunk, one padded
def test_fused_linear_8bit_weights(fmt, batch, tile):
    """8-bit weights with row scales, widened in the kernel: the product of the dequantised weights (fp32 model,
    so only the summation order differs), for tiles that read the inputs in several chunks or in one."""
    from jukebox.nn.quant import dequantize, quantize_weight

    g = torch.Generator().manual_seed(batch)
    K, N = 40, 24
    x, w, b = (torch.randn(s, generator=g) for s in ((batch, K), (N, K), (N,)))
    lw, lb, r = (torch.randn(s, generator=g) for s in ((K,), (K,), (batch, N)))
    q, scale = quantize_weight(w, fmt)
    out = torch.empty(batch, N)
    cfg = td.LinearConfig(*tile, dot=batch > 1)
    td.fused_linear(x, q, b, out, ln=(lw, lb, 1e-5), res=r, scale=scale, config=cfg)
    ref = r + F.linear(F.layer_norm(x, (K,), lw, lb, 1e-5), dequantize(q, scale), b)
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out, r + F.linear(F.layer_norm(x, (K,), lw, lb, 1e-5), w, b), atol=1e-4, rtol=1e-4)


def test_candidates_add_whole_row_tiles():
    """At batch 1 the tuner also times tiles that read a program's whole rows at once (loaded before the kernel
    waits for its predecessor); not beyond WHOLE_ROW_MAX_K, and never at batch > 1 (tl.dot tiles)."""
    whole = [c for c in td.candidates(1, 1920, 1920) if c.block_k >= 1920]
    assert whole and all(c.block_k == 2048 for c in whole)
    assert not [c for c in td.candidates(1, 4800, 4800) if c.block_k >= 4800]
    assert all(c.dot and c.block_n >= 16 for c in td.candidates(16, 1920, 1920))
    # batch 64: tiles whose pipelined copies would not fit shared memory are left out
    big = td.candidates(64, 1920, 1920)
    assert big and all(td._smem(c, 64, 2) <= td.SMEM_LIMIT for c in big)
    assert len(big) < len(td.candidates(16, 1920, 1920))
    assert not td.pdl_supported("cpu")


@pytest.mark.parametrize("layout", ["linear", "ring", "columns"])
def test_qkv_writes_the_cache_slot(layout):
    """The QKV kernel puts q in ``out`` and k/v at the position's slot (and drops positions past a linear cache)."""
    B, H, D, bc, nb = 2, 2, 3, 4, 3
    size = {"linear": 10, "ring": 2 * bc, "columns": bc}[layout]
    S = H * D
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(B, 5, generator=g), torch.randn(3 * S, 5, generator=g), torch.randn(3 * S, generator=g)
    y = F.linear(x, w, b)
    for p in (5, 11):
        cache = LayerKVCache(B, H, size, D, layout=layout, n_blocks=nb)
        q = torch.empty(B, S)
        pos = torch.tensor([p])
        td.fused_linear(x, w, b, q, kv=(cache.key, cache.value, pos, {"linear": 0, "ring": 1, "columns": 2}[layout],
                                        size, bc, nb, H, D), config=td.LinearConfig(4, 8))
        ref = LayerKVCache(B, H, size, D, layout=layout, n_blocks=nb)
        k, v = (t.reshape(B, 1, H, D).transpose(1, 2) for t in y[:, S:].chunk(2, dim=-1))
        ref.write_index(k, v, ref.slot_index(pos))
        assert torch.allclose(q, y[:, :S], atol=1e-5)
        assert torch.allclose(cache.key, ref.key, atol=1e-5) and torch.allclose(cache.value, ref.value, atol=1e-5)


def _static_attention(q, cache, pattern, bc, prime_keys, pos):
    """The PyTorch static path of :class:`FactorizedAttention` (keys/values already written)."""
    from jukebox.nn.attention import DecodePlan

    plan = DecodePlan(pos, q.dtype)
    kk, vv = cache.key, cache.value
    if cache.layout == "columns":
        col = pos % bc
        kk, vv = kk.index_select(2, col).squeeze(2), vv.index_select(2, col).squeeze(2)
    if pattern == "cross":
        return F.scaled_dot_product_attention(q, kk, vv)
    mask, keep = plan.mask(pattern, cache, bc, prime_keys)
    a = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)
    return a if keep is None else a * keep


@pytest.mark.parametrize("pattern,layout,size,nb", [
    ("block", "ring", 8, 1), ("prev_block", "ring", 16, 1), ("transpose", "columns", 8, 6),
    ("dense", "linear", 48, 1), ("prime", "linear", 20, 1), ("cross", "linear", 600, 1), ("dense", "linear", 700, 1),
])
def test_decode_attention_matches_sdpa(pattern, layout, size, nb, monkeypatch):
    """Every pattern/layout, head_dim not a power of two, and key ranges split over programs (merged after)."""
    monkeypatch.setattr(td, "SPLIT_KEYS", 64)
    B, H, D, bc = 2, 3, 5, 8
    g = torch.Generator().manual_seed(1)
    cache = LayerKVCache(B, H, size, D, layout=layout, n_blocks=nb, cross=pattern == "cross")
    cache.key.normal_(generator=g)
    cache.value.normal_(generator=g)
    q = torch.randn(B, H, 1, D, generator=g)
    positions = {"block": (3, 13), "prev_block": (5, 8, 21), "transpose": (3, 17, 47), "dense": (1, 30, 47),
                 "prime": (4, 19, 30), "cross": (7,)}[pattern]
    if size == 700:
        positions = (130, 699)
    for p in positions:
        pos = torch.tensor([p])
        got = td.decode_attention(q, cache, pattern, bc, pos)
        ref = _static_attention(q, cache, pattern, bc, 20, pos)
        assert torch.allclose(got.view(B, H, 1, D), ref, atol=1e-5), (pattern, p)


def _model(name: str, dtype=torch.float32) -> Prior:
    torch.manual_seed(0)
    model = Prior(prior_preset(name)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and p.abs().max() == 0:
                p.normal_(std=0.05)
    return model.to(dtype)


def _decoder_inputs(model: Prior, batch: int, prefix: int):
    g = torch.Generator().manual_seed(0)
    c = model.config
    z_cond = None
    if c.is_upsampler:
        z_cond = torch.randint(0, c.l_bins, (batch, c.n_ctx // c.cond_downsample), generator=g)
    lab = c.labels
    genres = torch.full((batch, lab.max_bow_genre_size), -1)
    genres[:, 0] = 1
    y = torch.cat([torch.tensor([[int(10 * lab.sample_rate), 1000, c.sample_length]] * batch),
                   torch.ones(batch, 1, dtype=torch.long), genres,
                   torch.randint(1, max(c.lyrics.n_vocab, 2), (batch, c.lyrics.n_tokens), generator=g)], dim=1)
    cond = model.conditioning(z_cond, y)
    prime = torch.randint(0, c.l_bins, (batch, prefix), generator=g)
    states, cc = None, cond.cond
    if model.style == "merged":
        known, cc = model.merged_sequence(cond.lyrics, prime, cc)
    else:
        known = prime
        if model.style == "encoder_decoder":
            states = model.encode_lyrics(cond.lyrics)
    return known, cond.start, cc, states


def _run_steps(name: str, dtype, steps: int, batch: int = 2, weights: str = "native",
               persistent: dict | None = None, cache_rtol: float = 1e-2):
    """Logits [steps, B, V] of ``step_static`` and of the fused step from the same prefilled cache, and whether
    the caches agree at the end within ``cache_rtol`` (both with ``weights``: the modules' 8-bit linears for
    ``step_static``). ``persistent``: run the stack as one persistent kernel, with these keywords of
    :class:`~jukebox.nn.triton_persistent.PersistentStack`."""
    from jukebox.nn.quant import weight_only_linears

    model = _model(name, dtype)
    dec = model.decoder
    with torch.no_grad():
        known, start, cond, states = _decoder_inputs(model, batch, 3)
        P = known.shape[1]
        cache = dec.make_cache(batch)
        prev = torch.cat([known[:, :1], known[:, :-1]], dim=1)
        dec.step(prev, cache, start, cond, states)
        cache2 = copy.deepcopy(cache)
        step = td.TritonDecodeStep(dec, cache2, cond, batch, weights=weights, persistent=persistent is not None)
        if persistent:
            from jukebox.nn.triton_persistent import PersistentStack

            step.persistent = PersistentStack(step, **persistent)
        g = torch.Generator().manual_seed(1)
        toks = torch.randint(0, model.config.l_bins, (steps, batch, 1), generator=g)
        refs, gots = [], []
        for i, t in enumerate(range(P, P + steps)):
            pos = torch.tensor([t])
            with weight_only_linears(dec.transformer, weights):
                refs.append(dec.step_static(toks[i], pos, cache, cond).float())
            gots.append(step(toks[i], pos).float())
        same = all(torch.allclose(a.key.float(), b.key.float(), atol=1e-5, rtol=cache_rtol)
                   and torch.allclose(a.value.float(), b.value.float(), atol=1e-5, rtol=cache_rtol)
                   for a, b in zip(cache.layers, cache2.layers))
    return torch.stack(refs), torch.stack(gots), same


def _rel(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("name", ["tiny_top", "tiny_upsampler", "tiny_lyrics", "tiny_merged"])
def test_step_equals_static_step_fp32(name):
    """fp32 logits of the fused step equal ``step_static``'s over a run of positions crossing block edges (every
    pattern and cache layout of the tiny presets), and the caches are written alike."""
    ref, got, same = _run_steps(name, torch.float32, 7)
    assert _rel(got, ref) < 1e-5 and same


@pytest.mark.parametrize("name,weights", [("tiny_upsampler", "int8"), ("tiny_lyrics", "fp8")])
def test_step_8bit_weights_equal_static_step(name, weights):
    """With 8-bit weights the fused step equals ``step_static`` over the modules' weight-only 8-bit linears (fp32),
    and differs from the native weights' logits."""
    ref, got, same = _run_steps(name, torch.float32, 5, weights=weights)
    native, _, _ = _run_steps(name, torch.float32, 5)
    assert _rel(got, ref) < 1e-5 and same
    assert _rel(got, ref) < _rel(native, ref) / 3  # the 8-bit weights were used, not the model's own


@pytest.mark.parametrize("name", ["tiny_lyrics"])
def test_step_bf16_close_to_fp32(name):
    """bf16: the fused step stays close to the fp32 logits. (Triton's interpreter rounds fp32 -> bf16 towards zero,
    about twice the error of the GPU's round-to-nearest, so the bound is loose here; the device check of
    ``benchmarks/bench_sampling.py --check`` compares with PyTorch's bf16 step.)"""
    truth, _, _ = _run_steps(name, torch.float32, 4)
    ref, got, _ = _run_steps(name, torch.bfloat16, 4)
    assert _rel(got, truth) < 3e-2 + 3 * _rel(ref, truth)


def test_decode_triton_mode_equals_reference_path():
    """``decode="triton"`` of sample_autoregressive (fp32, greedy) gives the reference path's tokens and logits."""
    from jukebox.prior.sampler import sample_autoregressive

    model = _model("tiny_top")
    known, start, cond, _ = _decoder_inputs(model, 2, 5)
    with torch.no_grad():
        ref, ref_logits = sample_autoregressive(model.decoder, 2, 14, known, start, cond, top_k=1,
                                                compact_cache=False, return_logits=True)
        got, logits = sample_autoregressive(model.decoder, 2, 14, known, start, cond, top_k=1, decode="triton",
                                            return_logits=True)
    assert torch.equal(got, ref)
    assert torch.allclose(logits, ref_logits, atol=1e-4, rtol=1e-4)


def test_decode_triton_with_int8_weights_equals_eager():
    """``decode="triton", weights="int8"`` (8-bit weights in the fused kernels) samples the greedy tokens of the
    eager step with the same int8 weights (fp32)."""
    from jukebox.prior.sampler import sample_autoregressive

    model = _model("tiny_top")
    known, start, cond, _ = _decoder_inputs(model, 2, 5)
    with torch.no_grad():
        ref, ref_logits = sample_autoregressive(model.decoder, 2, 14, known, start, cond, top_k=1,
                                                weights="int8", return_logits=True)
        got, logits = sample_autoregressive(model.decoder, 2, 14, known, start, cond, top_k=1, decode="triton",
                                            weights="int8", return_logits=True)
    assert torch.equal(got, ref)
    assert torch.allclose(logits, ref_logits, atol=1e-4, rtol=1e-4)


def test_rejects_reference_cache():
    model = _model("tiny_top")
    cache = model.decoder.make_cache(1, compact=False)
    with pytest.raises(UsageError):
        td.TritonDecodeStep(model.decoder, cache, None, 1)
