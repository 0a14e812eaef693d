"""`jukebox sample` end to end on tiny random models, and greedy parity with the original through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import load_reference
from jukebox.api import load_model
from jukebox.cli.main import main
from jukebox.hparams import Hyperparams
from jukebox.testing import make_tiny_model_dir

SECONDS = "0.05"  # 17 top tokens: one context at each level of the tiny model (n_ctx 32)


@pytest.fixture(scope="module")
def lyric_model(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("m") / "tiny", lyrics="encoder_decoder").path


def _codes(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_ancestral_outputs(tmp_path, lyric_model):
    out = tmp_path / "run"
    rc = main(["sample", "-m", str(lyric_model), "--artist", "Alice Example", "--genre", "folk", "--lyrics",
               "la la la, hello", "--seconds", SECONDS, "--n-samples", "2", "--seed", "3", "--top-p", "0.9",
               "-o", str(out), "--quiet"])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["alignment.json", "alignment_0.png", "alignment_1.png", "codes.npz", "item_0.wav",
                     "item_1.wav", "metadata.json"]
    codes = _codes(out / "codes.npz")
    assert {k: v.shape for k, v in codes.items()} == {"level_0": (2, 272), "level_1": (2, 68), "level_2": (2, 17)}
    assert sf.info(out / "item_0.wav").frames == 2176
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["status"] == "done" and meta["request"]["seed"] == 3 and meta["level"] == 0
    assert [t["level"] for t in meta["timings"]] == [2, 1, 0]
    align = json.loads((out / "alignment.json").read_text())["items"][0]
    assert [c["char"] for c in align["characters"]] == list("la la la, hello")
    assert (out / "alignment_0.png").read_bytes()[:4] == b"\x89PNG"
    # The same seed gives the same song; existing outputs are never overwritten.
    assert main(["sample", "-m", str(lyric_model), "--seconds", SECONDS, "-o", str(out), "--quiet"]) == 1


def test_seed_reproducible_and_draft_levels(tmp_path, lyric_model):
    model = load_model(lyric_model, device="cpu")
    a = model.generate(artist="Bob Demo", genre="rock", seconds=0.05, seed=7, levels=[2], alignment=False)
    b = model.generate(artist="Bob Demo", genre="rock", seconds=0.05, seed=7, levels=[2], alignment=False)
    assert torch.equal(a.codes[2], b.codes[2]) and a.level == 2 and a.audio.shape == (1, 1, 2176)
    assert set(a.codes) == {2}


def test_upsample_continue_primed_and_resume(tmp_path, lyric_model):
    m = str(lyric_model)
    draft = tmp_path / "draft"
    assert main(["sample", "-m", m, "--seconds", SECONDS, "--levels", "2", "--seed", "1", "-o", str(draft),
                 "--quiet", "--no-alignment"]) == 0
    assert set(_codes(draft / "codes.npz")) == {"level_2"}
    up = tmp_path / "up"
    assert main(["sample", "-m", m, "--mode", "upsample", "--codes", str(draft / "codes.npz"), "--seed", "1",
                 "-o", str(up), "--quiet", "--no-alignment"]) == 0
    codes = _codes(up / "codes.npz")
    np.testing.assert_array_equal(codes["level_2"], _codes(draft / "codes.npz")["level_2"])
    assert codes["level_0"].shape == (1, 272)

    # Interrupted after the top level: --resume finishes with the codes an uninterrupted run gives.
    meta = json.loads((up / "metadata.json").read_text())
    part = tmp_path / "part"
    part.mkdir()
    np.savez(part / "codes.npz", level_2=codes["level_2"])
    (part / "metadata.json").write_text(json.dumps({**meta, "status": "running"}))
    assert main(["sample", "-o", str(part), "--resume", "--quiet"]) == 0
    resumed = _codes(part / "codes.npz")
    for k in codes:
        np.testing.assert_array_equal(resumed[k], codes[k])

    cont = tmp_path / "cont"
    assert main(["sample", "-m", m, "--mode", "continue", "--codes", str(up / "codes.npz"), "--seconds", "0.08",
                 "-o", str(cont), "--quiet", "--no-alignment"]) == 0
    longer = _codes(cont / "codes.npz")
    assert longer["level_2"].shape == (1, 27)
    np.testing.assert_array_equal(longer["level_2"][:, :17], codes["level_2"])

    primed = tmp_path / "primed"
    assert main(["sample", "-m", m, "--prompt", str(up / "item_0.wav"), "--prompt-seconds", "0.03", "--seconds",
                 SECONDS, "--n-samples", "2", "-o", str(primed), "--quiet", "--no-alignment"]) == 0
    assert _codes(primed / "codes.npz")["level_2"].shape == (2, 17)


def test_list_names_batch_and_bad_input(tmp_path, lyric_model, capsys):
    m = str(lyric_model)
    assert main(["sample", "-m", m, "--list-artists"]) == 0
    assert "alice_example" in capsys.readouterr().out.lower()
    assert main(["sample", "-m", m, "--list-genres", "roc"]) == 0
    assert "rock" in capsys.readouterr().out
    batch = tmp_path / "items.jsonl"
    batch.write_text('{"artist": "Alice Example", "genre": "folk", "lyrics": "ho"}\n'
                     '{"artist": "Bob Demo", "genre": "rock", "lyrics": "hey"}\n')
    assert main(["sample", "-m", m, "--batch", str(batch), "--seconds", SECONDS, "--levels", "2",
                 "-o", str(tmp_path / "b"), "--quiet"]) == 0
    meta = json.loads((tmp_path / "b" / "metadata.json").read_text())
    assert [i["artist"] for i in meta["settings"]["items"]] == ["Alice Example", "Bob Demo"]
    for argv, code in [
        (["--seconds", "0"], 2), (["--seconds", "-1"], 2), (["--seconds", SECONDS, "--top-p", "1.5"], 2),
        (["--seconds", SECONDS, "--mode", "primed"], 2), (["--seconds", SECONDS, "--levels", "5"], 2),
        (["--seconds", SECONDS, "--lyrics-file", str(tmp_path / "none.txt")], 2),
    ]:
        capsys.readouterr()
        assert main(["sample", "-m", m, *argv, "-o", str(tmp_path / "bad"), "--quiet"]) == code, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.strip().count("\n") == 0, err


def _write_original_layout(src, kind):
    """A folder laid out like OpenAI's released files, from the tiny reference fixtures."""
    src.mkdir()
    vq = load_reference("vqvae.pt")
    torch.save({"model": vq["state_dict"], "hps": Hyperparams(vq["hps"])}, src / "vqvae.pth.tar")
    names = {0: "upsampler_level_0", 1: "upsampler_level_1", 2: f"top_{kind}"}
    for level, name in names.items():
        ref = load_reference(f"prior_{name}.pt")
        torch.save({"model": ref["state_dict"], "hps": Hyperparams(ref["hps"]), "step": np.int64(0)},
                   src / f"prior_level_{level}.pth.tar")


