"""The full 3-level greedy sampling pipeline reproduces the original's codes (pipeline_*.pt fixtures)."""

from __future__ import annotations

import pytest
import torch

from conftest import load_reference
from jukebox.data.labels import LabelInfo, Labeller, Labels, LabelVocab
from jukebox.prior.model import Prior
from jukebox.prior.openai import config_from_openai_hps, convert_openai_state_dict
from jukebox.sampling.pipeline import DEFAULT_HOP_FRACTIONS, LevelSettings, sample_levels

TINY_VQVAE = {"levels": 3, "downs_t": (3, 2, 2), "strides_t": (2, 2, 2), "l_bins": 64}
HOPS = (8, 32, 128)


def _prior(name: str) -> Prior:
    ref = load_reference(f"prior_{name}.pt")
    config = config_from_openai_hps(ref["hps"], TINY_VQVAE)
    model = Prior(config).eval()
    model.load_state_dict(convert_openai_state_dict(ref["state_dict"], config), strict=True)
    return model


@pytest.mark.parametrize("kind", ["5b", "5b_lyrics", "1b_lyrics"])
def test_pipeline_matches_original(kind, reference_ids_dir):
    ref = load_reference(f"pipeline_{kind}.pt")
    torch.set_num_threads(1)
    priors = {0: _prior("upsampler_level_0"), 1: _prior("upsampler_level_1"), 2: _prior(f"top_{kind}")}
    n = ref["hps"]["n_samples"]
    sample_length = ref["hps"]["sample_length"]

    labellers, labels = {}, {}
    for level, prior in priors.items():
        c = prior.config
        version = "v3" if c.labels.version == 3 else "v2"
        vocab = LabelVocab.from_openai_ids_dir(reference_ids_dir, version=version)
        labellers[level] = Labeller(vocab, c.labels.max_bow_genre_size, c.lyrics.n_tokens, c.sample_length)
        lab = ref["labels"][level]
        infos = tuple(LabelInfo(i["artist"], i["genre"], i["lyrics"], tuple(i["full_tokens"])) for i in lab["info"])
        labels[level] = Labels(lab["y"], infos)
        # Our labeller builds the same starting y from the item names (total length 1 s, offset 0).
        metas = [dict(artist=i.artist, genre=i.genre, lyrics=i.lyrics, total_length=int(lab["y"][0, 0]), offset=0)
                 for i in infos]
        assert torch.equal(labellers[level].batch_labels(metas).y, lab["y"])

    def label_fn(level: int, start: int):
        return labellers[level].window_y(labels[level], start, priors[level].raw_to_tokens)[0]

    settings = {lvl: LevelSettings(temperature=1.0, top_k=1, hop_fraction=DEFAULT_HOP_FRACTIONS[lvl],
                                   chunk_size=8, max_batch_size=1) for lvl in range(3)}
    empty = {lvl: torch.zeros(n, 0, dtype=torch.long) for lvl in range(3)}
    codes, reports = sample_levels(priors.__getitem__, empty, [0, 1, 2], sample_length, label_fn, settings, HOPS)
    for level in range(3):
        assert torch.equal(codes[level], ref["zs"][level]), f"level {level} differs"
    assert [r.level for r in reports] == [2, 1, 0]
