"""SamplingSettings / LevelSettings: resolved once from a model's defaults and a caller's overrides, checked once."""

from __future__ import annotations

import json

import pytest
import torch

from jukebox.errors import UsageError
from jukebox.prior.settings import LevelSettings, SettingsError
from jukebox.sampling.settings import SamplingSettings, model_defaults


def test_level_settings_are_checked_when_made():
    s = LevelSettings(temperature=0, top_k=5.0, chunk_size=None)
    assert s.greedy and s.top_k == 5 and isinstance(s.top_k, int)
    for bad in (dict(temperature=-1), dict(temperature=float("nan")), dict(top_k=-1), dict(top_k=1.5),
                dict(top_p=1.2), dict(hop_fraction=0), dict(chunk_size=0), dict(max_batch_size=0),
                dict(max_windows=0), dict(guidance=21), dict(decode="fast"), dict(draw="gumbel"),
                dict(temperature=True)):
        with pytest.raises(SettingsError):
            LevelSettings(**bad)
    assert issubclass(SettingsError, UsageError) and issubclass(SettingsError, ValueError)
    with pytest.raises(TypeError, match="unknown sampling settings"):
        LevelSettings.of(None, temprature=0.5)
    assert LevelSettings.of(s) is s and LevelSettings.of(s, top_k=None) is s
    assert LevelSettings.of({"top_p": 0.5}, top_k=3) == LevelSettings(top_p=0.5, top_k=3)


def test_overrides_by_number_list_and_mapping():
    base = SamplingSettings.for_levels([0, 1, 2])
    assert [base[lvl].hop_fraction for lvl in (0, 1, 2)] == [0.5, 0.5, 0.125]
    s = base.replace(temperature=0.9, top_k=[0, 5, 10], top_p={"1": 0.8}, guidance=3.0, seed=7,
                     upsample_mode="parallel")
    assert [s[lvl].temperature for lvl in s] == [0.9, 0.9, 0.9]
    assert [s[lvl].top_k for lvl in s] == [0, 5, 10] and [s[lvl].top_p for lvl in s] == [0.0, 0.8, 0.0]
    assert [s[lvl].guidance for lvl in s] == [1.0, 1.0, 3.0]  # a number guides the top level only
    assert s.replace(guidance={0: 2.0})[0].guidance == 2.0
    assert (s.seed, s.upsample_mode, s.top_level) == (7, "parallel", 2)
    assert s.replace(temperature=None, seed=None) is s  # None keeps the value
    with pytest.raises(SettingsError, match="for level 0"):
        base.replace(guidance={0: 25.0})
    with pytest.raises(SettingsError, match="one per level"):
        base.replace(temperature=[0.5, 0.6])
    with pytest.raises(SettingsError, match="integers"):
        base.replace(guidance={"low": 2.0})
    for bad in (dict(seed=2**53), dict(seed=1.5), dict(seed=True), dict(upsample_mode="sideways")):
        with pytest.raises(SettingsError):
            base.replace(**bad)
    with pytest.raises(TypeError, match="unexpected sampling settings"):
        base.replace(levels=[2])


def test_json_round_trip():
    s = SamplingSettings.for_levels([1, 2], temperature={1: 0.7, 2: 0.95}, seed=-3, draw="cdf")
    again = SamplingSettings.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again == s and dict(again) == dict(s)
    with pytest.raises(SettingsError):
        SamplingSettings.from_dict({"per_level": {"2": {"temperature": -1}}})
    with pytest.raises(SettingsError):
        SamplingSettings.from_dict({"per_level": {}, "speed": 3})


