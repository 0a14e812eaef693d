import numpy as np
import pytest
import soundfile as sf
import torch

from jukebox.audio import audio_info, load_audio, resample, save_audio
from jukebox.errors import JukeboxError

SR = 48000


@pytest.fixture
def stereo(tmp_path):
    t = np.arange(SR // 2) / SR
    return np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 220 * t)], 1).astype(np.float32) * 0.5


@pytest.mark.parametrize("ext,kw", [
    ("wav", {}), ("flac", {}), ("ogg", {"subtype": "VORBIS"}),
    ("opus", {"format": "OGG", "subtype": "OPUS"}), ("mp3", {"subtype": "MPEG_LAYER_III"}),
])
def test_load_formats_mono_resampled(tmp_path, stereo, ext, kw):
    path = tmp_path / f"a.{ext}"
    sf.write(path, stereo, SR, **kw)
    audio, sr = load_audio(path, sample_rate=44100)
    assert sr == 44100 and audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 44100 // 2) < 2000  # codecs may pad a little
    assert 0.2 < np.abs(audio).max() <= 1.0
    expected = stereo.mean(1)
    if ext in ("wav", "flac"):
        ref = resample(expected, SR, 44100)
        assert np.abs(audio[: len(ref)] - ref).max() < 1e-3


def test_load_keeps_channels_and_native_rate(tmp_path, stereo):
    sf.write(tmp_path / "a.wav", stereo, SR, subtype="FLOAT")
    audio, sr = load_audio(tmp_path / "a.wav", mono=False)
    assert sr == SR and audio.shape == (2, len(stereo))
    np.testing.assert_allclose(audio, stereo.T, atol=1e-7)
    assert audio_info(tmp_path / "a.wav") == (SR, 2, len(stereo) / SR)


def test_offset_and_duration(tmp_path, stereo):
    sf.write(tmp_path / "a.wav", stereo, SR, subtype="FLOAT")
    audio, _ = load_audio(tmp_path / "a.wav", offset_seconds=0.1, duration_seconds=0.2)
    np.testing.assert_allclose(audio, stereo.mean(1)[int(0.1 * SR): int(0.3 * SR)], atol=1e-6)


def test_bad_files_give_one_line_errors(tmp_path, stereo):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_bytes(b"definitely not audio " * 20)
    sf.write(tmp_path / "good.wav", stereo, SR)
    (tmp_path / "trunc.wav").write_bytes((tmp_path / "good.wav").read_bytes()[:30])
    (tmp_path / "folder.wav").mkdir()
    for name in ["missing.wav", "empty.wav", "text.wav", "trunc.wav", "folder.wav"]:
        with pytest.raises(JukeboxError) as e:
            load_audio(tmp_path / name)
        msg = str(e.value)
        assert name in msg and "\n" not in msg


def test_nan_audio_rejected(tmp_path):
    x = np.zeros(1000, np.float32)
    x[10] = np.nan
    sf.write(tmp_path / "nan.wav", x, SR, subtype="FLOAT")
    with pytest.raises(JukeboxError, match="NaN"):
        load_audio(tmp_path / "nan.wav")


def test_save_wav_pcm16_float_and_flac(tmp_path):
    x = torch.linspace(-1.5, 1.5, 4410)[None]  # [C=1, T], values beyond [-1, 1] are clipped for PCM
    save_audio(x, tmp_path / "a.wav", 44100)
    info = sf.info(tmp_path / "a.wav")
    assert info.subtype == "PCM_16" and info.samplerate == 44100
    save_audio(x, tmp_path / "f.wav", 44100, subtype="float")
    assert sf.info(tmp_path / "f.wav").subtype == "FLOAT"
    y, _ = sf.read(tmp_path / "f.wav", dtype="float32")
    np.testing.assert_allclose(y, x[0].numpy(), atol=1e-7)
    save_audio(x[None], tmp_path / "a.flac", 44100)  # [1, C, T] batch of one
    assert sf.info(tmp_path / "a.flac").format == "FLAC"
    with pytest.raises(JukeboxError, match="already exists"):
        save_audio(x, tmp_path / "a.wav", 44100, force=False)
    with pytest.raises(JukeboxError, match="unsupported output format"):
        save_audio(x, tmp_path / "a.mp4", 44100)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind
