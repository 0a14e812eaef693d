"""Transformer: shapes, causality, incremental decoding with the KV cache equals the full forward pass."""

from __future__ import annotations

import torch

from jukebox.nn.transformer import Transformer

PATTERNS = ("block", "transpose", "prev_block", "cross", "dense", "prime")


def _model(**kw):
    torch.manual_seed(0)
    model = Transformer(width=16, heads=2, n_ctx=24, patterns=PATTERNS, blocks=6, prime_keys=8, encoder_len=5,
                        **kw).eval()
    with torch.no_grad():  # random weights everywhere (cross layers start zeroed)
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model


def test_shapes_and_causality():
    model = _model()
    x = torch.randn(2, 24, 16, requires_grad=True)
    enc = torch.randn(2, 5, 16)
    y = model(x, enc)
    assert y.shape == (2, 24, 16)
    (g,) = torch.autograd.grad(y[:, 10].sum(), x)
    assert g[:, 11:].abs().sum() == 0
    assert g[:, :11].abs().sum() > 0


def test_cache_equals_full_forward():
    model = _model()
    x = torch.randn(3, 24, 16)
    enc = torch.randn(3, 5, 16)
    with torch.no_grad():
        full = model(x, enc)
        # one token at a time
        cache = model.make_cache(3)
        steps = torch.cat([model(x[:, t:t + 1], enc if t == 0 else None, cache) for t in range(24)], 1)
        assert cache.length == 24
        torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-5)
        # prefill, then chunks of mixed sizes, then single steps; reuse the same buffers
        key_ptr = cache[0].key.data_ptr()
        cache.reset()
        outs = [model(x[:, :7], enc, cache), model(x[:, 7:12], None, cache), model(x[:, 12:13], None, cache),
                model(x[:, 13:21], None, cache)]
        outs += [model(x[:, t:t + 1], None, cache) for t in range(21, 24)]
        torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-5, atol=1e-5)
        assert cache[0].key.data_ptr() == key_ptr


def test_checkpointing_gives_same_gradients():
    x = torch.randn(2, 24, 16)
    enc = torch.randn(2, 5, 16)
    grads = []
    for ckpt in (False, True):
        model = _model(checkpoint=ckpt).train()
        model(x, enc).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])
