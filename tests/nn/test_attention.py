"""Each Jukebox attention pattern equals dense attention with the equivalent explicit mask."""

from __future__ import annotations

import pytest
import torch

from jukebox.nn.attention import (
    FactorizedAttention,
    _masked_attention,
    factorized_attention,
    layer_patterns,
    pattern_mask,
    prime_key_len,
)

SELF_PATTERNS = ["dense", "block", "transpose", "prev_block", "prime"]


def _reference(q, k, v, pattern, block_ctx, prime_keys):
    """Dense attention (explicit softmax) with the pattern's mask; rows without keys give zero."""
    pos_q = torch.arange(q.shape[2])
    pos_k = torch.arange(k.shape[2])
    mask = pattern_mask(pattern, pos_q, pos_k, block_ctx, prime_keys)
    w = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    w = w.masked_fill(~mask, float("-inf"))
    w = torch.softmax(w, dim=-1).nan_to_num(0.0)
    return w @ v


@pytest.mark.parametrize("pattern", SELF_PATTERNS)
@pytest.mark.parametrize("T", [24, 22])
def test_pattern_equals_masked_dense(pattern, T):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, T, 8, generator=g) for _ in range(3))
    out = factorized_attention(q, k, v, pattern, block_ctx=4, prime_keys=10)
    ref = _reference(q, k, v, pattern, 4, 10)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    mask = pattern_mask(pattern, torch.arange(T), torch.arange(T), 4, 10)
    torch.testing.assert_close(_masked_attention(q, k, v, mask), ref, rtol=1e-5, atol=1e-6)


def test_cross_attention_is_unmasked():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 2, 12, 8, generator=g)
    k, v = torch.randn(2, 2, 5, 8, generator=g), torch.randn(2, 2, 5, 8, generator=g)
    out = factorized_attention(q, k, v, "cross")
    torch.testing.assert_close(out, torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, -1) @ v, rtol=1e-5, atol=1e-6)


def test_masks_match_jukebox_definitions():
    pos = torch.arange(16)
    m = pattern_mask("transpose", pos, pos, 4)
    assert m[9].nonzero().flatten().tolist() == [1, 5, 9]
    m = pattern_mask("block", pos, pos, 4)
    assert m[9].nonzero().flatten().tolist() == [8, 9]
    m = pattern_mask("prev_block", pos, pos, 4)
    assert m[9].nonzero().flatten().tolist() == [4, 5, 6, 7]
    assert not m[:4].any()
    assert prime_key_len(384, 64) == 448
    m = pattern_mask("prime", pos, pos, 4, prime_keys=6)
    assert m[12].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5]


def test_layer_patterns_orders():
    assert layer_patterns(2, 4) == ("block", "transpose", "prev_block", "block")
    p = layer_patterns(10, 79)
    assert p.count("cross") == 7 and p[68] == "cross"
    p = layer_patterns(12, 72)
    assert p[15] == "prime" and p[31] == "prime" and p[47] == "dense" and p[63] == "prime"
    with pytest.raises(NotImplementedError):
        layer_patterns(3, 2)


@pytest.mark.parametrize("pattern", SELF_PATTERNS)
def test_module_cache_steps_equal_full(pattern):
    torch.manual_seed(0)
    attn = FactorizedAttention(16, 8, 2, pattern, n_ctx=24, block_ctx=4, prime_keys=8).eval()
    from jukebox.nn.kv_cache import LayerKVCache

    x = torch.randn(2, 24, 16)
    full = attn(x)
    cache = LayerKVCache(2, 2, attn.cache_len(), 4)
    outs = [attn(x[:, :5], cache=cache, start=0)]
    outs += [attn(x[:, t:t + 1], cache=cache, start=t) for t in range(5, 13)]
    outs.append(attn(x[:, 13:], cache=cache, start=13))
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-5, atol=1e-6)


def test_record_weights():
    torch.manual_seed(0)
    attn = FactorizedAttention(16, 8, 2, "prime", n_ctx=24, block_ctx=4, prime_keys=8).eval()
    attn.record_weights = True
    attn(torch.randn(1, 24, 16))
    w = attn.last_weights
    assert w.shape == (1, 2, 24, 8)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 2, 24))
