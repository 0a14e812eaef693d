"""research/scripts/eval_tempo.py: the codes a run saves (--codes-out), decoded again (--from-codes), give the
same clips and measures."""

from __future__ import annotations

import json

import numpy as np

from conftest import load_script

et = load_script("eval_tempo")


def test_codes_round_trip(tmp_path, monkeypatch):
    from jukebox.testing import make_tiny_model_dir

    model = make_tiny_model_dir(tmp_path / "m").path
    common = ["eval_tempo.py", "-m", str(model), "--clips", "3", "--batch", "2", "--seconds", "0.5", "--device", "cpu",
              "--genres", "unknown"]
    monkeypatch.setattr("sys.argv", [*common, "--seed", "3", "--codes-out", str(tmp_path / "c.npz"),
                                     "--out", str(tmp_path / "a.json")])
    et.main()
    with np.load(tmp_path / "c.npz") as z:
        assert z["codes"].shape[0] == 3 and z["codes"].dtype == np.int16 and list(z["genres"]) == ["unknown"] * 3
    monkeypatch.setattr("sys.argv", [*common, "--from-codes", str(tmp_path / "c.npz"),
                                     "--out", str(tmp_path / "b.json")])
    et.main()
    a, b = (json.loads((tmp_path / f"{n}.json").read_text())["rows"] for n in "ab")
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert x["genre"] == y["genre"]
        assert abs(x["rms_dbfs"] - y["rms_dbfs"]) < 1e-6 and abs(x["pulse_clarity"] - y["pulse_clarity"]) < 1e-6
