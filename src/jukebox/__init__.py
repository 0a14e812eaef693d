"""jukebox: a modern, fast re-implementation of OpenAI Jukebox.

Public API (imported lazily, so ``import jukebox`` is fast)::

    model = jukebox.load_model(path_or_none)        # a model directory, or the embedded default model
    out = model.generate(artist=..., genre=..., lyrics=..., seconds=..., temperature=0.9)
    settings = model.sampling_settings(top_k=50, seed=0)   # a SamplingSettings, resolved and checked once
    out = model.generate(seconds=..., settings=settings)
    jukebox.save_audio(out.audio[0], "song.wav", model.sample_rate)

and the original Jukebox's API names: ``jukebox.hparams.Hyperparams``, ``jukebox.make_models.make_model``,
``jukebox.sample.sample_model``, ``jukebox.utils.dist_utils.setup_dist_logging``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._version import __version__

__all__ = ["load_model", "Jukebox", "Generation", "SamplingSettings", "load_audio", "save_audio", "__version__"]


def save_audio(audio: Any, path: str | Path, sample_rate: int | None = None, **kwargs: Any) -> Path:
    """Save [T], [C, T] or [1, C, T] audio (numpy or torch) as wav/flac; a batch of several items is written
    as ``NAME_0.wav``, ``NAME_1.wav``... The sample rate defaults to the audio's own (``sample_model`` output)."""
    from .audio import save_audio as _save

    sr = int(sample_rate if sample_rate is not None else getattr(audio, "sample_rate", 44100))
    shape = tuple(getattr(audio, "shape", ()))
    if len(shape) == 3 and shape[0] > 1:
        p = Path(path)
        for i in range(shape[0]):
            _save(audio[i], p.with_name(f"{p.stem}_{i}{p.suffix}"), sr, **kwargs)
        return p
    return _save(audio, path, sr, **kwargs)


def __getattr__(name: str) -> Any:
    if name in ("load_model", "Jukebox", "Generation"):
        from . import api

        return getattr(api, name)
    if name == "SamplingSettings":
        from .sampling.settings import SamplingSettings

        return SamplingSettings
    if name == "load_audio":
        from .audio import load_audio

        return load_audio
    raise AttributeError(f"module 'jukebox' has no attribute {name!r}")
