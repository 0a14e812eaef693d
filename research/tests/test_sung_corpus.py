"""Fast checks of the sung-corpus build's pure-Python parts (research/scripts/build_sung_corpus.py, sung_wer.py)."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from conftest import load_script

bsc = load_script("build_sung_corpus")
wer_mod = load_script("sung_wer")
SYL = {w: bsc.heuristic_syllables(w) for w in bsc.vocabulary()}


def test_lyrics_deterministic_and_prefix_stable() -> None:
    a = bsc.make_songs(12, SYL, seed=3)
    b = bsc.make_songs(20, SYL, seed=3)
    assert [s.lyrics for s in a] == [s.lyrics for s in b[:12]]
    assert [(s.artist, s.genre, s.bpm) for s in a] == [(s.artist, s.genre, s.bpm) for s in b[:12]]
    c = bsc.make_songs(12, SYL, seed=4)
    assert [s.lyrics for s in a] != [s.lyrics for s in c]


def test_heldout_lines_disjoint() -> None:
    songs = bsc.make_songs(60, SYL, seed=0)
    test_lines = {ln for s in songs if s.split == "test" for _, lines in s.sections for ln in lines}
    seen_lines = {ln for s in songs if s.split != "test" for _, lines in s.sections for ln in lines}
    assert sum(s.split == "test" for s in songs) == 6
    assert {s.split for s in songs} == {"train", "validation", "test"}
    assert test_lines and seen_lines and not test_lines & seen_lines


def test_song_structure() -> None:
    song = bsc.make_songs(1, SYL)[0]
    kinds = [k for k, _ in song.sections]
    assert kinds[:4] == ["verse", "chorus", "verse", "chorus"]
    assert all(len(lines) == 4 for _, lines in song.sections)
    assert song.sections[1][1] == song.sections[3][1]  # the chorus repeats


def test_score_and_xml() -> None:
    song = bsc.make_songs(1, SYL)[0]
    notes = bsc.make_score(song, SYL)
    words = song.lyrics.split()
    assert len(notes) == sum(SYL[w.lower()] for w in words)
    starts = [n["start"] for n in notes]
    assert starts == sorted(starts)
    assert all(a["start"] + a["dur"] <= b["start"] + 1e-9 for a, b in zip(notes, notes[1:], strict=False))
    xml = bsc.song_xml(notes, song.bpm)
    root = ET.fromstring(xml.split("\n", 2)[2])  # skip the declaration and DOCTYPE
    assert root.tag == "SINGING" and float(root.get("BPM")) == pytest.approx(song.bpm * 50 / 60)
    durs = root.findall("DURATION")
    assert [d.find("PITCH").text for d in durs] == words
    for d in durs:
        assert len(d.get("BEATS").split(",")) == len(d.find("PITCH").get("NOTE").split(",")) == SYL[
            d.find("PITCH").text.lower()]
    assert bsc.midi_to_name(60) == "C4" and bsc.midi_to_name(70) == "Bb4"


def test_wer() -> None:
    assert wer_mod.wer("the cat sat", "the cat sat") == 0.0
    assert wer_mod.wer("the cat sat", "the hat sat down") == pytest.approx(2 / 3)
    assert wer_mod.edit_ops("a b c d".split(), "a c d e".split()) == (0, 1, 1)
    assert wer_mod.wer("Hello, World!\nI'm here", "hello world i'm here") == 0.0
    assert wer_mod.wer("", "") == 0.0


def test_chunks_cover_audio() -> None:
    x = np.random.default_rng(0).standard_normal(16000 * 30).astype(np.float32)
    x[16000 * 9:16000 * 9 + 800] = 0
    bounds = wer_mod.chunk_bounds(x, 16000, chunk=8.0, search=2.0)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(x)
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    assert abs(bounds[0][1] - (16000 * 9 + 400)) <= 800


def test_vocab_lm(tmp_path: Path) -> None:
    text = wer_mod.vocab_lm(["love", "night", "love"], tmp_path / "v.arpa").read_text()
    assert "ngram 1=4" in text and " love " in text and " night " in text


@pytest.mark.skipif(shutil.which("text2wave") is None or shutil.which("fluidsynth") is None,
                    reason="festival / fluidsynth not installed")
def test_build_one_song(tmp_path: Path) -> None:
    pytest.importorskip("mido")
    pytest.importorskip("soxr")
    syl = bsc.load_syllables(tmp_path)
    song = bsc.make_songs(2, syl)[1]
    rec = bsc.build_song(song, syl, tmp_path)
    assert (tmp_path / rec["file"]).exists()
    assert len(rec["words"]) == len(song.lyrics.split())
    assert all(abs(w["start"] - w["score_start"]) < 0.2 for w in rec["words"])
