"""Small inputs that would expand without bound: every size is checked from headers and metadata before anything
is allocated (audio frames x channels x rate, zip members' sizes, config bounds, lyric length), audio is decoded in
blocks mixed to mono as it goes, and a failed allocation is reported as out of memory, in one line. The measured
peak memory of each hostile try, before and after, is in docs/reliability.md."""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from cli_checks import one_line as _one_line
from cli_checks import run_cli as _run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jukebox.audio as audio_mod
import jukebox.fileio as fileio
from jukebox.audio import load_audio
from jukebox.config import SIZE_LIMITS, VQVAE_PRESETS, VQVAEConfig, check_limits
from jukebox.data.text import MAX_LYRIC_CHARS, check_lyrics_length, clean_lyrics
from jukebox.errors import JukeboxError, UsageError
from jukebox.fileio import read_codes_npz
from jukebox.prior.config import PRIOR_PRESETS, LabelConfig, PriorConfig, TransformerConfig
from jukebox.testing import make_tiny_model_dir

PROPERTY = settings(max_examples=int(os.environ.get("JUKEBOX_FUZZ_EXAMPLES", "40")), deadline=5000,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                    derandomize=True, database=None)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("mem")
    sf.write(root / "ok.wav", (np.random.default_rng(0).standard_normal(4410) * 0.1).astype("f4"), 44100)
    return {"root": root, "tiny": make_tiny_model_dir(root / "tiny").path,
            "lyrics": make_tiny_model_dir(root / "lyrics", lyrics="encoder_decoder").path}


def _peak_delta_mb(setup: str, action: str) -> tuple[float, str]:
    """Run ``setup`` then ``action`` in a fresh interpreter (at most 3 GiB of address space); return the growth of
    its peak resident memory during ``action`` (MB) and the action's outcome ("ok" or the error)."""
    code = (f"import resource\n{setup}\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            f"try:\n    {action}\n    outcome = 'ok'\nexcept Exception as e:\n    outcome = str(e)\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\nprint(outcome)\n")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=limit,
                         timeout=300, check=True).stdout.splitlines()
    return float(out[0]), out[1]


# ------------------------------------------------------------------------------------------------ audio

def test_many_channels_at_a_high_rate_decode_in_bounded_memory(tmp_path):
    """20 s of 8 channels at 192 kHz (30.7 M samples, 123 MB as float32): decoded in blocks mixed to mono as they
    come, memory grows by the 44.1 kHz mono result (3.5 MB), not by the file's samples (over 240 MB before)."""
    path = tmp_path / "wide.flac"
    with sf.SoundFile(path, "w", samplerate=192000, channels=8, subtype="PCM_16", format="FLAC") as f:
        block = np.zeros((192000, 8), "f4")
        block[:, 3] = 0.1 * np.sin(np.arange(192000) / 20)
        for _ in range(20):
            f.write(block)
    grew, outcome = _peak_delta_mb("from jukebox.audio import load_audio; import numpy",
                                   f"x, sr = load_audio({str(path)!r}, sample_rate=44100); "
                                   "assert x.shape == (882000,) and sr == 44100")
    assert outcome == "ok"
    assert grew < 40, f"peak memory grew by {grew:.0f} MB"


def test_header_is_checked_before_decoding(tmp_path, monkeypatch):
    """frames x channels beyond the limit is refused from the header; nothing is read."""
    path = tmp_path / "a.wav"
    sf.write(path, np.zeros((4000, 6), "f4"), 8000)
    monkeypatch.setattr(audio_mod, "MAX_DECODE_SAMPLES", 6 * 3999)
    reads = []
    monkeypatch.setattr(sf.SoundFile, "read", lambda *a, **k: reads.append(1))
    with pytest.raises(JukeboxError, match="4,000 frames x 6 channels at 8000 Hz is more than"):
        load_audio(path)
    assert not reads
    monkeypatch.undo()
    monkeypatch.setattr(audio_mod, "MAX_OUTPUT_SAMPLES", 1000)
    with pytest.raises(JukeboxError, match="more than the 1,000"):
        load_audio(path, sample_rate=22050)
    assert load_audio(path, sample_rate=2000)[0].shape == (1000,)  # within the limit
    assert load_audio(path, duration_seconds=0.1)[0].shape == (800,)  # a part of it is fine too


