"""`jukebox eval codec|prior` on a tiny model: tables, --json, and agreement with `reconstruct` and `score`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf

from jukebox.cli.main import main
from jukebox.testing import make_tiny_model_dir

SR = 44100


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("m") / "tiny").path


@pytest.fixture
def music(tmp_path):
    folder = tmp_path / "music"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(0.1 * SR)) / SR
    sf.write(folder / "a.wav", 0.3 * np.sin(2 * np.pi * 220 * t), SR)
    sf.write(folder / "sub" / "b.flac", 0.1 * rng.standard_normal(int(0.06 * SR)), SR)
    (folder / "notes.txt").write_text("not audio")
    return folder


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_eval_codec_table_json_and_reconstruct_agree(tmp_path, tiny, music, capsys):
    assert main(["eval", "codec", str(music), "-m", str(tiny), "--json"]) == 0
    report = _json(capsys)
    assert report["levels"] == [0, 1, 2] and [f["file"] for f in report["files"]] == ["a.wav", "sub/b.flac"]
    assert report["files"][0]["seconds"] == pytest.approx(0.1, abs=1 / SR)
    for level in ("0", "1", "2"):
        vals = [f["levels"][level]["spectral_convergence_db"] for f in report["files"]]
        assert all(math.isfinite(v) for v in vals)
        weights = [f["seconds"] for f in report["files"]]
        want = sum(v * w for v, w in zip(vals, weights)) / sum(weights)
        assert report["mean"][level]["spectral_convergence_db"] == pytest.approx(want)
    assert main(["reconstruct", "-m", str(tiny), str(music / "a.wav"), "--level", "1", "-o",
                 str(tmp_path / "r.wav"), "--json"]) == 0
    single = _json(capsys)
    assert report["files"][0]["levels"]["1"]["spectral_convergence_db"] == pytest.approx(
        single["spectral_convergence_db"], rel=1e-5)
    assert main(["eval", "codec", str(music / "a.wav"), "-m", str(tiny), "--levels", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["file", "seconds", "L2", "SC", "dB", "L2", "SI-SDR"]
    assert lines[1].startswith("a.wav") and lines[-1].startswith("mean (1 files")


def test_eval_prior_on_codes_and_audio_matches_score(tmp_path, tiny, music, capsys):
    codes = tmp_path / "codes"
    codes.mkdir()
    assert main(["encode", "-m", str(tiny), str(music / "a.wav"), "-o", str(codes / "a.npz")]) == 0
    capsys.readouterr()
    for level in (2, 1):
        assert main(["eval", "prior", str(codes), "-m", str(tiny), "--level", str(level), "--artist",
                     "Bob Demo", "--genre", "rock", "--total-seconds", "20", "--json"]) == 0
        report = _json(capsys)
        assert main(["score", "-m", str(tiny), str(codes / "a.npz"), "--level", str(level), "--artist", "Bob Demo",
                     "--genre", "rock", "--total-seconds", "20", "--json"]) == 0
        want = _json(capsys)["items"][0]
        assert report["level"] == level and len(report["items"]) == 1
        assert report["items"][0]["tokens"] == want["tokens"]
        assert report["items"][0]["bits_per_token"] == pytest.approx(want["bits_per_token"], rel=1e-6)
    # Audio is encoded first: the same numbers as its codes file; the mean weighs items by their tokens.
    assert main(["eval", "prior", str(music), "-m", str(tiny), "--total-seconds", "20", "--json"]) == 0
    report = _json(capsys)
    assert main(["eval", "prior", str(codes), "-m", str(tiny), "--total-seconds", "20", "--json"]) == 0
    from_codes = _json(capsys)["items"][0]
    first, second = report["items"]
    assert first["file"] == "a.wav" and first["bits_per_token"] == pytest.approx(from_codes["bits_per_token"])
    want = (first["bits_per_token"] * first["tokens"] + second["bits_per_token"] * second["tokens"]) / (
        first["tokens"] + second["tokens"])
    assert report["mean_bits_per_token"] == pytest.approx(want)
    assert main(["eval", "prior", str(music), "-m", str(tiny)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("level 2 prior") and "mean (2 items, by tokens)" in out


@pytest.mark.parametrize("argv, needle", [
    (["eval", "codec", "EMPTY"], "no .wav"),
    (["eval", "codec", "MUSIC", "--levels", "0,5"], "--levels"),
    (["eval", "codec", "MUSIC", "--levels", "x"], "--levels"),
    (["eval", "codec", "MUSIC", "--seconds", "-1"], "--seconds"),
    (["eval", "prior", "MUSIC", "--level", "7"], "no prior for level 7"),
    (["eval", "prior", "MUSIC", "--total-seconds", "0"], "--total-seconds"),
    (["eval", "prior", "NOPE"], "no such file or folder"),
])
def test_eval_bad_input_is_one_line(tmp_path, tiny, music, capsys, argv, needle):
    (tmp_path / "empty").mkdir()
    paths = {"EMPTY": str(tmp_path / "empty"), "MUSIC": str(music), "NOPE": str(tmp_path / "nope")}
    argv = [paths.get(a, a) for a in argv] + ["-m", str(tiny)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err, err


def test_eval_audio_matches_audio_measures(tmp_path, capsys):
    from jukebox.eval.rhythm import audio_measures

    folder = tmp_path / "clips"
    folder.mkdir()
    sr = 22050
    clicks = np.zeros(4 * sr, dtype=np.float32)
    for beat in range(8):  # 120 BPM
        start = int(beat * 0.5 * sr)
        clicks[start:start + 200] = 0.8 * np.hanning(200)
    t = np.arange(2 * sr) / sr
    chord = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0)).astype(np.float32)
    sf.write(folder / "clicks.wav", clicks, sr)
    sf.write(folder / "chord.wav", np.stack([chord, chord], 1), sr, subtype="FLOAT")  # stereo, exact samples
    assert main(["eval", "audio", str(folder), "--json"]) == 0
    report = _json(capsys)
    assert [f["file"] for f in report["files"]] == ["chord.wav", "clicks.wav"]
    chord_row, clicks_row = report["files"]
    want = audio_measures(np.stack([chord, chord]), sr)
    assert {k: chord_row[k] for k in want} == pytest.approx(want)
    assert clicks_row["tempo_bpm"] == pytest.approx(120, rel=0.05)
    assert chord_row["harmonic_fraction"] > 0.9 and clicks_row["pulse_clarity"] > chord_row["pulse_clarity"]
    assert report["mean"]["tempo_bpm"] == pytest.approx(clicks_row["tempo_bpm"])  # only clips with a pulse
    assert report["mean"]["rms_dbfs"] == pytest.approx((chord_row["rms_dbfs"] * 2 + clicks_row["rms_dbfs"] * 4) / 6)
    assert main(["eval", "audio", str(folder / "clicks.wav"), "--seconds", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "tempo_bpm" in lines[0].split() and lines[1].split()[:2] == ["clicks.wav", "1.00"]
