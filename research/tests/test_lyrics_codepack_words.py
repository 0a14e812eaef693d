"""lyrics_codepack.py --with-words: the sung tracks of the pack carry their word timings into the code folder's
manifest, where ``jukebox train prior --align-loss`` finds them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from conftest import load_script

cp = load_script("lyrics_codepack")


def test_sung_entries_carry_word_timings(tmp_path: Path) -> None:
    from jukebox.config import VQVAEConfig
    from jukebox.data.code_cache import CodeCache
    from jukebox.data.dataset import Track

    npz = tmp_path / "song00001.npz"
    np.savez(npz, codes=np.arange(40) % 7, total_length=40 * 128, bpm=0.0, beats=np.zeros(0), pulse=0.0,
             beats_ok=False)
    track = Track("songs/song00001.flac", 0.3, 22050, 1, "kal", "guitar", "The picture is", "train")
    rec = {"words": [{"word": "The", "start": 0.01234, "end": 0.1, "line": 0},
                     {"word": "picture", "start": 0.1, "end": 0.2}, {"word": "is", "start": 0.2, "end": 0.25}]}
    with_words = cp._sung_entry(track, npz, "train", cp._words(rec))
    assert with_words["track"].words == (("The", 0.012, 0.1), ("picture", 0.1, 0.2), ("is", 0.2, 0.25))
    assert with_words["track"].path == "sung/songs/song00001.flac"
    assert cp._sung_entry(track, npz, "train")["track"].words == ()  # --no-with-words
    cfg = dataclasses.replace(VQVAEConfig(), sample_rate=22050)
    cp._write_folder(tmp_path / "mix", [with_words], "fp", cfg)
    back = CodeCache(tmp_path / "mix").manifest()
    assert back.tracks[0].words == with_words["track"].words
