"""Portable code folders: `jukebox prepare --codes`, training priors from them without the audio, the
fingerprint and missing-level errors, and version-1 caches still loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jukebox.audio import load_audio
from jukebox.data.code_cache import CodeCache, build_code_cache, encode_track, ensure_code_cache, vqvae_fingerprint
from jukebox.errors import JukeboxError
from jukebox.testing import make_tiny_model_dir
from jukebox.train import TrainConfig, train_prior

SR = 44100


def _corpus(root: Path, n: int = 6) -> Path:
    """Tones with labels, lyrics and a fixed split (two validation tracks)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["file,artist,genre,lyrics,split"]
    t = np.arange(int(1.2 * SR)) / SR
    for i in range(n):
        x = 0.3 * np.sin(2 * np.pi * 110 * (i + 1) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(root / f"s{i}.wav", x.astype(np.float32), SR)
        split = "validation" if i in (1, 4) else "train"
        rows.append(f"s{i}.wav,{('Alice Example', 'Bob Demo')[i % 2]},{('folk', 'rock')[i % 2]},la la {i},{split}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def _cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    from jukebox.cli import main as cli_main

    mods = tuple(dict.fromkeys((*cli_main.COMMAND_MODULES, "prepare", "train")))
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", mods)
    return cli_main.main(argv)


def _cfg() -> TrainConfig:
    return TrainConfig(steps=2, batch_size=2, lr=1e-3, warmup_steps=1, log_every=1, workers=1, val_batches=1)


def test_prepare_codes_then_train_without_audio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    corpus = _corpus(tmp_path / "music")
    md = make_tiny_model_dir(tmp_path / "model", lyrics="encoder_decoder", levels=(0, 1, 2))
    codes = tmp_path / "codes"
    assert _cli(["prepare", "--data", str(corpus), "--model", str(md.path), "--codes", str(codes), "--levels", "2",
                 "1", "--device", "cpu", "--min-seconds", "0.5"], monkeypatch) == 0
    assert "wrote" in capsys.readouterr().out
    cache = CodeCache(codes)
    assert cache.present == (1, 2) and not (codes / "level_0.bin").exists()
    assert cache.index["version"] == 2 and cache.fingerprint == vqvae_fingerprint(md.path / "vqvae")
    manifest = cache.manifest()
    assert {t.split for t in manifest.tracks} == {"train", "validation"}
    assert {t.lyrics for t in manifest.tracks} == {f"la la {i}" for i in range(6)}
    # the stored codes are the encoder's, and total_length is the resampled track length
    vqvae = md.load_vqvae()
    audio, _ = load_audio(corpus / "s3.wav", sample_rate=SR)
    direct = encode_track(vqvae, audio)
    for level in (1, 2):
        assert np.array_equal(cache.codes("s3.wav", level), direct[level])
    assert cache.tracks["s3.wav"].total_length == len(audio)
    with pytest.raises(JukeboxError, match="no level-0 codes"):
        cache.codes("s3.wav", 0)
    # never overwritten without --force
    assert _cli(["prepare", "--data", str(corpus), "--model", str(md.path), "--codes", str(codes)], monkeypatch) != 0
    assert "already exists; pass --force" in capsys.readouterr().err

    shutil.rmtree(corpus)  # no audio from here on
    result = train_prior(md.path, codes, level=2, config=_cfg(), device="cpu", progress=False, log_dir="none")
    assert result.step == 2 and result.val_history  # validation from the manifest's split
    # an upsampler needs its level and the one above: level 1 works, level 0 is missing
    assert _cli(["train", "prior", "--model", str(md.path), "--data", str(codes), "--level", "1", "--steps", "1",
                 "--batch-size", "2", "--workers", "1", "--device", "cpu", "--log-dir", "none", "--no-progress"],
                monkeypatch) == 0
    with pytest.raises(JukeboxError, match="no level-0 codes"):
        train_prior(md.path, codes, level=0, config=_cfg(), device="cpu", progress=False, log_dir="none")


def test_codes_of_another_vqvae_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = _corpus(tmp_path / "music", n=3)
    a = make_tiny_model_dir(tmp_path / "a", levels=(2,), seed=0)
    b = make_tiny_model_dir(tmp_path / "b", levels=(2,), seed=1)
    codes = tmp_path / "codes"
    assert _cli(["prepare", "--data", str(corpus), "--model", str(a.path), "--codes", str(codes), "--levels", "2",
                 "--device", "cpu", "--json"], monkeypatch) == 0
    with pytest.raises(JukeboxError, match="codes were made by another VQ-VAE; re-encode with jukebox prepare"):
        train_prior(b.path, codes, level=2, config=_cfg(), device="cpu", progress=False, log_dir="none")
    with pytest.raises(JukeboxError, match="code folder"):  # the VQ-VAE itself trains on audio only
        from jukebox.train import load_corpus

        load_corpus(codes, SR)


def test_version_1_cache_still_loads(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "music", n=2)
    md = make_tiny_model_dir(tmp_path / "model", levels=(2,))
    from jukebox.train import load_corpus

    manifest = load_corpus(corpus, SR)
    fp = vqvae_fingerprint(md.path / "vqvae")
    build_code_cache(manifest, md.load_vqvae(), tmp_path / "cache", fp)
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    old = {k: v for k, v in index.items() if k not in ("levels_present", "manifest")}
    old["version"] = 1
    (tmp_path / "cache" / "index.json").write_text(json.dumps(old))
    cache = CodeCache(tmp_path / "cache")
    assert cache.present == (0, 1, 2) and cache.codes("s0.wav", 0).shape == (index["tracks"]["s0.wav"]["length"][0],)
    logs: list[str] = []
    again = ensure_code_cache(manifest, md.load_vqvae(), md.path / "vqvae", tmp_path / "cache", log=logs.append)
    assert logs == [] and again.index["version"] == 1  # reused, not re-encoded
    with pytest.raises(JukeboxError, match="stores no manifest"):
        cache.manifest()
    # a cache lacking levels is rebuilt by the training path (which needs every level)
    build_code_cache(manifest, md.load_vqvae(), tmp_path / "cache", fp, levels=[2])
    full = ensure_code_cache(manifest, md.load_vqvae(), md.path / "vqvae", tmp_path / "cache", log=logs.append)
    assert full.present == (0, 1, 2) and "lacks levels" in logs[0]


def test_codes_from_npy_script_matches_prepare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """recipes/codes_from_npy.py turns per-track level-2 .npy files + metadata.csv into the folder prepare writes."""
    from conftest import load_script

    script = load_script("codes_from_npy")
    corpus = _corpus(tmp_path / "music", n=3)
    md = make_tiny_model_dir(tmp_path / "model", levels=(2,))
    assert _cli(["prepare", "--data", str(corpus), "--model", str(md.path), "--codes", str(tmp_path / "ref"),
                 "--levels", "2", "--device", "cpu", "--json"], monkeypatch) == 0
    ref = CodeCache(tmp_path / "ref")
    npy = tmp_path / "npy"
    npy.mkdir()
    for name in ref.tracks:
        np.save(npy / name.replace(".wav", ".npy"), np.asarray(ref.codes(name, 2), np.int16))
    meta = (corpus / "metadata.csv").read_text().splitlines()
    rows = [meta[0] + ",seconds"] + [r + ",1.2" for r in meta[1:]] + ["gone.wav,X,folk,,train,3.0"]
    (tmp_path / "meta.csv").write_text("\n".join(rows) + "\n")
    base = ["--npy-root", str(npy), "--metadata", str(tmp_path / "meta.csv"), "--model", str(md.path),
            "--level", "2", "--out", str(tmp_path / "out")]
    assert script.main(base) == 1  # gone.wav has no codes
    for extra in ([], ["--corpus", str(corpus), "--force"]):  # lengths from seconds, then from the audio
        assert script.main([*base, "--allow-missing", *extra]) == 0
        out = CodeCache(tmp_path / "out")
        assert out.present == (2,) and out.fingerprint == ref.fingerprint and set(out.tracks) == set(ref.tracks)
        for name, t in ref.tracks.items():
            assert np.array_equal(out.codes(name, 2), ref.codes(name, 2))
            assert out.tracks[name].total_length // 128 == t.total_length // 128
        assert [(t.lyrics, t.split) for t in out.manifest().tracks] == [(t.lyrics, t.split)
                                                                        for t in ref.manifest().tracks]
    assert out.tracks["s0.wav"].total_length == ref.tracks["s0.wav"].total_length
    assert script.main(base) == 1  # exists, no --force


def test_fingerprint_follows_the_codes_not_the_decoders(tmp_path: Path) -> None:
    """A decoder-only change keeps code folders valid (same fingerprint, the folder trains); an encoder or codebook
    change does not; a folder stored with the former whole-file fingerprint of this VQ-VAE still loads, and the
    training cache built with it is reused."""
    from safetensors.torch import load_file, save_file

    from jukebox.data.code_cache import legacy_vqvae_fingerprint, made_by
    from jukebox.train import load_corpus
    from jukebox.train.runner import load_code_folder

    corpus = _corpus(tmp_path / "music", n=2)
    md = make_tiny_model_dir(tmp_path / "model", levels=(2,))
    folder = md.path / "vqvae"
    weights = load_file(folder / "model.safetensors")
    fp, legacy = vqvae_fingerprint(folder), legacy_vqvae_fingerprint(folder)
    manifest = load_corpus(corpus, SR)
    build_code_cache(manifest, md.load_vqvae(), tmp_path / "codes", legacy, levels=[2], portable=True)
    logs: list[str] = []
    build_code_cache(manifest, md.load_vqvae(), tmp_path / "cache", legacy)
    reused = ensure_code_cache(manifest, md.load_vqvae(), folder, tmp_path / "cache", log=logs.append)
    assert reused.fingerprint == legacy
    assert logs == []  # the older cache of this VQ-VAE is reused
    assert load_code_folder(tmp_path / "codes", folder, 2, 2)[1].fingerprint == legacy

    def changed(prefix: str) -> dict:
        name = next(k for k in sorted(weights) if k.startswith(prefix) and weights[k].is_floating_point())
        return {**weights, name: weights[name] + 0.01}

    save_file(changed("decoders."), folder / "model.safetensors")
    assert vqvae_fingerprint(folder) == fp and legacy_vqvae_fingerprint(folder) != legacy
    build_code_cache(manifest, md.load_vqvae(), tmp_path / "codes2", fp, levels=[2], portable=True)
    assert made_by(fp, folder) and load_code_folder(tmp_path / "codes2", folder, 2, 2)[1].fingerprint == fp
    for prefix in ("encoders.", "codebooks."):
        save_file(changed(prefix), folder / "model.safetensors")
        assert vqvae_fingerprint(folder) != fp and not made_by(fp, folder), prefix
        with pytest.raises(JukeboxError, match="another VQ-VAE"):
            load_code_folder(tmp_path / "codes2", folder, 2, 2)
