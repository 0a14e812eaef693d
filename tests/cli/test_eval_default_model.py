"""`jukebox eval codec|prior|audio` on the embedded default model (what a user evaluating their own music runs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from jukebox.api import default_model_path
from jukebox.cli.main import main

pytestmark = pytest.mark.skipif(default_model_path() is None, reason="this install has no embedded default model")


def test_eval_commands_on_the_embedded_model(tmp_path, capsys):
    sr = 22050
    t = np.arange(2 * sr) / sr
    beat = (np.sin(2 * np.pi * 2 * t) > 0.9).astype(np.float32)  # 120 BPM bursts
    sf.write(tmp_path / "a.wav", (0.3 * np.sin(2 * np.pi * 220 * t) * beat).astype(np.float32), sr)
    assert main(["eval", "codec", str(tmp_path), "--json"]) == 0
    codec = json.loads(capsys.readouterr().out)
    assert codec["model"].endswith("default_model") and set(codec["mean"]) == {"0", "1", "2"}
    assert codec["mean"]["0"]["spectral_convergence_db"] < codec["mean"]["2"]["spectral_convergence_db"] < 0
    assert main(["eval", "prior", str(tmp_path), "--level", "2", "--genre", "electronic", "--json"]) == 0
    prior = json.loads(capsys.readouterr().out)
    assert 0 < prior["mean_bits_per_token"] < 11  # a uniform guess costs 11 bits
    assert main(["eval", "audio", str(tmp_path), "--json"]) == 0
    assert "pulse_clarity" in capsys.readouterr().out
