"""Audio measures of generated music (jukebox.eval.rhythm): harmony, pulse and tempo, level, clipping."""

from __future__ import annotations

import numpy as np
import pytest

from jukebox.errors import UsageError
from jukebox.eval.rhythm import HARMONIC_RATIO, audio_measures, chroma, tempo_matches

SR = 22050
KEYS = {"pulse_clarity", "tempo_bpm", "harmonic_fraction", "chroma_peak_ratio", "rms_dbfs", "peak_dbfs",
        "clipped_fraction"}


def _tones(freqs: tuple[float, ...], seconds: float = 6.0, amp: float = 0.2) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return sum(amp * np.sin(2 * np.pi * f * t + i) for i, f in enumerate(freqs)).astype(np.float32)


def test_chord_is_harmonic_and_noise_is_not() -> None:
    chord = audio_measures(_tones((261.63, 329.63, 392.0)), SR)  # C major
    low = audio_measures(_tones((65.41, 82.41, 98.0)), SR)  # the same two octaves down
    noise = audio_measures((0.1 * np.random.default_rng(0).standard_normal(6 * SR)).astype(np.float32), SR)
    assert set(chord) == KEYS and all(isinstance(v, float) for v in chord.values())
    for m in (chord, low):
        assert m["harmonic_fraction"] > 0.95 and m["chroma_peak_ratio"] > 3.0
        assert m["tempo_bpm"] == 0.0 and m["pulse_clarity"] < 0.1  # a held chord has no pulse
    assert noise["harmonic_fraction"] < 0.1 and noise["chroma_peak_ratio"] < 2.0 < HARMONIC_RATIO
    assert noise["tempo_bpm"] == 0.0


def test_chroma_names_the_pitch_classes() -> None:
    ch, rms_db = chroma(_tones((261.63, 392.0)), SR)  # C and G
    assert ch.shape[1] == 12 and rms_db.shape == (ch.shape[0],)
    top = np.argsort(ch.mean(0))[-2:]
    assert set(top.tolist()) == {0, 7}
    ch44, _ = chroma(_tones((440.0,), seconds=3.0), 44100)  # A, at another rate (resolution kept)
    assert int(ch44.mean(0).argmax()) == 9


def test_clicks_have_pulse_and_tempo() -> None:
    x = np.zeros(10 * SR, np.float32)
    for t in np.arange(0.2, 9.9, 0.5):  # 120 BPM
        i = int(t * SR)
        x[i:i + 200] = 0.8 * np.exp(-np.arange(200) / 40.0) * np.sign(np.sin(np.arange(200)))
    m = audio_measures(x, SR)
    assert m["pulse_clarity"] > 0.5 and tempo_matches(m["tempo_bpm"], 120, tol=0.02)


def test_level_and_clipping() -> None:
    sine = _tones((440.0,), seconds=2.0, amp=0.5)
    m = audio_measures(sine, SR)
    assert m["rms_dbfs"] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.05)
    assert m["peak_dbfs"] == pytest.approx(20 * np.log10(0.5), abs=0.05) and m["clipped_fraction"] == 0.0
    loud = np.clip(3 * sine, -1, 1)
    clipped = float(np.mean(np.abs(loud) >= 0.999))
    assert 0.5 < clipped < 0.9
    m = audio_measures(loud, SR)
    assert m["clipped_fraction"] == pytest.approx(clipped) and m["peak_dbfs"] == pytest.approx(0.0, abs=1e-6)
    stereo = np.stack([sine, np.clip(3 * sine, -1, 1)])  # [channels, T]: every sample counts
    assert audio_measures(stereo, SR)["clipped_fraction"] == pytest.approx(clipped / 2)
    silent = audio_measures(np.zeros(SR, np.float32), SR)
    assert silent["rms_dbfs"] == silent["peak_dbfs"] == -120.0
    assert silent["harmonic_fraction"] == silent["chroma_peak_ratio"] == silent["tempo_bpm"] == 0.0
    # a quiet (below -60 dBFS) hiss under a chord does not count as frames
    quiet = _tones((261.63, 329.63, 392.0), seconds=6.0)
    quiet[4 * SR:] = 1e-5 * np.random.default_rng(0).standard_normal(2 * SR)
    assert audio_measures(quiet, SR)["harmonic_fraction"] > 0.9  # (the frame across the cut splatters)


def test_bad_audio_is_refused() -> None:
    with pytest.raises(UsageError, match="shape"):
        audio_measures(np.zeros((2, 2, 10), np.float32), SR)
    with pytest.raises(UsageError, match="float"):
        audio_measures(np.zeros(100, np.int16), SR)
    with pytest.raises(UsageError, match="NaN"):
        audio_measures(np.full(100, np.nan, np.float32), SR)
    with pytest.raises(UsageError, match="sample_rate"):
        audio_measures(np.zeros(100, np.float32), 0)


def test_tempo_matches() -> None:
    assert tempo_matches(120.0, 120) and tempo_matches(125.9, 120) and not tempo_matches(126.1, 120)
    assert tempo_matches(60.0, 120) and tempo_matches(241.0, 120) and tempo_matches(58.0, 120)
    assert not tempo_matches(90.0, 120) and not tempo_matches(180.0, 120)
    assert tempo_matches(123.0, 120, tol=0.03) and not tempo_matches(123.0, 120, tol=0.02)
    assert not tempo_matches(0.0, 120) and not tempo_matches(float("nan"), 120)
    with pytest.raises(UsageError):
        tempo_matches(120.0, 0.0)
    with pytest.raises(UsageError):
        tempo_matches(120.0, 120.0, tol=1.5)
