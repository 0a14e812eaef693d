"""Word timings: parsing, matching words to lyric characters, per-position alignment targets, and the words carried
from metadata.jsonl through a manifest and a portable code folder to the training windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jukebox.data.code_cache import CodeCache, CodeFolderWriter, CodeWindowSampler
from jukebox.data.dataset import Manifest, scan_corpus
from jukebox.data.text import lyric_vocab
from jukebox.data.word_timing import alignment_targets, parse_words, word_char_spans
from jukebox.errors import JukeboxError

TEXT = "Hello, bright\nworld gone"  # Hello 0-5, bright 7-13, world 14-19, gone 20-24


def test_parse_words_checks_shape_once() -> None:
    assert parse_words([["hi", 0, 1.5], ("yo", "2", 3)], "f") == (("hi", 0.0, 1.5), ("yo", 2.0, 3.0))
    assert parse_words(None, "f") == () and parse_words([], "f") == ()
    for bad in ({"word": "hi"}, [["hi", 1]], [["hi", 2, 1]], [[3, 0, 1]], [["hi", -1, 1]], [["hi", "x", 1]],
                [["hi", 0, float("nan")]]):
        with pytest.raises(JukeboxError, match="^meta.jsonl:3: track 'a.wav': 'words'"):
            parse_words(bad, "meta.jsonl:3: track 'a.wav'")


def test_words_match_characters_in_order() -> None:
    words = [("HELLO!", 0, 1), ("xyzzy", 1, 2), ("bright", 2, 3), ("world", 3, 4), ("gone", 4, 5), ("hello", 5, 6)]
    spans = word_char_spans(words, TEXT, lyric_vocab("v2").clean)
    assert spans == [(0, 5), None, (7, 13), (14, 19), (20, 24), None]  # unmatched words skipped; order kept
    assert word_char_spans([("don't", 0, 1)], "I don't know") == [(2, 7)]  # a word of several pieces
    assert word_char_spans([("...", 0, 1)], TEXT) == [None]


def test_targets_of_a_hand_made_window() -> None:
    """Columns of the word sung at each position; silence, a word outside the window and a word cut by its edge."""
    words = [("hello", 1.0, 2.0), ("bright", 2.0, 3.0), ("world", 3.5, 4.0), ("gone", 9.0, 10.0)]
    spans = word_char_spans(words, TEXT)
    indices = list(range(5, 17))  # the window's 12 columns show characters 5..16
    got = alignment_targets(words, spans, indices, offset=0, n_ctx=10, raw_to_tokens=5, sample_rate=10)
    want = [(-1, -1)] * 2 + [(-1, -1)] * 2 + [(2, 8)] * 2 + [(-1, -1)] + [(9, 12)] + [(-1, -1)] * 2
    assert got.dtype == np.int64 and got.shape == (10, 2)
    assert got.tolist() == [list(w) for w in want]
    # the window's offset moves the times; padding columns (-1) never match
    got = alignment_targets(words, spans, [-1, -1] + list(range(0, 10)), offset=20, n_ctx=4, raw_to_tokens=5,
                            sample_rate=10)
    assert got.tolist() == [[9, 12], [9, 12], [-1, -1], [-1, -1]]  # bright: only its chars 7..9 are shown
    assert (alignment_targets((), [], indices, 0, 3, 5, 10) == -1).all()


def _wav(path: Path, seconds: float = 1.0, sr: int = 8000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.random.default_rng(0).uniform(-0.1, 0.1, int(seconds * sr)).astype(np.float32), sr)


def test_words_from_metadata_through_manifest_and_code_folder(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _wav(corpus / "a.wav")
    _wav(corpus / "b.wav")
    rows = [{"file": "a.wav", "lyrics": "la di da", "words": [["la", 0.1, 0.3], ["di", 0.3, 0.5], ["da", 0.5, 0.9]]},
            {"file": "b.wav", "lyrics": "no timings here"}]
    (corpus / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    manifest = scan_corpus(corpus)
    tracks = {t.path: t for t in manifest.tracks}
    assert tracks["a.wav"].words == (("la", 0.1, 0.3), ("di", 0.3, 0.5), ("da", 0.5, 0.9))
    assert tracks["b.wav"].words == ()
    saved = manifest.save(tmp_path / "manifest.json")
    d = json.loads(saved.read_text())
    assert "words" not in next(t for t in d["tracks"] if t["path"] == "b.wav")  # old manifests stay as they were
    assert Manifest.load(saved) == manifest
    # a portable code folder keeps them, and the training windows carry them
    with CodeFolderWriter(tmp_path / "codes", "fp", 8000, [8, 32, 128], 64, levels=[2]) as w:
        for t in manifest.tracks:
            w.add(t.path, t.duration, 8000, [np.zeros(0), np.zeros(0), np.arange(62) % 64])
        cache = w.commit(manifest)
    back = CodeCache(tmp_path / "codes").manifest()
    assert {t.path: t.words for t in back.tracks} == {t.path: t.words for t in manifest.tracks}
    sampler = CodeWindowSampler(cache, back, 2, 16, split=None)
    assert {sampler.window(i).path: sampler.window(i).words for i in range(len(sampler))} == {
        "a.wav": tracks["a.wav"].words, "b.wav": ()}


def test_malformed_words_name_file_and_track(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _wav(corpus / "a.wav")
    (corpus / "metadata.jsonl").write_text(json.dumps({"file": "a.wav", "words": [["la", 0.5]]}) + "\n")
    with pytest.raises(JukeboxError, match=r"metadata.jsonl:1: track 'a.wav': 'words' item 0"):
        scan_corpus(corpus)
    (corpus / "metadata.jsonl").unlink()
    (corpus / "metadata.csv").write_text('file,words\na.wav,"[[""la"", 0.1, 0.2]]"\n')
    assert scan_corpus(corpus).tracks[0].words == (("la", 0.1, 0.2),)
    bad = {"format": "jukebox-manifest", "version": 1, "root": str(corpus),
           "tracks": [{"path": "a.wav", "duration": 1.0, "sample_rate": 8000, "channels": 1, "words": "la"}]}
    (tmp_path / "m.json").write_text(json.dumps(bad))
    with pytest.raises(JukeboxError, match=r"m.json: track 'a.wav': 'words' must be a list"):
        Manifest.load(tmp_path / "m.json")
