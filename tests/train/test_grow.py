"""Lyric priors grown from a lyric-free prior (jukebox.train.grow, ``jukebox train prior --init-from``): the
encoder-decoder growth keeps the base's logits exactly, the merged one its weights; refusals; the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import make_corpus

from jukebox.checkpoint.model_dir import ModelDir
from jukebox.data.labels import LabelVocab
from jukebox.errors import UsageError
from jukebox.nn.attention import layer_patterns
from jukebox.prior import Prior
from jukebox.prior.config import prior_preset
from jukebox.testing import make_tiny_model_dir
from jukebox.train import TrainConfig, train_prior
from jukebox.train.grow import base_layer_positions, grow_prior, lyric_growth_config

SR = 44100


@pytest.fixture(scope="module")
def base() -> Prior:
    torch.manual_seed(0)
    return Prior(prior_preset("tiny_top")).eval()


def _labels(prior: Prior, batch: int = 2) -> torch.Tensor:
    c = prior.config
    y = torch.zeros(batch, c.n_labels, dtype=torch.long)
    y[:, 0], y[:, 1], y[:, 2] = c.sample_length * 4, c.sample_length, c.sample_length
    y[:, 3], y[:, 4] = 1, 2
    return y


def test_encoder_decoder_growth_keeps_the_base_logits_for_any_lyrics(base: Prior) -> None:
    cfg = lyric_growth_config(base.config, prior_preset("tiny_lyrics").lyrics)
    assert (cfg.transformer.depth, cfg.transformer.attn_order, cfg.lyrics.n_vocab) == (4, 6, 80)  # v2 labels
    torch.manual_seed(1)
    new = grow_prior(base, cfg).eval()
    pats = layer_patterns(6, 4)
    assert base_layer_positions(base.config, cfg) == [0, 1, 2] and pats[3] == "cross"
    assert not new.decoder.transformer.blocks[3].attn.proj.weight.any()
    z = torch.randint(0, base.config.l_bins, (2, base.n_ctx))
    y = _labels(base)
    with torch.no_grad():
        a = base.logits(z, None, y)
        for seed in range(2):  # whatever the lyrics
            lyr = torch.randint(1, new.n_vocab, (2, new.n_tokens), generator=torch.Generator().manual_seed(seed))
            b = new.logits(z, None, torch.cat([y, lyr], dim=1))
            assert (a - b).abs().max().item() <= 1e-5


def test_merged_growth_keeps_the_music_weights(base: Prior) -> None:
    cfg = lyric_growth_config(base.config, prior_preset("tiny_merged").lyrics)
    t = cfg.transformer
    assert (t.depth, t.attn_order, t.blocks) == (16, 12, 5)  # block length 32 / 4 = 40 / 5 kept
    new = grow_prior(base, cfg)
    nv, nt = new.n_vocab, new.n_tokens
    assert torch.equal(new.decoder.token_emb.weight[nv:], base.decoder.token_emb.weight)
    assert torch.equal(new.decoder.head.weight[nv:], base.decoder.head.weight)
    assert torch.equal(new.decoder.pos_emb[nt:], base.decoder.pos_emb)
    for i in range(3):
        got, want = new.decoder.transformer.blocks[i], base.decoder.transformer.blocks[i]
        assert torch.equal(got.mlp.fc.weight, want.mlp.fc.weight)
        assert torch.equal(got.attn.proj.weight, want.attn.proj.weight)
    for j in range(3, 16):  # added layers start as the identity
        assert not new.decoder.transformer.blocks[j].attn.proj.weight.any()
        assert not new.decoder.transformer.blocks[j].mlp.proj.bias.any()
    for k, v in base.label_conditioner.state_dict().items():
        assert torch.equal(new.label_conditioner.state_dict()[k], v)


def test_default_growth_configs_are_the_lyric_presets_deepened() -> None:
    top = prior_preset("default_top")
    ed = lyric_growth_config(top, prior_preset("default_lyrics").lyrics)
    assert ed == prior_preset("default_lyrics").replace(transformer=ed.transformer, alignment_layer=15)
    assert (ed.transformer.depth, ed.transformer.attn_order) == (16, 6)
    merged = lyric_growth_config(top, prior_preset("default_merged").lyrics)
    assert merged == prior_preset("default_merged").replace(transformer=merged.transformer)
    assert merged.transformer.blocks == 18  # 1152 / 64


def test_growth_refuses_what_it_cannot_keep(base: Prior) -> None:
    lyrics = prior_preset("tiny_lyrics").lyrics
    with pytest.raises(UsageError, match="already has lyrics"):
        lyric_growth_config(prior_preset("tiny_lyrics"), lyrics)
    with pytest.raises(UsageError, match="upsampler"):
        lyric_growth_config(prior_preset("tiny_upsampler"), lyrics)
    with pytest.raises(UsageError, match="multiple of the base's block length"):
        lyric_growth_config(base.config, prior_preset("tiny_merged").lyrics.replace(n_tokens=12))
    deep = base.config.replace(transformer=base.config.transformer.replace(depth=4))
    with pytest.raises(UsageError, match="divisible by 3"):
        lyric_growth_config(deep, lyrics)
    with pytest.raises(UsageError, match="lyric preset"):
        lyric_growth_config(base.config, prior_preset("tiny_top").lyrics)
    cfg = lyric_growth_config(base.config, lyrics)
    wide = cfg.replace(transformer=cfg.transformer.replace(width=64))
    with pytest.raises(UsageError, match="differs from the base"):
        grow_prior(base, wide)


# ---------------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("grow")
    base = root / "base"
    md = make_tiny_model_dir(base, levels=(1, 2))
    md.save_tempi(2, {"default": 120.0, "genres": {"folk": 100.0}})
    return base, make_corpus(root / "music", n=4, artists=("New Singer", "Alice Example", "Alice Example",
                                                               "Alice Example"), genres=("folk",))


def _cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    from jukebox.cli import main as cli_main

    if "train" not in cli_main.COMMAND_MODULES:
        monkeypatch.setattr(cli_main, "COMMAND_MODULES", (*cli_main.COMMAND_MODULES, "train"))
    return cli_main.main(argv)


def test_cli_grows_and_trains_a_lyric_prior(tmp_path: Path, dirs: tuple[Path, Path], monkeypatch, capsys) -> None:
    base_dir, music = dirs
    out = tmp_path / "lyrics"
    rc = _cli(["train", "prior", "--model", str(out), "--data", str(music), "--level", "2", "--preset",
               "tiny_lyrics", "--init-from", str(base_dir), "--steps", "2", "--batch-size", "2", "--lr", "1e-6",
               "--workers", "1", "--val-batches", "1", "--log-dir", "none", "--no-progress", "--json"], monkeypatch)
    assert rc == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["step"] == 2 and np.isfinite(info["loss"])
    md, bmd = ModelDir(out), ModelDir(base_dir)
    assert md.prior_levels() == [1, 2]  # the base's upsampler came with the VQ-VAE
    new, base = md.load_prior(2), bmd.load_prior(2)
    assert new.config.lyrics.style == "encoder_decoder" and new.config.transformer.depth == 4
    for i, j in enumerate(base_layer_positions(base.config, new.config)):  # started from the base's weights
        got, want = new.decoder.transformer.blocks[j], base.decoder.transformer.blocks[i]
        assert (got.mlp.fc.weight - want.mlp.fc.weight).abs().max() < 1e-4
    vocab, old = LabelVocab.load(out / "prior_level_2"), LabelVocab.load(base_dir / "prior_level_2")
    assert all(vocab.artist_id(a) == old.artist_id(a) for a in old.list_artists())  # base tables kept ...
    assert "new_singer" in vocab.list_artists() and "new_singer" not in old.list_artists()  # ... and extended
    assert md.tempi(2) == bmd.tempi(2)
    assert not (out / "prior_level_2" / "lora").exists() and (out / "vqvae" / "config.json").is_file()


def test_init_from_refusals(tmp_path: Path, dirs: tuple[Path, Path], monkeypatch, capsys) -> None:
    base_dir, music = dirs
    cfg = TrainConfig(steps=1, batch_size=2, workers=1, val_batches=1)
    kw = dict(config=cfg, log_dir="none", progress=False, init_from=base_dir)
    with pytest.raises(UsageError, match="another model directory"):
        train_prior(base_dir, music, 2, preset="tiny_lyrics", **kw)
    with pytest.raises(UsageError, match="lyric preset"):
        train_prior(tmp_path / "a", music, 2, preset="tiny_top", **kw)
    with pytest.raises(UsageError, match="--resume"):
        train_prior(tmp_path / "a", music, 2, preset="tiny_lyrics", resume=True, **kw)
    existing = tmp_path / "existing"
    make_tiny_model_dir(existing, levels=(2,))
    with pytest.raises(UsageError, match="already has a level-2 prior"):
        train_prior(existing, music, 2, preset="tiny_lyrics", **kw)
    sung = tmp_path / "sung"
    make_tiny_model_dir(sung, lyrics="encoder_decoder", levels=(2,))
    with pytest.raises(UsageError, match="already has lyrics"):
        train_prior(tmp_path / "b", music, 2, preset="tiny_lyrics", config=cfg, log_dir="none", progress=False,
                    init_from=sung)
    rc = _cli(["train", "prior", "--model", str(base_dir), "--data", str(music), "--level", "2", "--preset",
               "tiny_lyrics", "--init-from", str(base_dir), "--steps", "1"], monkeypatch)
    assert rc == 2 and "another model directory" in capsys.readouterr().err
