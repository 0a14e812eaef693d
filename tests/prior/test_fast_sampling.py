"""Fast sampling: compact caches, static decode step, per-row prime lengths, parallel upsampling, bf16."""

from __future__ import annotations

import pytest
import torch

from conftest import load_reference
from jukebox.prior.config import prior_preset
from jukebox.prior.model import Prior
from jukebox.sampling.parallel import plan_parallel, sample_level_parallel
from jukebox.sampling.pipeline import LevelSettings, sample_level

TINY = ["tiny_top", "tiny_upsampler", "tiny_lyrics", "tiny_merged"]
TINY_VQVAE = {"levels": 3, "downs_t": (3, 2, 2), "strides_t": (2, 2, 2), "l_bins": 64}


def _model(name: str, seed: int = 0) -> Prior:
    torch.manual_seed(seed)
    model = Prior(prior_preset(name)).eval()
    with torch.no_grad():  # zero-initialised projections would hide bugs
        for p in model.parameters():
            if p.dim() > 1 and p.abs().max() == 0:
                p.normal_(std=0.05)
    return model


def _inputs(model: Prior, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    z = torch.randint(0, c.l_bins, (batch, c.n_ctx), generator=g)
    z_cond = None
    if c.is_upsampler:
        z_cond = torch.randint(0, c.l_bins, (batch, c.n_ctx // c.cond_downsample), generator=g)
    lab = c.labels
    genres = torch.full((batch, lab.max_bow_genre_size), -1)
    genres[:, 0] = torch.randint(0, lab.genre_bins, (batch,), generator=g)
    y = torch.cat([
        torch.tensor([[int(10 * lab.sample_rate), 1000 * (i + 1), c.sample_length] for i in range(batch)]),
        torch.randint(0, lab.artist_bins, (batch, 1), generator=g),
        genres,
        torch.randint(0, max(c.lyrics.n_vocab, 1), (batch, c.lyrics.n_tokens), generator=g),
    ], dim=1)
    return z, z_cond, y


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("decode", ["eager", "static"])
def test_decode_paths_equal_reference_path(name, decode, sampler_mode):
    """Compact caches and the static step give the samples and logits of the full-context reference cache."""
    mode = sampler_mode
    model = _model(name)
    z, z_cond, y = _inputs(model)
    with torch.no_grad():
        for prime in (None, z[:, :9]):
            mode.update(compact_cache=False, decode="eager")
            ref, ref_logits = model.sample_sequence(2, z_cond, y, top_k=1, prime=prime, chunk_size=4,
                                                    return_logits=True)
            mode.update(compact_cache=True, decode=decode)
            seq, logits = model.sample_sequence(2, z_cond, y, top_k=1, prime=prime, chunk_size=4,
                                                return_logits=True)
            assert torch.equal(seq, ref)
            torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)


FIXTURES = ["upsampler_level_0", "upsampler_level_1", "top_5b", "top_5b_lyrics", "top_1b_lyrics"]


@pytest.mark.parametrize("name", FIXTURES)
def test_static_decode_greedy_matches_original(name):
    from jukebox.prior.openai import config_from_openai_hps, convert_openai_state_dict

    ref = load_reference(f"prior_{name}.pt")
    config = config_from_openai_hps(ref["hps"], TINY_VQVAE)
    model = Prior(config).eval()
    model.load_state_dict(convert_openai_state_dict(ref["state_dict"], config), strict=True)
    inp, out = ref["inputs"], ref["outputs"]
    z_cond = inp["z_conds"][0] if inp["z_conds"] is not None else None
    with torch.no_grad():
        assert torch.equal(model.sample(2, z_cond, inp["y"], top_k=1, decode="static"), out["greedy_ancestral"])
        n_prime, chunk = out["greedy_primed_n_prime"], out["greedy_primed_chunk_size"]
        primed = model.sample(2, z_cond, inp["y"], top_k=1, prime=inp["z"][:, :n_prime], chunk_size=chunk,
                              decode="static")
        assert torch.equal(primed, out["greedy_primed"])


@pytest.mark.parametrize("name", ["tiny_upsampler", "tiny_merged"])
def test_per_row_prime_lengths(name):
    model = _model(name)
    z, z_cond, y = _inputs(model, batch=3)
    lengths = [0, 5, 12]
    with torch.no_grad():
        batched = model.sample(3, z_cond, y, top_k=1, prime=z[:, :12], prime_lengths=lengths)
        for i, n in enumerate(lengths):
            one = model.sample(1, None if z_cond is None else z_cond[i:i + 1], y[i:i + 1], top_k=1,
                               prime=z[i:i + 1, :n])
            assert torch.equal(batched[i], one[0])
            assert torch.equal(batched[i, :n], z[i, :n])


def test_stochastic_static_equals_eager():
    model = _model("tiny_lyrics")
    _, z_cond, y = _inputs(model)
    with torch.no_grad():
        a = model.sample(2, z_cond, y, temperature=0.9, top_k=10, top_p=0.95,
                         generator=torch.Generator().manual_seed(1))
        b = model.sample(2, z_cond, y, temperature=0.9, top_k=10, top_p=0.95,
                         generator=torch.Generator().manual_seed(1), decode="static")
    assert torch.equal(a, b)


def test_compact_cache_is_smaller():
    model = prior_preset("upsampler_level_0")
    from jukebox.nn.attention import layer_patterns

    assert layer_patterns(model.transformer.attn_order, 3) == ("block", "transpose", "prev_block")
    tiny = _model("tiny_upsampler").decoder
    full, compact = tiny.make_cache(1, compact=False), tiny.make_cache(1)
    assert compact.nbytes() < full.nbytes()
    assert [c.layout for c in compact.layers] == ["ring", "columns", "ring"]


@pytest.mark.parametrize("name", ["tiny_merged", "tiny_upsampler"])
def test_bf16_logits_close(name):
    model = _model(name)
    z, z_cond, y = _inputs(model)
    with torch.no_grad():
        ref = model.logits(z, z_cond, y).float()
        half = Prior(model.config).eval()
        half.load_state_dict(model.state_dict())
        half = half.to(torch.bfloat16)
        got = half.logits(z, z_cond, y).float()
        err = ((got - ref).norm() / ref.norm()).item()
        assert err < 3e-2, err
        if model.style == "merged":
            return
        # the sampling path runs in bf16 and gives the same teacher-forced logits as its forward pass
        seq, logits = half.sample_sequence(2, z_cond, y, top_k=1, prime=z[:, :10], return_logits=True)
        full = half.logits(seq, z_cond, y).float()
        assert ((logits - full).norm() / full.norm()).item() < 3e-2


# --- parallel upsampling ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("total,have,n_ctx,hop,passes", [
    (100, 0, 16, 8, 2), (100, 0, 16, 8, 1), (97, 0, 16, 4, 2), (64, 10, 16, 8, 2), (40, 0, 16, 8, 2),
    (16, 0, 16, 8, 2), (20, 0, 16, 8, 2), (33, 0, 16, 8, 2), (1000, 300, 32, 16, 2), (12, 3, 16, 8, 2),
])
def test_plan_parallel_covers_each_token_once(total, have, n_ctx, hop, passes):
    phases = plan_parallel(total, have, n_ctx, hop, passes)
    known = [i < have for i in range(total)]
    for phase in phases:
        new = []
        for s in phase:
            assert 0 <= s.start and s.start + s.length <= total and s.length <= n_ctx
            assert all(known[s.start:s.start + s.known]), "a window continues tokens not sampled yet"
            new += range(s.start + s.known, s.start + s.length)
        assert len(new) == len(set(new)) and not any(known[i] for i in new)
        for i in new:
            known[i] = True
    assert all(known)
    if total >= 2 * n_ctx and passes == 2 and have == 0:
        assert len(phases) == 2 and all(s.known in (0, n_ctx - hop) for s in phases[0] + phases[1][:-1])


