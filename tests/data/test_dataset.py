"""Corpus scanning, report, split, window sampling and `jukebox prepare` on a small generated folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jukebox.data.dataset import (
    Manifest,
    WindowSampler,
    corpus_report,
    format_report,
    read_metadata,
    scan_corpus,
    split_manifest,
    windows_to_batch,
)
from jukebox.errors import JukeboxError

SR = 16000


def _tone(seconds: float, sr: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def _write_tagged(path: Path, data: np.ndarray, sr: int, fmt: str, subtype: str | None = None, **tags: str) -> None:
    channels = 1 if data.ndim == 1 else data.shape[1]
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=channels, format=fmt, subtype=subtype) as f:
        for k, v in tags.items():
            setattr(f, k, v)
        f.write(data)


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "music"
    (root / "alice" / "album").mkdir(parents=True)
    (root / "bob").mkdir()
    (root / "misc").mkdir()
    (root / ".hidden").mkdir()
    # a ramp at the model rate, so window contents can be checked exactly
    ramp = (np.arange(int(3.0 * SR)) / (3.0 * SR)).astype(np.float32)
    sf.write(root / "alice" / "album" / "ramp.wav", ramp, SR, subtype="FLOAT")
    sf.write(root / "alice" / "stereo.wav", _tone(2.0, 44100, channels=2), 44100)
    _write_tagged(root / "bob" / "tagged.flac", _tone(2.5, 22050, 330), 22050, "FLAC", artist="Bob Tag", genre="rock")
    _write_tagged(root / "bob" / "song.ogg", _tone(2.0, 48000, 550), 48000, "OGG")
    _write_tagged(root / "loose.opus", _tone(1.5, 48000, 660), 48000, "OGG", "OPUS")
    _write_tagged(root / "misc" / "clip.mp3", _tone(2.0, 32000, 220), 32000, "MP3")
    (root / "misc" / "clip.txt").write_text("la la la\n", encoding="utf-8")  # sidecar lyrics
    (root / "misc" / "short.wav").write_bytes(b"")  # empty
    (root / "misc" / "broken.flac").write_bytes(b"fLaC\x00\x00\x00\x22" + bytes(range(256)) * 4)  # corrupt
    sf.write(root / "misc" / "tiny.wav", _tone(0.2, SR), SR)  # shorter than --min-seconds 0.5
    (root / "notes.md").write_text("not audio")
    sf.write(root / ".hidden" / "x.wav", _tone(1.0, SR), SR)
    (root / "metadata.csv").write_text(
        "file,artist,genre,lyrics\n"
        'alice/album/ramp.wav,Alice,jazz,"hello world, this is a song"\n'
        "alice/stereo.wav,Alice,,\n"
        "missing.wav,Nobody,pop,\n",
        encoding="utf-8",
    )
    return root


def _by_path(m: Manifest) -> dict:
    return {t.path: t for t in m.tracks}


def test_scan_labels_and_skips(corpus: Path) -> None:
    m = scan_corpus(corpus, sample_rate=SR, min_seconds=0.5)
    t = _by_path(m)
    assert sorted(t) == ["alice/album/ramp.wav", "alice/stereo.wav", "bob/song.ogg", "bob/tagged.flac",
                         "loose.opus", "misc/clip.mp3"]
    assert (t["alice/album/ramp.wav"].artist, t["alice/album/ramp.wav"].genre) == ("Alice", "jazz")
    assert t["alice/album/ramp.wav"].lyrics == "hello world, this is a song"
    assert t["alice/album/ramp.wav"].label_source == "metadata"
    assert (t["alice/stereo.wav"].artist, t["alice/stereo.wav"].genre) == ("Alice", "unknown")
    assert t["alice/stereo.wav"].channels == 2 and t["alice/stereo.wav"].sample_rate == 44100
    assert (t["bob/tagged.flac"].artist, t["bob/tagged.flac"].genre) == ("Bob Tag", "rock")
    assert t["bob/tagged.flac"].label_source == "tags"
    assert (t["bob/song.ogg"].artist, t["bob/song.ogg"].genre) == ("bob", "unknown")  # folder name
    assert (t["loose.opus"].artist, t["loose.opus"].genre) == ("unknown", "unknown")
    assert t["misc/clip.mp3"].lyrics == "la la la"
    assert abs(t["bob/tagged.flac"].duration - 2.5) < 1e-6
    assert abs(t["misc/clip.mp3"].duration - 2.0) < 0.1
    skipped = {s.path: s.reason for s in m.skipped}
    assert set(skipped) == {"misc/short.wav", "misc/broken.flac", "misc/tiny.wav", "missing.wav"}
    assert "empty" in skipped["misc/short.wav"]
    assert "not a readable audio file" in skipped["misc/broken.flac"]
    assert "too short" in skipped["misc/tiny.wav"]
    assert "metadata.csv" in skipped["missing.wav"]
    assert all("\n" not in r for r in skipped.values())


def test_tags_without_mutagen(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mutagen", None)  # import fails: libsndfile's tags are used
    t = _by_path(scan_corpus(corpus, min_seconds=0.5))
    assert (t["bob/tagged.flac"].artist, t["bob/tagged.flac"].genre) == ("Bob Tag", "rock")


def test_folder_as_genre_and_jsonl(corpus: Path) -> None:
    (corpus / "metadata.csv").unlink()
    (corpus / "metadata.jsonl").write_text(
        json.dumps({"file": "loose.opus", "artist": "Opus Person", "lyrics": "oh", "split": "validation"}) + "\n"
    )
    m = scan_corpus(corpus, folder_as="genre", min_seconds=0.5)
    t = _by_path(m)
    assert t["bob/song.ogg"].genre == "bob" and t["bob/song.ogg"].artist == "unknown"
    assert t["loose.opus"].artist == "Opus Person" and t["loose.opus"].split == "validation"
    assert t["alice/album/ramp.wav"].genre == "alice"
    s = split_manifest(m, val_fraction=0.0)
    assert _by_path(s)["loose.opus"].split == "validation"  # a split given in the metadata is kept


def test_bad_metadata(tmp_path: Path) -> None:
    (tmp_path / "metadata.csv").write_text("name,artist\nx.wav,A\n")
    with pytest.raises(JukeboxError, match="'file' column"):
        read_metadata(tmp_path)
    (tmp_path / "metadata.csv").write_text("file,split\nx.wav,test\n")
    with pytest.raises(JukeboxError, match="split must be"):
        read_metadata(tmp_path)
    (tmp_path / "metadata.csv").write_text("file\n../x.wav\n")
    with pytest.raises(JukeboxError, match="inside"):
        read_metadata(tmp_path)
    with pytest.raises(JukeboxError, match="no such folder"):
        scan_corpus(tmp_path / "nope")


def test_report(corpus: Path) -> None:
    m = split_manifest(scan_corpus(corpus, sample_rate=SR, min_seconds=0.5), val_fraction=0.34, seed=1)
    r = corpus_report(m)
    assert r["files"] == 10 and r["tracks"] == 6 and len(r["skipped"]) == 4
    assert abs(r["hours"] * 3600 - (3.0 + 2.0 + 2.5 + 2.0 + 1.5 + 2.0)) < 0.2
    assert r["sample_rates"] == {"16000": 1, "22050": 1, "32000": 1, "44100": 1, "48000": 2}
    assert r["artists"]["Alice"] == 2 and r["genres"]["unknown"] == 4
    assert r["splits"]["validation"]["tracks"] == 2 and r["splits"]["train"]["tracks"] == 4
    assert r["folders"]["alice"]["tracks"] == 2
    text = format_report(r)
    assert "6 tracks of 10 files" in text and "misc/broken.flac" in text
    json.dumps(r)


def test_split_deterministic(corpus: Path) -> None:
    m = scan_corpus(corpus, min_seconds=0.5)
    a = split_manifest(m, 0.34, seed=3)
    b = split_manifest(Manifest(m.root, list(reversed(m.tracks))), 0.34, seed=3)
    val = {t.path for t in a.split("validation")}
    assert val == {t.path for t in b.split("validation")} and len(val) == 2
    assert {t.path for t in a.split("train")} | val == {t.path for t in m.tracks}
    assert len(split_manifest(m, 0.01).split("validation")) == 1  # at least one held out
    assert not split_manifest(m, 0.0).split("validation")
    seeds = {frozenset(t.path for t in split_manifest(m, 0.34, seed=s).split("validation")) for s in range(8)}
    assert len(seeds) > 1
    with pytest.raises(JukeboxError):
        split_manifest(m, 1.0)


def test_manifest_round_trip(corpus: Path, tmp_path: Path) -> None:
    m = split_manifest(scan_corpus(corpus, sample_rate=SR, min_seconds=0.5))
    path = m.save(tmp_path / "m.json")
    assert Manifest.load(path) == m
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(JukeboxError, match="not a jukebox manifest"):
        Manifest.load(tmp_path / "bad.json")


def test_window_sampler(corpus: Path) -> None:
    m = scan_corpus(corpus, sample_rate=SR, min_seconds=0.5)
    window = SR  # 1 s
    s = WindowSampler(m, SR, window, split=None, seed=0)
    assert s.dropped == 0 and len(s.tracks) == 6
    lengths = {t.path: t.length(SR) for t in m.tracks}
    seen = set()
    for w in (s.sample() for _ in range(40)):
        assert w.audio.shape == (1, window) and w.audio.dtype == np.float32
        assert w.total_length_samples == lengths[w.path]
        assert 0 <= w.offset_samples <= w.total_length_samples - window
        track = _by_path(m)[w.path]
        assert (w.artist, w.genre, w.lyrics) == (track.artist, track.genre, track.lyrics)
        assert np.abs(w.audio).max() <= 1.0
        seen.add(w.path)
    assert len(seen) >= 4
    # exact contents where no resampling happens: the ramp's samples at the offset
    ramp = _by_path(m)["alice/album/ramp.wav"]
    assert ramp.length(SR) == 3 * SR
    w = s.window_at(ramp, 12345)
    np.testing.assert_allclose(w.audio[0], (np.arange(12345, 12345 + window) / (3.0 * SR)), atol=1e-6)
    # resampled: the window of a 44.1 kHz tone is the same tone at 16 kHz
    stereo = _by_path(m)["alice/stereo.wav"]
    w = s.window_at(stereo, stereo.length(SR) - window)
    spec = np.abs(np.fft.rfft(w.audio[0]))
    assert abs(np.argmax(spec) * SR / window - 440) <= 1
    # every start is reachable: locate covers the last start of the last track
    last, off = s.locate(len(s) - 1)
    assert off == last.length(SR) - window
    batch = windows_to_batch(s.batch(3))
    assert batch["audio"].shape == (3, 1, window) and batch["offset_samples"].shape == (3,)
    # same seed, same windows
    a, b = WindowSampler(m, SR, window, split=None, seed=5), WindowSampler(m, SR, window, split=None, seed=5)
    assert [x.offset_samples for x in a.batch(5)] == [x.offset_samples for x in b.batch(5)]


def test_window_sampler_short_tracks(corpus: Path) -> None:
    m = split_manifest(scan_corpus(corpus, sample_rate=SR, min_seconds=0.5), val_fraction=0.0)
    s = WindowSampler(m, SR, int(2.2 * SR))
    assert s.dropped == 4 and {t.path for t in s.tracks} == {"alice/album/ramp.wav", "bob/tagged.flac"}
    p = WindowSampler(m, SR, int(2.2 * SR), pad_short=True)
    w = p.window_at(_by_path(m)["loose.opus"], 0)
    assert w.audio.shape == (1, int(2.2 * SR)) and np.all(w.audio[0, int(1.6 * SR):] == 0)
    with pytest.raises(JukeboxError, match="no track"):
        WindowSampler(m, SR, 10 * SR)


def _run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    import jukebox.cli.main as cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", tuple(dict.fromkeys((*cli.COMMAND_MODULES, "prepare"))))
    return cli.main(argv)


def test_cli_prepare(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "manifest.json"
    rc = _run_cli(["prepare", "--data", str(corpus), "--sample-rate", str(SR), "--min-seconds", "0.5",
                   "-o", str(out)], monkeypatch)
    text = capsys.readouterr().out
    assert rc == 0 and "6 tracks of 10 files" in text and "misc/broken.flac" in text and f"wrote {out}" in text
    m = Manifest.load(out)
    assert len(m.tracks) == 6 and m.sample_rate == SR and all(t.split in ("train", "validation") for t in m.tracks)

    rc = _run_cli(["prepare", "--data", str(corpus), "-o", str(out)], monkeypatch)
    err = capsys.readouterr().err
    assert rc == 1 and "already exists" in err and "Traceback" not in err

    rc = _run_cli(["prepare", "--data", str(corpus), "--json", "--val-fraction", "0.5", "--min-seconds", "0.5"],
                  monkeypatch)
    r = json.loads(capsys.readouterr().out)
    assert rc == 0 and r["tracks"] == 6 and r["splits"]["validation"]["tracks"] == 3 and "manifest" not in r

    rc = _run_cli(["prepare", "--data", str(corpus), "--strict"], monkeypatch)
    assert rc == 1 and "cannot be used" in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    rc = _run_cli(["prepare", "--data", str(empty)], monkeypatch)
    assert rc == 1 and "no readable audio" in capsys.readouterr().err

    try:  # a usage error exits (or returns) with 2 and one line
        rc = _run_cli(["prepare", "--data", str(corpus), "--val-fraction", "1.5"], monkeypatch)
    except SystemExit as e:
        rc = e.code
    assert rc == 2 and "--val-fraction" in capsys.readouterr().err
