"""The re-prefill of a window's known tokens: :func:`~jukebox.prior.sampler.fill_cache` writes the cache the full
step writes, samples do not change, and a hop really changes every kept key (why a cache cannot be shifted)."""

from __future__ import annotations

import pytest
import torch
from test_fast_sampling import _inputs, _model

from jukebox.prior.sampler import fill_cache, sample_autoregressive


@pytest.mark.parametrize("name", ["tiny_top", "tiny_upsampler", "tiny_lyrics", "tiny_merged"])
def test_fill_cache_writes_the_steps_cache(name):
    model = _model(name)
    z, z_cond, y = _inputs(model)
    cond = model.conditioning(z_cond, y)
    dec = model.decoder
    enc = None
    if model.lyric_encoder is not None and getattr(cond, "lyrics", None) is not None:
        enc = model.encode_lyrics(cond.lyrics)
    prev = torch.cat([z[:, :1], z[:, :-1]], dim=1)[:, :20]
    with torch.no_grad():
        a, b = dec.make_cache(2), dec.make_cache(2)
        for lo, hi in ((0, 7), (7, 20)):
            dec.step(prev[:, lo:hi], a, cond.start, cond.cond, enc)
            fill_cache(dec, prev[:, lo:hi], b, cond.start, cond.cond, enc)
    assert a.length == b.length == 20
    for la, lb in zip(a.layers, b.layers):
        assert torch.equal(la.key, lb.key) and torch.equal(la.value, lb.value)


def test_samples_equal_with_and_without_kept_logits():
    model = _model("tiny_top")
    _, z_cond, y = _inputs(model)
    cond = model.conditioning(z_cond, y)
    known = torch.randint(0, model.config.l_bins, (2, 11), generator=torch.Generator().manual_seed(2))
    out = []
    with torch.no_grad():
        for keep in (False, True):
            seq, _ = sample_autoregressive(model.decoder, 2, model.n_ctx, known, cond.start, cond.cond,
                                           temperature=0.9, chunk_size=4, return_logits=keep, decode="eager",
                                           generator=torch.Generator().manual_seed(7))
            out.append(seq)
    assert torch.equal(out[0], out[1])


def test_a_hop_changes_every_kept_key():
    """Absolute positions: the same tokens one hop earlier in the window get other keys in every layer."""
    model = _model("tiny_top")
    z, z_cond, y = _inputs(model)
    cond = model.conditioning(z_cond, y)
    dec, hop = model.decoder, 8
    prev = torch.cat([z[:, :1], z[:, :-1]], dim=1)
    with torch.no_grad():
        a, b = dec.make_cache(2, compact=False), dec.make_cache(2, compact=False)
        fill_cache(dec, prev[:, :32], a, cond.start, cond.cond)
        fill_cache(dec, prev[:, hop:32], b, cond.start, cond.cond)
    for la, lb in zip(a.layers, b.layers):
        old, new = la.read(hop + 1, 32)[0], lb.read(1, 32 - hop)[0]  # the same tokens (after each start)
        assert not torch.allclose(old, new, atol=1e-3)
