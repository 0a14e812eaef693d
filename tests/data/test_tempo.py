"""Tempo and beats (jukebox.data.tempo): click tracks at several tempi, pulse clarity, window grids, storage."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from jukebox.data import tempo
from jukebox.data.tempo import (
    TEMPO_FILE,
    BeatTrack,
    estimate_tempo,
    fit_grid,
    has_pulse,
    load_beats,
    onset_envelope,
    pulse_clarity,
    save_beats,
    track_beats,
    track_files,
)
from jukebox.errors import JukeboxError, UsageError

SR = 22050


def clicks(bpm: float, seconds: float = 14.0, phase: float = 0.37, noise: float = 0.0, sr: int = SR,
           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A click every beat (10 ms decaying noise bursts) from ``phase`` s, over optional white noise ->
    (audio [T] float32, click times [n] s)."""
    rng = np.random.default_rng(seed)
    x = np.zeros(int(seconds * sr), np.float32)
    times = np.arange(phase, seconds - 0.05, 60.0 / bpm)
    n = int(0.01 * sr)
    burst = 0.8 * rng.standard_normal(n) * np.exp(-np.arange(n) / (0.002 * sr))
    for t in times:
        i = int(round(t * sr))
        x[i:i + n] += burst[:len(x) - i].astype(np.float32)
    x += noise * rng.standard_normal(len(x)).astype(np.float32)
    return x, times


