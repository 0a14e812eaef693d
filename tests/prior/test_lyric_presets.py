"""The default-size lyric top priors (``default_lyrics``, ``default_merged``): shapes, size class,
alignment layer, a few training steps that lower the loss, and a run through ``train_prior`` on a tiny VQ-VAE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from jukebox.nn.attention import layer_patterns
from jukebox.prior import Prior
from jukebox.prior.config import prior_preset

LYRIC_PRESETS = ("default_lyrics", "default_merged")


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", LYRIC_PRESETS)
def test_preset_matches_default_top_and_size_class(name: str) -> None:
    top = prior_preset("default_top")
    c = prior_preset(name)
    assert (c.level, c.n_ctx, c.l_bins) == (top.level, top.n_ctx, top.l_bins)
    assert (c.transformer.width, c.transformer.heads, c.transformer.blocks) == (384, 4, 16)
    assert c.labels == top.labels and c.lyrics.n_tokens == 128
    assert c.lyrics.style == {"default_lyrics": "encoder_decoder", "default_merged": "merged"}[name]
    patterns = layer_patterns(c.transformer.attn_order, c.transformer.depth)
    # the alignment head sits in a layer that attends to the lyrics
    assert patterns[c.alignment_layer] == {"encoder_decoder": "cross", "merged": "prime"}[c.lyrics.style]
    assert 0 <= c.alignment_head < c.transformer.heads
    assert c.seq_len % c.transformer.blocks == 0
    n, n_top = _n_params(Prior(c)), _n_params(Prior(top))
    assert n_top * 1.0 < n < n_top * 1.35  # the default model's size class (default_top: 6.65 M)


def _batch(c, n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randint(0, c.l_bins, (n, c.n_ctx), generator=g)
    y = torch.zeros(n, c.y_len, dtype=torch.long)
    y[:, 0], y[:, 2] = 60 * 22050, c.sample_length
    y[:, c.n_labels:] = torch.randint(1, c.lyrics.n_vocab, (n, c.lyrics.n_tokens), generator=g)
    return z, y


@pytest.mark.parametrize("name", LYRIC_PRESETS)
def test_preset_trains_and_aligns(name: str) -> None:
    c = prior_preset(name).replace(n_ctx=64)  # short context: fast on the CPU, same layers
    torch.manual_seed(0)
    prior = Prior(c)
    z, y = _batch(c)
    opt = torch.optim.Adam(prior.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        loss, metrics = prior(z, None, y)
        assert torch.isfinite(loss) and metrics["prime_loss"] > 0
        opt.zero_grad()
        loss.backward()
        grads = [p.grad for p in prior.decoder.transformer.blocks[c.alignment_layer].attn.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    w = prior.alignment_weights(z, None, y)
    assert tuple(w.shape) == (2, 64, 128)
    assert torch.all(w >= 0) and torch.all(w.sum(-1) <= 1.0 + 1e-4) and torch.all(w.sum(-1) > 0.5)
    # the music depends on the lyrics: other lyrics, other logits
    y2 = y.clone()
    y2[:, c.n_labels:] = torch.flip(y[:, c.n_labels:], dims=[1])
    with torch.no_grad():
        a, b = prior.logits(z, None, y), prior.logits(z, None, y2)
    if c.lyrics.style == "merged":
        a, b = a[:, c.lyrics.n_tokens:], b[:, c.lyrics.n_tokens:]
    assert not torch.allclose(a, b)


def test_train_prior_with_lyric_preset_on_tiny_vqvae(tmp_path: Path) -> None:
    """``jukebox train prior --preset default_lyrics`` fits the preset to another VQ-VAE and corpus."""
    from jukebox.checkpoint.model_dir import ModelDir
    from jukebox.data.labels import LabelVocab
    from jukebox.testing import make_tiny_model_dir
    from jukebox.train import TrainConfig, train_prior

    sr = 44100
    data = tmp_path / "sung"
    data.mkdir()
    rows = ["file,artist,genre,lyrics,split"]
    t = np.arange(sr) / sr
    for i in range(4):
        sf.write(data / f"s{i}.wav", (0.3 * np.sin(2 * np.pi * 220 * (i + 1) * t)).astype(np.float32), sr)
        rows.append(f's{i}.wav,{("kal", "ked")[i % 2]},piano,"la la la, song {i}\nsecond line",'
                    f'{"validation" if i == 3 else "train"}')
    (data / "metadata.csv").write_text("\n".join(rows) + "\n")
    model = tmp_path / "model"
    make_tiny_model_dir(model, levels=(0, 1))
    cfg = TrainConfig(steps=2, batch_size=2, lr=1e-3, warmup_steps=1, log_every=1, workers=1, val_batches=1)
    result = train_prior(model, data, level=2, preset="default_lyrics", n_ctx=32, config=cfg, device="cpu",
                         log_dir="none", progress=False, log=lambda _: None)
    assert result.step == 2
    md = ModelDir(model)
    c = md.prior_config(2)
    assert c.l_bins == 64 and c.n_ctx == 32 and c.lyrics.style == "encoder_decoder" and c.lyrics.n_tokens == 128
    assert set(LabelVocab.load(model / "prior_level_2").list_artists()) >= {"kal", "ked"}
    # a lyric-merged (1b-style) prior reads lyrics and codes as one sequence: no separate corrupted input copy
    from jukebox.errors import UsageError

    for opt in ({"input_noise": 0.1}, {"scheduled_sampling": 0.1}):
        with pytest.raises(UsageError, match="lyric-merged"):
            train_prior(model, data, level=2, preset="default_merged", restart=True, n_ctx=32, config=cfg,
                        device="cpu", log_dir="none", progress=False, log=lambda _: None, **opt)
    assert md.prior_config(2).lyrics.style == "encoder_decoder"  # refused before anything was written
