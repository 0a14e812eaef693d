"""Input never ends in "unexpected X": values are checked where they enter (the settings object, the config
loader, the model builder, the command's arguments), each refusal is one line, and a failed run leaves no
half-made output folder."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from cli_checks import one_line, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from jukebox.errors import JukeboxError
from jukebox.prior.logits import token_sampler
from jukebox.prior.settings import TEMPERATURE_RANGE, LevelSettings, SettingsError, temperature_ok
from jukebox.sampling.settings import model_defaults
from jukebox.testing import make_tiny_model_dir

SECONDS = ["--seconds", "0.05", "--quiet"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("input")
    model = make_tiny_model_dir(root / "tiny").path
    rng = np.random.default_rng(0)
    sf.write(root / "short.wav", (rng.standard_normal(1000) * 0.1).astype("f4"), 44100)
    sf.write(root / "ok.wav", (rng.standard_normal(4000) * 0.1).astype("f4"), 44100)
    out = root / "run"
    assert run_cli(_NoCapture(), ["sample", "-m", str(model), "-o", str(out), *SECONDS, "--seed", "1"])[0] == 0
    return {"root": root, "model": model, "codes": out / "codes.npz"}


class _NoCapture:
    def readouterr(self):
        class R:
            err = ""
        return R()


def _edited(work, tmp_path, rel: str, edit) -> str:
    model = shutil.copytree(work["model"], tmp_path / "m")
    path = model / rel
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return str(model)


# ------------------------------------------------------------------------------------------------ score

@pytest.mark.parametrize("extra", [["--total-seconds", "nan"], ["--total-seconds", "inf"], ["--total-seconds", "1e308"],
                                   ["--total-seconds", "1e15"], ["--total-seconds", "-1"],
                                   ["--total-seconds", "10", "--offset-seconds", "nan"],
                                   ["--total-seconds", "10", "--offset-seconds", "10"]])
def test_score_checks_lengths_as_sample_does(capsys, work, extra):
    """Before: `unexpected ValueError/OverflowError` (cannot convert float NaN/infinity to integer)."""
    rc, err = run_cli(capsys, ["score", "-m", str(work["model"]), str(work["codes"]), "--level", "2", *extra])
    one_line(err, rc, 2, "seconds")


# ------------------------------------------------------------------------------------------------ temperature

@pytest.mark.parametrize("value", ["nan", "1e-300", "inf", "-1", "1e-4", "1000"])
def test_bad_temperatures_are_refused_and_leave_no_folder(capsys, work, tmp_path, value):
    """Before: 1e-300 crashed in the draw (`unexpected RuntimeError: probability tensor contains inf, nan`) and
    left the half-made folder; inf was accepted."""
    out = tmp_path / "o"
    rc, err = run_cli(capsys, ["sample", "-m", str(work["model"]), "-o", str(out), *SECONDS, "--temperature", value])
    one_line(err, rc, 2, "temperature must be 0 (greedy) or between")
    assert not out.exists()


@settings(max_examples=200, deadline=None)
@given(t=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 1000)),
       scale=st.sampled_from([1.0, 30.0, 1e4]))
def test_a_temperature_is_refused_or_draws_valid_tokens(t, scale):
    """Every temperature the settings object accepts draws tokens from any finite logits; every other one is a
    SettingsError when the object is made (never a crash in the draw)."""
    try:
        s = LevelSettings(temperature=t)
    except SettingsError:
        assert not temperature_ok(t)
        return
    assert temperature_ok(t)
    logits = torch.randn(4, 64, generator=torch.Generator().manual_seed(0)) * scale
    tokens = token_sampler(s, torch.Generator().manual_seed(1))(logits)
    assert tokens.shape == (4,) and int(tokens.min()) >= 0 and int(tokens.max()) < 64


@given(t=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.lists(st.floats(), min_size=1, max_size=3)))
def test_model_json_temperatures_go_through_the_same_check(t):
    """A model.json default either passes LevelSettings' check or falls back to 1.0 (1e-300 crashed the draw)."""
    d = model_defaults({"temperature": t}, 100.0)["temperature"]
    for v in (d.values() if isinstance(d, dict) else [d]):
        LevelSettings(temperature=v)
        assert v > 0 and TEMPERATURE_RANGE[0] <= v <= TEMPERATURE_RANGE[1]


def test_a_model_json_temperature_of_1e_300_samples(capsys, work, tmp_path):
    model = _edited(work, tmp_path, "model.json", lambda d: d.update(sampling={"temperature": 1e-300}))
    rc, err = run_cli(capsys, ["sample", "-m", model, "-o", str(tmp_path / "o"), *SECONDS])
    assert rc == 0, err


# ------------------------------------------------------------------------------------ hand-edited model files

