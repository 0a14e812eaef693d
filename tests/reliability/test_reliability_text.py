"""Names and text: batch JSONL is split at newlines only and its labels must be strings (``null`` and lists are
refused with the line's number, never turned into "None"); artist and genre names print with control characters
escaped; file names that are not valid UTF-8 survive writes, reads and prints. See docs/reliability.md."""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jukebox.audio import load_audio, save_audio
from jukebox.cli.common import parse_batch_lines, printable, read_batch_file
from jukebox.cli.main import main
from jukebox.errors import UsageError
from jukebox.testing import make_tiny_model_dir

PROPERTY = settings(max_examples=int(os.environ.get("JUKEBOX_FUZZ_EXAMPLES", "60")), deadline=5000,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                    derandomize=True, database=None)


# ------------------------------------------------------------------------------------------------ batch JSONL

def test_separators_inside_strings_do_not_split_lines(tmp_path):
    """U+2028, U+2029 and U+0085 are text: str.splitlines() used to cut the line there (a JSON error)."""
    lyrics = "first line\u2028second\u2029third\x85fourth"
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps({"artist": "a\u2028b", "lyrics": lyrics}, ensure_ascii=False) + "\r\n"
                    + "\n" + json.dumps({"genre": "rock", "bpm": 120}) + "\n", encoding="utf-8")
    assert read_batch_file(path) == [{"artist": "a\u2028b", "lyrics": lyrics}, {"genre": "rock", "bpm": 120.0}]


@pytest.mark.parametrize("line,words", [
    ('{"artist": null}', "artist must be a string, got null"),
    ('{"lyrics": ["la", "la"]}', "lyrics must be a string, got a list"),
    ('{"genre": {"a": 1}}', "genre must be a string, got an object"),
    ('{"artist": 7}', "artist must be a string, got the number 7"),
    ('{"artist": true}', "artist must be a string, got true/false"),
    ('{"bpm": "fast"}', "bpm must be a tempo in BPM, got a string"),
    ('{"bpm": true}', "bpm must be a tempo in BPM"),
    ('{"total_seconds": NaN}', "total_seconds must be a number of seconds"),
    ('{"total_seconds": 1e400}', "total_seconds must be a number of seconds"),
    ('{"total_seconds": ' + "9" * 400 + "}", "total_seconds must be a number of seconds"),
    ('{"lyrics": "\\ud800"}', "not valid Unicode text"),
    ('{"artist": "x", "color": "red"}', "expected an object with artist"),
    ('["artist"]', "expected an object with artist"),
    ('{"artist": ', "not valid JSON"),
    ("[" * 100_000, "not valid JSON"),
])
def test_batch_lines_that_are_refused_name_the_line(line, words):
    with pytest.raises(UsageError) as e:
        parse_batch_lines('{"artist": "ok"}\n\n' + line + "\n", "b.jsonl")
    assert str(e.value).startswith("b.jsonl:3: ") and words in str(e.value)
    assert "\n" not in str(e.value)


def test_batch_null_numbers_mean_not_given_and_a_bom_is_skipped():
    assert parse_batch_lines('\ufeff{"artist": "a", "bpm": null, "total_seconds": null}') == [{"artist": "a"}]
    with pytest.raises(UsageError, match="no items"):
        parse_batch_lines("\n  \n\r\n", "b")


def test_batch_lyrics_are_capped_per_line():
    with pytest.raises(UsageError, match="b:2: the lyrics are 70,000 characters long"):
        parse_batch_lines('{"artist": "a"}\n' + json.dumps({"lyrics": "a" * 70_000}), "b")