def test_model_defaults_fall_back_to_the_originals():
    assert model_defaults(None, 100.0) == {"upsample_mode": "sequential", "decode": "eager", "draw": "multinomial",
                                           "chunk_size": 32, "guidance": 1.0, "label_guidance": None,
                                           "temperature": 1.0, "hop_fraction": None, "total_seconds": None,
                                           "levels": None}
    d = model_defaults({"draw": "cdf", "decode": "fast", "temperature": [0.8, 0.9, 0.98], "guidance": 30,
                        "chunk_size": 0, "total_seconds": 500}, 100.0)
    assert (d["draw"], d["decode"], d["chunk_size"], d["guidance"], d["total_seconds"]) == (
        "cdf", "eager", 32, 1.0, None)
    assert d["temperature"] == {0: 0.8, 1: 0.9, 2: 0.98}
    assert model_defaults({"label_guidance": 5}, 100.0)["label_guidance"] == 5.0
    for bad in (-1, 21, "more", True, [3, 4]):
        assert model_defaults({"label_guidance": bad}, 100.0)["label_guidance"] is None
    assert model_defaults({"hop_fraction": [0.5, 0.5, 0.25]}, 100.0)["hop_fraction"] == {0: 0.5, 1: 0.5, 2: 0.25}
    assert model_defaults({"hop_fraction": 0.5}, 100.0)["hop_fraction"] == 0.5
    for bad in (0, 1.5, [0.5, 0], "half", [], True):
        assert model_defaults({"hop_fraction": bad}, 100.0)["hop_fraction"] is None
    assert model_defaults({"levels": [1, 2]}, 100.0)["levels"] == [2, 1]
    for bad in ([], [-1], [1.0], [True], "1", 2):
        assert model_defaults({"levels": bad}, 100.0)["levels"] is None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from jukebox.api import load_model
    from jukebox.testing import make_tiny_model_dir

    md = make_tiny_model_dir(tmp_path_factory.mktemp("settings") / "m")
    info = json.loads((md.path / "model.json").read_text())
    info["sampling"] = {"temperature": [0.7, 0.8, 0.9], "draw": "cdf", "hop_fraction": [0.5, 0.5, 0.25]}
    (md.path / "model.json").write_text(json.dumps(info))
    return load_model(md.path, device="cpu")


def test_api_resolves_once_and_settings_reproduce_a_call(tiny, monkeypatch):
    jb = tiny
    s = jb.sampling_settings(top_k=4, seed=3)
    assert [s[lvl].temperature for lvl in (0, 1, 2)] == [0.7, 0.8, 0.9] and s[0].draw == "cdf"
    assert [s[lvl].hop_fraction for lvl in (0, 1, 2)] == [0.5, 0.5, 0.25]
    assert jb.sampling_settings(hop_fraction=0.125)[2].hop_fraction == 0.125  # a call's own wins
    assert s[2].top_k == 4 and s.seed == 3
    seconds = 0.05
    a = jb.generate(seconds=seconds, levels=[2], top_k=4, seed=3, alignment=False)
    made = []
    orig = LevelSettings.__post_init__
    monkeypatch.setattr(LevelSettings, "__post_init__", lambda self: (made.append(1), orig(self))[1])
    b = jb.generate(seconds=seconds, levels=[2], settings=s, alignment=False)
    assert made == []  # nothing is checked again while sampling: the objects are passed as they are
    monkeypatch.undo()
    assert torch.equal(a.codes[2], b.codes[2]) and a.sampling == s == b.sampling
    assert SamplingSettings.from_dict(a.settings["sampling"]) == s
    c = jb.generate(seconds=seconds, levels=[2], settings=s, seed=4, alignment=False)  # overrides on top
    assert c.sampling.seed == 4 and not torch.equal(a.codes[2], c.codes[2])
    with pytest.raises(UsageError, match="also samples"):
        jb.generate(seconds=seconds, settings=SamplingSettings.for_levels([2]))
    with pytest.raises(UsageError, match="SamplingSettings"):
        jb.generate(seconds=seconds, settings={"top_k": 3})
    with pytest.raises(UsageError, match="temperature"):
        jb.generate(seconds=seconds, temperature=-1.0)
    with pytest.raises(TypeError):
        jb.generate(seconds=seconds, temprature=0.5)


def test_greedy_prior_sample_equals_settings_object():
    """Prior.sample takes a LevelSettings or the same settings by name."""
    from jukebox.prior.config import prior_preset
    from jukebox.prior.model import Prior

    torch.manual_seed(0)
    prior = Prior(prior_preset("tiny_top")).eval()
    y = torch.zeros(2, prior.config.y_len, dtype=torch.long)
    y[:, 0] = y[:, 2] = prior.sample_length
    by_name = prior.sample(2, y=y, temperature=0.0, sample_tokens=12)
    by_object = prior.sample(2, y=y, settings=LevelSettings(temperature=0.0), sample_tokens=12)
    assert torch.equal(by_name, by_object)
    with pytest.raises(SettingsError):
        prior.sample(2, y=y, top_p=2.0, sample_tokens=4)
