"""Shared test helpers: reference fixtures from ../shared (skipped cleanly where absent)."""

from __future__ import annotations

import os
from pathlib import Path

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
