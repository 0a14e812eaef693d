"""Hostile files: fuzzed audio, code files, pickled checkpoints, JSON configs/labels and corpus metadata never crash
the process or hang; only JukeboxError (or the documented exception) escapes. Bounded in time: a few hundred
examples in all, a deadline per example, and a watchdog that aborts the run with a stack dump if anything hangs."""

from __future__ import annotations

import faulthandler
import io
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jukebox.errors import JukeboxError

FUZZ = settings(max_examples=int(os.environ.get("JUKEBOX_FUZZ_EXAMPLES", "60")), deadline=5000,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], derandomize=True,
                database=None)


@pytest.fixture(autouse=True)
def watchdog():
    """A hang (e.g. a decoder looping on a malformed header) ends the test run with a traceback, not forever."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _encoded(fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    x = (0.3 * np.sin(np.arange(4410) / 5)).astype("f4")
    sf.write(buf, np.stack([x, -x], 1), 22050, format=fmt, subtype=subtype)
    return buf.getvalue()


SEEDS = {}
for _fmt, _sub in [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III"),
                   ("WAV", "FLOAT")]:
    try:
        SEEDS[f"{_fmt}-{_sub}"] = _encoded(_fmt, _sub)
    except Exception:  # noqa: BLE001 - a libsndfile built without mp3/ogg: fuzz the others
        pass


@st.composite
def mutated(draw, seeds: list[bytes]):
    """A real file with a few bytes overwritten (headers most often), cut short, or with bytes inserted."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.one_of(st.integers(0, min(64, len(data) - 1)), st.integers(0, len(data) - 1)))
        op = draw(st.sampled_from(["set", "set", "cut", "insert", "max"]))
        if op == "set":
            data[pos] = draw(st.integers(0, 255))
        elif op == "max":  # sizes and counts pushed to extremes
            data[pos:pos + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\xff\xff\xff\x7f"]))
        elif op == "cut":
            data = data[:max(1, pos)]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def _load_audio_ok(path: Path) -> None:
    from jukebox.audio import audio_info, load_audio

    try:
        audio_info(path)
        x, sr = load_audio(path, sample_rate=22050)
    except JukeboxError:
        return
    assert x.dtype == np.float32 and x.ndim == 1 and sr == 22050
    assert np.isfinite(x).all() and np.abs(x).max(initial=0) <= 1.0 + 1e-3


@FUZZ
@given(data=st.one_of(st.binary(max_size=2048), mutated(list(SEEDS.values()))))
def test_fuzz_audio_loader(tmp_path, data):
    path = tmp_path / "x.audio"
    path.write_bytes(data)
    _load_audio_ok(path)


@FUZZ
@given(data=mutated([SEEDS["WAV-PCM_16"]]))
def test_fuzz_wav_header_fields(tmp_path, data):
    path = tmp_path / "x.wav"
    path.write_bytes(data)
    _load_audio_ok(path)


def _npz_seed() -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, level_0=np.arange(64).reshape(1, 64) % 7, level_2=np.arange(4))
    return buf.getvalue()


def _npz_plain() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, level_1=np.arange(16, dtype=np.int32))
    return buf.getvalue()


@FUZZ
@given(data=st.one_of(st.binary(max_size=512), mutated([_npz_seed(), _npz_plain()])))
def test_fuzz_codes_file(tmp_path, data):
    from jukebox.cli.common import load_codes_file

    path = tmp_path / "codes.npz"
    path.write_bytes(data)
    try:
        codes = load_codes_file(path)
    except JukeboxError:
        return
    assert codes and all(v.dtype == np.int64 and v.ndim == 2 for v in codes.values())


@FUZZ
@given(member=st.binary(max_size=300), name=st.sampled_from(["level_2.npy", "level_x.npy", "../evil.npy"]))
def test_fuzz_npy_members_of_a_valid_zip(tmp_path, member, name):
    """A well-formed zip whose array member is garbage (the npy header parser sees arbitrary bytes)."""
    from jukebox.cli.common import load_codes_file

    path = tmp_path / "codes.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(name, b"\x93NUMPY\x01\x00" + member)
    try:
        load_codes_file(path)
    except JukeboxError:
        pass


@FUZZ
@given(shape=st.lists(st.one_of(st.integers(0, 8), st.integers(2**20, 2**24), st.integers(0, 2**62)), max_size=3),
       descr=st.sampled_from(["<i8", ">i4", "|u1", "<f4", "|O", "<U3", "|b1", "<i16"]), fortran=st.booleans(),
       payload=st.binary(max_size=200), deflate=st.booleans())
def test_fuzz_npy_headers_never_allocate_what_they_promise(tmp_path, shape, descr, fortran, payload, deflate):
    """A valid .npy header that promises any shape over a few bytes: refused or read, never more memory than the
    bytes that are there (before, numpy allocated the promised size first)."""
    import tracemalloc

    from jukebox.fileio import read_codes_npz

    header = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": fortran,
                                                      "shape": tuple(shape)})
    except (ValueError, TypeError):
        return
    path = tmp_path / "codes.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as z:
        z.writestr("level_1.npy", header.getvalue() + payload)
    tracemalloc.start()
    try:
        codes = read_codes_npz(path)
        assert list(codes) == [1] and codes[1].dtype == np.int64 and codes[1].ndim == 2
    except JukeboxError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 2**20, f"{peak} bytes for a {len(payload)}-byte payload"


def _pickle_seeds() -> list[bytes]:
    from jukebox.hparams import Hyperparams

    out = []
    obj = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "hps": Hyperparams(level=2), "step": np.int64(3)}
    buf = io.BytesIO()
    torch.save(obj, buf)
    out.append(buf.getvalue())
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    out.append(buf.getvalue())
    out.append(pickle.dumps({"a": [1, 2.0, "x"]}, protocol=2))
    return out