@pytest.mark.parametrize("kind", ["5b", "5b_lyrics", "1b_lyrics"])
def test_import_and_sample_match_original_pipeline(tmp_path, kind, reference_ids_dir):
    ref = load_reference(f"pipeline_{kind}.pt")
    torch.set_num_threads(1)
    src = tmp_path / "src"
    _write_original_layout(src, kind)
    model = tmp_path / "model"
    assert main(["import-openai", str(src), "-o", str(model), "--ids-dir", str(reference_ids_dir)]) == 0
    items = [{"artist": i["artist"], "genre": i["genre"], "lyrics": i["lyrics"]} for i in ref["labels"][2]["info"]]
    batch = tmp_path / "items.jsonl"
    batch.write_text("".join(json.dumps(i) + "\n" for i in items))
    seconds = repr(ref["hps"]["sample_length"] / 44100)
    out = tmp_path / "out"
    assert main(["sample", "-m", str(model), "--batch", str(batch), "--seconds", seconds, "--total-seconds", "1",
                 "--top-k", "1", "--temperature", "1", "--chunk-size", "8", "--max-batch-size", "1",
                 "-o", str(out), "--quiet", "--no-alignment"]) == 0
    codes = _codes(out / "codes.npz")
    for level in range(3):
        np.testing.assert_array_equal(codes[f"level_{level}"], ref["zs"][level].numpy(), err_msg=f"level {level}")