def test_output_grows_beyond_a_short_header_only_up_to_the_limit(monkeypatch):
    out = np.zeros((1, 2), np.float32)
    out, n = audio_mod._append(out, 0, np.arange(5, dtype=np.float32), "x", 8000)
    out, n = audio_mod._append(out, n, np.arange(3, dtype=np.float32), "x", 8000)
    assert n == 8 and out[0, :n].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    monkeypatch.setattr(audio_mod, "MAX_OUTPUT_SAMPLES", 10)
    with pytest.raises(JukeboxError, match="more than 10 samples"):
        audio_mod._append(out, n, np.zeros(3, np.float32), "x", 8000)


def _reference(path, sample_rate, offset, duration, mono):
    """Decode all, clip, mix, resample in one go (what load_audio did before it decoded in blocks)."""
    with sf.SoundFile(path) as f:
        sr = f.samplerate
        start = int(round(offset * sr))
        f.seek(min(start, f.frames))
        data = f.read(frames=-1 if duration is None else int(round(duration * sr)), dtype="float32",
                      always_2d=True).T
    data = np.clip(data, -1, 1)
    if mono:
        data = data.mean(0)
    if sample_rate != sr:
        data = soxr.resample(data if mono else data.T, sr, sample_rate, quality="VHQ")
        data = data if mono else data.T
    return data


@PROPERTY
@given(channels=st.integers(1, 5), sr_in=st.sampled_from([8000, 22050, 44100, 48000, 96000]),
       sr_out=st.sampled_from([None, 16000, 22050, 44100]), frames=st.integers(1, 3000),
       offset=st.floats(0, 0.05), duration=st.one_of(st.none(), st.floats(0.001, 0.2)), mono=st.booleans(),
       block=st.integers(1, 700), seed=st.integers(0, 3))
def test_block_decoding_equals_decoding_all_at_once(tmp_path, monkeypatch, channels, sr_in, sr_out, frames, offset,
                                                      duration, mono, block, seed):
    path = tmp_path / "x.wav"
    x = np.random.default_rng(seed).uniform(-1.3, 1.3, (frames, channels)).astype("f4")
    sf.write(path, x, sr_in, subtype="FLOAT")
    monkeypatch.setattr(audio_mod, "BLOCK_SAMPLES", block)
    ref = _reference(path, sr_out or sr_in, offset, duration, mono)
    try:
        got, sr = load_audio(path, sample_rate=sr_out, offset_seconds=offset, duration_seconds=duration, mono=mono)
    except JukeboxError as e:
        assert "no audio samples" in str(e) and ref.shape[-1] == 0
        return
    assert sr == (sr_out or sr_in) and got.dtype == np.float32 and got.flags.c_contiguous
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-6)


# ------------------------------------------------------------------------------------------------ codes files

