"""Prior on tiny shapes: shapes, causality, KV cache == full forward, config and state-dict round trips,
importer error report, and parameter counts of the released shapes (meta device)."""

from __future__ import annotations

import pytest
import torch

from jukebox.errors import JukeboxError
from jukebox.prior.config import PRIOR_PRESETS, PriorConfig, prior_preset
from jukebox.prior.model import Prior
from jukebox.prior.openai import config_from_openai_hps, convert_openai_state_dict, openai_key_table

TINY = ["tiny_top", "tiny_upsampler", "tiny_lyrics", "tiny_merged"]


def _inputs(model: Prior, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    z = torch.randint(0, c.l_bins, (batch, c.n_ctx), generator=g)
    z_cond = None
    if c.is_upsampler:
        z_cond = torch.randint(0, c.l_bins, (batch, c.n_ctx // c.cond_downsample), generator=g)
    lab = c.labels
    total = int(10 * lab.sample_rate)
    genres = torch.full((batch, lab.max_bow_genre_size), -1)
    genres[:, 0] = torch.randint(0, lab.genre_bins, (batch,), generator=g)
    y = torch.cat([
        torch.tensor([[total, 1000 * (i + 1), c.sample_length] for i in range(batch)]),
        torch.randint(0, lab.artist_bins, (batch, 1), generator=g),
        genres,
        torch.randint(0, max(c.lyrics.n_vocab, 1), (batch, c.lyrics.n_tokens), generator=g),
    ], dim=1)
    return z, z_cond, y


def _model(name: str) -> Prior:
    torch.manual_seed(0)
    model = Prior(prior_preset(name)).eval()
    with torch.no_grad():  # zero-initialised projections would hide bugs
        for p in model.parameters():
            if p.abs().max() == 0:
                p.normal_(std=0.05)
    return model


@pytest.mark.parametrize("name", TINY)
def test_forward_shapes_and_loss(name):
    model = _model(name).train()
    z, z_cond, y = _inputs(model)
    loss, metrics = model(z, z_cond, y)
    assert loss.shape == () and torch.isfinite(loss)
    assert set(metrics) == {"bpd", "prime_loss", "gen_loss"}
    per_item, m = model(z, z_cond, y, reduction="none")
    assert per_item.shape == (2,) and m["gen_loss"].shape == (2,)
    loss.backward()
    c = model.config
    logits = model.logits(z, z_cond, y)
    assert logits.shape == (2, c.seq_len, c.bins)


@pytest.mark.parametrize("name", TINY)
def test_causality(name):
    model = _model(name)
    z, z_cond, y = _inputs(model)
    t = 13
    z2 = z.clone()
    z2[:, t:] = (z2[:, t:] + 1) % model.config.l_bins
    with torch.no_grad():
        a, b = model.logits(z, z_cond, y), model.logits(z2, z_cond, y)
    offset = model.n_tokens if model.style == "merged" else 0
    torch.testing.assert_close(a[:, :offset + t + 1], b[:, :offset + t + 1])
    assert not torch.allclose(a[:, offset + t + 1:], b[:, offset + t + 1:])


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("chunk_size", [None, 5])
def test_cache_equals_full_forward(name, chunk_size):
    model = _model(name)
    z, z_cond, y = _inputs(model)
    with torch.no_grad():
        seq, logits = model.sample_sequence(2, z_cond, y, temperature=1.0, prime=z[:, :11], chunk_size=chunk_size,
                                            generator=torch.Generator().manual_seed(3), return_logits=True)
        music = seq[:, model.n_tokens:] - model.n_vocab if model.style == "merged" else seq
        music = music.clamp(min=0)
        assert torch.equal(music[:, :11], z[:, :11])
        if model.style == "merged":  # lyric tokens sampled at music positions would not round-trip
            full = model.decoder(seq, *_decoder_args(model, z_cond, y))
        else:
            full = model.logits(music, z_cond, y)
    torch.testing.assert_close(logits, full, rtol=1e-4, atol=1e-5)


def _decoder_args(model, z_cond, y):
    cond = model.conditioning(z_cond, y)
    _, c = model.merged_sequence(cond.lyrics, torch.zeros(y.shape[0], model.n_ctx, dtype=torch.long), cond.cond)
    return cond.start, c


def test_sampling_controls_and_lengths():
    model = _model("tiny_top")
    z, z_cond, y = _inputs(model)
    calls = []
    out = model.sample(2, z_cond, y, temperature=0.9, top_k=5, top_p=0.9, sample_tokens=20,
                       generator=torch.Generator().manual_seed(0), progress=lambda d, n: calls.append((d, n)))
    assert out.shape == (2, 20) and out.dtype == torch.long
    assert calls[-1] == (20, 20)
    a = model.sample(2, z_cond, y, generator=torch.Generator().manual_seed(5))
    b = model.sample(2, z_cond, y, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_merged_mask_lyric_vocab_and_alignment():
    model = _model("tiny_merged")
    z, z_cond, y = _inputs(model)
    seq, _ = model.sample_sequence(2, z_cond, y, sample_tokens=6, mask_lyric_vocab=True,
                                  generator=torch.Generator().manual_seed(1))
    assert (seq[:, model.n_tokens:] >= model.n_vocab).all()
    w = model.alignment_weights(z, z_cond, y)
    assert w.shape == (2, model.n_ctx, model.n_tokens)
    lyr = _model("tiny_lyrics")
    z, z_cond, y = _inputs(lyr)
    w = lyr.alignment_weights(z, z_cond, y)
    assert w.shape == (2, lyr.n_ctx, lyr.n_tokens)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, lyr.n_ctx))
    # bf16 inference (as sampling on a GPU runs it): the lyric encoder's loss head must take the model's dtype
    wb = lyr.to(torch.bfloat16).alignment_weights(z, z_cond, y)
    assert wb.shape == w.shape and torch.isfinite(wb.float()).all()


@pytest.mark.parametrize("name", sorted(PRIOR_PRESETS))
def test_config_json_round_trip(name, tmp_path):
    cfg = prior_preset(name)
    assert PriorConfig.from_dict(cfg.to_dict()) == cfg
    cfg.save_json(tmp_path / "c.json")
    assert PriorConfig.load_json(tmp_path / "c.json") == cfg


def test_config_rejects_unknown_and_bad():
    d = prior_preset("tiny_top").to_dict()
    d["transformer"]["bogus"] = 1
    with pytest.raises(JukeboxError):
        PriorConfig.from_dict(d)
    with pytest.raises(JukeboxError):
        prior_preset("nope")
    with pytest.raises(JukeboxError):
        prior_preset("tiny_top").replace(level=1)  # an upsampler without a conditioner config


@pytest.mark.parametrize("name", TINY)
def test_state_dict_round_trip(name):
    model = _model(name)
    z, z_cond, y = _inputs(model)
    other = Prior(model.config).eval()
    other.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(other.logits(z, z_cond, y), model.logits(z, z_cond, y), rtol=0, atol=0)


def _to_openai(model: Prior) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    return {theirs: (sd[ours].t() if tr else sd[ours]).clone() for ours, (theirs, tr) in
            openai_key_table(model.config).items()}


@pytest.mark.parametrize("name", TINY)
def test_openai_import_round_trip(name):
    """Our weights -> the original's names and layouts -> imported back: every value is where it came from (fp32
    exactly; the released tops' fp16 ``.w`` matrices as their fp16 rounding), and the model computes the same."""
    model = _model(name)
    ref = model.state_dict()
    theirs = _to_openai(model)
    exact = convert_openai_state_dict({"module." + k: v for k, v in theirs.items()}, model.config)
    assert exact.keys() == ref.keys()
    assert all(torch.equal(exact[k], ref[k]) for k in ref), [k for k in ref if not torch.equal(exact[k], ref[k])]
    other = Prior(model.config).eval()
    other.load_state_dict(exact, strict=True)
    z, z_cond, y = _inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(other.logits(z, z_cond, y), model.logits(z, z_cond, y), rtol=0, atol=0)

    halves = {k: v.half() if k.endswith(".w") else v for k, v in theirs.items()}  # as the released fp16 tops
    ours = convert_openai_state_dict({"module." + k: v for k, v in halves.items()}, model.config)
    assert all(v.dtype == torch.float32 for v in ours.values())
    from_half = {ours_key for ours_key, (their_key, _) in openai_key_table(model.config).items()
                 if their_key.endswith(".w")}
    assert from_half and from_half < set(ref)
    for k in ref:
        want = ref[k].half().float() if k in from_half else ref[k]
        assert torch.equal(ours[k], want), k
    Prior(model.config).load_state_dict(ours, strict=True)


def test_openai_import_reports_bad_keys():
    model = _model("tiny_lyrics")
    theirs = _to_openai(model)
    del theirs["prior.transformer._attn_mods.0.attn.c_attn.w"]
    theirs["prior.extra"] = torch.zeros(1)
    theirs["prime_state_proj.w"] = torch.zeros(3, 3)
    with pytest.raises(JukeboxError) as err:
        convert_openai_state_dict(theirs, model.config)
    msg = str(err.value)
    assert "missing keys ['prior.transformer._attn_mods.0.attn.c_attn.w']" in msg
    assert "unexpected keys ['prior.extra']" in msg
    assert "prime_state_proj.w: shape (3, 3)" in msg


def test_config_from_openai_hps_defaults_and_presets():
    hps = {"level": 2, "n_ctx": 6144, "prior_width": 2048, "prior_depth": 72, "heads": 2, "attn_order": 12,
           "blocks": 64, "init_scale": 0.2, "c_res": 1, "labels_v3": True, "min_duration": 17.84,
           "max_duration": 600.0, "use_tokens": True, "n_tokens": 384, "prime_loss_fraction": 0.4,
           "single_enc_dec": True, "fp16_params": False, "alignment_layer": 63, "alignment_head": 0,
           "y_bins": (604, 7898), "t_bins": 64, "max_bow_genre_size": 1, "n_vocab": 79}
    assert config_from_openai_hps(hps) == prior_preset("1b_lyrics")
    with pytest.raises(JukeboxError):
        config_from_openai_hps({**hps, "spread": 4})


# Released parameter counts, as the checkpoints hold them (a tied output head counts again in its own key).
RELEASED = {"upsampler_level_0": 985_230_336, "upsampler_level_1": 985_230_336, "5b": 5_060_452_800,
            "5b_lyrics": 5_640_506_800, "1b_lyrics": 946_999_296}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_parameter_counts(name):
    with torch.device("meta"):
        model = Prior(prior_preset(name))
    state = model.state_dict(keep_vars=True)
    assert sum(v.numel() for v in state.values()) == RELEASED[name]
    assert set(state) == set(openai_key_table(model.config))


@pytest.mark.parametrize("level", [1, 0])
def test_fast_default_upsamplers(level):
    """The faster upsampler shapes of the embedded hierarchy: half the context, fewer layers, same conditioning."""
    fast = prior_preset(f"default_fast_upsampler_level_{level}")
    shipped = prior_preset(f"default_upsampler_level_{level}")
    assert fast.n_ctx * 2 == shipped.n_ctx and fast.transformer.depth < shipped.transformer.depth
    assert (fast.level, fast.cond_downsample, fast.l_bins) == (shipped.level, shipped.cond_downsample, shipped.l_bins)
    model = Prior(fast).train()
    z, z_cond, y = _inputs(model)
    loss, _ = model(z, z_cond, y)
    assert torch.isfinite(loss)
    n = sum(p.numel() for p in model.parameters())
    assert n < sum(p.numel() for p in Prior(shipped).parameters())


@pytest.mark.parametrize("level", [1, 0])
def test_wide_default_upsamplers(level):
    """The wide-conditioner upsampler shapes: the shipped transformer, a larger conditioner on the upper codes."""
    wide = prior_preset(f"default_wide_upsampler_level_{level}")
    shipped = prior_preset(f"default_upsampler_level_{level}")
    assert wide.transformer == shipped.transformer and wide.n_ctx == shipped.n_ctx
    assert wide.upsampler.width > shipped.upsampler.width and wide.upsampler.depth > shipped.upsampler.depth
    model = Prior(wide).train()
    z, z_cond, y = _inputs(model)
    loss, _ = model(z, z_cond, y)
    loss.backward()
    assert torch.isfinite(loss)
    cond = [p for n, p in model.named_parameters() if "conditioner" in n and p.grad is not None]
    assert cond and any(p.grad.abs().sum() > 0 for p in cond)  # the conditioner learns
