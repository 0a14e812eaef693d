"""research/scripts/eval_continuation.py on a tiny model: windows from a code folder, primed continuation, its
report."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jukebox.testing import make_tiny_model_dir

SR = 44100
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "eval_continuation.py"


def _load():
    spec = importlib.util.spec_from_file_location("eval_continuation", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_eval_continuation_reports_agreement_pulse_and_bits(tmp_path: Path, monkeypatch) -> None:
    from jukebox.cli import main as cli_main

    music = tmp_path / "music"
    music.mkdir()
    rows = ["file,artist,genre,lyrics,split"]
    t = np.arange(int(3.5 * SR)) / SR
    for i in range(3):  # clicks at 2 per second on a tone: a pulse the real windows carry
        x = 0.2 * np.sin(2 * np.pi * 220 * (i + 1) * t) + 0.6 * (np.mod(t, 0.5) < 0.01)
        sf.write(music / f"s{i}.wav", x.astype(np.float32), SR)
        rows.append(f"s{i}.wav,{('Alice Example', 'Bob Demo')[i % 2]},{('folk', 'rock')[i % 2]},,train")
    (music / "metadata.csv").write_text("\n".join(rows) + "\n")
    md = make_tiny_model_dir(tmp_path / "model", n_ctx=512)
    codes = tmp_path / "codes"
    mods = tuple(dict.fromkeys((*cli_main.COMMAND_MODULES, "prepare")))
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", mods)
    assert cli_main.main(["prepare", "--data", str(music), "--model", str(md.path), "--codes", str(codes),
                          "--levels", "2", "--device", "cpu", "--min-seconds", "0.5"]) == 0
    out = tmp_path / "r.json"
    mod = _load()
    mod.main(["-m", str(md.path), "--codes", str(codes), "--tracks", "2", "--windows-per-track", "2",
              "--prime-seconds", "0.5", "--temperature", "1.0", "0.5", "--device", "cpu", "--out-json", str(out),
              "--context-use"])
    r = json.loads(out.read_text())
    use = r["context_use_bits"]  # far context replaced by random codes: other bits, same keys
    assert list(use) == ["all", "512", "128", "16", "0"] and all(math.isfinite(v) for v in use.values())
    assert use["512"] == use["all"] and use["0"] != use["all"]  # 512 reaches past the window's start: nothing random
    assert r["windows"] == 4 and r["n_ctx"] == 512 and r["prime_tokens"] == int(0.5 * SR) // r["hop"]
    assert r["judged_tokens"] == 512 - r["prime_tokens"]
    assert [s["temperature"] for s in r["sampled"]] == [1.0, 0.5]
    for s in r["sampled"]:
        assert 0.0 <= s["agreement"] <= 1.0 and math.isfinite(s["pulse"])
    assert math.isfinite(r["real_pulse"])
    assert 0 < r["teacher_forced_bits_true_labels"] < 20 and 0 < r["teacher_forced_bits_offset0_labels"] < 20
    with pytest.raises(SystemExit, match="prime-seconds"):
        mod.main(["-m", str(md.path), "--codes", str(codes), "--prime-seconds", "10", "--device", "cpu"])
