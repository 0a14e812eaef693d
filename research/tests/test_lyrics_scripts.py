"""The lyrics experiment's scripts (issue 10): int8 transport of priors, the sampling arms, the training-log
summary, alignment scoring against word timings, and the Opus packing of the sung corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_script

lm = load_script("lyrics_models")


def test_int8_round_trip_is_close_and_small() -> None:
    g = torch.Generator().manual_seed(0)
    state = {"w": torch.randn(64, 32, generator=g) * 0.05, "emb": torch.randn(100, 16, generator=g),
             "b": torch.randn(64, generator=g), "idx": torch.arange(5), "tiny": torch.randn(2, 3, generator=g)}
    q = lm.quantize(state)
    assert q["w::q8"].dtype == torch.int8 and q["w::scale"].shape == (64,) and q["b"].dtype == torch.float16
    assert "tiny" in q and "tiny::q8" not in q  # below min_numel: plain fp16
    back = lm.dequantize(q)
    assert set(back) == set(state)
    for k in ("w", "emb"):
        err = (back[k] - state[k]).abs().max(dim=1).values
        assert torch.all(err <= state[k].abs().max(dim=1).values / 127 * 0.51 + 1e-3)  # half a step per row
    assert torch.equal(back["idx"], state["idx"])


def test_pack_unpack_builds_loadable_model_dirs(tmp_path: Path) -> None:
    from jukebox.checkpoint.format import load_weights
    from jukebox.checkpoint.model_dir import ModelDir
    from jukebox.testing import make_tiny_model_dir

    run = tmp_path / "run"
    make_tiny_model_dir(tmp_path / "base")
    make_tiny_model_dir(run / "lyrics", lyrics="encoder_decoder", seed=1)
    make_tiny_model_dir(run / "control", seed=2)
    make_tiny_model_dir(run / "up1", seed=3)
    for name, level in (("lyrics", 2), ("control", 2), ("up1", 1)):  # "trained": a checkpoint with its step
        ck = run / name / f"prior_level_{level}" / "checkpoint"
        ck.mkdir()
        (ck / "trainer.json").write_text(json.dumps({"step": 7}))
    assert lm.main(["pack", str(run), str(tmp_path / "packs")]) == 0
    assert sorted(p.name for p in (tmp_path / "packs").iterdir()) == ["control.q8.tar.xz", "lyrics.q8.tar.xz",
                                                                          "up1.q8.tar.xz"]
    made = lm.unpack(tmp_path / "packs", tmp_path / "models", tmp_path / "base")
    assert set(made) == {"lyrics", "control"} and made["lyrics"]["step"] == 7
    md = ModelDir(tmp_path / "models" / "lyrics")
    assert md.prior_levels() == [0, 1, 2] and md.prior_config(2).lyrics.style == "encoder_decoder"
    md.load_prior(2)
    got, want = load_weights(md.path / "prior_level_1"), load_weights(run / "up1" / "prior_level_1")
    assert max(float((got[k].float() - want[k].float()).abs().max()) for k in want) < 0.02  # the fine-tuned one
    base0 = load_weights(tmp_path / "base" / "prior_level_0")
    assert all(torch.equal(load_weights(md.path / "prior_level_0")[k], base0[k]) for k in base0)  # the base's


def test_arms_pair_each_song_with_other_lyrics() -> None:
    songs = [{"id": f"s{i}", "artist": "kal" if i % 2 else "ked", "genre": "piano", "lyrics": f"words {i}",
              "duration": 100.0 + i} for i in range(5)]
    arms = lm.arms_for(songs, ["lyrics", "control"])
    assert [a["name"] for a in arms] == ["lyrics_right", "lyrics_wrong", "control_none"]
    right, wrong, none = (a["items"] for a in arms)
    assert [it["lyrics"] for it in right] == [s["lyrics"] for s in songs]
    assert all(w["lyrics_of"] != w["song"] for w in wrong)  # a derangement
    assert sorted(w["lyrics_of"] for w in wrong) == [s["id"] for s in songs]
    assert all(it["lyrics"] == "" for it in none)
    for items in (right, wrong, none):  # labels and length stay the song's own
        assert [(it["song"], it["artist"], it["total_seconds"]) for it in items] == [
            (s["id"], s["artist"], s["duration"]) for s in songs]


def test_parse_log() -> None:
    text = "\n".join([
        "training the level-2 prior (6.96M parameters, n_ctx 1024) on 127 tracks",
        "prior_level_2 step 50/100000 loss 9.5 lr 0.00015 120000 tokens/s",
        "prior_level_2 step 100/100000 loss 8.25 lr 0.0003 130000 tokens/s",
        "prior_level_2 step 100 validation: loss 7.9 bpd 8.4 prime_loss 3.1 gen_loss 8.4",
    ])
    out = lm.parse_log(text)
    assert out["last_step"] == 100 and out["tokens_per_s"] == 130000
    assert out["val"] == [{"step": 100, "loss": 7.9, "bpd": 8.4, "prime_loss": 3.1, "gen_loss": 8.4}]


def test_sample_stage_tiny(tmp_path: Path) -> None:
    """cmd_sample end to end on tiny models: every arm's codes at every level, alignment, info."""
    from jukebox.testing import make_tiny_model_dir

    models = tmp_path / "models"
    make_tiny_model_dir(models / "lyrics", lyrics="encoder_decoder")
    make_tiny_model_dir(models / "control", seed=1)
    songs = [{"id": f"song{i:05d}", "artist": "Alice Example", "genre": "folk", "lyrics": f"la la la {i} oh",
              "duration": 0.5 + i} for i in range(3)]
    (tmp_path / "heldout.json").write_text(json.dumps(songs))
    out = tmp_path / "out"
    assert lm.main(["sample", "--models", str(models), "--heldout", str(tmp_path / "heldout.json"), "--out",
                    str(out), "--seconds", "0.1", "--device", "cpu"]) == 0
    assert torch.is_grad_enabled()  # the script leaves torch's global state as it was
    info = json.loads((out / "sample_info.json").read_text())
    assert [a["name"] for a in info["arms"]] == ["lyrics_right", "lyrics_wrong", "control_none"]
    z = np.load(out / "samples_lyrics.npz")
    n2 = z["right_level_2"].shape[1]
    assert z["right_level_2"].shape == z["wrong_level_2"].shape == (3, n2)
    assert z["right_level_0"].shape == (3, n2 * 16) and z["wrong_level_1"].shape == (3, n2 * 4)
    assert np.load(out / "samples_control.npz")["none_level_0"].shape == (3, n2 * 16)
    al = np.load(out / "alignment.npz")
    assert al["argmax_right_lyrics_0"].shape == (n2,) and "argmax_wrong_lyrics_2" in al


