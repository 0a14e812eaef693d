"""Packaging: one version (``jukebox/_version.py``) read by the distribution and ``jukebox --version``; the
distribution name; the wheel and sdist carry the embedded default model and the ``jukebox`` command."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import jukebox
from jukebox import _version
from jukebox.cli.main import main

REPO = Path(__file__).resolve().parents[1]
DIST_NAME = "jukebox-ml"


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_version_is_written_once():
    assert jukebox.__version__ == _version.__version__
    parts = _version.__version__.split(".")
    assert len(parts) >= 3 and all(p.isdigit() for p in parts[:3]), _version.__version__
    project = _pyproject()
    assert "version" not in project["project"], "the version lives in src/jukebox/_version.py only"
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "jukebox._version.__version__"}


def test_distribution_name_and_command():
    project = _pyproject()["project"]
    # `jukebox` on the package index is an unrelated music player; the import name and the command stay `jukebox`.
    assert project["name"] == DIST_NAME
    assert project["scripts"] == {"jukebox": "jukebox.cli.main:main"}
    assert any(d.startswith("build") for d in project["optional-dependencies"]["dev"])


def test_version_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"jukebox {_version.__version__}"


def test_installed_metadata_matches():
    try:
        dist = importlib.metadata.distribution(DIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{DIST_NAME} is not installed (run `pip install -e .`)")
    assert dist.version == _version.__version__
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts.get("jukebox") == "jukebox.cli.main:main"


def _default_model_files() -> set[str]:
    root = REPO / "src" / "jukebox" / "assets" / "default_model"
    if not root.is_dir():
        pytest.skip("this checkout has no embedded default model")
    return {p.relative_to(REPO / "src").as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_wheel_and_sdist_carry_the_default_model(tmp_path):
    pytest.importorskip("build")
    want = _default_model_files()
    r = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "-o", str(tmp_path), str(REPO)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    v = _version.__version__
    wheel = tmp_path / f"jukebox_ml-{v}-py3-none-any.whl"
    sdist = tmp_path / f"jukebox_ml-{v}.tar.gz"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert want <= names, sorted(want - names)
        assert "jukebox/_version.py" in names and "jukebox/cli/main.py" in names
        meta = z.read(f"jukebox_ml-{v}.dist-info/METADATA").decode()
        entry_points = z.read(f"jukebox_ml-{v}.dist-info/entry_points.txt").decode()
    assert "Name: jukebox-ml" in meta and f"Version: {v}" in meta
    assert "jukebox = jukebox.cli.main:main" in entry_points
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert {f"src/{n}" for n in want} <= names
    assert "pyproject.toml" in names
