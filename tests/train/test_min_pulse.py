"""``--min-pulse``: tempo priors label tracks whose pulse clarity is weak as having no steady pulse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jukebox.checkpoint.model_dir import ModelDir
from jukebox.data.tempo import TEMPO_FILE, BeatTrack, load_beats, save_beats
from jukebox.errors import UsageError
from jukebox.testing import make_tiny_model_dir
from jukebox.train import TrainOptions
from jukebox.train.options import OptionError

SR = 44100
STRONG_BPM, WEAK_BPM = 120.0, 100.0


# ------------------------------------------------------------------------------------------------------- options


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, True, "0.3", float("nan")])
def test_bad_values_are_refused(bad) -> None:
    with pytest.raises(OptionError, match="min_pulse"):
        TrainOptions(tempo=True, min_pulse=bad)


def test_data_state_and_stored_options() -> None:
    plain = TrainOptions(tempo=True)
    assert plain.min_pulse == 0.0 and "min_pulse" not in plain.data_state()  # former checkpoints still match
    assert TrainOptions(tempo=True, min_pulse=0).data_state() == plain.data_state()
    o = TrainOptions(tempo=True, min_pulse=0.3)
    assert o.data_state() == {**plain.data_state(), "min_pulse": 0.3}
    assert TrainOptions.from_dict(json.loads(json.dumps(o.to_dict()))) == o
    old = {k: v for k, v in plain.to_dict().items() if k != "min_pulse"}  # stored before the option existed
    assert TrainOptions.from_dict(old).min_pulse == 0.0


def test_cli_flag_becomes_the_option() -> None:
    from jukebox.cli import train as cli_train
    from jukebox.cli.main import build_parser

    parser = build_parser()
    base = ["train", "prior", "-m", "x", "--level", "2", "--data", "d", "--steps", "1", "--tempo"]
    assert cli_train.prior_options(parser.parse_args([*base, "--min-pulse", "0.3"])) == {"tempo": True,
                                                                                       "min_pulse": 0.3}
    assert "min_pulse" not in cli_train.prior_options(parser.parse_args(base))
    with pytest.raises(UsageError, match="--min-pulse must be"):
        cli_train.prior_options(parser.parse_args([*base, "--min-pulse", "1.2"]))


def test_without_weak_pulse_keeps_the_pulse_value() -> None:
    from jukebox.train.runner import without_weak_pulse

    beats = {"a": BeatTrack(120.0, [0.5, 1.0, 1.5], 0.8), "b": BeatTrack(90.0, [0.2, 0.87], 0.2),
             "c": BeatTrack(0.0, [], 0.05)}
    out = without_weak_pulse(beats, 0.5)
    assert out["a"] is beats["a"]
    assert out["b"].bpm == 0.0 and len(out["b"].beats) == 0 and out["b"].pulse == 0.2
    assert out["c"].bpm == 0.0 and out["c"].pulse == 0.05
    assert beats["b"].bpm == 90.0  # the table given is left as it is


# ---------------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def code_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny model (top level only) and a portable code folder of two 6 s tracks whose tempo.json gives both
    beats: ``strong.wav`` (rock, 120 BPM, pulse clarity 0.8) and ``weak.wav`` (folk, 100 BPM, pulse 0.2)."""
    from jukebox.data.code_cache import build_code_cache, vqvae_fingerprint
    from jukebox.train.runner import load_corpus

    root = tmp_path_factory.mktemp("min_pulse")
    md = make_tiny_model_dir(root / "base", levels=(2,), n_ctx=1024)  # windows of 3 s: six beats at 120 BPM
    music = root / "music"
    music.mkdir()
    rng = np.random.default_rng(0)
    for name in ("strong", "weak"):
        sf.write(music / f"{name}.wav", (0.1 * rng.standard_normal(6 * SR)).astype(np.float32), SR)
    (music / "metadata.csv").write_text("file,artist,genre,lyrics,split\nstrong.wav,Alice Example,rock,,train\n"
                                        "weak.wav,Bob Demo,folk,,train\n")
    vq = md.load_vqvae()
    manifest = load_corpus(music, SR, log=lambda m: None)
    codes = root / "codes"
    build_code_cache(manifest, vq, codes, vqvae_fingerprint(md.path / "vqvae"), levels=[2], portable=True)
    paths = {Path(t.path).stem: t.path for t in manifest.tracks}
    save_beats(codes, {paths["strong"]: BeatTrack(STRONG_BPM, np.arange(0.25, 6.0, 60 / STRONG_BPM), 0.8),
                       paths["weak"]: BeatTrack(WEAK_BPM, np.arange(0.1, 6.0, 60 / WEAK_BPM), 0.2)})
    return md.path, codes


