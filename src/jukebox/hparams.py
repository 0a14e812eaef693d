"""``Hyperparams``: a dict with attribute access, as in the original Jukebox.

It serves two purposes: the original Jukebox's API names, ``make_model(Hyperparams())`` (see
:mod:`jukebox.make_models`), and safe loading of OpenAI's checkpoints, whose ``hps`` entry is a pickled
``jukebox.hparams.Hyperparams``: the restricted unpickler builds this plain-data class in its place and runs no code
from the file.
"""

from __future__ import annotations

from typing import Any


class Hyperparams(dict):
    """A dict whose keys are also attributes: ``hps.sr == hps["sr"]``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value
