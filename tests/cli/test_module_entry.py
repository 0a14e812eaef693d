"""``python -m jukebox`` is the ``jukebox`` command, so ``torchrun -m jukebox train ...`` runs the trainer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SRC = Path(__file__).resolve().parents[2] / "src"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def test_python_m_jukebox_is_the_command() -> None:
    proc = subprocess.run([sys.executable, "-m", "jukebox", "train", "prior", "--help"], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: jukebox train prior") and "--label-dropout" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "jukebox", "no-such-command"], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


@pytest.mark.slow
def test_torchrun_m_jukebox_trains(tmp_path: Path) -> None:
    """The command the training page gives for several GPUs, with one CPU process (gloo)."""
    music = tmp_path / "music"
    music.mkdir()
    t = np.arange(22050) / 22050
    for i in range(3):
        sf.write(music / f"song{i}.wav", (0.3 * np.sin(2 * np.pi * 220 * (i + 1) * t)).astype(np.float32), 22050)
    out = tmp_path / "model"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m", "jukebox",
         "train", "vqvae", "--data", str(music), "--preset", "tiny", "--out", str(out), "--steps", "1",
         "--batch-size", "1", "--window", "2048", "--device", "cpu", "--workers", "1", "--val-batches", "1",
         "--log-dir", "none", "--no-progress"],
        env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "vqvae" / "model.safetensors").exists()
