"""Crashes lose nothing: SIGKILLed training resumes to identical weights, a killed sampling run resumes from its
saved levels, and every file is written under a temporary name and renamed."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from jukebox.checkpoint.format import load_weights
from jukebox.cli.main import main
from jukebox.testing import make_tiny_model_dir
from jukebox.train.state import checkpoint_exists, load_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _corpus(root: Path) -> Path:
    import soundfile as sf

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    t = np.arange(44100) / 44100
    rows = ["file,artist,genre,lyrics"]
    for i in range(4):
        x = 0.3 * np.sin(2 * np.pi * 110 * (i + 1) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(root / f"song{i}.wav", x.astype(np.float32), 44100)
        rows.append(f"song{i}.wav,Alice Example,folk,la la {i}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    corpus = _corpus(root / "music")
    model = make_tiny_model_dir(root / "model").path
    return root, corpus, model


def _train_argv(model: Path, corpus: Path, steps: int, resume: bool) -> list[str]:
    return ["train", "prior", "--model", str(model), "--data", str(corpus), "--level", "2", "--steps", str(steps),
            "--save-every", "1", "--batch-size", "2", "--lr", "1e-3", "--warmup", "1", "--log-dir", "none",
            "--device", "cpu", "--workers", "1", "--no-progress", "--seed", "0", "--val-batches", "1",
            *(["--resume"] if resume else ["--restart"])]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def _step(ckpt: Path) -> int:
    import json

    try:
        return int(json.loads((ckpt / "trainer.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return -1


def _kill_at(argv: list[str], ckpt: Path, after_step: int, extra: float) -> int:
    """Start training; SIGKILL it ``extra`` seconds after checkpoint ``after_step`` appears (or when it ends)."""
    proc = subprocess.Popen([sys.executable, "-m", "jukebox.cli.main", *argv], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and _step(ckpt) < after_step:
        time.sleep(0.01)
    time.sleep(extra)
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return -9


def _run_kill_test(setup, tmp_path, steps: int, n_kills: int, seed: int) -> None:
    import shutil

    _, corpus, model = setup
    base = shutil.copytree(model, tmp_path / "base")
    torch.set_num_threads(1)
    assert main(_train_argv(base, corpus, steps, False)) == 0  # uninterrupted, also builds the code cache
    killed = shutil.copytree(model, tmp_path / "killed")
    shutil.copytree(base / "code_cache", killed / "code_cache", dirs_exist_ok=True)
    ckpt = killed / "prior_level_2" / "checkpoint"
    rng = random.Random(seed)
    kills = 0
    for _ in range(n_kills):  # each kill comes at a random moment after a random checkpoint
        after = max(_step(ckpt), 0) + rng.randint(1, max(1, steps // n_kills))
        if after >= steps:
            break
        rc = _kill_at(_train_argv(killed, corpus, steps, checkpoint_exists(ckpt)), ckpt, after,
                      rng.uniform(0.0, 0.5))
        kills += rc == -9
        if checkpoint_exists(ckpt):  # whatever moment the kill came, the checkpoint on disk is whole
            assert 0 < load_checkpoint(ckpt).step <= steps
    assert kills >= 1
    assert main(_train_argv(killed, corpus, steps, checkpoint_exists(ckpt))) == 0
    a, b = load_weights(base / "prior_level_2"), load_weights(killed / "prior_level_2")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ca, cb = load_checkpoint(base / "prior_level_2/checkpoint"), load_checkpoint(ckpt)
    assert ca.step == cb.step == steps
    assert all(torch.equal(ca.model[k], cb.model[k]) for k in ca.model)


def test_training_killed_once_resumes_identically(setup, tmp_path):
    _run_kill_test(setup, tmp_path, steps=4, n_kills=1, seed=1)


@pytest.mark.slow
def test_training_killed_at_random_moments_resumes_identically(setup, tmp_path):
    _run_kill_test(setup, tmp_path, steps=10, n_kills=4, seed=int(time.time()))


def test_sampling_killed_mid_level_resumes_from_saved_levels(setup, tmp_path):
    _, _, model = setup
    argv = ["sample", "-m", str(model), "--seconds", "0.05", "--seed", "4", "--quiet", "--device", "cpu"]
    ref = tmp_path / "ref"
    assert main([*argv, "-o", str(ref)]) == 0
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "jukebox.cli.main", *argv, "-o", str(out)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # kill once the top level is saved
        meta = out / "metadata.json"
        if meta.exists() and '"levels_done": [\n    2' in meta.read_text():
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    with np.load(out / "codes.npz") as f:
        saved = {k: f[k] for k in f.files}
    assert "level_2" in saved
    assert main([*argv, "-o", str(out), "--resume"]) == 0
    with np.load(ref / "codes.npz") as f, np.load(out / "codes.npz") as g:
        assert f.files == g.files and all(np.array_equal(f[k], g[k]) for k in f.files)
    assert (ref / "item_0.wav").read_bytes() == (out / "item_0.wav").read_bytes()


# Writers that must go through jukebox.checkpoint.atomic (a temporary name, fsync, rename).
DIRECT_WRITE = re.compile(r"np\.savez(_compressed)?\(\s*(?!buf)|torch\.save\(|sf\.write\(|soundfile\.write\(|"
                          r"\.write_text\(|\.write_bytes\(|open\([^)]*['\"][wa]b?['\"]")


def test_every_file_is_written_atomically():
    """Library writes go to a temporary name that is renamed (atomic_path) or into a temporary folder that is
    swapped in whole (training checkpoints, the code cache)."""
    allowed = {
        "checkpoint/atomic.py": "the atomic writer itself",
        "train/state.py": "writes inside a fresh temporary folder that is renamed into place",
        "data/code_cache.py": "writes inside a fresh temporary folder that is renamed into place",
    }
    offenders = []
    for path in sorted((REPO / "src" / "jukebox").rglob("*.py")):
        rel = path.relative_to(REPO / "src" / "jukebox").as_posix()
        if rel in allowed:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            # allowed: writes into the temporary path that atomic_path yields (named tmp)
            if DIRECT_WRITE.search(line) and not re.search(r"\(\s*(str\()?tmp\b", line) and "tmp." not in line:
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, offenders
