"""Smaller ones: Ctrl+C in the first second, a draft of a lower level alone, streamed FLAC of unknown length, the
page's seed check and private temporary folder, messages that name the output (never its hidden temporary) and
never pass on numpy's advice to load pickles."""

from __future__ import annotations

import os
import signal
import stat
import struct
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import soundfile as sf
from cli_checks import one_line, run_cli

import jukebox.audio as audio_mod
import jukebox.cli.main as cli_main
from jukebox.audio import load_audio, save_audio
from jukebox.errors import JukeboxError
from jukebox.testing import make_tiny_model_dir


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("small") / "tiny").path


def test_ctrl_c_while_importing_is_one_line(capsys, monkeypatch):
    """Before: Ctrl+C in the first second printed a 50-line traceback (imports ran before the handler)."""
    def interrupted_import():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "build_parser", interrupted_import)
    rc, err = run_cli(capsys, ["sample", "--help"])
    assert rc == 130 and err == "interrupted"


def test_ctrl_c_in_the_first_second_of_a_real_process_is_one_line(model, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "jukebox.cli.main", "sample", "-m", str(model), "-o",
                             str(tmp_path / "o"), "--seconds", "0.05", "--quiet"], stderr=subprocess.PIPE, text=True)
    time.sleep(0.8)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (130, 0), err  # 0: it finished before the signal came
    if proc.returncode == 130:
        assert err.strip() == "interrupted", err
        assert not (tmp_path / "o").exists()


def test_a_lower_level_alone_is_a_usage_error(capsys, model, tmp_path):
    """Before: `--levels 1` failed with `the model has no level-2 prior` (it has one) and left a folder."""
    out = tmp_path / "o"
    rc, err = run_cli(capsys, ["sample", "-m", str(model), "-o", str(out), "--seconds", "0.05", "--quiet", "--levels",
                               "1"])
    one_line(err, rc, 2, "leave out level 2", "levels 2,1", "--mode upsample")
    assert not out.exists()


def _streamed_flac(path, n=44100):
    """A FLAC whose STREAMINFO says 'total samples: unknown' (0), as a stream encoder writes it."""
    sf.write(path, (np.random.default_rng(0).standard_normal(n) * 0.1).astype("f4"), 44100)
    data = bytearray(path.read_bytes())
    at = 8 + 13  # 'fLaC', the block header, then STREAMINFO: total samples are the 36 bits from byte 13's low nibble
    data[at] &= 0xF0
    data[at + 1:at + 5] = b"\0\0\0\0"
    path.write_bytes(bytes(data))


def test_a_streamed_flac_of_unknown_length_is_read(tmp_path):
    """Before: refused as `58096321723.7 hours of audio is longer than the 4 h limit`."""
    path = tmp_path / "stream.flac"
    _streamed_flac(path)
    assert sf.info(path).frames >= audio_mod.UNKNOWN_FRAMES
    x, sr = load_audio(path)
    assert sr == 44100 and 44100 - 1024 <= x.shape[0] <= 44100
    x2, _ = load_audio(path, sample_rate=22050)
    assert abs(x2.shape[0] - x.shape[0] // 2) <= 2


def test_the_page_takes_the_seeds_the_api_takes():
    from jukebox.ui.app import _seed

    assert _seed("") is None and _seed(" 42 ") == 42 and _seed(str(2**53 - 1)) == 2**53 - 1
    for bad in (str(2**53), str(-(2**53)), "1" * 400, "x"):
        with pytest.raises(JukeboxError, match="seed"):
            _seed(bad)


def test_the_page_gets_a_private_temporary_folder(monkeypatch, tmp_path):
    from jukebox.ui.app import private_temp_dir

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "mine"))
    path = private_temp_dir()
    assert os.path.dirname(path) == str(tmp_path / "mine") and os.environ["GRADIO_TEMP_DIR"] == path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    monkeypatch.delenv("GRADIO_TEMP_DIR")
    other = private_temp_dir()
    assert other != path and stat.S_IMODE(os.stat(other).st_mode) == 0o700
    os.rmdir(other)


def test_a_writers_error_names_the_output_not_its_temporary(tmp_path, monkeypatch):
    """Before: `could not write x.wav (Error opening b'/folder/.x.wav.1a2b.tmp': System error.)`."""
    def failing_write(file, *args, **kwargs):
        raise sf.LibsndfileError(2, f"Error opening {file!r}: ")

    monkeypatch.setattr(audio_mod.sf, "write", failing_write)
    with pytest.raises(JukeboxError) as e:
        save_audio(np.zeros(100, "f4"), tmp_path / "x.wav", 44100)
    assert str(tmp_path / "x.wav") in str(e.value) and ".tmp" not in str(e.value)
    assert os.listdir(tmp_path) == []


def test_no_pickle_advice_in_codes_errors(capsys, model, tmp_path):
    """numpy's header reader advises `allow_pickle=True` for a long header; the message never passes it on."""
    header = "{'descr': '<i8', 'fortran_order': False, 'shape': (4,), }" + " " * 10_000 + "\n"
    member = b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header.encode() + bytes(32)
    path = tmp_path / "c.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("level_2.npy", member)
    rc, err = run_cli(capsys, ["decode", "-m", str(model), str(path), "-o", str(tmp_path / "x.wav")])
    one_line(err, rc, 1, ".npy header is longer than a codes array's")
    assert "allow_pickle" not in err and "max_header_size" not in err