def test_default_total_length_from_model_json(tmp_path):
    """Without total_seconds a call's timing labels describe the model's typical song length (``model.json``
    "sampling": {"total_seconds": N}, at least the piece itself); models without one keep the piece's length."""
    from jukebox.testing import make_tiny_model_dir

    md = make_tiny_model_dir(tmp_path / "m")
    kw = dict(seconds=0.05, seed=0, levels=[2], alignment=False, loudness=None)
    model = load_model(md.path, device="cpu")
    info = model.model_dir.info  # model.json, as read
    assert "sampling" not in info and model.sampling_defaults["total_seconds"] is None
    own = model.generate(**kw)
    assert (own.settings["total_seconds"], own.settings["total_seconds_from"]) == (0.05, "seconds")
    for bad in (-5, "long", True, [30], 0):
        info["sampling"] = {"total_seconds": bad}
        assert model.sampling_defaults["total_seconds"] is None
    info["sampling"] = {"total_seconds": 15}
    assert model.sampling_defaults["total_seconds"] == 15.0
    out = model.generate(**kw)
    assert (out.settings["total_seconds"], out.settings["total_seconds_from"]) == (15.0, "model.json")
    same = model.generate(**kw, total_seconds=15)
    assert torch.equal(out.codes[2], same.codes[2]) and same.settings["total_seconds_from"] == "total_seconds"
    labels = [model.item_labels(2, out.settings["items"], out.settings["sample_length"], g.settings["total_length"]).y
              for g in (out, own)]
    assert not torch.equal(*labels)  # the timing labels differ from those of a 0.05 s "song"
    assert model.generate(**kw, total_seconds=0.05).settings["total_seconds"] == 0.05  # an explicit one wins
    info["sampling"] = {"total_seconds": 0.02}  # a piece longer than the model's song length describes itself
    short = model.generate(**kw)
    assert (short.settings["total_seconds"], short.settings["total_seconds_from"]) == (0.05, "seconds")
    assert torch.equal(short.codes[2], own.codes[2])
    # one beyond the top prior's timing range is held to it; the CLI records the length used and its source
    (md.path / "model.json").write_text(json.dumps({**info, "sampling": {"total_seconds": 10 * model.max_seconds}}))
    assert main(["sample", "-m", str(md.path), "--seconds", "0.05", "--levels", "2", "--seed", "0", "--quiet",
                 "-o", str(tmp_path / "o")]) == 0
    settings = json.loads((tmp_path / "o" / "metadata.json").read_text())["settings"]
    assert (settings["total_seconds"], settings["total_seconds_from"]) == (model.max_seconds, "model.json")


def test_model_json_levels_choose_the_rendered_level(tmp_path):
    """A model's own ``levels`` (``model.json`` "sampling": {"levels": [2, 1]}) are what a call without levels
    samples: the audio is decoded from level 1; ``levels="all"`` / ``--levels all`` still render every level;
    levels that are not a run of the model's levels from the top fall back to all of them."""
    from jukebox.errors import JukeboxError

    md = make_tiny_model_dir(tmp_path / "m")
    model = load_model(md.path, device="cpu")
    info = model.model_dir.info
    kw = dict(seconds=0.05, seed=0, alignment=False, loudness=None)
    assert model.default_levels == [2, 1, 0]
    info["sampling"] = {"levels": [2, 1]}
    assert model.default_levels == [2, 1]
    own = model.generate(**kw)
    assert own.level == 1 and sorted(own.codes) == [1, 2] and own.settings["levels"] == [2, 1]
    full = model.generate(**kw, levels="all")
    assert full.level == 0 and torch.equal(full.codes[2], own.codes[2])
    up = model.upsample({2: own.codes[2]}, seed=0, alignment=False, loudness=None)
    assert up.level == 1  # upsampling saved codes renders the same level
    with pytest.raises(JukeboxError, match="'all'"):
        model.generate(**kw, levels="every")
    for odd in ([1, 0], [2, 0]):  # not the top level and the upsamplers below it
        info["sampling"] = {"levels": odd}
        assert model.default_levels == [2, 1, 0]
    (md.path / "model.json").write_text(json.dumps({**info, "sampling": {"levels": [2, 1]}}))
    assert main(["sample", "-m", str(md.path), "--seconds", "0.05", "--seed", "0", "--quiet", "--loudness", "off",
                 "-o", str(tmp_path / "own")]) == 0
    assert main(["sample", "-m", str(md.path), "--seconds", "0.05", "--seed", "0", "--quiet", "--loudness", "off",
                 "--levels", "all", "-o", str(tmp_path / "all")]) == 0
    levels = {name: json.loads((tmp_path / name / "metadata.json").read_text())["settings"]["levels"]
              for name in ("own", "all")}
    assert levels == {"own": [2, 1], "all": [2, 1, 0]}
    assert sorted(_codes(tmp_path / "own" / "codes.npz")) == ["level_1", "level_2"]