def _zip_with_unused_member(path: Path, junk_bytes: int) -> None:
    """A codes file: level_2 (1 x 64) and an unused member of ``junk_bytes`` zeros (deflated to almost nothing)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        buf = io.BytesIO()
        np.save(buf, np.arange(64).reshape(1, 64))
        z.writestr("level_2.npy", buf.getvalue())
        with z.open("junk.npy", "w", force_zip64=True) as f:
            block = bytes(2**22)
            for _ in range(junk_bytes // len(block)):
                f.write(block)


def test_unused_members_are_never_decompressed(tmp_path):
    """Before, every member was decompressed (a 1.9 MB file with a 2 GB member cost 2.3 GB)."""
    path = tmp_path / "codes.npz"
    _zip_with_unused_member(path, 256 * 2**20)
    grew, outcome = _peak_delta_mb("from jukebox.fileio import read_codes_npz",
                                   f"c = read_codes_npz({str(path)!r}); assert list(c) == [2]")
    assert outcome == "ok"
    assert grew < 20, f"peak memory grew by {grew:.0f} MB"


def _npz_member(path: Path, name: str, header: dict, data: bytes) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(name, buf.getvalue() + data)


@pytest.mark.parametrize("case,words", [
    ("header_lies", "but the archive holds"),
    ("big_batch", "batch of 100,000 items"),
    ("big_member", "more than a codes array may be"),
    ("many_members", "members"),
    ("twice", "appears twice"),
    ("object", "integer codes"),
])
def test_codes_sizes_are_checked_from_the_directory_and_headers(tmp_path, monkeypatch, case, words):
    path = tmp_path / "codes.npz"
    if case == "header_lies":  # 15 bytes of data under a header that promises 8 GB
        _npz_member(path, "level_2.npy", {"descr": "<i8", "fortran_order": False, "shape": (10**9,)}, bytes(15))
    elif case == "big_batch":
        np.savez_compressed(path, level_2=np.zeros((100_000, 1), np.int64))
    elif case == "big_member":
        monkeypatch.setattr(fileio, "MAX_CODES_ARRAY_BYTES", 1000)
        np.savez(path, level_2=np.zeros(1000, np.int64))
    elif case == "many_members":
        np.savez(path, **{f"x{i}": np.zeros(1) for i in range(300)}, level_2=np.zeros(4, np.int64))
    elif case == "twice":
        buf = io.BytesIO()
        np.save(buf, np.zeros(4, np.int64))
        with zipfile.ZipFile(path, "w") as z, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
            for _ in range(2):
                z.writestr("level_2.npy", buf.getvalue())
    elif case == "object":
        _npz_member(path, "level_2.npy", {"descr": "|O", "fortran_order": False, "shape": (2,)}, b"\x80\x04N.")
    with pytest.raises(JukeboxError, match=words):
        read_codes_npz(path)


@PROPERTY
@given(dtype=st.sampled_from(["<i1", "<i2", ">i4", "<i8", "<u1", ">u2", "<u4", "<u8"]),
       shape=st.one_of(st.tuples(st.integers(1, 50)), st.tuples(st.integers(1, 4), st.integers(1, 50))),
       fortran=st.booleans(), compressed=st.booleans(), extra=st.booleans(), seed=st.integers(0, 9))
def test_codes_round_trip_equals_numpy(tmp_path, dtype, shape, fortran, compressed, extra, seed):
    arr = np.random.default_rng(seed).integers(0, 100, shape).astype(dtype)
    if fortran:
        arr = np.asfortranarray(arr)
    path = tmp_path / "c.npz"
    arrays = {"level_1": arr, **({"notes": np.array(["a text member"])} if extra else {})}
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    got = read_codes_npz(path)
    assert list(got) == [1] and got[1].dtype == np.int64 and got[1].flags.c_contiguous
    np.testing.assert_array_equal(got[1], np.atleast_2d(np.load(path)["level_1"]).astype(np.int64))


# ------------------------------------------------------------------------------------------------ configs

def test_every_preset_is_within_the_limits():
    for cfg in [*VQVAE_PRESETS.values(), *PRIOR_PRESETS.values()]:
        check_limits(cfg)
        type(cfg).from_dict(cfg.to_dict())


@pytest.mark.parametrize("rel,keys,value", [
    ("vqvae/config.json", ["width"], 20000),
    ("vqvae/config.json", ["depth"], 10**7),
    ("vqvae/config.json", ["downs_t"], [3, 2, 10**6]),
    ("prior_level_2/config.json", ["transformer", "depth"], 10**7),
    ("prior_level_2/config.json", ["transformer", "width"], 20000),
    ("prior_level_2/config.json", ["labels", "max_bow_genre_size"], 10**8),
    ("prior_level_2/config.json", ["n_ctx"], 10**9),
    ("prior_level_1/config.json", ["upsampler", "depth"], 10**6),
])
def test_one_number_in_a_config_is_a_one_line_error(capsys, models, tmp_path, rel, keys, value):
    """Before, each of these grew memory until it failed (3-3.7 GB) or asked torch for 13-19 GB."""
    model = shutil.copytree(models["tiny"], tmp_path / "m")
    cfg = json.loads((model / rel).read_text())
    node = cfg
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    (model / rel).write_text(json.dumps(cfg))
    argv = (["encode", "-m", str(model), str(models["root"] / "ok.wav"), "-o", str(tmp_path / "c.npz")]
            if rel.startswith("vqvae") else ["sample", "-m", str(model), "-o", str(tmp_path / "o"), "--seconds",
                                             "0.05", "--quiet"])
    rc, err = _run(capsys, argv)
    _one_line(err, rc, 1, f"{keys[-1]}: ", "above the limit", "config.json")


def test_configs_built_in_code_are_bounded_too():
    """Configs made from an original checkpoint's ``hps`` are built, not loaded: the bounds hold there as well,
    before a config's own checks run."""
    with pytest.raises(JukeboxError, match="TransformerConfig.depth"):
        TransformerConfig(depth=10**7)
    with pytest.raises(JukeboxError, match="LabelConfig.max_bow_genre_size"):
        LabelConfig(max_bow_genre_size=10**8)
    with pytest.raises(JukeboxError, match="PriorConfig.n_ctx"):
        PriorConfig(n_ctx=10**9)
    with pytest.raises(JukeboxError, match="VQVAEConfig.width"):
        VQVAEConfig(width=SIZE_LIMITS["width"] + 1)
    VQVAEConfig(width=SIZE_LIMITS["width"])  # the limit itself is allowed


