"""`jukebox score`: bits per token of codes under each prior kind, equal to the prior's own loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from jukebox.api import load_model
from jukebox.cli.main import main
from jukebox.testing import make_tiny_model_dir


@pytest.mark.parametrize("style", ["none", "encoder_decoder", "merged"])
def test_score_matches_prior_loss(tmp_path, style, capsys):
    md = make_tiny_model_dir(tmp_path / "m", lyrics=style, levels=(1, 2))
    rng = np.random.default_rng(0)
    codes = {"level_2": rng.integers(0, 64, (2, 32)), "level_1": rng.integers(0, 64, (2, 128))}
    np.savez(tmp_path / "c.npz", **codes)
    args = ["score", "-m", str(md.path), str(tmp_path / "c.npz"), "--artist", "Bob Demo", "--genre", "rock",
            "--lyrics", "hey ho", "--total-seconds", "2", "--offset-seconds", "0.5", "--json"]
    assert main([*args, "--level", "2"]) == 0
    top = json.loads(capsys.readouterr().out)["items"]
    assert main([*args, "--level", "1"]) == 0
    up = json.loads(capsys.readouterr().out)["items"]
    assert len(top) == 2 and all(r["tokens"] == 32 for r in top) and all(r["tokens"] == 128 for r in up)
    assert ("lyrics_bits_per_token" in top[0]) == (style != "none")

    # One window (32 tokens == n_ctx) at level 2: the score is the prior's own per-item loss.
    model = load_model(md.path, device="cpu")
    meta = dict(artist="Bob Demo", genre="rock", lyrics="hey ho", total_length=88200, offset=22050)
    labels = model.labeller(2).batch_labels([meta, meta])
    y = model.labeller(2).window_y(labels, 0, 128)[0]
    _, metrics = model.prior(2)(torch.from_numpy(codes["level_2"]), None, y, reduction="none")
    for i in range(2):
        assert top[i]["bits_per_token"] == pytest.approx(float(metrics["gen_loss"][i]), rel=1e-5)
        if style != "none":
            assert top[i]["lyrics_bits_per_token"] == pytest.approx(float(metrics["prime_loss"][i]), rel=1e-5)
    # Random codes under a random model cost about log2(64) = 6 bits.
    assert all(4 < r["bits_per_token"] < 8 for r in top + up)


def test_score_errors(tmp_path, capsys):
    md = make_tiny_model_dir(tmp_path / "m", levels=(1, 2))
    np.savez(tmp_path / "c.npz", level_1=np.zeros((1, 64), np.int64))
    base = ["score", "-m", str(md.path), str(tmp_path / "c.npz"), "--total-seconds", "1"]
    assert main([*base, "--level", "1"]) == 2  # upsampler without the level above
    assert main([*base, "--level", "0"]) == 2  # no such prior
    assert main([*base, "--level", "2"]) == 2  # no such codes
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 3
