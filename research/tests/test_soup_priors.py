"""research/scripts/soup_priors.py: per-tensor interpolation, grown tables keep B's extra rows, a written folder
loads back as the mix."""

from __future__ import annotations

import pytest
import torch

from conftest import load_script

sp = load_script("soup_priors")


def test_soup_mixes_and_keeps_new_rows():
    a = {"w": torch.zeros(3, 4), "emb": torch.zeros(2, 4), "n": torch.tensor([1])}
    b = {"w": torch.ones(3, 4), "emb": torch.ones(5, 4), "n": torch.tensor([7])}
    out = sp.soup(a, b, 0.25)
    assert torch.allclose(out["w"].float(), torch.full((3, 4), 0.25))
    assert torch.allclose(out["emb"][:2].float(), torch.full((2, 4), 0.25)) and bool((out["emb"][2:] == 1).all())
    assert out["n"].item() == 7
    with pytest.raises(SystemExit):
        sp.soup({"w": torch.zeros(3, 4)}, {"w": torch.zeros(3, 5)}, 0.5)
    with pytest.raises(SystemExit):
        sp.soup({"w": torch.zeros(3, 4)}, {"v": torch.zeros(3, 4)}, 0.5)


def test_written_folder_loads_back(tmp_path, monkeypatch):
    from jukebox.checkpoint.format import load_weights, save_weights

    for name, value in (("a", 0.0), ("b", 1.0)):
        (tmp_path / name).mkdir()
        save_weights(tmp_path / name, {"w": torch.full((256, 128), value)})
        (tmp_path / name / "config.json").write_text("{}")
    monkeypatch.setattr("sys.argv", ["soup_priors.py", str(tmp_path / "a"), str(tmp_path / "b"),
                                     str(tmp_path / "out"), "--alpha", "0.5"])
    sp.main()
    w = load_weights(tmp_path / "out")["w"].float()
    assert (tmp_path / "out" / "config.json").is_file() and torch.allclose(w, torch.full_like(w, 0.5), atol=1e-2)
