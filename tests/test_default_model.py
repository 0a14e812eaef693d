"""The embedded default model ships with the package and generates with no download."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import jukebox
from jukebox.api import default_model_path
from jukebox.hparams import Hyperparams
from jukebox.make_models import make_model

pytestmark = pytest.mark.skipif(default_model_path() is None, reason="this checkout has no embedded model")


def test_default_model_loads_and_drafts(monkeypatch):
    monkeypatch.delenv("JUKEBOX_MODEL", raising=False)
    model, _, _ = make_model(Hyperparams())
    assert model.model_dir.path == default_model_path() and model.prior_levels == [0, 1, 2]
    assert model.sample_rate == 22050 and "classical" in model.vocab().list_genres()
    size = sum(f.stat().st_size for f in default_model_path().rglob("*") if f.is_file())
    assert size <= 40 * 1024 * 1024
    # the first second of a one-minute piece (a "song" of one second is a timing label the model never saw;
    # with guidance it comes out near silent)
    out = model.generate(artist="Jan Bruns", genre="classical", seconds=1.0, total_seconds=60, seed=0, levels=[2],
                         draw="multinomial")
    assert out.audio.shape == (1, 1, 22016) and out.level == 2
    assert torch.isfinite(out.audio).all() and 0.01 < float(out.audio.std()) < 1.0


@pytest.mark.slow  # ~10 s on a quiet 2-core machine, much longer on a loaded one
def test_default_model_full_hierarchy(tmp_path):
    model = jukebox.load_model()
    out = model.generate(artist="Ken Seguro", genre="ambient", seconds=1.5, seed=1, upsample_mode="parallel")
    assert out.level == 0 and out.audio.shape[-1] == 33024
    assert {k: v.shape[1] for k, v in out.codes.items()} == {0: 4128, 1: 1032, 2: 258}
    jukebox.save_audio(out.audio[0], tmp_path / "song.wav", model.sample_rate)
    import soundfile as sf

    x, sr = sf.read(tmp_path / "song.wav")
    assert sr == 22050 and np.abs(x).max() > 0.01
