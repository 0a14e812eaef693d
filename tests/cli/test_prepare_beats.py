"""`jukebox prepare --codes` writes the tracks' beats (tempo.json) beside the codes; --no-beats skips them and
--beats-only adds or refreshes them in an existing code folder without re-encoding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jukebox.data.code_cache import CodeCache
from jukebox.data.tempo import TEMPO_FILE, load_beats
from jukebox.testing import make_tiny_model_dir

SR = 44100
BPMS = {"a.wav": 100.0, "b.wav": 125.0, "hum.wav": 0.0}  # hum: a held tone, no pulse


def _corpus(root: Path) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    n = int(7.0 * SR)
    burst = 0.8 * rng.standard_normal(400) * np.exp(-np.arange(400) / 90.0)
    for name, bpm in BPMS.items():
        x = 0.2 * np.sin(2 * np.pi * 220 * np.arange(n) / SR)
        if bpm:
            for t in np.arange(0.25, 6.9, 60 / bpm):
                i = int(t * SR)
                x[i:i + 400] += burst
        sf.write(root / name, x.astype(np.float32), SR)
    return root


def _cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    from jukebox.cli import main as cli_main

    monkeypatch.setattr(cli_main, "COMMAND_MODULES", tuple(dict.fromkeys((*cli_main.COMMAND_MODULES, "prepare"))))
    return cli_main.main(argv)


def _check_beats(codes: Path) -> None:
    beats = load_beats(codes)
    assert beats is not None and set(beats) == set(BPMS)
    for name, bpm in BPMS.items():
        if bpm:
            assert beats[name].bpm == pytest.approx(bpm, rel=0.02) and beats[name].pulse > 0.5
            clicks = np.arange(0.25, 6.9, 60 / bpm)
            assert np.abs(beats[name].beats[:, None] - clicks[None]).min(1).max() < 0.02
        else:
            assert beats[name].bpm == 0.0 and len(beats[name].beats) == 0


def test_prepare_codes_writes_beats_and_beats_only_refreshes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    music = _corpus(tmp_path / "music")
    md = make_tiny_model_dir(tmp_path / "model", levels=(2,))
    codes = tmp_path / "codes"
    assert _cli(["prepare", "--data", str(music), "--model", str(md.path), "--codes", str(codes), "--levels", "2",
                 "--device", "cpu"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert f"{TEMPO_FILE}: beats of 3 tracks (2 with a pulse" in out
    assert set(CodeCache(codes).tracks) == set(BPMS)
    _check_beats(codes)

    # --beats-only: no model, nothing re-encoded; a track whose audio is gone keeps its earlier beats
    level2 = (codes / "level_2.bin").stat().st_mtime_ns
    doc = json.loads((codes / TEMPO_FILE).read_text())
    doc["tracks"]["a.wav"]["bpm"] = 1.0
    doc["tracks"]["b.wav"]["bpm"] = 2.0
    (codes / TEMPO_FILE).write_text(json.dumps(doc))
    (music / "b.wav").unlink()
    assert _cli(["prepare", "--data", str(music), "--codes", str(codes), "--beats-only", "--json"], monkeypatch) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)["beats"]
    assert report["tracks"] == 2 and report["failed"] == ["b.wav"] and report["kept"] == ["b.wav"]
    assert len([ln for ln in captured.err.splitlines() if "b.wav" in ln]) == 1  # one line per failure
    beats = load_beats(codes)
    assert beats is not None and beats["a.wav"].bpm == pytest.approx(100, rel=0.02) and beats["b.wav"].bpm == 2.0
    assert (codes / "level_2.bin").stat().st_mtime_ns == level2

    # a corrupt tempo.json is replaced whole by --beats-only
    (codes / TEMPO_FILE).write_text("{oops")
    _corpus(tmp_path / "music2")
    assert _cli(["prepare", "--data", str(tmp_path / "music2"), "--codes", str(codes), "--beats-only"],
                monkeypatch) == 0
    assert "beats of 3 tracks" in capsys.readouterr().out
    _check_beats(codes)


def test_no_beats_and_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    music = _corpus(tmp_path / "music")
    md = make_tiny_model_dir(tmp_path / "model", levels=(2,))
    codes = tmp_path / "codes"
    assert _cli(["prepare", "--data", str(music), "--model", str(md.path), "--codes", str(codes), "--levels", "2",
                 "--device", "cpu", "--no-beats", "--json"], monkeypatch) == 0
    assert "beats" not in json.loads(capsys.readouterr().out)["codes"]
    assert not (codes / TEMPO_FILE).exists() and load_beats(codes) is None
    for argv, message in (
        (["--no-beats"], "--no-beats goes with --codes"),
        (["--beats-only"], "--beats-only needs --codes"),
        (["--beats-only", "--codes", str(codes), "--model", str(md.path)], "--model does not go with --beats-only"),
        (["--beats-only", "--codes", str(codes), "--no-beats"], "--no-beats does not go with --beats-only"),
        (["--beats-only", "--codes", str(tmp_path / "nothing")], "no such code folder"),
        (["--beats-only", "--codes", str(music)], "not a code cache"),
    ):
        assert _cli(["prepare", "--data", str(music), *argv], monkeypatch) != 0
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    # --data without the tracks: nothing could be read, nothing written
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _cli(["prepare", "--data", str(empty), "--codes", str(codes), "--beats-only"], monkeypatch) != 0
    assert "could be read" in capsys.readouterr().err and not (codes / TEMPO_FILE).exists()