PICKLES = _pickle_seeds()


@FUZZ
@given(data=st.one_of(st.binary(max_size=512), mutated(PICKLES)))
def test_fuzz_safe_torch_load(tmp_path, data):
    from jukebox.checkpoint.safe_load import safe_torch_load

    path = tmp_path / "x.pth.tar"
    path.write_bytes(data)
    try:
        safe_torch_load(path)
    except JukeboxError:
        pass


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "subprocess.Popen"])
def test_pickle_that_calls_code_is_refused_and_not_run(tmp_path, payload):
    from jukebox.checkpoint.safe_load import safe_torch_load

    marker = tmp_path / "ran"
    module, name = payload.rsplit(".", 1)
    arg = f"touch {marker}" if name != "eval" else f"open({str(marker)!r}, 'w')"
    data = (b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\nq\x00X" + len(arg).to_bytes(4, "little")
            + arg.encode() + b"q\x01\x85q\x02Rq\x03.")
    path = tmp_path / "evil.pth.tar"
    path.write_bytes(data)
    with pytest.raises(JukeboxError, match="refused|not a loadable"):
        safe_torch_load(path)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ JSON readers

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12)


@st.composite
def mutated_json(draw, seed: dict):
    """The seed object with a few keys replaced by random JSON values, dropped, or added."""
    obj = json.loads(json.dumps(seed))
    keys = list(obj)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        if op == "replace" and keys:
            obj[draw(st.sampled_from(keys))] = draw(JSON_VALUES)
        elif op == "drop" and keys:
            obj.pop(draw(st.sampled_from(keys)), None)
        else:
            obj[draw(st.text(max_size=8))] = draw(JSON_VALUES)
    return obj


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from jukebox.testing import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("fz") / "tiny", levels=(2,)).path


def _text_variants(seed_text: str):
    return st.one_of(mutated_json(json.loads(seed_text)).map(json.dumps),
                     mutated([seed_text.encode()]).map(lambda b: b.decode("utf-8", "replace")),
                     JSON_VALUES.map(json.dumps))


def _fuzz_json_file(tiny, tmp_path, rel: str, load) -> None:
    @FUZZ
    @given(text=_text_variants((tiny / rel).read_text()))
    def check(text):
        d = tmp_path / "m"
        if not d.exists():
            shutil.copytree(tiny, d)
        (d / rel).write_text(text)
        try:
            load(d)
        except JukeboxError:
            pass
    check()


def test_fuzz_prior_config(tiny, tmp_path):
    from jukebox.checkpoint.model_dir import ModelDir

    _fuzz_json_file(tiny, tmp_path, "prior_level_2/config.json", lambda d: ModelDir(d).prior_config(2))


def test_fuzz_vqvae_config_and_model_build(tiny, tmp_path):
    from jukebox.checkpoint.model_dir import ModelDir

    _fuzz_json_file(tiny, tmp_path, "vqvae/config.json", lambda d: ModelDir(d).vqvae_config())


def test_fuzz_labels_json(tiny, tmp_path):
    from jukebox.data.labels import LabelVocab

    def load(d):
        vocab = LabelVocab.load(d / "prior_level_2")
        vocab.list_artists()
        vocab.list_genres()
    _fuzz_json_file(tiny, tmp_path, "prior_level_2/labels.json", load)


def test_fuzz_model_json(tiny, tmp_path):
    from jukebox.checkpoint.model_dir import ModelDir

    _fuzz_json_file(tiny, tmp_path, "model.json", lambda d: ModelDir(d).prior_levels())


# ------------------------------------------------------------------------------------------------ corpus metadata

@FUZZ
@given(text=st.one_of(
    st.text(max_size=300),
    st.lists(st.lists(st.text(max_size=10), max_size=5).map(",".join), max_size=6).map(
        lambda rows: "file,artist,genre,lyrics,split\n" + "\n".join(rows)),
    st.lists(JSON_VALUES.map(json.dumps), max_size=6).map("\n".join)),
    name=st.sampled_from(["metadata.csv", "metadata.jsonl"]))
def test_fuzz_corpus_metadata(tmp_path, text, name):
    from jukebox.data.dataset import read_metadata

    root = tmp_path / f"c_{name}"
    root.mkdir(exist_ok=True)
    (root / name).write_text(text, encoding="utf-8", errors="surrogatepass" if False else "replace")
    try:
        rows, _ = read_metadata(root)
    except JukeboxError:
        return
    assert all(not Path(k).is_absolute() and ".." not in Path(k).parts for k in rows)


@FUZZ
@given(obj=st.one_of(JSON_VALUES, mutated_json({"format": "jukebox-manifest", "version": 1, "root": "/x",
                                                "sample_rate": 22050, "tracks": [], "skipped": []})))
def test_fuzz_manifest(tmp_path, obj):
    from jukebox.data.dataset import MANIFEST_FORMAT, Manifest

    if isinstance(obj, dict) and obj.get("format") == "jukebox-manifest":
        obj["format"] = MANIFEST_FORMAT
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(obj))
    try:
        Manifest.load(path)
    except JukeboxError:
        pass


@FUZZ
@given(data=mutated([SEEDS["WAV-PCM_16"], *(SEEDS[k] for k in SEEDS if k.startswith(("FLAC", "OGG", "MP3")))]))
def test_fuzz_tag_reader(tmp_path, data):
    from jukebox.data.dataset import read_tags

    path = tmp_path / "x.flac"
    path.write_bytes(data)
    assert isinstance(read_tags(path), dict)
