"""Tiny, randomly initialised model directories for tests, examples and benchmarks (built in a second)."""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint.model_dir import ModelDir
from .config import vqvae_preset

ARTISTS = ("Alice Example", "Bob Demo", "Carol Test")
GENRES = ("folk", "rock", "ambient")


def make_tiny_model_dir(path: str | Path, lyrics: str = "none", seed: int = 0, levels: tuple[int, ...] = (0, 1, 2),
                        n_ctx: int = 32) -> ModelDir:
    """A complete tiny model directory: the ``tiny`` VQ-VAE (hops 8/32/128, 64 codes) and priors for ``levels``.

    ``lyrics``: the top prior's lyric style (``none``, ``encoder_decoder`` (5b_lyrics-like) or ``merged``
    (1b_lyrics-like)). Each prior stores its own artist/genre vocabulary (three artists, three genres).
    """
    from .data.labels import LabelVocab
    from .prior import Prior
    from .prior.config import LabelConfig, prior_preset

    torch.manual_seed(seed)
    md = ModelDir(path, create=True, name="tiny")
    vq = vqvae_preset("tiny")
    from .vqvae import VQVAE

    md.save_vqvae(VQVAE(vq).eval())
    top_name = {"none": "tiny_top", "encoder_decoder": "tiny_lyrics", "merged": "tiny_merged"}[lyrics]
    for level in levels:
        config = prior_preset(top_name if level == 2 else "tiny_upsampler").replace(level=level, n_ctx=n_ctx)
        version = "v3" if config.labels is not None and config.labels.version == 3 else "v2"
        vocab = LabelVocab.from_names(ARTISTS, GENRES, version=version)
        labels = config.labels or LabelConfig()
        artist_bins, genre_bins = max(labels.artist_bins, len(vocab.list_artists())), max(
            labels.genre_bins, len(vocab.list_genres()))
        config = config.replace(labels=labels.replace(artist_bins=artist_bins, genre_bins=genre_bins,
                                                      sample_rate=vq.sample_rate))
        md.save_prior(Prior(config).eval())
        vocab.save(md.path / f"prior_level_{level}")
    return md