def _cli(argv: list[str]) -> int:
    from jukebox.cli.main import main

    return main(argv)


def test_weak_tracks_train_without_a_tempo_label(code_folder, tmp_path: Path, monkeypatch, capsys) -> None:
    import shutil

    from jukebox.train import runner

    base, codes = code_folder
    model = shutil.copytree(base, tmp_path / "model")
    stored = (codes / TEMPO_FILE).read_bytes()
    tasks = []

    class Recording(runner.Trainer):  # the task the CLI's training runs on
        def __init__(self, model, task, *args, **kw):
            tasks.append(task)
            super().__init__(model, task, *args, **kw)

    monkeypatch.setattr(runner, "Trainer", Recording)
    assert _cli(["train", "prior", "--model", str(model), "--data", str(codes), "--level", "2", "--tempo",
                 "--min-pulse", "0.5", "--steps", "1", "--batch-size", "2", "--workers", "1",
                 "--log-dir", "none", "--device", "cpu", "--no-progress"]) == 0
    assert "--min-pulse 0.5: 1 of 2 tracks train without a tempo label" in capsys.readouterr().err
    (task,) = tasks
    sampler = task.train
    bpms: dict[str, set[float]] = {}
    for i in range(len(sampler)):
        w = sampler.window(i)
        bpms.setdefault(Path(w.path).stem, set()).add(round(w.bpm))
    assert bpms["weak"] == {0}  # the "no steady pulse" label everywhere
    assert bpms["strong"] == {round(STRONG_BPM)}  # every window holds six beats
    labelled: dict[str, set[float]] = {}  # the labels the prior reads, as the training batches carry them
    for step in range(6):
        batch = task.train_batch(step, 0, 0)
        for item, y in zip(batch["ids"], batch["y"]):
            labelled.setdefault(Path(item.split("@")[0]).stem, set()).add(round(task.labeller.describe(y)["bpm"]))
    assert labelled == {"weak": {0}, "strong": {round(STRONG_BPM)}}
    sampler.beats = load_beats(codes)  # the stored beats, unfiltered, would have labelled the weak track
    assert {round(sampler.window(i).bpm) for i in range(len(sampler))} == {round(WEAK_BPM), round(STRONG_BPM)}
    md = ModelDir(model)
    assert md.load_prior(2).config.labels.tempo
    assert md.tempi(2) == {"default": STRONG_BPM, "genres": {"rock": STRONG_BPM}}  # the clearly pulsed track only
    assert (codes / TEMPO_FILE).read_bytes() == stored  # the code folder's beats are not rewritten


def test_min_pulse_needs_tempo(code_folder, tmp_path: Path, capsys) -> None:
    import shutil

    base, codes = code_folder
    model = shutil.copytree(base, tmp_path / "model")
    argv = ["train", "prior", "--model", str(model), "--data", str(codes), "--level", "2", "--min-pulse", "0.3",
            "--steps", "1", "--batch-size", "2", "--log-dir", "none", "--device", "cpu", "--no-progress"]
    message = "error: --min-pulse filters tempo labels, but the level-2 prior has none: add --tempo"
    assert _cli([*argv, "--restart"]) == 2  # a new prior without tempo labels: refused before the data is read
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(message)
    assert _cli(argv) == 2  # fine-tuning a prior without tempo labels: refused too
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)
    assert not (model / "prior_level_2" / "checkpoint").exists()