def test_checkpoint_hps_are_bounded(capsys, tmp_path):
    """A 1.3 kB vqvae.pth.tar whose hps say depth 10**7 (before: 3.7 GB, then out of memory)."""
    src = tmp_path / "src"
    src.mkdir()
    torch.save({"model": {}, "hps": {"depth": 10**7}}, src / "vqvae.pth.tar")
    rc, err = _run(capsys, ["import-openai", str(src), "-o", str(tmp_path / "out")])
    _one_line(err, rc, 1, "depth", "above the limit")


def test_config_files_are_read_with_a_size_cap(capsys, models, tmp_path):
    model = shutil.copytree(models["tiny"], tmp_path / "m")
    cfg = model / "prior_level_2" / "config.json"
    cfg.write_text(cfg.read_text() + " " * (2**20 + 1))
    rc, err = _run(capsys, ["sample", "-m", str(model), "-o", str(tmp_path / "o"), "--seconds", "0.05", "--quiet"])
    _one_line(err, rc, 1, "larger than a config file may be")


def test_config_linked_to_dev_zero_is_refused(capsys, models, tmp_path):
    """Before, it was read until memory ran out (3.5 GB, then out of memory)."""
    model = shutil.copytree(models["tiny"], tmp_path / "m")
    (model / "vqvae" / "config.json").unlink()
    (model / "vqvae" / "config.json").symlink_to("/dev/zero")
    rc, err = _run(capsys, ["encode", "-m", str(model), str(models["root"] / "ok.wav"), "-o", str(tmp_path / "c.npz")])
    _one_line(err, rc, 1, "character device", "not a regular file")


# ------------------------------------------------------------------------------------------------ lyrics

def test_lyric_length_is_capped():
    assert check_lyrics_length("a" * MAX_LYRIC_CHARS) == "a" * MAX_LYRIC_CHARS
    assert clean_lyrics("la " * 5000)  # a long song is fine
    with pytest.raises(UsageError, match="65,537 characters long; at most 65,536"):
        clean_lyrics("a" * (MAX_LYRIC_CHARS + 1))


def test_megabytes_of_lyrics_are_refused_before_sampling(capsys, models, tmp_path):
    """Before, 5 MB of lyrics on a 0.1 s draft sampled, then took over 4 GB in the alignment."""
    lyrics = tmp_path / "lyrics.txt"
    lyrics.write_text("la la la\n" * 600_000)
    rc, err = _run(capsys, ["sample", "-m", str(models["lyrics"]), "-o", str(tmp_path / "o"), "--seconds", "0.1",
                            "--levels", "2", "--lyrics-file", str(lyrics), "--quiet"])
    _one_line(err, rc, 2, "5,400,000 characters long")
    assert not (tmp_path / "o" / "codes.npz").exists()


