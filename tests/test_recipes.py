"""The recipe that rebuilds the embedded default model still runs (the dry run CI does): the commands of
``recipes/train_default_model.sh`` parse with the current CLI, its Python steps run on a small synthetic corpus,
and (marked slow) every command runs with ``PROFILE=tiny`` (tiny presets, a few steps) in this process, in the
order the script gives them; the recipes' and research's shell scripts parse."""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO, load_script

SR = 22050
GENRES = ("ambient", "folk", "rock")


def make_corpus(root: Path, seconds: float = 1.5) -> Path:
    """A corpus as recipes/build_debian_corpus.py lays it out: PKG/NAME.flac and a metadata.csv with the build's
    columns; two artists per genre, four training tracks and one validation track per genre."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    rows = []
    for g, genre in enumerate(GENRES):
        (root / f"pkg{genre}").mkdir(parents=True)
        for i in range(5):
            x = 0.3 * np.sin(2 * np.pi * 110 * (g + 1) * (i + 1) * t) + 0.05 * rng.standard_normal(len(t))
            file = f"pkg{genre}/track{i}.flac"
            sf.write(root / file, x.astype(np.float32), SR)
            rows.append({"file": file, "artist": f"{genre} composer {i % 2}", "genre": genre, "lyrics": "",
                         "split": "validation" if i == 4 else "train", "package": f"pkg{genre}",
                         "title": f"Track {i}", "seconds": f"{seconds:.2f}"})
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def recipe(env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {**os.environ, "PROFILE": "tiny", "DEVICE": "cpu", "DRY_RUN": "1", **env}
    return subprocess.run(["bash", str(REPO / "recipes" / "train_default_model.sh")], env=full, capture_output=True,
                          text=True, timeout=60)


def run_command(cmd: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """One printed command, run in this process: ``python3 -m jukebox ...`` through the CLI, ``python3
    recipes/NAME.py ...`` through the script's ``main``."""
    _, *args = cmd
    if args[:2] == ["-m", "jukebox"]:
        from jukebox.cli import main as cli_main

        assert cli_main.main(args[2:]) == 0, cmd
    else:
        script = Path(args[0])
        assert script.parent.name == "recipes", cmd
        monkeypatch.setattr(sys, "argv", args)
        load_script(script.stem).main()


def commands_of(proc: subprocess.CompletedProcess) -> list[list[str]]:
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line[2:]) for line in proc.stdout.splitlines() if line.startswith("+ ")]


@pytest.mark.parametrize("profile", ["full", "tiny"])
def test_recipe_commands_parse_and_name_known_presets(profile: str, tmp_path: Path) -> None:
    """Every ``jukebox`` command of the recipe parses with the current CLI and names presets that exist; every
    script it calls exists. Cheap enough for every test run (no training)."""
    from jukebox.cli.main import build_parser
    from jukebox.config import VQVAE_PRESETS
    from jukebox.prior.config import PRIOR_PRESETS

    commands = commands_of(recipe({"CORPUS": str(tmp_path / "corpus"), "WORK": str(tmp_path / "w"),
                                   "PROFILE": profile}))
    assert not (tmp_path / "w").exists()  # a dry run runs nothing
    parser, kinds = build_parser(), set()
    for cmd in commands:
        args = cmd[1:]
        if args[:2] == ["-m", "jukebox"]:
            parsed = parser.parse_args(args[2:])
            kinds.add(" ".join(args[2:4]) if args[2] == "train" else args[2])
            if getattr(parsed, "preset", None):
                presets = VQVAE_PRESETS if args[3] == "vqvae" else PRIOR_PRESETS
                assert parsed.preset in presets, cmd
        else:
            assert (REPO / args[0]).is_file() and args[0].startswith("recipes/"), cmd
            kinds.add(Path(args[0]).name)
    assert kinds == {"pack_training_audio.py", "select_training_subset.py", "split_pack.py", "train vqvae",
                     "train prior", "prepare", "export_model.py", "eval_default_model.py"}