@pytest.mark.parametrize("rel,edit,words", [
    ("prior_level_2/labels.json", lambda d: d.update(y_bins=[4, 100], artists={**d["artists"], "zed": 99}),
     ["labels.json", "past the prior's embeddings"]),
    ("prior_level_2/labels.json", lambda d: d["artists"].update(zed=99), ["too small"]),
    ("prior_level_2/config.json", lambda d: d["transformer"].update(heads=3), ["config.json", "not divisible"]),
    ("prior_level_2/config.json", lambda d: d["transformer"].update(blocks=0), ["config.json", "built"]),
    ("prior_level_2/config.json", lambda d: d["transformer"].update(heads=0), ["config.json"]),
    ("prior_level_2/config.json", lambda d: d.update(downs_t=[3, 2]), ["config.json"]),
    ("vqvae/config.json", lambda d: d.update(multipliers=[2, 1]), ["vqvae/config.json", "multipliers"]),
    ("vqvae/config.json", lambda d: d.update(levels=2), ["vqvae/config.json"]),
])
def test_hand_edited_model_files_are_one_line_and_leave_no_folder(capsys, work, tmp_path, rel, edit, words):
    """Before: `unexpected ValueError` (heads not dividing the width), `unexpected ZeroDivisionError` (0 blocks),
    `unexpected IndexError` (an artist id past the embedding); each left a half-made output folder."""
    model = _edited(work, tmp_path, rel, edit)
    out = tmp_path / "o"
    rc, err = run_cli(capsys, ["sample", "-m", model, "-o", str(out), *SECONDS, "--artist", "zed"])
    err = "\n".join(line for line in err.splitlines() if not line.startswith("warning: artist 'zed'"))
    one_line(err, rc, 1, *words)
    assert not out.exists()


@pytest.mark.parametrize("weight_map", [[1, 2], "x", {"a": 3}, {"a": "../x"}, {}, None])
def test_a_weight_index_of_the_wrong_type_is_one_line(work, tmp_path, weight_map):
    from jukebox.checkpoint.format import INDEX_NAME, weight_files

    (tmp_path / INDEX_NAME).write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(JukeboxError, match="corrupt weight index"):
        weight_files(tmp_path)
    (tmp_path / INDEX_NAME).write_text("[1]")
    with pytest.raises(JukeboxError, match="corrupt weight index"):
        weight_files(tmp_path)


@pytest.mark.parametrize("hps,words", [
    ({"sr": 0}, ["sample_rate"]), ({"l_mu": math.nan}, ["mu", "finite"]), ({"sr": "x"}, ["sample_rate"]),
    ({"downs_t": 3}, ["hps"]), ({"bandwidth": 3}, ["hps"]), ({"levels": 2}, ["entries but levels is 2"]),
    ({"strides_t": [2, 2]}, ["strides_t has 2 entries"]), ({"width": -4}, ["width"]),
])
def test_imported_hps_of_the_wrong_type_or_length_are_refused_at_import(capsys, tmp_path, hps, words):
    """Before: `unexpected TypeError/ValueError`, or (sr 0, NaN l_mu) a folder written that the loader refused."""
    src = tmp_path / "src"
    src.mkdir()
    torch.save({"model": {}, "hps": hps}, src / "vqvae.pth.tar")
    rc, err = run_cli(capsys, ["import-openai", str(src), "-o", str(tmp_path / "out")])
    one_line(err, rc, 1, "vqvae.pth.tar", *words)
    assert not (tmp_path / "out" / "vqvae").exists()


# ------------------------------------------------------------------------------------------------ other arguments

def test_device_meta_is_a_usage_error(capsys, work, tmp_path):
    """Before: `unexpected NotImplementedError: Cannot copy out of meta tensor; no data!`."""
    rc, err = run_cli(capsys, ["sample", "-m", str(work["model"]), "-o", str(tmp_path / "o"), *SECONDS,
                               "--device", "meta"])
    one_line(err, rc, 2, "--device meta")
    rc, err = run_cli(capsys, ["encode", "-m", str(work["model"]), str(work["root"] / "ok.wav"), "-o",
                               str(tmp_path / "c.npz"), "--device", "meta"])
    one_line(err, rc, 2, "--device meta")


def test_reconstruct_of_a_file_too_short_to_measure(capsys, work, tmp_path):
    """Before: `unexpected RuntimeError: ... Padding size should be less than the corresponding input dimension`."""
    rc, err = run_cli(capsys, ["reconstruct", "-m", str(work["model"]), str(work["root"] / "short.wav"), "--level",
                               "0", "-o", str(tmp_path / "r.wav")])
    one_line(err, rc, 2, "too short to measure", "1025 samples")
    assert not (tmp_path / "r.wav").exists()
    rc, err = run_cli(capsys, ["reconstruct", "-m", str(work["model"]), str(work["root"] / "ok.wav"), "--level",
                               "0", "-o", str(tmp_path / "r.wav")])
    assert rc == 0, err


def test_a_deeply_nested_batch_line_is_one_line(capsys, work, tmp_path):
    batch = tmp_path / "b.jsonl"
    batch.write_text('{"artist": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    rc, err = run_cli(capsys, ["sample", "-m", str(work["model"]), "-o", str(tmp_path / "o"), *SECONDS, "--batch",
                               str(batch)])
    one_line(err, rc, 2, "nested too deeply")
    assert not (tmp_path / "o").exists()


def test_a_failure_after_the_folder_was_made_removes_it(capsys, work, tmp_path, monkeypatch):
    """Any failure before a level is saved (here one deep in the sampler) takes the half-made folder away; a
    folder that already had files keeps them."""
    import jukebox.sampling.pipeline as pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("something deep broke")

    monkeypatch.setattr(pipeline, "sample_levels", broken)
    monkeypatch.setattr("jukebox.api.sample_levels", broken)
    out = tmp_path / "o"
    rc, err = run_cli(capsys, ["sample", "-m", str(work["model"]), "-o", str(out), *SECONDS])
    assert rc == 1 and "something deep broke" in err
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, err = run_cli(capsys, ["sample", "-m", str(work["model"]), "-o", str(out), *SECONDS, "--force"])
    assert rc == 1
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
