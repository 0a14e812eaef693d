"""Lyric vocabularies, artist/genre tables and the label vector ``y``, against the original's outputs."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import load_reference
from jukebox.data.labels import (
    LABELS_FILE,
    UNKNOWN_ID,
    Labeller,
    LabelVocab,
    UnknownLabelWarning,
    build_y,
    lyric_window,
    normalize_v2,
    split_genre,
)
from jukebox.data.text import clean_lyrics, detokenise_lyrics, lyric_vocab, tokenise_lyrics
from jukebox.errors import JukeboxError, UsageError

# The two songs of text_labels.pt (the fixture stores only their ids).
SONGS = [("Alan Jackson", "Country"), ("Joe Bonamassa", "Blues Rock")]
PRIORS = ["upsampler_level_0", "upsampler_level_1", "top_5b", "top_5b_lyrics", "top_1b_lyrics"]
NASTY = [
    "",
    "😀🎸🔥 love 💔",
    "我爱你 中文歌词 日本語 한국어",
    "שלום עולם مرحبا بالعالم",
    "\x00\x01\x07\x1b[31m\r\n\t\x7f\u200b\u200e\u202e\ufeff",
    "lone \ud800 surrogate \udfff",
    "Zürich — “smart quotes” … ß Æ ﬁ ½ ①",
    "back\\slash",
]


# ---------------------------------------------------------------------- lyric vocabularies
@pytest.mark.parametrize("version", ["v2", "v3"])
def test_lyric_vocab_matches_reference(version):
    ref = load_reference("text_labels.pt")
    vocab = lyric_vocab(version)
    assert vocab.n_vocab == ref[version]["n_vocab"] == {"v2": 80, "v3": 79}[version]
    assert vocab.vocab == ref[version]["vocab"]
    assert list(vocab.vocab.items()) == list(ref[version]["vocab"].items())
    assert [vocab.clean(t) for t in ref["raw"]] == ref[version]["clean"]
    assert [vocab.encode(t) for t in ref["raw"]] == ref[version]["tokens"]
    assert [vocab.tokenise(t) for t in ref[version]["clean"]] == ref[version]["tokens"]
    assert [vocab.detokenise(t) for t in ref[version]["tokens"]] == ref[version]["clean"]


def test_lyric_vocab_basics():
    v2, v3 = lyric_vocab("v2"), lyric_vocab("v3")
    assert (v2.n_vocab, v3.n_vocab) == (80, 79)
    assert "+" in v2.vocab and "+" not in v3.vocab
    assert clean_lyrics("a+b", "v2") == "a+b" and clean_lyrics("a+b", "v3") == "ab"
    assert clean_lyrics("one\\two") == "one\ntwo"
    assert clean_lyrics("café — “x”") == 'cafe -- "x"'
    assert detokenise_lyrics([0, 0, *tokenise_lyrics("hi", "v3")], "v3") == "hi"
    with pytest.raises(UsageError):
        v2.tokenise("é")
    with pytest.raises(UsageError):
        v2.detokenise([80])
    with pytest.raises(UsageError):
        lyric_vocab("v4")


@pytest.mark.parametrize("text", NASTY)
@pytest.mark.parametrize("version", ["v2", "v3"])
def test_any_unicode_lyrics_tokenise(version, text):
    _check_lyrics(lyric_vocab(version), text)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.characters(codec=None), max_size=60), version=st.sampled_from(["v2", "v3"]))
def test_any_unicode_lyrics_tokenise_fuzz(text, version):
    _check_lyrics(lyric_vocab(version), text)


def _check_lyrics(vocab, text):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cleaning must not even warn
        cleaned = vocab.clean(text)
        tokens = vocab.encode(text)
    assert all(1 <= t < vocab.n_vocab for t in tokens)
    assert vocab.detokenise(tokens) == cleaned
    assert vocab.clean(cleaned) == cleaned


@settings(max_examples=100, deadline=None)
@given(
    text=st.text(max_size=80),
    total=st.integers(1, 10**7),
    frac=st.floats(0, 1, exclude_max=True),
    n_tokens=st.sampled_from([0, 4, 16]),
)
def test_labeller_any_lyrics_and_position(text, total, frac, n_tokens):
    vocab = LabelVocab.from_names(["a"], ["pop"], version="v3")
    lab = Labeller(vocab, max_bow_genre_size=1, n_tokens=n_tokens, sample_length=1000)
    offset = min(int(frac * total), total - 1)
    labels = lab.batch_labels([dict(artist="a", genre="pop", lyrics=text, total_length=total, offset=offset)])
    assert labels.y.shape == (1, 5 + n_tokens) and labels.y.dtype == torch.long
    tokens = labels.y[0, 5:]
    assert ((tokens >= 0) & (tokens < 79)).all()
    y, idx = lab.window_y(labels, start=0, raw_to_tokens=1)
    assert torch.equal(y[:, :5], labels.y[:, :5]) and len(idx[0]) == n_tokens


# ---------------------------------------------------------------------- artist / genre ids
@pytest.mark.parametrize("version", ["v2", "v3"])
def test_artist_genre_ids_match_reference(version, reference_ids_dir):
    ref = load_reference("text_labels.pt")
    vocab = LabelVocab.from_openai_ids_dir(reference_ids_dir, version)
    assert [vocab.artist_id(a) for a, _ in SONGS] == ref[version]["artist_ids"]
    assert [vocab.genre_ids(g) for _, g in SONGS] == ref[version]["genre_ids"]
    assert vocab.y_bins == {"v2": (120, 4111), "v3": (604, 7898)}[version]
    assert vocab.lyric_vocab.n_vocab == ref[version]["n_vocab"]


def test_openai_tables_names_and_search(reference_ids_dir):
    v2 = LabelVocab.from_openai_ids_dir(reference_ids_dir, "v2")
    v3 = LabelVocab.from_openai_ids_dir(reference_ids_dir, "v3")
    assert v2.artist_id("ALAN   jackson!") == v2.artist_id("alan_jackson") == 145
    assert v3.artist_id("ALAN JACKSON") == 6785
    assert v2.genre_ids("Blues-Rock") == [2, 8]  # bag of words
    assert v3.genre_ids("Blues Rock") == [282]  # one genre
    assert v2.artist_name(145) == "alan_jackson" and v3.artist_name(6785) == "alan jackson"
    assert v2.genre_name([2, 8, -1, -1, -1]) == "blues_rock"
    assert v2.artist_name(UNKNOWN_ID) == "unknown"
    assert ("alan_jackson", 145) in v2.search_artists("jackson")
    assert v3.search_genres("country")[0] == ("country", 507)
    assert v2.list_genres() == sorted(v2.list_genres()) and "rock" in v2.list_genres()
    assert "joe bonamassa" in v3.list_artists()


def test_unknown_names_warn_and_map_to_unknown(reference_ids_dir):
    v2 = LabelVocab.from_openai_ids_dir(reference_ids_dir, "v2")
    with pytest.warns(UnknownLabelWarning, match="alan_jackson"):
        assert v2.artist_id("Alan Jacksonn") == UNKNOWN_ID
    with pytest.warns(UnknownLabelWarning, match="'rock'"):
        assert v2.genre_ids("Country Rokc") == [11, UNKNOWN_ID]
    v3 = LabelVocab.from_openai_ids_dir(reference_ids_dir, "v3")
    with pytest.warns(UnknownLabelWarning, match="blues rock"):
        assert v3.genre_ids("Blues Rocks") == [UNKNOWN_ID]


def test_unknown_names_without_tables():
    vocab = LabelVocab.from_names(["The Band", "Björk"], ["Rock", "Pop Rock"], version="v3")
    with pytest.warns(UnknownLabelWarning, match="the band"):
        assert vocab.artist_id("The Bnad") == UNKNOWN_ID
    with pytest.warns(UnknownLabelWarning, match="'pop rock'"):
        assert vocab.genre_ids("pop rok") == [UNKNOWN_ID]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert vocab.artist_id("unknown") == UNKNOWN_ID
        assert vocab.artist_id("Nobody", warn=False) == UNKNOWN_ID
        assert vocab.artist_id(None) == UNKNOWN_ID


# ---------------------------------------------------------------------- our own tables
def test_from_names_ids():
    v3 = LabelVocab.from_names(["b", "A", "a", "unknown", ""], ["Rock", "Pop Rock"], version="v3")
    assert v3.artist_ids == {"unknown": 0, "a": 1, "b": 2}
    assert v3.genre_ids_table == {"unknown": 0, "pop rock": 1, "rock": 2}
    assert v3.y_bins == (3, 3) and v3.lyric_vocab.n_vocab == 79
    v2 = LabelVocab.from_names(["Guns N' Roses"], ["Pop Rock", "Hip-Hop"], version="v2")
    assert v2.artist_ids == {"unknown": 0, "guns_n_roses": 1}
    assert v2.genre_ids_table == {"unknown": 0, "hip": 1, "hop": 2, "pop": 3, "rock": 4}
    assert v2.genre_ids("hip hop rock") == [1, 2, 4]
    assert v2.lyric_vocab.n_vocab == 80
    assert normalize_v2("  Guns N' Roses!! ") == "guns_n_roses"
    assert split_genre("Hip-Hop / Rap", "v2") == ["hip", "hop", "rap"]


def test_save_load_round_trip(tmp_path):
    vocab = LabelVocab.from_names(["Björk", "Sigur Rós", "坂本龍一"], ["Post Rock", "Électronique"], version="v3")
    path = vocab.save(tmp_path)
    assert path == tmp_path / LABELS_FILE
    assert sorted(p.name for p in tmp_path.iterdir()) == [LABELS_FILE]  # atomic: no temporary left over
    back = LabelVocab.load(tmp_path)
    assert back == vocab and back.y_bins == vocab.y_bins and back.version == vocab.version
    assert back.artist_id("坂本龍一") == vocab.artist_id("坂本龍一") > 0
    assert LabelVocab.load(path) == vocab
    data = json.loads(path.read_text(encoding="utf-8"))
    data["extra"] = 1
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(JukeboxError, match="extra"):
        LabelVocab.load(tmp_path)
    with pytest.raises(JukeboxError):
        LabelVocab.load(tmp_path / "missing")


def test_save_load_openai_tables(tmp_path, reference_ids_dir):
    for version in ("v2", "v3"):
        vocab = LabelVocab.from_openai_ids_dir(reference_ids_dir, version)
        back = LabelVocab.load(vocab.save(tmp_path / version))
        assert back == vocab and back.y_bins == vocab.y_bins
        assert [back.artist_id(a) for a, _ in SONGS] == [vocab.artist_id(a) for a, _ in SONGS]


# ---------------------------------------------------------------------- y
@pytest.mark.parametrize("name", PRIORS)
def test_prior_fixture_y(name, reference_ids_dir):
    ref = load_reference(f"prior_{name}.pt")
    hps, derived, inputs = ref["hps"], ref["derived"], ref["inputs"]
    version = "v3" if hps.get("labels_v3") else "v2"
    vocab = LabelVocab.from_openai_ids_dir(reference_ids_dir, version)
    assert tuple(hps["y_bins"]) == vocab.y_bins and hps["n_vocab"] == vocab.lyric_vocab.n_vocab
    n_tokens = hps.get("n_tokens", 0)
    labels = build_y(
        vocab,
        inputs["metas"],
        sample_length=derived["sample_length"],
        n_tokens=n_tokens,
        max_bow_genre_size=hps["max_bow_genre_size"],
    )
    assert labels.y.dtype == torch.long
    assert labels.y.shape == (len(inputs["metas"]), 4 + hps["max_bow_genre_size"] + n_tokens)
    assert torch.equal(labels.y, inputs["y"])
    for info, want in zip(labels.infos, inputs["labels_info"]):
        assert (info.artist, info.genre, info.lyrics, list(info.full_tokens)) == (
            want["artist"],
            want["genre"],
            want["lyrics"],
            want["full_tokens"],
        )
    # The sampler's path: re-window at window_start (float32 midpoint) gives the same y.
    lab = Labeller(vocab, hps["max_bow_genre_size"], n_tokens, derived["sample_length"])
    y, indices = lab.window_y(labels, inputs["window_start"], derived["raw_to_tokens"])
    assert torch.equal(y, inputs["y"])
    for row, idx, info in zip(y, indices, labels.infos):
        assert row[4 + hps["max_bow_genre_size"] :].tolist() == [info.full_tokens[i] if i >= 0 else 0 for i in idx]


def test_window_y_moves_with_start():
    vocab = LabelVocab.from_names(["a"], ["pop"], version="v3")
    lab = Labeller(vocab, 1, n_tokens=4, sample_length=100)
    lyrics = "abcdefghijklmnopqrst"  # 20 characters over a 1000-sample song
    labels = lab.batch_labels([dict(artist="a", genre="pop", lyrics=lyrics, total_length=1000, offset=0)])
    assert lab.describe(labels.y[0])["lyrics"] == "abcd"  # clamped at the start
    y, idx = lab.window_y(labels, start=10, raw_to_tokens=50)  # offset 500, centre 550 -> character 11
    assert y[0, :3].tolist() == [1000, 500, 100] and idx == [[9, 10, 11, 12]]
    assert lab.describe(y[0])["lyrics"] == "jklm"
    y, idx = lab.window_y(labels, start=19, raw_to_tokens=50)  # clamped at the end
    assert idx == [[16, 17, 18, 19]]


def test_lyric_window_rules():
    full = list(range(1, 11))
    assert lyric_window(full[:3], 5, 100, 99, 10) == ([0, 0, 1, 2, 3], [-1, -1, 0, 1, 2])  # short: left pad
    assert lyric_window(full, 4, 100, 0, 10) == ([1, 2, 3, 4], [0, 1, 2, 3])
    assert lyric_window(full, 4, 100, 45, 10) == ([4, 5, 6, 7], [3, 4, 5, 6])
    assert lyric_window(full, 4, 100, 99, 10) == ([7, 8, 9, 10], [6, 7, 8, 9])
    assert lyric_window(full, 0, 100, 10, 10) == ([], [])
    with pytest.raises(UsageError):
        lyric_window(full, 4, 100, 100, 10)
    # The original computes the sampler's midpoint in float32 and the dataset's in float64; both are kept.
    args = (list(range(1000)), 2, 23_373_000, 22_311_133, 1_048_576)  # centre at character 977 exactly
    assert lyric_window(*args)[1] == [976, 977]
    assert lyric_window(*args, float32=True)[1] == [975, 976]


def test_y_from_ids_describe_and_errors(reference_ids_dir):
    vocab = LabelVocab.from_openai_ids_dir(reference_ids_dir, "v2")
    lab = Labeller(vocab, max_bow_genre_size=5, n_tokens=4, sample_length=8192)
    y = lab.y_from_ids(145, [11], lyric_vocab("v2").encode("la l"), 44100, 0)
    assert y == [44100, 0, 8192, 145, 11, -1, -1, -1, -1, 38, 27, 77, 38]
    assert lab.describe(y) == dict(
        total_length=44100, offset=0, sample_length=8192, artist="alan_jackson", genre="country", lyrics="la l"
    )
    with pytest.raises(UsageError, match="at most 5"):
        lab.label("Alan Jackson", "rock pop blues jazz soul country", "", 44100, 0)
    with pytest.raises(UsageError):
        lab.y_from_ids(145, [11], [1, 2], 44100, 0)
    with pytest.raises(UsageError, match="lacks"):
        lab.batch_labels([dict(artist="x")])


def test_unknown_names_warn_once_from_the_highest_level(tmp_path):
    """A fine-tuned top prior may know artists the upsamplers' vocabularies lack: sampling all levels warns once
    (from the top level), not once per level; an artist nobody knows still warns."""
    import warnings

    from jukebox.api import load_model
    from jukebox.data.labels import LabelVocab, UnknownLabelWarning
    from jukebox.testing import ARTISTS, GENRES, make_tiny_model_dir

    md = make_tiny_model_dir(tmp_path / "m")
    LabelVocab.from_names([*ARTISTS, "Newcomer"], GENRES, version="v2").save(md.path / "prior_level_2")
    jb = load_model(md.path, device="cpu")
    seconds = 2 * 32 * 8 * 4 / jb.sample_rate
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jb.generate(artist="Newcomer", genre=GENRES[0], seconds=seconds, seed=0, alignment=False)
        assert not [w for w in caught if issubclass(w.category, UnknownLabelWarning)]
        jb.generate(artist="Nobody Known", genre=GENRES[0], seconds=seconds, seed=0, alignment=False)
    assert len([w for w in caught if issubclass(w.category, UnknownLabelWarning)]) == 1
