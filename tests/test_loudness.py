"""Loudness (ITU-R BS.1770-4), true peak and loudness normalisation; the API's and CLI's ``loudness``."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from jukebox.api import load_model
from jukebox.cli.main import main
from jukebox.loudness import (
    integrated_loudness,
    k_weight,
    k_weighting_coefficients,
    limiter_gain_db,
    normalize_loudness,
    true_peak_db,
)
from jukebox.testing import make_tiny_model_dir


def _sine(sr: int, seconds: float, db: float = 0.0, freq: float = 997.0, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    return (10 ** (db / 20) * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def _music(sr: int, seconds: float, level: float = 1.0, seed: int = 0) -> np.ndarray:
    """A quiet two-note pad with a noise hit (peaks far above the pad) every half second: [T]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    x = 0.08 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.sin(2 * np.pi * 330 * t + 1)
    n = int(0.15 * sr)
    for start in np.arange(0.1, seconds, 0.5):
        i = int(start * sr)
        seg = 0.9 * rng.standard_normal(n) * np.exp(-np.arange(n) / (0.02 * sr))
        x[i:i + n] += seg[: len(x[i:i + n])]
    return (level * x).astype(np.float32)


def _biquad(b: np.ndarray, a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The recursion itself (direct form I), in float64."""
    y = np.zeros(len(x))
    x1 = x2 = y1 = y2 = 0.0
    for i, v in enumerate(x.astype(np.float64)):
        out = b[0] * v + b[1] * x1 + b[2] * x2 - a[1] * y1 - a[2] * y2
        x2, x1, y2, y1 = x1, v, y1, out
        y[i] = out
    return y


def test_k_weighting_is_the_standards_filter():
    (shelf_b, shelf_a), (hp_b, hp_a) = k_weighting_coefficients(48000)
    # BS.1770-4 table 1 and 2 (48 kHz)
    np.testing.assert_allclose(shelf_b, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-10)
    np.testing.assert_allclose(shelf_a, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-10)
    np.testing.assert_allclose(hp_b, [1.0, -2.0, 1.0])
    np.testing.assert_allclose(hp_a, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-10)
    # the FFT path equals the recursion (any sample rate)
    x = np.random.default_rng(0).standard_normal(3000).astype(np.float32) * 0.3
    for sr in (22050, 48000):
        ref = x.astype(np.float64)
        for b, a in k_weighting_coefficients(sr):
            ref = _biquad(b, a, ref)
        np.testing.assert_allclose(k_weight(x, sr), ref, atol=2e-6 * np.abs(ref).max())


def test_sine_levels_as_the_standard_says():
    # a 0 dBFS 997 Hz sine in one channel reads -3.01 LUFS
    x = _sine(48000, 3.0)
    assert integrated_loudness(x, 48000) == pytest.approx(-3.01, abs=0.01)
    assert integrated_loudness(np.stack([x, np.zeros_like(x)]), 48000) == pytest.approx(-3.01, abs=0.01)
    # EBU Tech 3341 case 1: a stereo 1 kHz sine at -23 dBFS reads -23 LUFS; any sample rate
    for sr in (16000, 22050, 44100, 48000):
        y = _sine(sr, 2.0, -23.0, freq=1000.0)
        assert integrated_loudness(np.stack([y, y]), sr) == pytest.approx(-23.0, abs=0.1), sr
    assert integrated_loudness(torch.from_numpy(x), 48000) == pytest.approx(-3.01, abs=0.01)


def test_gating():
    sr = 16000
    tone = _sine(sr, 4.0, -20.0)
    alone = integrated_loudness(tone, sr)
    # absolute gate: silence around the music does not count, however long (only the blocks that straddle the
    # edges, partly music, lower the reading a little)
    def padded(before: float, after: float) -> np.ndarray:
        return np.concatenate([np.zeros(int(before * sr), np.float32), tone, np.zeros(int(after * sr), np.float32)])

    assert integrated_loudness(padded(1, 1), sr) == pytest.approx(integrated_loudness(padded(5, 20), sr), abs=1e-6)
    assert integrated_loudness(padded(5, 20), sr) == pytest.approx(alone, abs=0.5)
    # EBU Tech 3341 cases 3 and 4 (stereo 1 kHz): parts 13 LU down fall to the relative gate, -72 dBFS to the
    # absolute one; both read -23.0 +- 0.1 LUFS
    def tones(*parts: tuple[float, float]) -> np.ndarray:
        y = np.concatenate([_sine(sr, seconds, db, freq=1000.0) for seconds, db in parts])
        return np.stack([y, y])

    case3 = tones((10, -36), (60, -23), (10, -36))
    assert integrated_loudness(case3, sr) == pytest.approx(-23.0, abs=0.1)
    case4 = tones((10, -72), (10, -36), (60, -23), (10, -36), (10, -72))
    assert integrated_loudness(case4, sr) == pytest.approx(-23.0, abs=0.1)
    # silence and audio shorter than one block have no loudness
    assert integrated_loudness(np.zeros(sr, np.float32), sr) == -math.inf
    assert integrated_loudness(tone[: int(0.3 * sr)], sr) == -math.inf


def test_true_peak_finds_peaks_between_samples():
    sr = 48000
    x = _sine(sr, 0.5, 0.0, freq=sr / 4, phase=np.pi / 4)  # every sample at +-0.707, the wave itself at +-1
    assert 20 * np.log10(np.abs(x).max()) == pytest.approx(-3.01, abs=0.01)
    assert true_peak_db(x, sr) == pytest.approx(0.0, abs=0.2)
    assert true_peak_db(np.zeros(100, np.float32), sr) == -math.inf


def test_limiter_gain_is_smooth_and_holds_the_ceiling():
    sr = 22050
    rng = np.random.default_rng(1)
    env = np.abs(rng.standard_normal(sr)) * (rng.random(sr) < 0.01) * 4.0
    with np.errstate(divide="ignore"):
        env_db = 20 * np.log10(env)
    gain = limiter_gain_db(env_db, -1.0, sr)
    assert gain.shape == env.shape and gain.max() <= 0.0
    assert np.max(env_db + gain) <= -1.0 + 1e-9  # no peak gets through
    assert np.abs(np.diff(gain)).max() < 1.0  # dB per sample: ramps, not a clip
    assert not np.any(limiter_gain_db(env_db - 30, -1.0, sr))  # nothing to do below the ceiling


@pytest.mark.parametrize("case", ["loud", "quiet", "clipping", "stereo"])
def test_normalize_meets_target_and_ceiling(case):
    sr = 22050
    x = {"loud": _music(sr, 4.0, 3.0), "quiet": _music(sr, 4.0, 0.002),
         "clipping": np.clip(_music(sr, 4.0, 6.0), -1, 1),
         "stereo": np.stack([_music(sr, 4.0, 1.0, seed=1), _music(sr, 4.0, 0.5, seed=2)])}[case]
    y, info = normalize_loudness(x, sr, target_lufs=-16.0, peak_db=-1.0)
    assert y.shape == x.shape and y.dtype == np.float32
    assert integrated_loudness(y, sr) == pytest.approx(-16.0, abs=0.5)
    assert true_peak_db(y, sr) <= -1.0 + 1e-6 and np.abs(y).max() < 0.9
    assert info["applied"] and info["output_lufs"] == pytest.approx(integrated_loudness(y, sr), abs=0.01)
    assert info["output_true_peak_db"] <= -1.0
    assert info["input_lufs"] == pytest.approx(integrated_loudness(x, sr), abs=1e-3)
    if case != "clipping":  # the hits stand ~24 dB above the pad: the limiter must work, and smoothly
        assert info["limiter_max_reduction_db"] > 3.0 and 0.0 < info["limited_fraction"] < 1.0
    json.dumps(info, allow_nan=False)


def test_normalize_leaves_silence_and_short_audio_alone():
    sr = 22050
    silence = np.zeros(2 * sr, np.float32)
    y, info = normalize_loudness(silence, sr)
    assert y is silence and not info["applied"] and "silence" in info["reason"]
    short = _sine(sr, 0.2, -30.0)
    y, info = normalize_loudness(short, sr)
    assert y is short and not info["applied"]
    t = torch.from_numpy(_sine(sr, 1.0, -30.0))[None]  # torch in, torch out
    y, info = normalize_loudness(t, sr, target_lufs=-20.0)
    assert isinstance(y, torch.Tensor) and y.shape == t.shape and info["output_lufs"] == pytest.approx(-20.0, abs=0.05)


@pytest.mark.slow  # a timing: ~1 s of work, meaningless on a loaded machine
def test_normalize_is_fast():
    sr = 44100
    x = np.stack([_music(sr, 60.0, 1.0, seed=3), _music(sr, 60.0, 0.7, seed=4)])
    t0 = time.perf_counter()
    integrated_loudness(x, sr)
    measure = time.perf_counter() - t0
    t0 = time.perf_counter()
    normalize_loudness(x, sr)
    total = time.perf_counter() - t0
    assert measure < 1.0 and total < 4.0, (measure, total)  # ~0.1 s and ~0.5 s on one idle core


# ---------------------------------------------------------------------- through the API and the CLI
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("m") / "tiny").path


def test_api_output_at_target_and_raw_with_none(tiny_model, monkeypatch):
    import jukebox.codec

    raw_decode = jukebox.codec.decode_codes
    # the tiny random decoder is quiet; make it as hot as a real model's clipping output
    monkeypatch.setattr(jukebox.codec, "decode_codes", lambda *a, **k: 40.0 * raw_decode(*a, **k))
    model = load_model(tiny_model, device="cpu")
    kw = dict(seconds=0.6, seed=0, levels=[2], alignment=False)
    out = model.generate(**kw)
    raw = model.generate(**kw, loudness=None)
    assert torch.equal(out.codes[2], raw.codes[2])  # codes are never affected
    assert torch.equal(raw.audio, model.decode(raw.codes, 2)) and raw.settings["loudness"] == {"enabled": False}
    assert float(raw.audio.abs().max()) > 1.0  # the raw decode would clip
    sr = model.sample_rate
    assert integrated_loudness(out.audio[0], sr) == pytest.approx(-16.0, abs=0.5)
    assert float(out.audio.abs().max()) < 1.0 and true_peak_db(out.audio[0], sr) <= -1.0
    record = out.settings["loudness"]
    assert record["enabled"] and record["target_lufs"] == -16.0 and len(record["items"]) == 1
    assert record["items"][0]["gain_db"] < 0 and record["items"][0]["limiter_max_reduction_db"] >= 0
    assert integrated_loudness(model.decode(raw.codes, 2, loudness=-23.0)[0], sr) == pytest.approx(-23.0, abs=0.5)
    more = model.continue_(codes=raw.codes, **{**kw, "seconds": 0.7}, loudness=-20.0)
    assert integrated_loudness(more.audio[0], sr) == pytest.approx(-20.0, abs=0.5)
    assert torch.equal(more.codes[2][:, : raw.codes[2].shape[1]], raw.codes[2])
    with pytest.raises(Exception, match="loudness must be"):
        model.generate(**kw, loudness=5.0)


def test_cli_loudness_off_and_metadata(tiny_model, tmp_path):
    m = str(tiny_model)
    on, off = tmp_path / "on", tmp_path / "off"
    args = ["sample", "-m", m, "--seconds", "0.6", "--levels", "2", "--seed", "2", "--quiet", "--no-alignment"]
    assert main([*args, "-o", str(on)]) == 0
    assert main([*args, "-o", str(off), "--loudness", "off"]) == 0
    meta_on = json.loads((on / "metadata.json").read_text())
    meta_off = json.loads((off / "metadata.json").read_text())
    assert meta_off["request"]["loudness"] is None and meta_off["settings"]["loudness"] == {"enabled": False}
    loud = meta_on["settings"]["loudness"]
    assert meta_on["request"]["loudness"] == -16.0 and loud["enabled"] and loud["target_lufs"] == -16.0
    item = loud["items"][0]
    assert {"input_lufs", "gain_db", "limiter_max_reduction_db", "output_true_peak_db"} <= set(item)
    y, sr = sf.read(on / "item_0.wav", dtype="float32")
    assert integrated_loudness(y, sr) == pytest.approx(-16.0, abs=0.5)
    raw, _ = sf.read(off / "item_0.wav", dtype="float32")
    assert integrated_loudness(raw, sr) == pytest.approx(item["input_lufs"], abs=0.05)
    with pytest.raises(SystemExit) as bad:
        main([*args, "-o", str(tmp_path / "bad"), "--loudness", "loud"])
    assert bad.value.code == 2 and not (tmp_path / "bad").exists()
    # decode: the same switch
    assert main(["decode", "-m", m, str(off / "codes.npz"), "-o", str(tmp_path / "d.wav")]) == 0
    assert main(["decode", "-m", m, str(off / "codes.npz"), "-o", str(tmp_path / "raw.wav"), "--loudness", "off"]) == 0
    d, _ = sf.read(tmp_path / "d.wav", dtype="float32")
    r, _ = sf.read(tmp_path / "raw.wav", dtype="float32")
    assert integrated_loudness(d, sr) == pytest.approx(-16.0, abs=0.5)
    np.testing.assert_allclose(r, raw, atol=1 / 32768)
