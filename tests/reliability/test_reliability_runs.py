"""Outputs claimed atomically and runs that always resume: two runs into one output never both succeed, a file
that appears while a command works is kept (no --force), --force into a larger earlier run lists only this run's
files, and an interrupted run resumes from any working directory, also after its last level was saved."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from cli_checks import one_line, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jukebox.audio
import jukebox.codec
from jukebox.atomic import OutputExistsError, atomic_write_bytes
from jukebox.errors import JukeboxError
from jukebox.runs import LOCK_FILE, RunFolder
from jukebox.testing import make_tiny_model_dir

SECONDS = ["--seconds", "0.05", "--quiet"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    model = make_tiny_model_dir(root / "tiny").path
    sf.write(root / "ok.wav", (np.random.default_rng(0).standard_normal(22050) * 0.1).astype("f4"), 44100)
    return {"root": root, "model": model}


def _no_temporaries(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------------ claiming outputs

def test_publishing_without_replace_keeps_what_is_there(tmp_path):
    out = tmp_path / "x.bin"
    atomic_write_bytes(out, b"first", replace=False)
    assert out.read_bytes() == b"first"
    with pytest.raises(OutputExistsError, match="x.bin appeared while this command ran"):
        atomic_write_bytes(out, b"second", replace=False)
    assert out.read_bytes() == b"first"
    atomic_write_bytes(out, b"third")  # replace (--force)
    assert out.read_bytes() == b"third"
    _no_temporaries(tmp_path)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(old=st.one_of(st.none(), st.binary(max_size=64)), new=st.binary(max_size=64), links=st.booleans())
def test_publishing_never_loses_a_file(tmp_path, monkeypatch, old, new, links):
    """Whatever is at the path (nothing, or any bytes), a publish without replace leaves it as it was or, where
    nothing was there, writes the new bytes; on file systems without hard links too (an O_EXCL claim instead)."""
    with monkeypatch.context() as m:
        if not links:
            def no_link(src, dst):
                raise OSError(errno.EPERM, "Operation not permitted")

            m.setattr(os, "link", no_link)
        folder = Path(os.path.join(tmp_path, f"d{len(os.listdir(tmp_path))}"))
        folder.mkdir()
        out = folder / "f"
        if old is not None:
            out.write_bytes(old)
        try:
            atomic_write_bytes(out, new, replace=False)
            assert old is None
        except OutputExistsError:
            assert old is not None
        assert out.read_bytes() == (new if old is None else old)
        assert os.listdir(folder) == ["f"]


def test_a_file_that_appears_during_encode_is_kept(capsys, work, monkeypatch, tmp_path):
    """Before: encode replaced a file another program wrote while it ran, and said 'wrote'."""
    out = tmp_path / "codes.npz"
    real = jukebox.codec.encode_audio

    def encode_while_another_program_writes(*args, **kwargs):
        out.write_bytes(b"another program's file")
        return real(*args, **kwargs)

    monkeypatch.setattr(jukebox.codec, "encode_audio", encode_while_another_program_writes)
    rc, err = run_cli(capsys, ["encode", "-m", str(work["model"]), str(work["root"] / "ok.wav"), "-o", str(out)])
    one_line(err, rc, 1, "codes.npz appeared while this command ran", "--force")
    assert out.read_bytes() == b"another program's file"
    _no_temporaries(tmp_path)
    rc, err = run_cli(capsys, ["encode", "-m", str(work["model"]), str(work["root"] / "ok.wav"), "-o", str(out),
                               "--force"])
    assert rc == 0, err
    assert out.read_bytes()[:2] == b"PK"


def test_a_file_that_appears_during_decode_is_kept(capsys, work, monkeypatch, tmp_path):
    codes = tmp_path / "c.npz"
    assert run_cli(capsys, ["encode", "-m", str(work["model"]), str(work["root"] / "ok.wav"), "-o", str(codes)])[0] == 0
    out = tmp_path / "x.wav"
    real = jukebox.codec.decode_codes

    def decode_while_another_program_writes(*args, **kwargs):
        out.write_bytes(b"mine")
        return real(*args, **kwargs)

    monkeypatch.setattr(jukebox.codec, "decode_codes", decode_while_another_program_writes)
    rc, err = run_cli(capsys, ["decode", "-m", str(work["model"]), str(codes), "-o", str(out)])
    one_line(err, rc, 1, "x.wav", "--force")  # "appeared while this command ran" or "already exists"
    assert out.read_bytes() == b"mine"
    _no_temporaries(tmp_path)


def test_a_second_run_into_a_folder_in_use_fails(capsys, work, tmp_path):
    """Before: two runs into the same new folder both printed 'wrote' and exited 0; one result was lost."""
    out = tmp_path / "run"
    other = RunFolder(out)
    other.claim()  # another run holds it (as it would from its own process)
    assert out.is_dir()
    for extra in ([], ["--force"], ["--resume"]):
        rc, err = run_cli(capsys, ["sample", "-m", str(work["model"]), "-o", str(out), *SECONDS, *extra])
        assert rc == 1, err
        assert len(err.splitlines()) == 1 and "unexpected" not in err, err
        assert ("another jukebox run is writing into this folder" in err or "nothing to resume" in err
                or "already exists" in err), err
    assert out.is_dir()  # the failed runs took nothing away from the one that holds it
    with pytest.raises(JukeboxError, match="another jukebox run"):
        RunFolder(out).claim(force=True)
    other.release()
    assert not (out / LOCK_FILE).exists()
    rc, err = run_cli(capsys, ["sample", "-m", str(work["model"]), "-o", str(out), *SECONDS, "--seed", "1"])
    assert rc == 0, err
    assert sorted(os.listdir(out)) == ["codes.npz", "item_0.wav", "metadata.json"]


def test_two_claims_of_one_new_folder(tmp_path):
    a, b = RunFolder(tmp_path / "new"), RunFolder(tmp_path / "new")
    a.claim()
    with pytest.raises(JukeboxError, match="another jukebox run"):
        b.claim()
    a.abandon()  # nothing was saved: the folder it created goes
    assert not (tmp_path / "new").exists()
    b.claim()
    b.release()


def test_force_into_a_larger_earlier_run_lists_only_this_runs_outputs(capsys, work, tmp_path):
    out = tmp_path / "run"
    assert run_cli(capsys, ["sample", "-m", str(work["model"]), "-o", str(out), *SECONDS, "--n-samples", "3"])[0] == 0
    rc, err = run_cli(capsys, ["sample", "-m", str(work["model"]), "-o", str(out), *SECONDS, "--force"])
    assert rc == 0, err
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["outputs"] == ["codes.npz", "item_0.wav", "metadata.json"]


# ------------------------------------------------------------------------------------------------ resume

def _interrupt_while_writing(monkeypatch):
    """Make the next run stop with Ctrl+C while it writes its first wav, after every level's codes were saved."""
    real = jukebox.audio.save_audio
    state = {"hit": False}

    def save_then_stop(*args, **kwargs):
        if not state["hit"]:
            state["hit"] = True
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(jukebox.audio, "save_audio", save_then_stop)
    return lambda: monkeypatch.setattr(jukebox.audio, "save_audio", real)