ev = load_script("eval_lyrics")


def test_char_words_and_alignment_metrics() -> None:
    text = "Hello there, you!\nOh la"
    words = [{"word": w, "start": s, "end": s + 0.5} for w, s in
             (("Hello", 0.0), ("there", 0.5), ("you", 1.0), ("Oh", 1.5), ("la", 2.0))]
    cw = ev.char_words(text, [w["word"] for w in words])
    assert list(cw[:5]) == [0] * 5 and cw[5] == -1 and cw[6] == 1 and cw[text.index("la")] == 4
    spf = 0.1
    t = 25
    perfect = np.zeros((t, len(text)), np.float32)
    for f in range(t):
        k = min(int((f + 0.5) * spf / 0.5), 4)
        first = int(np.nonzero(cw == k)[0][0])
        perfect[f, first] = 1.0
    m = ev.alignment_metrics(perfect, cw, words, spf)
    assert m["frames_on_word"] == 1.0 and m["within_one_word"] == 1.0 and m["median_onset_error_s"] == 0.0
    late = np.concatenate([perfect[:1].repeat(5, axis=0), perfect[:-5]])  # half a second late: a word behind
    m2 = ev.alignment_metrics(late, cw, words, spf)
    assert m2["frames_on_word"] < 0.3 and m2["within_one_word"] == 1.0 and m2["median_onset_error_s"] == 0.5
    base = ev.proportional_alignment(len(text), t, spf, 2.5)
    assert base.shape == (t, len(text)) and base.sum() == t


def test_opus_pack_rate() -> None:
    pytest.importorskip("soundfile")
    pk = load_script("pack_sung_audio")
    assert pk.compression_level(6) == 1.0 and abs(pk.compression_level(11) - 0.98) < 1e-9
    with pytest.raises(SystemExit):
        pk.compression_level(3)
    sr = 22050
    t = np.arange(5 * sr) / sr
    x = (0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * np.sin(3 * t)))).astype(np.float32)
    data = pk.encode_opus(x, sr, 16000, 11.0)
    kbps = len(data) * 8 / 5 / 1000
    assert 5 < kbps < 20
    import io

    import soundfile as sf

    y, sr2 = sf.read(io.BytesIO(data), dtype="float32")
    assert sr2 == 16000 and abs(len(y) - 5 * 16000) < 16000 * 0.1
