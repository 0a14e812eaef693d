"""An example written against the original Jukebox's API names (``make_model(Hyperparams())``, ``sample_model``)
runs as written (only the length is shortened for a CPU test)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import soundfile as sf

from jukebox.testing import make_tiny_model_dir

EXAMPLE = '''
import jukebox
from jukebox.hparams import Hyperparams
from jukebox.utils.dist_utils import setup_dist_logging
from jukebox.make_models import make_model
from jukebox.sample import sample_model

# 设置GPU环境
setup_dist_logging()

# 加载预训练模型
model, _, _ = make_model(Hyperparams())

# 设置生成参数
artist = "The Beatles"
genre = "pop"
lyrics = "Yesterday, all my troubles seemed so far away"
sampling_temperature = 0.9
sampling_length_in_seconds = SECONDS

# 生成音乐
audio = sample_model(model, artist, genre, lyrics, sampling_temperature, sampling_length_in_seconds)

# 保存音乐文件
jukebox.save_audio(audio, "generated_music.wav")
'''


def test_original_api_example_runs(tmp_path):
    md = make_tiny_model_dir(tmp_path / "model", lyrics="encoder_decoder")
    code = textwrap.dedent(EXAMPLE).replace("SECONDS", "0.05")
    env = {"JUKEBOX_MODEL": str(md.path), "PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "default"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = sf.info(tmp_path / "generated_music.wav")
    assert info.samplerate == 44100 and info.frames == 2176
    # An unknown artist is reported with a warning, and the closest known conditioning is used.
    assert "The Beatles" in proc.stderr and "not in the" in proc.stderr
