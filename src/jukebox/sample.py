"""``sample_model(...)``: the original Jukebox's one-call generation, a thin shim over ``Jukebox.generate``."""

from __future__ import annotations

import numpy as np

from .api import Jukebox


class Audio(np.ndarray):
    """float32 audio [batch, channels, time] that remembers its ``sample_rate`` (for ``jukebox.save_audio``)."""

    sample_rate: int

    def __new__(cls, array: np.ndarray, sample_rate: int) -> Audio:
        obj = np.asarray(array, dtype=np.float32).view(cls)
        obj.sample_rate = int(sample_rate)
        return obj

    def __array_finalize__(self, obj: object) -> None:
        self.sample_rate = getattr(obj, "sample_rate", 44100)


def sample_model(model: Jukebox, artist: str, genre: str, lyrics: str = "", sampling_temperature: float = 0.99,
                 sampling_length_in_seconds: float = 10.0, n_samples: int = 1, seed: int | None = None,
                 **kwargs) -> Audio:
    """Generate ``n_samples`` songs; returns :class:`Audio` [n_samples, 1, T] at ``model.sample_rate``."""
    gen = model.generate(artist=artist, genre=genre, lyrics=lyrics, seconds=sampling_length_in_seconds,
                         n_samples=n_samples, temperature=sampling_temperature, seed=seed, **kwargs)
    return Audio(gen.audio.numpy(), gen.sample_rate)
