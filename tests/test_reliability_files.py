"""Files that are not regular files, and files other users wrote: a FIFO, a socket or a device given as a model
file, config, weights, codes or checkpoint is refused before it is opened for reading (it used to hang for ever, or
be read until memory ran out); written files take the user's umask; a file we may not read says "permission
denied". See docs/reliability.md."""

from __future__ import annotations

import faulthandler
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from jukebox.audio import load_audio
from jukebox.checkpoint.safe_load import safe_torch_load
from jukebox.cli.main import main
from jukebox.errors import JukeboxError
from jukebox.fileio import check_regular, open_regular, read_codes_npz, read_json
from jukebox.testing import make_tiny_model_dir


@pytest.fixture(autouse=True)
def watchdog():
    """Opening a FIFO blocks for ever: a regression ends the run with a stack dump instead of hanging it."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    sf.write(root / "ok.wav", (np.random.default_rng(0).standard_normal(4410) * 0.1).astype("f4"), 44100)
    model = make_tiny_model_dir(root / "tiny").path
    assert main(["encode", "-m", str(model), str(root / "ok.wav"), "-o", str(root / "codes.npz")]) == 0
    return {"root": root, "model": model, "codes": root / "codes.npz"}


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err.strip()


def _one_line(err: str, rc: int, expect_rc: int, *words: str) -> None:
    assert rc == expect_rc, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "unexpected" not in err, err
    for w in words:
        assert w in err, err


def _replace(path: Path, kind: str) -> None:
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev_zero":
        path.symlink_to("/dev/zero")
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()


KINDS = {"fifo": "FIFO", "dev_zero": "character device", "socket": "not a regular file"}


# ------------------------------------------------------------------------------------------------ not regular files

@pytest.mark.parametrize("rel", ["model.json", "vqvae/config.json", "vqvae/model.safetensors",
                                 "prior_level_2/config.json", "prior_level_2/labels.json",
                                 "prior_level_2/model.safetensors", "prior_level_1/model.safetensors"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_model_files_that_are_not_regular_files_are_refused(capsys, work, tmp_path, rel, kind):
    model = shutil.copytree(work["model"], tmp_path / "m")
    _replace(model / rel, kind)
    rc, err = _run(capsys, ["sample", "-m", str(model), "-o", str(tmp_path / "o"), "--seconds", "0.05", "--quiet"])
    _one_line(err, rc, 1, rel.rsplit("/", 1)[-1], KINDS[kind])


def test_sharded_weights_that_are_not_regular_files_are_refused(capsys, work, tmp_path):
    from jukebox.checkpoint.format import INDEX_NAME, WEIGHTS_NAME, load_weights, save_weights

    folder = tmp_path / "w"
    save_weights(folder, {"a": torch.zeros(300), "b": torch.ones(300)}, max_shard_bytes=1000)
    assert (folder / INDEX_NAME).is_file() and not (folder / WEIGHTS_NAME).exists()
    assert set(load_weights(folder)) == {"a", "b"}
    shard = sorted(folder.glob("model-*.safetensors"))[1]
    _replace(shard, "fifo")
    with pytest.raises(JukeboxError, match="FIFO"):
        load_weights(folder)
    _replace(folder / INDEX_NAME, "dev_zero")
    with pytest.raises(JukeboxError, match="character device"):
        load_weights(folder)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_codes_that_are_not_regular_files_are_refused(capsys, work, tmp_path, kind):
    codes = tmp_path / "codes.npz"
    shutil.copy(work["codes"], codes)
    _replace(codes, kind)
    rc, err = _run(capsys, ["decode", "-m", str(work["model"]), str(codes), "-o", str(tmp_path / "x.wav")])
    _one_line(err, rc, 1, "codes.npz", KINDS[kind])
    with pytest.raises(JukeboxError, match=KINDS[kind]):
        read_codes_npz(codes)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_checkpoints_and_audio_that_are_not_regular_files_are_refused(tmp_path, kind):
    ckpt, wav = tmp_path / "vqvae.pth.tar", tmp_path / "a.wav"
    torch.save({"model": {}}, ckpt)
    sf.write(wav, np.zeros(100, "f4"), 8000)
    for path, load in ((ckpt, safe_torch_load), (wav, load_audio)):
        _replace(path, kind)
        with pytest.raises(JukeboxError, match=KINDS[kind]):
            load(path)


def test_import_openai_refuses_a_fifo_checkpoint(capsys, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "vqvae.pth.tar")
    rc, err = _run(capsys, ["import-openai", str(src), "-o", str(tmp_path / "out")])
    _one_line(err, rc, 1, "vqvae.pth.tar", "FIFO")


def test_open_regular_never_blocks_and_names_what_it_found(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    (tmp_path / "ok.json").write_text('{"a": 1}')
    (tmp_path / "link.json").symlink_to(tmp_path / "ok.json")
    for name, words in (("fifo", "FIFO"), ("dir", "a folder"), ("missing", "no such file")):
        with pytest.raises(JukeboxError, match=words):
            open_regular(tmp_path / name)
    assert read_json(tmp_path / "link.json") == {"a": 1}  # a link to a regular file is fine
    assert check_regular(tmp_path / "ok.json") == 8
    with open_regular(tmp_path / "ok.json") as f:  # blocking again once open
        assert os.get_blocking(f.fileno()) and f.read() == b'{"a": 1}'