def test_batch_files_must_be_regular_utf8_files(tmp_path):
    os.mkfifo(tmp_path / "fifo.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes('{"artist": "Beyonc\xe9"}\n'.encode("latin-1"))
    for name, words in (("fifo.jsonl", "FIFO"), ("latin1.jsonl", "not UTF-8"), ("missing.jsonl", "no such file")):
        with pytest.raises(UsageError, match=words):
            read_batch_file(tmp_path / name)


_labels = st.text(st.characters(codec="utf-8"), max_size=40)


@PROPERTY
@given(items=st.lists(st.fixed_dictionaries({}, optional={
    "artist": _labels, "genre": _labels, "lyrics": _labels,
    "total_seconds": st.one_of(st.none(), st.floats(0.1, 1e4)), "bpm": st.one_of(st.none(), st.integers(40, 240)),
}), min_size=1, max_size=6), ascii=st.booleans(), crlf=st.booleans())
def test_batch_items_round_trip(tmp_path, items, ascii, crlf):
    """Any strings (separators, controls, quotes, emoji) and numbers come back exactly as written."""
    path = tmp_path / "b.jsonl"
    end = "\r\n" if crlf else "\n"
    path.write_text(end.join(json.dumps(it, ensure_ascii=ascii) for it in items) + end, encoding="utf-8",
                    newline="")
    expected = [{k: (float(v) if k in ("total_seconds", "bpm") else v) for k, v in it.items() if v is not None}
                for it in items]
    assert read_batch_file(path) == expected


# ------------------------------------------------------------------------------------------------ printing names

@pytest.mark.parametrize("name,shown", [
    ("\x1b[2J\x1b]0;pwned\x07", "\\x1b[2J\\x1b]0;pwned\\x07"),
    ("evil\u202etxt.exe", "evil\\u202etxt.exe"),
    ("two\nlines\u2028and\x85", "two\\x0alines\\u2028and\\x85"),
    ("back\\slash", "back\\\\slash"),
    ("Beyoncé, 周杰伦, Сплин, 🎸👩‍🎤", "Beyoncé, 周杰伦, Сплин, 🎸👩‍🎤"),
])
def test_names_print_with_control_characters_escaped(name, shown):
    assert printable(name) == shown


_UNSAFE = {"Cc", "Cs", "Co", "Cn", "Zl", "Zp"}


@PROPERTY
@given(text=st.text(max_size=60))
def test_printable_has_no_unsafe_characters_and_keeps_safe_text(text):
    shown = printable(text)
    assert not any(unicodedata.category(c) in _UNSAFE for c in shown)
    assert "\u202e" not in shown and "\u2066" not in shown
    if "\\" not in text and not any(unicodedata.category(c) in _UNSAFE or c in "\u202e\u2066\u061c\u200e\u200f"
                                    "\u202a\u202b\u202c\u202d\u2067\u2068\u2069" for c in text):
        assert shown == text


# ------------------------------------------------------------------------------------------------ file names

@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("names") / "tiny").path


def test_file_names_that_are_not_utf8_survive(capsys, model, tmp_path):
    """A name with the Latin-1 byte 0xE9: `encode` wrote the file, then exited 1 on printing its name, and audio
    with such a name could not be read at all."""
    folder = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9"))
    os.mkdir(folder)
    wav, npz, out_wav, run = (os.fsdecode(os.path.join(os.fsencode(folder), n))
                              for n in (b"in\xe9.wav", b"c\xe9.npz", b"o\xff.wav", b"run\xe9"))
    sf.write(os.fsencode(wav), (np.random.default_rng(0).standard_normal(4410) * 0.1).astype("f4"), 44100)
    assert load_audio(wav)[0].shape == (4410,)
    for argv in (["encode", "-m", str(model), wav, "-o", npz],
                 ["decode", "-m", str(model), npz, "-o", out_wav],
                 ["sample", "-m", str(model), "-o", run, "--seconds", "0.05", "--quiet"]):
        capsys.readouterr()
        rc = main(argv)
        out, err = capsys.readouterr()
        assert rc == 0, err
        assert "caf\\xe9" in out and "\udce9" not in out
    names = sorted(os.listdir(os.fsencode(folder)))
    assert names == [b"c\xe9.npz", b"in\xe9.wav", b"o\xff.wav", b"run\xe9"]
    assert sorted(os.listdir(os.path.join(os.fsencode(folder), b"run\xe9")))[0] == b"codes.npz"
    save_audio(np.zeros(10), Path(folder) / os.fsdecode(b"s\xe9.flac"))
    assert load_audio(Path(folder) / os.fsdecode(b"s\xe9.flac"))[0].shape == (10,)


def test_errors_about_such_names_print_too(capsys, model, tmp_path):
    missing = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"gone\xe9.wav"))
    capsys.readouterr()
    rc = main(["encode", "-m", str(model), missing, "-o", str(tmp_path / "x.npz")])
    err = capsys.readouterr().err
    assert rc == 1 and "gone\\xe9.wav: no such file" in err and len(err.strip().splitlines()) == 1


def test_long_output_names_fit_the_temporary_name(tmp_path):
    """The temporary file beside an output adds a prefix and suffix: a 250-byte name must still be writable."""
    name = "é" * 120 + ".wav"  # 244 bytes
    save_audio(np.zeros(10), tmp_path / name)
    assert load_audio(tmp_path / name)[0].shape == (10,)
