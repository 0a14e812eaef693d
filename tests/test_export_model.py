"""recipes/export_model.py: fp16 weights, training state left out, sampling defaults kept or filled in."""

from __future__ import annotations

import json

import torch

from conftest import load_script
from jukebox.checkpoint.format import load_weights
from jukebox.testing import make_tiny_model_dir


def test_export_fills_sampling_defaults_and_halves_weights(tmp_path):
    mod = load_script("export_model")
    src = make_tiny_model_dir(tmp_path / "src").path
    meta = json.loads((src / "model.json").read_text())
    meta.pop("sampling", None)
    (src / "model.json").write_text(json.dumps(meta))
    (src / "prior_level_2" / "checkpoint").mkdir()  # training state must not travel
    mod.export(src, tmp_path / "out")
    out = json.loads((tmp_path / "out" / "model.json").read_text())
    embedded = json.loads((mod.EMBEDDED / "model.json").read_text())
    assert out["sampling"] == embedded["sampling"]
    assert not (tmp_path / "out" / "prior_level_2" / "checkpoint").exists()
    sd = load_weights(tmp_path / "out" / "prior_level_2")
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
    ref = load_weights(src / "prior_level_2")
    assert sd.keys() == ref.keys()
    k = next(k for k, v in ref.items() if v.is_floating_point())
    torch.testing.assert_close(sd[k].float(), ref[k].float(), atol=1e-3, rtol=1e-3)


def test_export_keeps_the_models_own_sampling_defaults(tmp_path):
    mod = load_script("export_model")
    src = make_tiny_model_dir(tmp_path / "src").path
    meta = json.loads((src / "model.json").read_text())
    meta["sampling"] = {"decode": "eager", "draw": "multinomial"}
    (src / "model.json").write_text(json.dumps(meta))
    mod.export(src, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "model.json").read_text())["sampling"] == meta["sampling"]