def test_sample_level_parallel_tiny():
    model = _model("tiny_upsampler")
    n_ctx, down = model.n_ctx, model.cond_downsample
    total = 5 * n_ctx + 7
    g = torch.Generator().manual_seed(0)
    upper = torch.randint(0, 64, (2, total // down + 1), generator=g)
    _, _, y = _inputs(model)
    settings = LevelSettings(top_k=1, hop_fraction=0.5, chunk_size=8)
    codes = {1: torch.zeros(2, 0, dtype=torch.long), 2: upper}
    seq = sample_level(model, codes, 1, total, lambda lvl, s: y, settings)
    par = sample_level_parallel(model, codes, 1, total, lambda lvl, s: y, settings)
    assert par.shape == seq.shape == (2, total)
    # the first window is the same in both orders (no earlier context), the rest follows other windows
    assert torch.equal(par[:, :n_ctx], seq[:, :n_ctx])
    # a known prefix is kept and continued
    start = {1: seq[:, :20], 2: upper}
    par2 = sample_level_parallel(model, start, 1, total, lambda lvl, s: y, settings, max_batch_size=3)
    assert torch.equal(par2[:, :20], seq[:, :20])
    # anchor windows equal independent samples of their windows (greedy)
    phases = plan_parallel(total, 0, n_ctx, n_ctx // 2)
    s = phases[0][1]
    one = model.sample(2, upper[:, s.start // down:(s.start + n_ctx) // down], y, top_k=1)
    assert torch.equal(par[:, s.start:s.start + n_ctx], one)


def test_api_parallel_upsampling(tmp_path):
    from jukebox.api import Jukebox
    from jukebox.checkpoint.model_dir import ModelDir
    from jukebox.errors import UsageError
    from jukebox.testing import make_tiny_model_dir

    make_tiny_model_dir(tmp_path / "m")
    jb = Jukebox(ModelDir(tmp_path / "m"), device="cpu")
    seconds = 3 * 32 * 8 * 4 / jb.sample_rate  # level 0 three contexts long
    out = jb.generate(seconds=seconds, seed=0, upsample_mode="parallel", alignment=False)
    assert out.codes[0].shape[1] == jb.sample_length(seconds) // 8
    assert out.settings["upsample_mode"] == "parallel"
    with pytest.raises(UsageError):
        jb.generate(seconds=seconds, upsample_mode="sideways")


def test_max_windows_bounds_parallel_calls_greedy_equal():
    """LevelSettings.max_windows (windows x samples per sampler call) changes memory, not greedy results."""
    model = _model("tiny_upsampler")
    n_ctx, down = model.n_ctx, model.cond_downsample
    total = 4 * n_ctx + 3
    upper = torch.randint(0, 64, (2, total // down + 1), generator=torch.Generator().manual_seed(1))
    _, _, y = _inputs(model)
    settings = LevelSettings(top_k=1, hop_fraction=0.5, chunk_size=8, max_windows=1)
    codes = {1: torch.zeros(2, 0, dtype=torch.long), 2: upper}
    whole = sample_level_parallel(model, codes, 1, total, lambda lvl, s: y, settings)
    capped = sample_level_parallel(model, codes, 1, total, lambda lvl, s: y, settings,
                                   max_batch_size=settings.max_windows)
    assert torch.equal(whole, capped)
    with pytest.raises(ValueError, match="max_windows"):
        LevelSettings(max_windows=0)
