"""The long lyric run's scripts: lyric priors grown from a lyric-free prior (lyrics_init.py), the schedule that
survives cold restarts and the int8 fallback packs (lyrics_long.py), the instrumental share (lyrics_codepack.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import load_script

li = load_script("lyrics_init")
ll = load_script("lyrics_long")
cp = load_script("lyrics_codepack")


def _labels(prior, batch: int = 2) -> torch.Tensor:
    c = prior.config
    y = torch.zeros(batch, c.n_labels, dtype=torch.long)
    y[:, 0], y[:, 1], y[:, 2] = c.sample_length * 4, c.sample_length, c.sample_length
    y[:, 3], y[:, 4] = 1, 1
    return y


@pytest.mark.parametrize("style", ["encoder_decoder", "merged"])
def test_grown_lyric_prior_keeps_the_base_layers(tmp_path: Path, style: str) -> None:
    from jukebox.checkpoint.model_dir import ModelDir
    from jukebox.nn.attention import layer_patterns
    from jukebox.testing import make_tiny_model_dir

    make_tiny_model_dir(tmp_path / "base", levels=(2,))
    rep = li.make(tmp_path / "base", tmp_path / "out", style, n_tokens=8)
    base = ModelDir(tmp_path / "base").load_prior(2)
    new = ModelDir(tmp_path / "out").load_prior(2)
    t = new.config.transformer
    pats = layer_patterns(t.attn_order, t.depth)
    lyric_layers = [i for i, p in enumerate(pats) if p in ("cross", "prime")]
    assert new.config.lyrics.style == style and new.config.alignment_layer in lyric_layers
    assert sorted(rep["base_layers_to"] + rep["new_layers"]) == list(range(t.depth))
    for i, j in enumerate(rep["base_layers_to"]):  # every base layer kept, weights and pattern
        assert pats[j] == layer_patterns(2, base.config.transformer.depth)[i]
        got, want = new.decoder.transformer.blocks[j], base.decoder.transformer.blocks[i]
        assert torch.equal(got.mlp.fc.weight, want.mlp.fc.weight)
    for j in rep["new_layers"]:  # added layers start as the identity
        assert not new.decoder.transformer.blocks[j].attn.proj.weight.any()
        assert not new.decoder.transformer.blocks[j].mlp.proj.weight.any()
    z = torch.randint(0, base.config.l_bins, (2, base.n_ctx))
    lyr = torch.randint(1, new.n_vocab, (2, new.n_tokens))
    y = _labels(base)
    with torch.no_grad():
        a = base.logits(z, None, y)
        b = new.logits(z, None, torch.cat([y, lyr], dim=1))
    if style == "encoder_decoder":  # the same music logits, whatever the lyrics
        assert torch.allclose(a, b, atol=1e-5)
    else:  # music after the lyric window, block length kept, code rows of the embedding are the base's
        assert b.shape[1] == new.n_tokens + base.n_ctx
        assert new.config.transformer.blocks * base.n_ctx // base.config.transformer.blocks == new.config.seq_len
        assert torch.equal(new.decoder.token_emb.weight[new.n_vocab:], base.decoder.token_emb.weight)
        assert torch.equal(new.decoder.pos_emb[new.n_tokens:], base.decoder.pos_emb)


def test_growth_refuses_a_base_it_cannot_keep() -> None:
    from jukebox.prior.config import prior_preset

    with pytest.raises(SystemExit, match="lyric-free"):
        li.lyric_config(prior_preset("tiny_lyrics"), "encoder_decoder", 8, 80)
    with pytest.raises(SystemExit, match="multiple of the base's block length"):
        li.lyric_config(prior_preset("tiny_top"), "merged", 12, 80)


def test_schedule_continues_across_a_cold_restart() -> None:
    sched = {"lr": 3e-4, "warmup": 100, "min_lr_ratio": 0.1, "planned_s": 1000.0, "trained_s": 0.0, "rate": 10.0}
    total = ll.plan_total(sched, 0, 500.0)
    assert total == 10001
    run = ll.restart_run(sched, 0, total)
    assert run == {"steps": total, "lr": 3e-4, "warmup": 100, "min_lr_ratio": 0.1}
    done = 4000
    cont = ll.restart_run(sched, done, total)
    global_lr = [ll.lr_at(done + k, 3e-4, total, 100, 0.1) for k in (cont["warmup"], 3000, total - done - 1)]
    local_lr = [ll.lr_at(k, cont["lr"], cont["steps"], cont["warmup"], cont["min_lr_ratio"])
                for k in (cont["warmup"], 3000, total - done - 1)]
    for g, loc in zip(global_lr, local_lr):
        assert abs(g - loc) / g < 0.01
    assert abs(local_lr[-1] - 3e-5) < 1e-7  # the same floor at the same final step
    early = ll.restart_run(sched, 30, total)  # a cold restart inside the warm-up finishes the warm-up
    assert early["lr"] == 3e-4 and early["warmup"] == 70 and early["steps"] == total - 30
    sched["trained_s"] = 1500.0  # past the plan: still a call's worth of steps (at the floor)
    assert ll.plan_total(sched, 20000, 300.0) == 23001


def test_prepare_account_pack_and_restore(tmp_path: Path) -> None:
    from jukebox.checkpoint.model_dir import ModelDir
    from jukebox.testing import make_tiny_model_dir

    make_tiny_model_dir(tmp_path / "base")
    run, state = tmp_path / "run", tmp_path / "state"
    common = ["--run", str(run), "--base", str(tmp_path / "base"), "--lr", "3e-4", "--warmup", "10",
              "--min-lr-ratio", "0.1", "--planned-s", "100", "--step-rate", "2", "--call-s", "50", "--n-tokens", "8"]
    assert ll.main(["prepare", "--style", "lyrics", "--state", str(state)] + common) == 0
    args = (run / "lyrics" / "train_args.txt").read_text().split()
    assert args[:2] == ["--steps", "201"] and "--resume" not in args
    # fake a training checkpoint at local step 40 (only trainer.json's step is read)
    ck = run / "lyrics" / "prior_level_2" / "checkpoint"
    ck.mkdir()
    (ck / "trainer.json").write_text(json.dumps({"step": 40}))
    assert ll.main(["account", "--run", str(run), "--style", "lyrics", "--seconds", "20"]) == 0
    sched = json.loads((run / "lyrics" / "schedule.json").read_text())
    assert sched["rate"] == 2.0 and sched["trained_s"] == 20.0 and sched["done"] == 40
    assert ll.main(["prepare", "--style", "lyrics", "--state", str(state)] + common) == 0  # warm: resume
    args = (run / "lyrics" / "train_args.txt").read_text().split()
    assert "--resume" in args and args[1] == str(40 + 2 * 80 + 1)
    state.mkdir()
    rep = ll.pack_state(run, "lyrics", state / "lyrics.q8.tar.xz")
    assert rep["step"] == 40 and rep["mb"] < 1
    cold = tmp_path / "cold"
    assert ll.main(["prepare", "--style", "lyrics", "--state", str(state), *common[:1], str(cold), *common[2:]]) == 0
    sched = json.loads((cold / "lyrics" / "schedule.json").read_text())
    assert sched["mode"] == "restored" and sched["offset"] == 40 and sched["run"]["warmup"] <= ll.RESTART_WARMUP
    assert "--resume" not in (cold / "lyrics" / "train_args.txt").read_text()
    a = ModelDir(run / "lyrics").load_prior(2)
    b = ModelDir(cold / "lyrics").load_prior(2)
    assert b.config == a.config
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert (va - vb).abs().max() <= va.abs().max() / 127 + 1e-3, k  # int8 round trip


def test_instrumental_share_is_genre_balanced() -> None:
    from jukebox.data.dataset import Track

    tracks = [Track(f"a{i}", 600.0, 22050, 1, genre="ambient") for i in range(20)]  # 3.3 h
    tracks += [Track(f"r{i}", 600.0, 22050, 1, genre="rock") for i in range(2)]  # 0.33 h
    picked, cap = cp.pick_instrumental(tracks, hours=1.5)
    by = {g: sum(t.duration for t in picked if t.genre == g) / 3600 for g in ("ambient", "rock")}
    assert by["rock"] == pytest.approx(1 / 3) and 1.1 <= by["ambient"] <= 1.34
    assert sum(by.values()) >= 1.5 and cap == pytest.approx(1.5 - 1 / 3, abs=0.2)
    assert [t.path for t in picked] == [t.path for t in tracks if t in picked]  # corpus order kept


def test_a_fixed_step_plan_ignores_the_rate_and_stops_when_done(tmp_path: Path) -> None:
    from jukebox.testing import make_tiny_model_dir

    sched = {"lr": 3e-4, "warmup": 100, "min_lr_ratio": 0.1, "planned_s": 1000.0, "trained_s": 900.0, "rate": 10.0,
             "planned_steps": 7634}
    assert ll.plan_total(sched, 0, 500.0) == 7634
    assert ll.plan_total(dict(sched, rate=50.0), 4000, 500.0) == 7634
    make_tiny_model_dir(tmp_path / "base")
    run = tmp_path / "run"
    common = ["--run", str(run), "--base", str(tmp_path / "base"), "--lr", "3e-4", "--warmup", "10",
              "--min-lr-ratio", "0.1", "--planned-s", "100", "--step-rate", "2", "--call-s", "50", "--n-tokens", "8",
              "--planned-steps", "60", "--state", ""]
    assert ll.main(["prepare", "--style", "lyrics"] + common) == 0
    assert (run / "lyrics" / "train_args.txt").read_text().split()[:2] == ["--steps", "60"]
    ck = run / "lyrics" / "prior_level_2" / "checkpoint"
    ck.mkdir()
    (ck / "trainer.json").write_text(json.dumps({"step": 60}))
    assert ll.main(["account", "--run", str(run), "--style", "lyrics", "--seconds", "20"]) == 0
    assert ll.main(["prepare", "--style", "lyrics"] + common) == 0  # warm, all 60 steps trained: nothing to do
    assert (run / "lyrics" / "train_args.txt").read_text() == ""