@pytest.mark.parametrize("levels", [[], ["--levels", "2"]], ids=["all-levels", "draft"])
def test_resume_after_the_last_level_was_saved_only_decodes(capsys, work, monkeypatch, tmp_path, levels):
    """Before: `the prompt is not shorter than the song` for ever (about 14 s of a 3-minute song's run)."""
    ref = tmp_path / "ref"
    assert run_cli(capsys, ["sample", "-m", str(work["model"]), "-o", str(ref), *SECONDS, "--seed", "5",
                            *levels])[0] == 0
    out = tmp_path / "run"
    restore = _interrupt_while_writing(monkeypatch)
    rc, err = run_cli(capsys, ["sample", "-m", str(work["model"]), "-o", str(out), *SECONDS, "--seed", "5", *levels])
    restore()
    assert rc == 130, err
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["status"] == "running" and sorted(meta["levels_done"]) == ([2] if levels else [0, 1, 2])
    monkeypatch.chdir(tmp_path.parent)  # another working directory
    rc, err = run_cli(capsys, ["sample", "-o", str(out), "--resume", "--quiet"])
    assert rc == 0, err
    for name in ("codes.npz", "item_0.wav"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert json.loads((out / "metadata.json").read_text())["status"] == "done"


def test_paths_are_stored_absolute_and_resume_from_elsewhere(capsys, work, monkeypatch, tmp_path):
    """Before: paths were stored as typed, so --resume from another folder could not find the model or prompt."""
    shutil.copytree(work["model"], tmp_path / "m")
    shutil.copy(work["root"] / "ok.wav", tmp_path / "p.wav")
    monkeypatch.chdir(tmp_path)
    restore = _interrupt_while_writing(monkeypatch)
    rc, err = run_cli(capsys, ["sample", "-m", "m", "--prompt", "p.wav", "--prompt-seconds", "0.02", "-o", "run",
                               "--seconds", "0.05", "--quiet", "--seed", "2"])
    restore()
    assert rc == 130, err
    meta = json.loads((tmp_path / "run" / "metadata.json").read_text())
    assert meta["model"] == str(tmp_path / "m") and meta["request"]["prompt"] == str(tmp_path / "p.wav")
    monkeypatch.chdir(tmp_path.parent)
    rc, err = run_cli(capsys, ["sample", "-o", str(tmp_path / "run"), "--resume", "--quiet"])
    assert rc == 0, err


def test_an_explicit_model_wins_over_the_stored_one_with_a_warning(capsys, work, monkeypatch, tmp_path):
    model = shutil.copytree(work["model"], tmp_path / "m")
    restore = _interrupt_while_writing(monkeypatch)
    rc, _ = run_cli(capsys, ["sample", "-m", str(model), "-o", str(tmp_path / "run"), *SECONDS, "--seed", "3"])
    restore()
    assert rc == 130
    moved = tmp_path / "moved"
    model.rename(moved)  # the stored model is gone; -m names where it is now
    rc, err = run_cli(capsys, ["sample", "-m", str(moved), "-o", str(tmp_path / "run"), "--resume", "--quiet"])
    assert rc == 0, err
    assert err.startswith("warning: resuming with -m") and str(model) in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("damage", [
    lambda m: m.pop("request"),
    lambda m: m["request"].update(items=[{}, 3]),
    lambda m: m["request"].update(items=[{"artist": None}]),
    lambda m: m["request"].update(levels=["2"]),
    lambda m: m["request"].update(levels=2),
    lambda m: m["request"].update(seconds="long"),
    lambda m: m["request"].update(seconds=float("nan")),
    lambda m: m["request"].update(n_samples=[1]),
    lambda m: m["request"].update(artist={"a": 1}),
    lambda m: m["request"].update(temperature={"x": 1}),
    lambda m: m["request"].update(temperature="hot"),
    lambda m: m["request"].update(mode="sideways"),
    lambda m: m.update(request=[1, 2]),
    lambda m: m.update(levels_done="all"),
    lambda m: m.update(version="2"),
    lambda m: m.update(model=5),
], ids=lambda f: str(f.__code__.co_consts)[:40])
def test_a_damaged_request_is_one_line(capsys, work, monkeypatch, tmp_path, damage):
    """Before: `unexpected KeyError` (and other deep errors) from a damaged metadata.json."""
    restore = _interrupt_while_writing(monkeypatch)
    out = tmp_path / "run"
    assert run_cli(capsys, ["sample", "-m", str(work["model"]), "-o", str(out), *SECONDS])[0] == 130
    restore()
    meta = json.loads((out / "metadata.json").read_text())
    damage(meta)
    (out / "metadata.json").write_text(json.dumps(meta))
    rc, err = run_cli(capsys, ["sample", "-o", str(out), "--resume", "--quiet"])
    assert rc in (1, 2), err
    one_line(err, rc, rc)
    assert "metadata.json" in err or "temperature" in err or "mode" in err, err


def test_a_deeply_nested_metadata_file_is_one_line(capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metadata.json").write_text('{"request": ' + "[" * 100_000 + "]" * 100_000 + "}")
    rc, err = run_cli(capsys, ["sample", "-o", str(out), "--resume", "--quiet"])
    one_line(err, rc, 1, "nested too deeply")
