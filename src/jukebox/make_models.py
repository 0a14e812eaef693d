"""``make_model(hps)``: the original Jukebox's loader, a thin shim over :func:`jukebox.load_model`.

``make_model(Hyperparams())`` loads the embedded default model; ``Hyperparams(model="DIR")`` (or the
``JUKEBOX_MODEL`` environment variable) a model directory. ``device`` and ``low_memory`` are honoured too.
Returns ``(model, vqvae, priors)`` as the original's tuple shape; use ``model``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .api import Jukebox, load_model

_KNOWN = {"model", "model_dir", "device", "low_memory"}


def make_model(hps: Mapping[str, Any] | None = None, device: Any = None) -> tuple[Jukebox, Any, dict[int, Any]]:
    hps = dict(hps or {})
    unknown = set(hps) - _KNOWN
    if unknown:
        from .errors import UsageError

        raise UsageError(f"make_model: unknown hyper-parameters {sorted(unknown)}; known: {sorted(_KNOWN)}")
    path = hps.get("model") or hps.get("model_dir") or os.environ.get("JUKEBOX_MODEL")
    model = load_model(path, device=hps.get("device", device), low_memory=bool(hps.get("low_memory", False)))
    return model, model.vqvae, {}
