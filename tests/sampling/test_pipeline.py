"""The level pipeline on a tiny model: a piece shorter than an upsampler's window is sampled one window long and
cut to the asked length; on a CPU the levels run on one intra-op thread and the setting is restored."""

from __future__ import annotations

import pytest
import torch

from jukebox.api import load_model
from jukebox.errors import UsageError
from jukebox.prior import Prior
from jukebox.testing import make_tiny_model_dir


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    md = make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model", n_ctx=32)
    return load_model(md.path, device="cpu")


def test_shorter_than_an_upsampler_window(model):
    window = 32 * model.hop_lengths[1]  # the level-1 upsampler's context, in samples
    seconds = 4 * model.hop_lengths[2] / model.sample_rate  # 512 samples: half a window
    saved = {}
    gen = model.generate(seconds=seconds, seed=3, loudness=None, alignment=False,
                         on_level_done=lambda level, codes: saved.update({level: codes[level]}))
    length = model.sample_length(seconds)
    assert length < window
    assert gen.audio.shape == (1, 1, length)
    for level, hop in enumerate(model.hop_lengths):
        assert gen.codes[level].shape == (1, length // hop)
        assert saved[level].shape == (1, length // hop)  # what a run folder stores is cut too
    # the cut piece is the start of the same seeded piece sampled one window long
    whole = model.generate(seconds=window / model.sample_rate, seed=3, loudness=None, alignment=False)
    for level, hop in enumerate(model.hop_lengths):
        assert torch.equal(gen.codes[level], whole.codes[level][:, :length // hop])
    assert torch.allclose(gen.audio, whole.audio[..., :length], atol=1e-6)


def test_short_upsample_of_given_codes_still_refused(model):
    top = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(UsageError, match="needs at least"):
        model.upsample({2: top}, alignment=False)


def test_levels_sample_on_one_intra_op_thread(model, monkeypatch):
    seen = []
    original = Prior.sample

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Prior, "sample", spy)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model.generate(seconds=2048 / model.sample_rate, seed=0, loudness=None, alignment=False)
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
