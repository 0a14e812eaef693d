"""The released models' hps tables agree with our named presets, and the importer detects the top prior kind."""

from __future__ import annotations

import pytest
import torch

from jukebox.checkpoint.openai_import import detect_top_kind
from jukebox.config import vqvae_preset
from jukebox.errors import JukeboxError
from jukebox.prior.config import prior_preset
from jukebox.prior.openai import OPENAI_RELEASED_HPS, config_from_openai_hps, openai_key_table
from jukebox.vqvae.openai import OPENAI_RELEASED_HPS as VQ_HPS
from jukebox.vqvae.openai import config_from_openai_hps as vq_config


@pytest.mark.parametrize("kind", sorted(OPENAI_RELEASED_HPS))
def test_released_hps_match_presets(kind):
    assert config_from_openai_hps(OPENAI_RELEASED_HPS[kind]) == prior_preset(kind)


def test_released_vqvae_hps_match_preset():
    assert vq_config(VQ_HPS) == vqvae_preset("openai")


@pytest.mark.parametrize("kind", ["5b", "5b_lyrics", "1b_lyrics"])
def test_detect_top_kind_at_full_size(kind):
    # Original key names and shapes at full size, without allocating: meta tensors.
    config = prior_preset(kind)
    from jukebox.prior.openai import _expected_shapes

    shapes = _expected_shapes(config)
    sd = {}
    for ours, (theirs, transpose) in openai_key_table(config).items():
        shape = shapes[ours][::-1] if transpose else shapes[ours]
        sd[theirs] = torch.empty(shape, device="meta")
    assert detect_top_kind(sd) == kind
    with pytest.raises(JukeboxError, match="not a Jukebox top-level prior"):
        detect_top_kind({"foo": torch.empty(1)})
