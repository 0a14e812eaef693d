"""research/scripts/pulse_through_levels.py: the --from-codes path (saved level-2 codes upsampled by the embedded
model, measured, kept as clips) and shard_pack.py's split of a pack, on tiny inputs."""

from __future__ import annotations

import csv
import json
import sys
import tarfile

import numpy as np
import pytest

from conftest import load_script

ptl = load_script("pulse_through_levels")
shard = load_script("shard_pack")


def test_from_codes_upsamples_measures_and_keeps_clips(tmp_path, monkeypatch):
    pytest.importorskip("jukebox")
    from jukebox.api import default_model_path

    if default_model_path() is None:
        pytest.skip("no embedded default model in this install")
    codes = np.random.default_rng(0).integers(0, 2048, (2, 344)).astype(np.int16)  # 2 s of top-level codes each
    np.savez(tmp_path / "val.npz", codes=codes, genres=["ambient", "electronic"], files=["a", "b"], at=[0.25, 0.5])
    out = tmp_path / "out.json"
    monkeypatch.setattr(sys, "argv", ["ptl", "-m", "default", "--from-codes", str(tmp_path / "val.npz"),
                                      "--keep-dir", str(tmp_path / "clips"), "--set", "temperature=[0.7,0.7,0.9]",
                                      "--out", str(out)])
    ptl.main()
    doc = json.loads(out.read_text())
    assert doc["summary"]["clips"] == 2 and set(doc["summary"]) == {"upsampled_1", "upsampled_0", "clips"}
    for r in doc["rows"]:
        assert 0 <= r["upsampled_0"]["harmonic_fraction"] <= 1 and np.isfinite(r["upsampled_0"]["pulse_clarity"])
    assert sorted(p.name for p in (tmp_path / "clips" / "upsampled").iterdir()) == ["0_ambient_0.ogg",
                                                                                   "1_electronic_0.ogg"]


def test_shard_pack_splits_by_size_and_keeps_every_row(tmp_path, monkeypatch):
    pack = tmp_path / "pack"
    (pack / "audio").mkdir(parents=True)
    rows = []
    for i in range(5):
        (pack / "audio" / f"t{i}.ogg").write_bytes(b"x" * 300_000)
        rows.append({"file": f"audio/t{i}.ogg", "artist": "a", "genre": "folk", "lyrics": "", "split": "train"})
    with open(pack / "metadata.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    monkeypatch.setattr(sys, "argv", ["shard", str(pack), "--max-mb", "0.8", "--out", str(tmp_path / "s")])
    shard.main()
    tars = sorted(tmp_path.glob("s_*.tar"))
    assert len(tars) == 3  # two 300-kB files fit under 0.8 MB less the header room, the fifth goes alone
    seen = []
    for k, t in enumerate(tars):
        with tarfile.open(t) as tar:
            meta = tar.extractfile(f"shard_{k}/metadata.csv").read().decode()
            files = [r["file"] for r in csv.DictReader(meta.splitlines())]
            assert all(f"shard_{k}/{f}" in tar.getnames() for f in files)
            seen += files
    assert seen == [r["file"] for r in rows]
    monkeypatch.setattr(sys, "argv", ["shard", str(pack), "--max-mb", "0.3", "--out", str(tmp_path / "z")])
    with pytest.raises(SystemExit, match="larger than a shard"):
        shard.main()
