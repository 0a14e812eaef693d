"""Bad input as a new user would give it: each case ends in a one-line error (exit 2 usage, 1 failure), never a
traceback, and nothing the user had is overwritten or lost. See docs/reliability.md for the table of cases."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from jukebox.api import load_model
from jukebox.checkpoint.model_dir import ModelDir
from jukebox.cli.main import main
from jukebox.config import vqvae_preset
from jukebox.errors import JukeboxError, UsageError
from jukebox.testing import make_tiny_model_dir

SECONDS = ["--seconds", "0.05", "--quiet"]
SR = 44100  # the tiny model's rate


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel")
    model = make_tiny_model_dir(root / "tiny").path
    lyric = make_tiny_model_dir(root / "lyrics", lyrics="encoder_decoder").path
    rng = np.random.default_rng(0)
    files = {
        "wav": (rng.standard_normal(SR // 2) * 0.1).astype("f4"),
    }
    sf.write(root / "ok.wav", files["wav"], SR)
    (root / "empty.wav").write_bytes(b"")
    (root / "truncated.wav").write_bytes((root / "ok.wav").read_bytes()[:30])
    (root / "text.wav").write_text("this is not audio at all\n" * 10)
    sf.write(root / "8k.wav", (rng.standard_normal(800) * 0.1).astype("f4"), 8000)
    sf.write(root / "192k.wav", (rng.standard_normal(19200) * 0.1).astype("f4"), 192000)
    sf.write(root / "6ch.wav", (rng.standard_normal((4410, 6)) * 0.1).astype("f4"), SR)
    sf.write(root / "silent.wav", np.zeros(4410, "f4"), SR)
    assert main(["sample", "-m", str(model), "-o", str(root / "run"), "--seed", "1", *SECONDS]) == 0
    return {"root": root, "model": model, "lyric": lyric, "codes": root / "run" / "codes.npz"}


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


def _one_line(err: str, rc: int, expect_rc: int, *words: str) -> None:
    assert rc == expect_rc, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "unexpected" not in err, err
    for w in words:
        assert w in err, err


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ audio inputs

@pytest.mark.parametrize("name,words", [
    ("missing.wav", ["no such file"]), ("empty.wav", ["empty"]), ("truncated.wav", ["not a readable audio file"]),
    ("text.wav", ["not a readable audio file"]), (".", ["folder"]),
])
def test_bad_audio_files_one_line(capsys, work, name, words):
    src = work["root"] / name
    rc, err = _run(capsys, ["encode", "-m", str(work["model"]), str(src), "-o", str(work["root"] / "x.npz"),
                            "--force"])
    _one_line(err, rc, 1, *words)
    rc, err = _run(capsys, ["sample", "-m", str(work["model"]), "--prompt", str(src), "-o",
                            str(work["root"] / f"p_{name}"), "--seconds", "1", "--quiet"])
    _one_line(err, rc, 1, *words)


@pytest.mark.parametrize("name", ["8k.wav", "192k.wav", "6ch.wav", "silent.wav"])
def test_odd_rates_channels_and_silence_are_resampled_and_mixed(capsys, work, name):
    out = work["root"] / f"enc_{name}.npz"
    rc, err = _run(capsys, ["encode", "-m", str(work["model"]), str(work["root"] / name), "-o", str(out), "--force"])
    assert rc == 0, err
    with np.load(out) as f:
        assert f["level_2"].ndim == 1 and f["level_2"].size > 0


def test_huge_audio_file_is_refused_without_decoding(tmp_path):
    from jukebox.audio import load_audio

    path = tmp_path / "huge.wav"
    with sf.SoundFile(path, "w", samplerate=8000, channels=1, subtype="PCM_16") as f:
        f.write(np.zeros(8000, "int16"))
    data = bytearray(path.read_bytes())
    n = 8000 * 3600 * 5 * 2  # header claims 5 hours of 16-bit samples; the file holds one second
    data[40:44] = n.to_bytes(4, "little")
    data[4:8] = (n + 36).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    try:
        x, _ = load_audio(path)  # libsndfile may trust the real size: then it is one short second
        assert x.shape[0] <= 8000
    except JukeboxError as e:
        assert "hour" in str(e) or "readable" in str(e)


def test_prompt_longer_than_song(capsys, work):
    rc, err = _run(capsys, ["sample", "-m", str(work["model"]), "--prompt", str(work["root"] / "ok.wav"),
                            "-o", str(work["root"] / "pl"), *SECONDS])
    _one_line(err, rc, 2, "not shorter than the song")


# ------------------------------------------------------------------------------------------------ lengths & numbers

@pytest.mark.parametrize("args,words", [
    (["--seconds", "0"], ["positive"]), (["--seconds", "-1"], ["positive"]), (["--seconds", "nan"], ["positive"]),
    (["--seconds", "inf"], ["positive"]), (["--seconds", "1e9"], ["beyond this model's range"]),
    (["--seconds", "1e-9"], ["shorter than one top-level token"]),
    (["--seconds", "0.05", "--total-seconds", "0.01"], ["must be at least"]),
    (["--seconds", "0.05", "--total-seconds", "1e30"], ["beyond this model's range"]),
    (["--seconds", "0.05", "--n-samples", "0"], [">= 1"]),
    (["--seconds", "0.05", "--temperature", "-1"], ["temperature"]),
    (["--seconds", "0.05", "--top-p", "2"], ["top_p"]), (["--seconds", "0.05", "--top-k", "-1"], ["top_k"]),
    (["--seconds", "0.05", "--hop-fraction", "0"], ["hop_fraction"]),
    (["--seconds", "0.05", "--levels", "9"], ["no prior for level"]),
    (["--seconds", "0.05", "--seed", str(2**70)], ["seed"]),
    (["--seconds", "0.05", "--prompt-seconds", "-1", "--prompt", "ok.wav"], ["prompt_seconds"]),
])
def test_bad_lengths_and_settings_are_usage_errors(capsys, work, args, words):
    args = [str(work["root"] / a) if a == "ok.wav" else a for a in args]
    out = work["root"] / f"len_{abs(hash(tuple(args)))}"
    rc, err = _run(capsys, ["sample", "-m", str(work["model"]), "-o", str(out), "--quiet", *args])
    _one_line(err, rc, 2, *words)


def test_api_rejects_bad_lengths(work):
    model = load_model(work["model"], device="cpu")
    assert model.max_seconds == 20.0  # the tiny top prior's timing range
    for bad in (0, -1, float("nan"), float("inf"), 1e9):
        with pytest.raises(UsageError):
            model.generate(seconds=bad, levels=[2])
    with pytest.raises(UsageError):
        model.generate(seconds=0.05, total_seconds=1e30, levels=[2])


# ------------------------------------------------------------------------------------------------ labels & lyrics

def test_unknown_artist_and_genre_warn_in_one_line(capsys, work):
    rc, err = _run(capsys, ["sample", "-m", str(work["model"]), "--artist", "Nobody Known", "--genre", "zzz",
                            "-o", str(work["root"] / "unk"), *SECONDS])
    assert rc == 0
    lines = err.splitlines()
    assert len(lines) == 2 and all(ln.startswith("warning: ") for ln in lines), err
    assert "Nobody Known" in lines[0] and "zzz" in lines[1]


LYRICS = ["🎵🎶 love 💖", "我爱你 日本語の歌詞 사랑", "שלום עולם مرحبا", "a\x01\x02\x1b[31mred\x7f", "la\x00la", "",
          "la " * 5000, "\u202eRTL override\u200b\ufeff"]


def test_any_unicode_lyrics(capsys, work):
    """Emoji, CJK, RTL, control characters, NUL, empty and very long lyrics, one item each in a --batch file."""
    batch = work["root"] / "lyrics.jsonl"
    batch.write_text("".join(json.dumps({"artist": "Bob Demo", "lyrics": ly}) + "\n" for ly in LYRICS),
                     encoding="utf-8")
    out = work["root"] / "lyr"
    rc, err = _run(capsys, ["sample", "-m", str(work["lyric"]), "--batch", str(batch), "--levels", "2", "-o",
                            str(out), *SECONDS])
    assert rc == 0, err
    meta = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
    assert [it["lyrics"] for it in meta["request"]["items"]] == LYRICS
    align = json.loads((out / "alignment.json").read_text(encoding="utf-8"))
    assert len(align["items"]) == len(LYRICS)
    model = load_model(work["lyric"], device="cpu")
    gen = model.generate(lyrics=LYRICS[4] + LYRICS[0], seconds=0.05, levels=[2], seed=0)
    assert torch.isfinite(torch.as_tensor(gen.audio)).all()


def test_undecodable_lyrics_bytes_are_a_usage_error(capsys, work, tmp_path):
    rc, err = _run(capsys, ["sample", "-m", str(work["lyric"]), "--lyrics", "a\udcff b", "-o", str(tmp_path / "o"),
                            *SECONDS])  # what Python makes of non-UTF-8 bytes on the command line
    _one_line(err, rc, 2, "not valid Unicode")
    bad = tmp_path / "lyrics.txt"
    bad.write_bytes(b"\xff\xfe\x00bad")
    rc, err = _run(capsys, ["sample", "-m", str(work["lyric"]), "--lyrics-file", str(bad), "-o",
                            str(tmp_path / "o2"), *SECONDS])
    _one_line(err, rc, 2, "UTF-8")


# ------------------------------------------------------------------------------------------------ model directories

def _variant(work, tmp_path, **changes) -> Path:
    """A copy of the tiny model whose VQ-VAE differs; the priors are the original ones."""
    import dataclasses

    from jukebox.vqvae import VQVAE

    other = make_tiny_model_dir(tmp_path / "other").path
    ModelDir(other).save_vqvae(VQVAE(dataclasses.replace(vqvae_preset("tiny"), **changes)).eval())
    mixed = tmp_path / "mixed"
    shutil.copytree(other, mixed)
    shutil.rmtree(mixed / "prior_level_2")
    shutil.copytree(work["model"] / "prior_level_2", mixed / "prior_level_2")
    return mixed


@pytest.mark.parametrize("changes,words", [(dict(l_bins=32), ["another VQ-VAE"]),
                                            (dict(downs_t=(2, 2, 2)), ["another VQ-VAE"])])
def test_prior_from_another_vqvae(capsys, work, tmp_path, changes, words):
    mixed = _variant(work, tmp_path, **changes)
    before = _digest(mixed)
    rc, err = _run(capsys, ["sample", "-m", str(mixed), "-o", str(tmp_path / "o"), "--levels", "2", *SECONDS])
    _one_line(err, rc, 1, *words)
    rc, err = _run(capsys, ["decode", "-m", str(mixed), str(work["codes"]), "-o", str(tmp_path / "d.wav")])
    assert rc in (0, 1) and len(err.splitlines()) <= 1 and "unexpected" not in err, err
    assert _digest(mixed) == before


def _trunc(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _garbage(p: Path) -> None:
    p.write_bytes(bytes(range(256)) * 3)


def _json_edit(fn):
    def edit(p: Path) -> None:
        p.write_text(json.dumps(fn(json.loads(p.read_text()))))
    return edit


CORRUPTIONS = {
    "truncated": _trunc, "garbage": _garbage, "empty": lambda p: p.write_bytes(b""), "missing": lambda p: p.unlink(),
}


@pytest.mark.parametrize("rel", ["vqvae/model.safetensors", "prior_level_2/model.safetensors",
                                 "prior_level_1/model.safetensors", "vqvae/config.json", "prior_level_2/config.json",
                                 "prior_level_2/labels.json", "model.json"])
@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_corrupt_model_files(capsys, work, tmp_path, rel, how):
    model = shutil.copytree(work["model"], tmp_path / "m")
    CORRUPTIONS[how](model / rel)
    before = _digest(model)
    rc, err = _run(capsys, ["sample", "-m", str(model), "-o", str(tmp_path / "o"), *SECONDS])
    _one_line(err, rc, 1)
    assert _digest(model) == before


@pytest.mark.parametrize("rel,edit,words", [
    ("prior_level_2/config.json", lambda o: {**o, "bogus": 1}, ["unknown PriorConfig keys"]),
    ("prior_level_2/config.json", lambda o: [1, 2], ["expected a JSON object"]),
    ("prior_level_2/config.json", lambda o: {**o, "n_ctx": "big"}, ["expected int"]),
    ("prior_level_2/config.json", lambda o: {**o, "n_ctx": -4}, ["invalid n_ctx"]),
    ("prior_level_2/config.json", lambda o: {**o, "n_ctx": True}, ["expected int"]),
    ("vqvae/config.json", lambda o: {**o, "sample_rate": 0}, ["invalid sample_rate"]),
    ("vqvae/config.json", lambda o: {**o, "downs_t": 3}, ["expected list"]),
    ("prior_level_2/labels.json", lambda o: [1], ["expected a JSON object"]),
    ("prior_level_2/labels.json", lambda o: {k: 5 for k in o}, ["labels"]),
    ("model.json", lambda o: [1], ["not a jukebox model"]),
])
def test_edited_model_json(capsys, work, tmp_path, rel, edit, words):
    model = shutil.copytree(work["model"], tmp_path / "m")
    _json_edit(edit)(model / rel)
    rc, err = _run(capsys, ["sample", "-m", str(model), "-o", str(tmp_path / "o"), *SECONDS])
    _one_line(err, rc, 1, *words)


# ------------------------------------------------------------------------------------------------ code files

def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("kind,expect_rc", [
    ("empty", 1), ("garbage", 1), ("truncated", 1), ("float", 1), ("out_of_range", 1), ("negative", 1),
    ("3d", 1), ("no_levels", 1), ("zero_length", 1), ("object", 1), ("unknown_level", 2), ("batch_mismatch", 2),
    ("too_long", 2),
])
def test_bad_code_files(capsys, work, tmp_path, kind, expect_rc):
    p = tmp_path / "codes.npz"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "garbage":
        _garbage(p)
    elif kind == "truncated":
        p.write_bytes(work["codes"].read_bytes()[:100])
    else:
        arrays = {"float": dict(level_2=np.zeros((1, 17), "f4")), "out_of_range": dict(level_2=np.full((1, 17), 999)),
                  "negative": dict(level_2=np.full((1, 17), -1)), "3d": dict(level_2=np.zeros((1, 1, 17), int)),
                  "no_levels": dict(foo=np.zeros(3)), "zero_length": dict(level_2=np.zeros((1, 0), int)),
                  "object": dict(level_2=np.array([{"a": 1}], dtype=object)),
                  "unknown_level": dict(level_2=np.zeros((1, 17), int), level_9=np.zeros((1, 17), int)),
                  "batch_mismatch": dict(level_2=np.zeros((2, 17), int), level_1=np.zeros((1, 68), int)),
                  "too_long": dict(level_2=np.zeros((1, 100000), int))}[kind]
        _npz(p, **arrays)
    before = p.read_bytes()
    argv = {"continue": ["sample", "-m", str(work["model"]), "--mode", "continue", "--codes", str(p), "-o",
                         str(tmp_path / "c"), "--seconds", "0.1", "--quiet"],
            "upsample": ["sample", "-m", str(work["model"]), "--mode", "upsample", "--codes", str(p), "-o",
                         str(tmp_path / "u"), "--quiet"]}
    for mode, args in argv.items():
        rc, err = _run(capsys, args)
        if kind == "unknown_level" and mode == "upsample":
            assert rc == 0 or len(err.splitlines()) == 1
            continue
        if kind == "too_long" and mode == "upsample":
            _one_line(err, rc, 2, "range")
            continue
        _one_line(err, rc, expect_rc)
    assert p.read_bytes() == before


# ------------------------------------------------------------------------------------------------ outputs

def test_existing_outputs_are_never_overwritten(capsys, work, tmp_path):
    keep = tmp_path / "mine.wav"
    keep.write_bytes(b"my precious recording")
    rc, err = _run(capsys, ["reconstruct", "-m", str(work["model"]), "--level", "0", str(work["root"] / "ok.wav"),
                            "-o", str(keep)])
    _one_line(err, rc, 1, "already exists", "--force")
    rc, err = _run(capsys, ["decode", "-m", str(work["model"]), str(work["codes"]), "-o", str(keep)])
    _one_line(err, rc, 1, "already exists")
    assert keep.read_bytes() == b"my precious recording"
    before = _digest(work["root"] / "run")
    rc, err = _run(capsys, ["sample", "-m", str(work["model"]), "-o", str(work["root"] / "run"), *SECONDS])
    _one_line(err, rc, 1, "already exists")
    assert _digest(work["root"] / "run") == before


def _full_disk(monkeypatch):
    """Every atomic write fails as on a full disk (at the fsync before the rename)."""
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", fsync)


def test_full_disk_keeps_old_files_and_leaves_no_temporaries(capsys, work, tmp_path, monkeypatch):
    keep = tmp_path / "out.wav"
    keep.write_bytes(b"previous result")
    codes = tmp_path / "codes.npz"
    codes.write_bytes(b"previous codes")
    _full_disk(monkeypatch)
    rc, err = _run(capsys, ["decode", "-m", str(work["model"]), str(work["codes"]), "-o", str(keep), "--force"])
    _one_line(err, rc, 1, "No space left")
    rc, err = _run(capsys, ["encode", "-m", str(work["model"]), str(work["root"] / "ok.wav"), "-o", str(codes),
                            "--force"])
    _one_line(err, rc, 1, "No space left")
    rc, err = _run(capsys, ["sample", "-m", str(work["model"]), "-o", str(tmp_path / "run"), *SECONDS])
    _one_line(err, rc, 1, "No space left")
    assert keep.read_bytes() == b"previous result" and codes.read_bytes() == b"previous codes"
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_full_disk_in_the_audio_encoder(capsys, work, tmp_path, monkeypatch):
    """libsndfile reports a full disk as a RuntimeError ("System error."), not an OSError."""
    keep = tmp_path / "out.wav"
    keep.write_bytes(b"previous result")

    def write(*a, **k):
        raise sf.LibsndfileError(2, "System error.")
    monkeypatch.setattr(sf, "write", write)
    rc, err = _run(capsys, ["decode", "-m", str(work["model"]), str(work["codes"]), "-o", str(keep), "--force"])
    _one_line(err, rc, 1, "disk full")
    assert keep.read_bytes() == b"previous result"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_full_disk_during_a_training_checkpoint_keeps_the_last_one(tmp_path, monkeypatch):
    from jukebox.train.config import TrainConfig
    from jukebox.train.state import CheckpointState, load_checkpoint, save_checkpoint

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    state = CheckpointState(step=1, config=TrainConfig(), model=model.state_dict(), optimizer=opt.state_dict())
    folder = tmp_path / "checkpoint"
    save_checkpoint(folder, state)
    before = _digest(folder)
    _full_disk(monkeypatch)
    state.step = 2
    with pytest.raises((OSError, JukeboxError), match="No space left"):
        save_checkpoint(folder, state)
    monkeypatch.undo()
    assert _digest(folder) == before and load_checkpoint(folder).step == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
