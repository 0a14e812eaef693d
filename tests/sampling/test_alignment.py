"""The lyric alignment held as a band equals the dense matrix the original builds, in bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jukebox.api import load_model
from jukebox.sampling.alignment import LyricAlignment, alignment_json, alignment_png, lyric_alignment
from jukebox.sampling.schedule import window_starts
from jukebox.testing import make_tiny_model_dir


@torch.no_grad()
def dense_alignment(prior, z, labels, labeller, hop_fraction):
    """The original's algorithm: a dense [T, n_chars + 1] matrix per item, windows written last to first."""
    n, total = z.shape
    n_ctx = prior.n_ctx
    if n_ctx > total:
        z = torch.cat([z, torch.zeros(n, n_ctx - total, dtype=z.dtype)], dim=1)
    length = z.shape[1]
    starts = window_starts(length, n_ctx, max(1, int(hop_fraction * n_ctx)))
    out = [np.zeros((length, len(info.full_tokens) + 1), np.float32) for info in labels.infos]
    for start in reversed(starts):
        y, indices = labeller.window_y(labels, start, prior.raw_to_tokens)
        for i in range(n):
            w = prior.alignment_weights(z[i:i + 1, start:start + n_ctx], None, y[i:i + 1])[0]
            out[i][start:start + n_ctx, np.asarray(indices[i])] = w.float().numpy()
    return [a[:total, :-1] for a in out]


@pytest.fixture(scope="module", params=["encoder_decoder", "merged"])
def model(request, tmp_path_factory):
    return load_model(make_tiny_model_dir(tmp_path_factory.mktemp("al") / "m", lyrics=request.param).path,
                      device="cpu")


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chars=st.integers(0, 400), frames=st.integers(1, 70), hop=st.sampled_from([0.25, 0.5, 1.0]),
       seed=st.integers(0, 2**16), total=st.floats(1.0, 20.0))
def test_band_equals_the_dense_matrix(model, chars, frames, hop, seed, total):
    rng = np.random.default_rng(seed)
    top = model.top_level
    lyrics = "".join(rng.choice(list("abc defg\nxyz"), size=chars))
    hop_len = model.hop_lengths[top]
    items = [{"artist": "unknown", "genre": "unknown", "lyrics": lyrics}, {"artist": "unknown", "genre": "unknown",
                                                                          "lyrics": lyrics[: chars // 2]}]
    labels = model.item_labels(top, items, frames * hop_len, int(total * model.sample_rate), warn=False)
    z = torch.as_tensor(rng.integers(0, model.vqvae.config.l_bins, (2, frames)))
    prior, labeller = model.prior(top), model.labeller(top)
    got = lyric_alignment(prior, z, labels, labeller, hop)
    want = dense_alignment(prior, z, labels, labeller, hop)
    for g, w in zip(got, want):
        assert isinstance(g, LyricAlignment) and g.shape == w.shape and len(g) == len(w)
        np.testing.assert_array_equal(g.dense(), w)
        np.testing.assert_array_equal(np.asarray(g), w)
        if w.size:
            np.testing.assert_array_equal(g.argmax(axis=0), w.argmax(axis=0))
            np.testing.assert_array_equal(g.argmax(axis=1), w.argmax(axis=1))
            np.testing.assert_array_equal(g.max(axis=0), w.max(axis=0))
            np.testing.assert_array_equal(g.max(axis=1), w.max(axis=1))
        text = items[0]["lyrics"][: w.shape[1]]
        assert alignment_json(g, text, 0.01) == alignment_json(w, text, 0.01)
        assert alignment_png(g, max_size=16) == alignment_png(w, max_size=16)


def test_long_lyrics_on_a_short_draft_take_little_memory(model):
    """65,536 characters on one window: the dense matrix is frames x 65,537 floats per item; the band holds one
    window's lyric tokens per frame."""
    top = model.top_level
    prior, labeller = model.prior(top), model.labeller(top)
    lyrics = "la la la\n" * 7281
    items = [{"artist": "unknown", "genre": "unknown", "lyrics": lyrics}]
    labels = model.item_labels(top, items, 2 * model.hop_lengths[top], warn=False)
    z = torch.zeros(1, 2, dtype=torch.long)
    tracemalloc.start()
    (got,) = lyric_alignment(prior, z, labels, labeller, 0.125)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert got.shape == (2, len(labels.infos[0].full_tokens)) and got.band.shape[1] <= prior.n_tokens
    dense_bytes = prior.n_ctx * (got.shape[1] + 1) * 4
    assert peak < dense_bytes / 4, (peak, dense_bytes)
