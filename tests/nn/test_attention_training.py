"""The full-sequence (training) attention path: 4-D SDPA per pattern equals the former 5-D reshape path and
dense attention under the pattern's mask, values and gradients, on every layer pattern of every attn_order."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from jukebox.nn.attention import FactorizedAttention, factorized_attention, layer_patterns, pattern_mask
from jukebox.nn.transformer import Transformer

ORDERS = (0, 1, 2, 6, 7, 8, 9, 10, 11, 12)


def _former(q, k, v, pattern, block_ctx=1, prime_keys=0, dropout_p=0.0):
    """The previous implementation (5-D SDPA over [B, H, rows, block_ctx, D]), kept as the reference."""
    if pattern == "cross":
        return F.scaled_dot_product_attention(q, k, v)
    if pattern == "dense":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if pattern == "prime":
        n = min(prime_keys, k.shape[2])
        return F.scaled_dot_product_attention(q, k[:, :, :n], v[:, :, :n], is_causal=True)
    B, H, T, D = q.shape
    nb = -(-T // block_ctx)
    L = nb * block_ctx

    def pad(x):
        return x if x.shape[2] == L else F.pad(x, (0, 0, 0, L - x.shape[2]))

    qg, kg, vg = (pad(t).reshape(B, H, nb, block_ctx, D) for t in (q, k, v))
    if pattern == "block":
        out = F.scaled_dot_product_attention(qg, kg, vg, is_causal=True)
    elif pattern == "transpose":
        qg, kg, vg = (t.transpose(2, 3) for t in (qg, kg, vg))
        out = F.scaled_dot_product_attention(qg, kg, vg, is_causal=True).transpose(2, 3)
    else:
        kg = F.pad(kg[:, :, :-1], (0, 0, 0, 0, 1, 0))
        vg = F.pad(vg[:, :, :-1], (0, 0, 0, 0, 1, 0))
        out = F.scaled_dot_product_attention(qg, kg, vg)
    return out.reshape(B, H, L, D)[:, :, :T]


def _masked_dense(q, k, v, pattern, block_ctx, prime_keys):
    pos = torch.arange(q.shape[2])
    mask = pattern_mask(pattern, pos, torch.arange(k.shape[2]), block_ctx, prime_keys)
    w = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    return torch.softmax(w.masked_fill(~mask, float("-inf")), -1).nan_to_num(0.0) @ v


def _qkv(B, T, H, D, seed):
    """q, k, v [B, H, T, D] as FactorizedAttention makes them: head splits of one fused projection."""
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, T, 3 * H * D, generator=g, dtype=torch.float64)
    return [t.view(B, T, H, D).transpose(1, 2) for t in qkv.chunk(3, dim=-1)]


def _patterns() -> list[str]:
    return sorted({p for order in ORDERS for p in layer_patterns(order, 79)} - {"cross"})


@pytest.mark.parametrize("pattern", _patterns())
@pytest.mark.parametrize("T", [32, 29])
def test_each_pattern_equals_the_former_path_and_masked_dense(pattern: str, T: int) -> None:
    B, H, D, bc, prime = 2, 3, 5, 8, 13
    q, k, v = _qkv(B, T, H, D, seed=T)
    for t in (q, k, v):
        t.requires_grad_(True)
    out = factorized_attention(q, k, v, pattern, bc, prime)
    assert out.shape == (B, H, T, D)
    ref = _former(q, k, v, pattern, bc, prime)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, _masked_dense(q, k, v, pattern, bc, prime), rtol=1e-10, atol=1e-12)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), g)
    ref_grads = torch.autograd.grad(ref, (q, k, v), g)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_prev_block_first_row_is_exactly_zero() -> None:
    q, k, v = _qkv(1, 16, 2, 4, seed=3)
    out = factorized_attention(q, k, v, "prev_block", 4)
    assert torch.count_nonzero(out[:, :, :4]) == 0
    assert torch.count_nonzero(out[:, :, 4:]) == out[:, :, 4:].numel()


def test_output_merges_heads_without_a_copy() -> None:
    """On block layouts the result is a view of [B, T, H, D]: the head merge that follows is free."""
    q, k, v = _qkv(2, 32, 2, 4, seed=4)
    out = factorized_attention(q, k, v, "block", 8)
    assert out.transpose(1, 2).is_contiguous()


@pytest.mark.parametrize("order", ORDERS)
def test_transformer_of_every_order_keeps_its_outputs(order: int) -> None:
    """A whole tiny stack per attn_order (fp32): the new path against the former, forward and backward."""
    import jukebox.nn.attention as attention

    torch.manual_seed(order)
    depth = 16 if order in (7, 11, 12) else 4
    patterns = layer_patterns(order, depth)
    n_ctx, blocks = 24, 4
    model = Transformer(16, 2, n_ctx, patterns, blocks, prime_keys=10 if "prime" in patterns else 0,
                        encoder_len=5 if "cross" in patterns else 0).double()
    x = torch.randn(2, n_ctx, 16, dtype=torch.float64, requires_grad=True)
    enc = torch.randn(2, 5, 16, dtype=torch.float64) if "cross" in patterns else None
    out = model(x, enc)
    (gx,) = torch.autograd.grad(out.square().sum(), x)
    former = attention.factorized_attention
    try:
        attention.factorized_attention = _former
        ref = model(x, enc)
        (gref,) = torch.autograd.grad(ref.square().sum(), x)
    finally:
        attention.factorized_attention = former
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gx, gref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("pattern", ["block", "transpose", "prev_block"])
def test_bf16_autocast_on_cpu_close_to_fp32(pattern: str) -> None:
    torch.manual_seed(0)
    attn = FactorizedAttention(32, 16, 2, pattern, n_ctx=64, block_ctx=8)
    x = torch.randn(2, 64, 32)
    ref = attn(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).norm() / ref.norm() < 3e-2
