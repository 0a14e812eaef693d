"""Helpers for the research scripts' tests: ``research/scripts/<name>.py`` imported as a module.

These tests are not part of the default test run (pyproject's ``testpaths`` is ``tests``); run them with
``python -m pytest research/tests``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    """``research/scripts/<name>.py`` imported as module ``name`` (registered in sys.modules: dataclasses look it
    up)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
