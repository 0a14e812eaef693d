"""Shared test helpers: reference fixtures from ../shared (skipped cleanly where absent), recipe scripts as modules."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(
    os.environ.get("JUKEBOX_REFERENCE_DIR", REPO.parent / "shared" / "reference" / "openai-jukebox")
)


def load_reference(name: str) -> dict:
    """Load ``fixtures/<name>`` from the original-code reference folder, or skip the test."""
    import torch

    path = REFERENCE_DIR / "fixtures" / name
    if not path.exists():
        pytest.skip(f"reference fixture {path} not available")
    return torch.load(path, weights_only=True)


@pytest.fixture
def reference_ids_dir() -> Path:
    path = REFERENCE_DIR / "ids"
    if not path.exists():
        pytest.skip(f"reference ids folder {path} not available")
    return path


def load_script(name: str) -> ModuleType:
    """``recipes/<name>.py`` imported as module ``name`` (registered in sys.modules: dataclasses look it up)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "recipes" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def sampler_mode(monkeypatch):
    """A dict whose entries are passed to every ``sample_autoregressive`` call made by :class:`Prior` (e.g.
    ``decode``, ``attention``, ``compact_cache``); edit it between calls to compare sampling paths."""
    import jukebox.prior.model as prior_model

    orig = prior_model.sample_autoregressive
    mode: dict = {}
    monkeypatch.setattr(prior_model, "sample_autoregressive", lambda *a, **k: orig(*a, **{**k, **mode}))
    return mode
