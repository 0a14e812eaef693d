"""Files that are not regular files, and files other users wrote: a FIFO, a socket or a device given as a model
file, config, weights, codes or checkpoint is refused before it is opened for reading (it used to hang for ever, or
be read until memory ran out); written files take the user's umask; a file we may not read says "permission
denied". See docs/reliability.md."""

from __future__ import annotations

import contextlib
import faulthandler
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from cli_checks import one_line as _one_line
from cli_checks import run_cli as _run

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


# ------------------------------------------------------------------------------------------------ permissions

@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@contextlib.contextmanager
def _as_another_user():
    """Run the block with the effective user and group ``nobody`` (root only; restored afterwards). Python's own
    files may be out of that user's reach: run the same code once before, so that every module is imported."""
    if os.geteuid() != 0:
        pytest.skip("switching to another user needs root")
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o027])
def test_written_files_take_the_umask(tmp_path, mask):
    """Weights were written 0600 whatever the umask (safetensors replaces the temporary file with a 0600 one)."""
    from jukebox.atomic import atomic_write_text
    from jukebox.audio import save_audio
    from jukebox.checkpoint.format import save_weights
    from jukebox.runs import save_codes

    with _umask(mask):  # set after import: the live umask counts
        save_weights(tmp_path / "w", {"a": torch.zeros(3)})
        save_weights(tmp_path / "s", {"a": torch.zeros(300), "b": torch.ones(300)}, max_shard_bytes=1000)
        atomic_write_text(tmp_path / "t.json", "{}")
        save_audio(np.zeros(100), tmp_path / "a.wav")
        save_codes(tmp_path / "c.npz", {2: np.zeros((1, 4), np.int64)})
    modes = _modes(tmp_path)
    assert len(modes) == 7 and set(modes.values()) == {0o666 & ~mask}, {k: oct(v) for k, v in modes.items()}


def test_a_model_made_by_one_user_is_read_by_another(tmp_path):
    """Before, the weights were 0600: another user got "corrupt or truncated weights file"."""
    from jukebox.checkpoint.model_dir import ModelDir

    root = Path(tempfile.mkdtemp(prefix="jukebox-shared-"))
    try:
        os.chmod(root, 0o755)
        with _umask(0o022):
            make_tiny_model_dir(root / "model")
        ModelDir(root / "model").load_vqvae()  # imports every module the load needs
        ModelDir(root / "model").load_prior(2)
        with _as_another_user():
            md = ModelDir(root / "model")
            vqvae = md.load_vqvae()
            prior = md.load_prior(2)
        assert vqvae.config.l_bins == 64 and prior.config.level == 2
    finally:
        shutil.rmtree(root)


def test_a_file_we_may_not_read_says_permission_denied(capsys, work, tmp_path):
    root = Path(tempfile.mkdtemp(prefix="jukebox-private-"))
    try:
        os.chmod(root, 0o755)
        shutil.copy(work["root"] / "ok.wav", root / "ok.wav")
        model = shutil.copytree(work["model"], root / "model")
        locked = shutil.copytree(work["model"], root / "locked")
        os.chmod(locked / "vqvae" / "model.safetensors", 0o600 if os.geteuid() == 0 else 0)
        (root / "codes.npz").write_bytes(work["codes"].read_bytes())
        os.chmod(root / "codes.npz", 0o600 if os.geteuid() == 0 else 0)
        _run(capsys, ["decode", "-m", str(work["model"]), str(work["codes"]), "-o", str(tmp_path / "x.wav")])
        _run(capsys, ["encode", "-m", str(work["model"]), str(work["root"] / "ok.wav"), "-o", str(tmp_path / "y.npz")])
        with _as_another_user() if os.geteuid() == 0 else contextlib.nullcontext():
            rc, err = _run(capsys, ["decode", "-m", str(model), str(root / "codes.npz"), "-o", str(root / "x.wav")])
            _one_line(err, rc, 1, "codes.npz", "permission denied")
            rc2, err2 = _run(capsys, ["encode", "-m", str(locked), str(root / "ok.wav"), "-o",
                                      str(root / "never.npz")])
        _one_line(err2, rc2, 1, "vqvae/model.safetensors", "permission denied")
        assert "corrupt" not in err2
    finally:
        shutil.rmtree(root)


def test_a_folder_we_may_not_write_says_permission_denied(capsys, work):
    root = Path(tempfile.mkdtemp(prefix="jukebox-readonly-"))
    try:
        model = shutil.copytree(work["model"], root / "model")
        shutil.copy(work["codes"], root / "codes.npz")
        argv = ["decode", "-m", str(model), str(root / "codes.npz"), "-o", str(root / "x.wav")]
        assert _run(capsys, argv)[0] == 0  # imports every module the command needs
        os.unlink(root / "x.wav")
        os.chmod(root, 0o755)  # another user may not write into it (nor this one, once it is 0555)
        if os.geteuid() != 0:
            os.chmod(root, 0o555)
        before = sorted(os.listdir(root))
        with _as_another_user() if os.geteuid() == 0 else contextlib.nullcontext():
            rc, err = _run(capsys, argv)
        _one_line(err, rc, 1, "could not write", "x.wav", "permission denied")
        assert sorted(os.listdir(root)) == before
    finally:
        os.chmod(root, 0o755)
        shutil.rmtree(root)