def _nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each of ``a``, the distance to the nearest of ``b``."""
    return np.abs(a[:, None] - b[None]).min(1)


@pytest.mark.parametrize("noise", [0.0, 0.05])
@pytest.mark.parametrize("bpm", [70, 90, 120, 150])
def test_click_track_tempo_beats_and_pulse(bpm: int, noise: float) -> None:
    x, times = clicks(bpm, noise=noise)
    bt = track_beats(x, SR)
    assert abs(bt.bpm - bpm) <= 0.02 * bpm
    assert bt.pulse > 0.5
    assert bt.beats.dtype == np.float64 and np.all(np.diff(bt.beats) > 0)
    assert _nearest(bt.beats, times).max() < 0.020  # every beat is on a click
    inner = times[(times > 1.0) & (times < len(x) / SR - 1.0)]
    assert _nearest(inner, bt.beats).max() < 0.020  # every click (away from the ends) has its beat
    env, fr = onset_envelope(x, SR)
    assert abs(estimate_tempo(env, fr) - bpm) <= 0.02 * bpm


def test_other_sample_rates_and_slow_tempo() -> None:
    for sr in (16000, 44100):
        x, times = clicks(120, seconds=10.0, noise=0.02, sr=sr, phase=0.1)
        bt = track_beats(x, sr)
        assert abs(bt.bpm - 120) < 2.4 and _nearest(bt.beats, times).max() < 0.020
    # loud noise from the first sample: the track starting is no onset, so no beat lands before the first click
    x, times = clicks(120, seconds=12.0, noise=0.2)
    bt = track_beats(x, SR)
    assert bt.beats[0] > times[0] - 0.02 and _nearest(bt.beats, times).max() < 0.020
    # 45 BPM has no lag between 60 and 200 BPM, but the no-pulse gate looks at 40-240 BPM: it is tracked
    x, times = clicks(45, seconds=16.0)
    bt = track_beats(x, SR)
    assert abs(bt.bpm - 45) < 0.9 and _nearest(bt.beats, times).max() < 0.020


def test_no_pulse_for_noise_sine_and_silence() -> None:
    rng = np.random.default_rng(1)
    noise = (0.1 * rng.standard_normal(20 * SR)).astype(np.float32)
    sine = (0.5 * np.sin(2 * np.pi * 440 * np.arange(20 * SR) / SR)).astype(np.float32)
    bass = (0.9 * np.sin(2 * np.pi * 55 * np.arange(20 * SR) / SR)).astype(np.float32)
    for x, most in ((noise, 0.15), (sine, 0.1), (bass, 0.1), (np.zeros(5 * SR, np.float32), 0.0)):
        env, fr = onset_envelope(x, SR)
        assert pulse_clarity(env, fr) <= most
        bt = track_beats(x, SR)
        assert bt.bpm == 0.0 and bt.beats.shape == (0,) and bt.pulse <= most
    # on short clips white noise reaches a clarity of 0.1 by chance: the gate rises with 1 / sqrt(frames)
    for seed in range(12):
        env, fr = onset_envelope((0.1 * np.random.default_rng(seed).standard_normal(8 * SR)).astype(np.float32), SR)
        assert not has_pulse(env, fr)
    env, fr = onset_envelope(clicks(100, seconds=8.0, noise=0.1)[0], SR)
    assert has_pulse(env, fr)


def test_onset_envelope_shape_and_alignment() -> None:
    x, times = clicks(100, seconds=6.0)
    env, fr = onset_envelope(x, SR)
    assert env.dtype == np.float32 and env.shape == (len(x) // 256 + 1,) and np.all(env >= 0)
    assert fr == pytest.approx(SR / 256)
    e44, fr44 = onset_envelope(clicks(100, seconds=6.0, sr=44100)[0], 44100)
    assert fr44 == pytest.approx(44100 / 512) and abs(len(e44) - len(env)) <= 1
    peaks = np.nonzero((env[1:-1] > env[:-2]) & (env[1:-1] >= env[2:]) & (env[1:-1] > 0.3 * env.max()))[0] + 1
    assert len(peaks) == len(times) and np.abs(peaks / fr - times).max() < 1.5 / fr
    with pytest.raises(UsageError, match="mono"):
        onset_envelope(np.zeros((2, 1000), np.float32), SR)
    with pytest.raises(UsageError, match="sample_rate"):
        onset_envelope(x, 0)


def test_blocks_do_not_change_the_beats(monkeypatch: pytest.MonkeyPatch) -> None:
    x, _ = clicks(130, seconds=8.0, noise=0.02)
    whole = track_beats(x, SR)
    monkeypatch.setattr(tempo, "_BLOCK_FRAMES", 97)  # many STFT blocks, one not a multiple of anything
    blocked = track_beats(x, SR)
    assert blocked.bpm == pytest.approx(whole.bpm, rel=1e-3)
    assert len(blocked.beats) == len(whole.beats) and np.abs(blocked.beats - whole.beats).max() < 0.002


def test_pulse_clarity_definition() -> None:
    fr = 100.0
    env = np.zeros(3000)
    env[::50] = 1.0  # 120 BPM, exactly on a lag
    e = env - env.mean()
    ac50 = float(np.dot(e[:-50], e[50:]) / np.dot(e, e))
    assert pulse_clarity(env, fr) == pytest.approx(ac50, rel=1e-6) and ac50 > 0.9
    assert pulse_clarity(env, fr, lo_bpm=150, hi_bpm=200) < 0.1  # lags 30-40 frames miss the period
    assert pulse_clarity(np.ones(500), fr) == 0.0 and pulse_clarity(np.zeros(10), fr) == 0.0
    with pytest.raises(UsageError):
        pulse_clarity(env, fr, lo_bpm=200, hi_bpm=60)
    with pytest.raises(UsageError):
        pulse_clarity(np.array([np.nan, 1.0]), fr)


def test_fit_grid_recovers_bpm_and_phase() -> None:
    period, phase = 60 / 96, 0.21
    rng = np.random.default_rng(0)
    beats = phase + period * np.arange(60) + rng.normal(0, 0.004, 60)
    bpm, beat0 = fit_grid(beats, 10.0, 20.0)
    assert bpm == pytest.approx(96, rel=0.02) and 0 <= beat0 < 60 / bpm
    inside = beats[(beats >= 10.0) & (beats <= 20.0)]
    k = np.round((inside - beat0) * bpm / 60)
    assert np.abs(inside - (beat0 + k * 60 / bpm)).max() < 0.015  # the window's beats lie on the grid
    exact = phase + period * np.arange(60)
    bpm, beat0 = fit_grid(exact, 10.0, 20.0)
    assert bpm == pytest.approx(96, rel=1e-9) and abs(beat0 - phase) < 1e-6  # exact beats: the song's own phase
    gappy = np.delete(exact, [20, 24, 25])  # missed beats do not halve the tempo
    bpm, beat0 = fit_grid(gappy, 10.0, 20.0)
    assert bpm == pytest.approx(96, rel=1e-9) and abs(beat0 - phase) < 1e-6
    # a phase near 0 wraps around the period: the circular mean finds it, on either side
    bpm, beat0 = fit_grid(period * np.arange(40) + np.tile([-0.003, 0.003], 20), 0.0, 30.0)
    assert min(beat0, 60 / bpm - beat0) < 0.005
    # too few beats in the window, or none
    assert fit_grid(beats, 10.0, 11.5) == (0.0, 0.0)
    assert fit_grid(beats, 100.0, 200.0) == (0.0, 0.0)
    assert fit_grid(np.zeros(0), 0.0, 10.0) == (0.0, 0.0)
    assert fit_grid(beats, 10.0, 11.5, min_beats=2)[0] == pytest.approx(96, rel=0.02)
    with pytest.raises(UsageError):
        fit_grid(beats, 5.0, 1.0)


def test_fit_grid_on_tracked_clicks() -> None:
    x, times = clicks(110, seconds=14.0, phase=0.43, noise=0.03)
    bt = track_beats(x, SR)
    bpm, beat0 = fit_grid(bt.beats, 4.0, 10.0)
    period = 60 / bpm
    assert bpm == pytest.approx(110, rel=0.02)
    d = (beat0 - 0.43) % period
    assert min(d, period - d) < 0.020
    first = 4.0 + (beat0 - 4.0) % period  # the first grid beat of the window is on a click
    assert _nearest(np.array([first]), times)[0] < 0.020


def test_beat_track_is_frozen_and_read_only() -> None:
    bt = BeatTrack(120, [0.5, 1.0, 1.5], 0.8)
    assert bt.bpm == 120.0 and bt.beats.dtype == np.float64 and not bt.beats.flags.writeable
    with pytest.raises(AttributeError):
        bt.bpm = 100.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        bt.beats[0] = 0.0


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    assert load_beats(tmp_path) is None
    tracks = {"a/one.wav": BeatTrack(121.23456, np.array([0.1234567, 0.61, 1.1]), 0.71234),
              "two.flac": BeatTrack(0.0, np.zeros(0), 0.03)}
    path = save_beats(tmp_path, tracks)
    assert path == tmp_path / TEMPO_FILE and [p.name for p in tmp_path.iterdir()] == [TEMPO_FILE]
    doc = json.loads(path.read_text())
    assert doc["format"] == "jukebox-tempo" and doc["version"] == 1
    assert doc["tracks"]["a/one.wav"]["beats"] == [0.123, 0.61, 1.1]
    back = load_beats(tmp_path)
    assert back is not None and set(back) == set(tracks)
    for k, t in tracks.items():
        assert back[k].bpm == pytest.approx(t.bpm, abs=1e-4) and back[k].pulse == pytest.approx(t.pulse, abs=1e-4)
        assert np.abs(back[k].beats - t.beats).max(initial=0.0) <= 0.0005
    save_beats(tmp_path, {"x.wav": BeatTrack(90, [1.0, 2.0], 0.5)})  # replaced whole
    assert set(load_beats(tmp_path) or {}) == {"x.wav"}
    with pytest.raises(JukeboxError, match="increasing"):
        save_beats(tmp_path, {"y.wav": BeatTrack(90, [1.0, 1.0002], 0.5)})  # equal once rounded to 1 ms


@pytest.mark.parametrize("text,match", [
    ("{not json", "corrupt"),
    ('{"format": "other", "version": 1, "tracks": {}}', "not a jukebox-tempo file"),
    ('{"format": "jukebox-tempo", "version": 9, "tracks": {}}', "version 9"),
    ('{"format": "jukebox-tempo", "version": 1, "tracks": []}', "no track table"),
    ('{"format": "jukebox-tempo", "version": 1, "tracks": {"a": {"bpm": 1}}}', "lacks"),
    ('{"format": "jukebox-tempo", "version": 1, "tracks": {"a": {"bpm": NaN, "pulse": 0, "beats": []}}}',
     "non-finite"),
    ('{"format": "jukebox-tempo", "version": 1, "tracks": {"a": {"bpm": 90, "pulse": 0, "beats": [1, Infinity]}}}',
     "non-finite"),
    ('{"format": "jukebox-tempo", "version": 1, "tracks": {"a": {"bpm": 90, "pulse": 0, "beats": [2, 1]}}}',
     "not increasing"),
])
def test_corrupt_beat_file(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / TEMPO_FILE).write_text(text)
    with pytest.raises(JukeboxError, match=match) as err:
        load_beats(tmp_path)
    assert "\n" not in str(err.value)


def test_estimate_tempo_prior_and_range() -> None:
    fr = 100.0
    env = np.zeros(4000)
    env[::40] = 1.0  # 150 BPM; its half (75) is equally periodic, the prior and the windows choose 150
    assert estimate_tempo(env, fr) == pytest.approx(150, rel=0.02)
    assert estimate_tempo(np.zeros(100), fr) == 120.0  # no energy: the prior's centre
    assert 40 <= estimate_tempo(np.random.default_rng(0).random(3000), fr) <= 240
    assert math.isfinite(estimate_tempo(env[:50], fr))  # shorter than a window


def test_track_files_reports_unreadable_files(tmp_path: Path) -> None:
    import soundfile as sf

    sf.write(tmp_path / "a.wav", clicks(120.0, seconds=8.0)[0], SR)
    (tmp_path / "b.wav").write_bytes(b"not audio")
    seen: list[tuple[int, int, str]] = []
    found, failed = track_files([("a", tmp_path / "a.wav"), ("b", tmp_path / "b.wav")], SR,
                                lambda i, n, name: seen.append((i, n, name)))
    assert set(found) == {"a"} and abs(found["a"].bpm - 120.0) < 2.5
    assert set(failed) == {"b"} and failed["b"]
    assert seen == [(0, 2, "a"), (1, 2, "b"), (2, 2, "")]