def test_recipe_python_steps_on_tiny_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The recipe's own scripts, as the recipe calls them: the data stage on a synthetic corpus, then the export of
    a (tiny) trained model."""
    from jukebox.checkpoint.format import load_weights
    from jukebox.testing import make_tiny_model_dir

    corpus, work = make_corpus(tmp_path / "corpus"), tmp_path / "work"
    commands = commands_of(recipe({"CORPUS": str(corpus), "WORK": str(work), "STAGES": "data export"}))
    make_tiny_model_dir(work / "model")
    monkeypatch.chdir(REPO)
    for cmd in commands:
        run_command(cmd, monkeypatch)
    pack = list(csv.DictReader(open(work / "pack" / "metadata.csv", encoding="utf-8")))
    subset = list(csv.DictReader(open(work / "subset" / "metadata.csv", encoding="utf-8")))
    half = list(csv.DictReader(open(work / "half" / "metadata.csv", encoding="utf-8")))
    assert len(pack) == 12 and {r["split"] for r in pack} == {"train"}  # validation tracks are never packed
    assert all((work / "pack" / r["file"]).stat().st_size > 0 for r in pack)
    assert len(subset) >= len(pack) and {r["genre"] for r in subset} == set(GENRES)
    assert 0 < len(half) < len(pack) and {r["file"] for r in half} <= {r["file"] for r in pack}
    assert all((work / "half" / r["file"]).exists() for r in half)
    out = work / "export"
    assert not any(out.rglob("trainer.safetensors"))
    assert {str(v.dtype) for v in load_weights(out / "prior_level_2").values() if v.is_floating_point()} == {
        "torch.float16"}
    assert json.loads((out / "model.json").read_text())["sampling"]["guidance"] == 3.0


@pytest.mark.slow
def test_recipe_runs_every_stage_on_tiny_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stage for real, tiny: train the VQ-VAE and three priors, the v1-v7 fine-tunes, export, measure."""
    corpus, work = make_corpus(tmp_path / "corpus"), tmp_path / "work"
    proc = recipe({"CORPUS": str(corpus), "WORK": str(work)})
    commands = commands_of(proc)
    assert [line[3:] for line in proc.stdout.splitlines() if line.startswith("== ")] == [
        "data", "v0", "v1", "v2", "v3", "v5", "v6", "v7", "export", "measure"]
    v6 = next(cmd for cmd in commands if "--balance" in cmd)
    assert v6[v6.index("--stop-at") + 1] == "2" and v6[v6.index("--steps") + 1] == "3"  # a schedule cut short
    monkeypatch.chdir(REPO)
    for cmd in commands:
        run_command(cmd, monkeypatch)
    from jukebox.api import load_model

    out = work / "export"
    top = json.loads((out / "prior_level_2" / "config.json").read_text())
    assert top["labels"]["every_position"] is True  # what the v2 stage added
    assert (out / "prior_level_2" / "tempi.json").is_file()  # the tempo of v5 and v6
    assert load_model(out, device="cpu").prior_levels == [0, 1, 2]
    measured = json.loads((work / "measure.json").read_text())
    assert measured["model"] == "export" and set(measured["prior_bits_per_token"]) == {"level_0", "level_1", "level_2"}
    assert all(np.isfinite(b) for b in measured["prior_bits_per_token"].values())


def test_recipe_stages_and_errors() -> None:
    proc = recipe({"CORPUS": "corpus", "STAGES": "v3 export"})
    assert proc.returncode == 0
    assert [line[3:] for line in proc.stdout.splitlines() if line.startswith("== ")] == ["v3", "export"]
    proc = recipe({"CORPUS": "corpus", "STAGES": "v9"})
    assert proc.returncode == 2 and "unknown stage 'v9'" in proc.stderr
    proc = recipe({"CORPUS": ""})
    assert proc.returncode != 0 and "set CORPUS" in proc.stderr


def test_split_pack_keeps_the_first_half_by_bytes(tmp_path: Path) -> None:
    split = load_script("split_pack")
    files = []
    for name, size in [("a.ogg", 40), ("b.ogg", 70), ("c.ogg", 10), ("d.ogg", 30), ("e.ogg", 50)]:
        (tmp_path / name).write_bytes(b"x" * size)
        files.append(tmp_path / name)
    # half of 200 bytes: a (40) + c (10) + d (30) fit; b (70) would pass 100, e (50) too
    assert [p.name for p in split.first_half(files[::-1])] == ["a.ogg", "c.ogg", "d.ogg"]


@pytest.mark.parametrize("script", sorted((REPO / "recipes").glob("*.sh")) + sorted((REPO / "research").rglob("*.sh")),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_shell_scripts_parse(script: Path) -> None:
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