# ------------------------------------------------------------------------------------------------ out of memory

def test_a_torch_allocation_failure_is_out_of_memory(capsys, models, tmp_path, monkeypatch):
    """torch's CPU allocator raises a RuntimeError; the command line reports it as out of memory, in one line."""
    from jukebox.checkpoint.model_dir import ModelDir

    def huge(self, device="cpu"):
        return torch.empty(2**50, dtype=torch.uint8)  # a petabyte: the allocator refuses it

    monkeypatch.setattr(ModelDir, "load_vqvae", huge)
    rc, err = _run(capsys, ["encode", "-m", str(models["tiny"]), str(models["root"] / "ok.wav"), "-o",
                            str(tmp_path / "c.npz")])
    _one_line(err, rc, 1, "out of memory")


# ------------------------------------------------------------------------------------------------ decoding at length

def test_codes_that_decode_past_the_limit_are_refused_before_decoding(capsys, models, tmp_path, monkeypatch):
    """10**7 level-2 codes (a small file) ask for 1.28e9 samples, 8 hours: before, decode ran for ever (2 GB after
    120 s); now it stops before the decoder runs once."""
    from jukebox.vqvae import VQVAE

    path = tmp_path / "long.npz"
    np.savez_compressed(path, level_2=np.zeros(10**7, np.uint8))
    assert path.stat().st_size < 100_000

    def never(*args, **kwargs):
        raise AssertionError("the decoder ran")

    monkeypatch.setattr(VQVAE, "decode_level", never)
    rc, err = _run(capsys, ["decode", "-m", str(models["tiny"]), str(path), "-o", str(tmp_path / "x.wav")])
    _one_line(err, rc, 1, "long.npz level_2", "10,000,000 codes decode to 1,280,000,000 samples", "at most")
    assert not (tmp_path / "x.wav").exists()
    from jukebox.api import load_model
    from jukebox.codec import decode_codes

    with pytest.raises(JukeboxError, match="decode to"):
        decode_codes(load_model(models["tiny"], device="cpu").vqvae, torch.zeros(3, 10**6, dtype=torch.long), 2)


@pytest.fixture(scope="module")
def tiny_vqvae(models):
    from jukebox.checkpoint.model_dir import ModelDir

    return ModelDir(models["tiny"]).load_vqvae("cpu")


@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch=st.integers(1, 9), n=st.integers(1, 24), budget=st.sampled_from([512, 2048, 2**22]))
def test_large_batches_decode_in_bounded_windows(tiny_vqvae, monkeypatch, batch, n, budget):
    """Every decoder call makes at most DECODE_CALL_SAMPLES samples (a larger batch decodes in shorter windows),
    the result has the full length, and where one window holds everything it is the decoder's own output."""
    import jukebox.codec as codec

    vqvae = tiny_vqvae
    calls = []
    real = type(vqvae).decode_level

    def spy(self, codes, level):
        out = real(self, codes, level)
        calls.append(out.shape[0] * out.shape[-1])
        return out

    with monkeypatch.context() as m:
        m.setattr(codec, "DECODE_CALL_SAMPLES", budget)
        m.setattr(type(vqvae), "decode_level", spy)
        z = torch.as_tensor(np.random.default_rng(n).integers(0, 64, (batch, n)))
        out = codec.decode_codes(vqvae, z, 1)
    hop = vqvae.config.hop_lengths[1]
    assert out.shape == (batch, 1, n * hop)
    window = max(1, min(budget // batch, 30 * 44100) // hop)
    margin = max(1, window // 16)
    assert max(calls) <= batch * (window + 2 * margin) * hop
    if len(calls) == 1:
        torch.testing.assert_close(out, real(vqvae, z, 1))
