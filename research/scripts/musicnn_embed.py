#!/usr/bin/env python3
"""musicnn embeddings of audio clips: run with a separate, optional environment that has musicnn.

The project does not depend on TensorFlow; `research/scripts/eval_conditioning.py` calls this script with another Python
(``--musicnn-python``), for example a venv made with::

    python3 -m venv /work/evalenv
    /work/evalenv/bin/pip install tensorflow-cpu tf-keras librosa soundfile
    /work/evalenv/bin/pip install --no-deps musicnn

(works with Python 3.11: tensorflow-cpu 2.21, tf-keras 2.21, librosa 0.11, musicnn 0.1.0.)

Input: an .npz with ``audio`` float16/float32 [N, T] at 16 kHz (musicnn's rate). Output: an .npz with, per model
(``MSD_musicnn``, ``MTT_musicnn``), ``{model}_penultimate`` [N, 200] and ``{model}_tags`` [N, 50]: the mean over
3-second patches (hop ``--patch-hop`` seconds) of the penultimate layer and of the tag probabilities.

The mel spectrogram is computed as musicnn's own extractor does (librosa, 512-point FFT, hop 256, 96 mels,
``log10(10000 x + 1)``) but kept in float32: the package's cast to float16 overflows to inf/NaN on loud input.

    /work/evalenv/bin/python research/scripts/musicnn_embed.py clips.npz emb.npz
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402

SR, FFT_SIZE, FFT_HOP, N_MELS, PATCH_FRAMES = 16000, 512, 256, 96, 187  # musicnn's configuration, 3 s patches


def log_mel(audio: np.ndarray) -> np.ndarray:
    """One clip [T] at 16 kHz -> log-mel [frames, 96] float32, as musicnn computes it (without the fp16 cast)."""
    import librosa

    mel = librosa.feature.melspectrogram(y=audio.astype(np.float32), sr=SR, hop_length=FFT_HOP, n_fft=FFT_SIZE,
                                         n_mels=N_MELS).T
    return np.log10(10000 * mel + 1).astype(np.float32)


def patches(mel: np.ndarray, hop: int) -> np.ndarray:
    """[frames, 96] -> [P, 187, 96]: 3-second patches every ``hop`` frames (one zero-padded patch if short)."""
    if mel.shape[0] < PATCH_FRAMES:
        mel = np.pad(mel, ((0, PATCH_FRAMES - mel.shape[0]), (0, 0)))
    starts = range(0, mel.shape[0] - PATCH_FRAMES + 1, hop)
    return np.stack([mel[s:s + PATCH_FRAMES] for s in starts])


def embed(audio: np.ndarray, model: str, hop: int, batch: int = 64) -> dict[str, np.ndarray]:
    """Clips [N, T] -> {penultimate [N, 200], tags [N, 50]} with one musicnn model (patch means)."""
    import musicnn
    import tensorflow as tf
    from musicnn import models

    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.reset_default_graph()
    n_tags = 50
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, PATCH_FRAMES, N_MELS])
        is_training = tf.compat.v1.placeholder(tf.bool)
        y, *_, penultimate = models.define_model(x, is_training, model, n_tags)
        probs = tf.nn.sigmoid(y)
    sess = tf.compat.v1.Session(config=tf.compat.v1.ConfigProto(intra_op_parallelism_threads=2,
                                                                 inter_op_parallelism_threads=1))
    sess.run(tf.compat.v1.global_variables_initializer())
    tf.compat.v1.train.Saver().restore(sess, os.path.join(os.path.dirname(musicnn.__file__), model) + "/")
    all_patches, owner = [], []
    for i, clip in enumerate(audio):
        p = patches(log_mel(clip), hop)
        all_patches.append(p)
        owner += [i] * len(p)
    flat = np.concatenate(all_patches)
    owner = np.array(owner)
    pen, tags = [], []
    for b in range(0, len(flat), batch):
        t, e = sess.run([probs, penultimate], feed_dict={x: flat[b:b + batch], is_training: False})
        tags.append(t)
        pen.append(e)
    sess.close()
    pen_a, tags_a = np.concatenate(pen), np.concatenate(tags)
    out_pen = np.stack([pen_a[owner == i].mean(0) for i in range(len(audio))])
    out_tags = np.stack([tags_a[owner == i].mean(0) for i in range(len(audio))])
    return {"penultimate": out_pen.astype(np.float32), "tags": out_tags.astype(np.float32)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--models", nargs="+", default=["MSD_musicnn", "MTT_musicnn"])
    ap.add_argument("--patch-hop", type=float, default=1.5, help="seconds between 3 s patches")
    args = ap.parse_args()
    audio = np.load(args.inp)["audio"]
    if audio.ndim != 2:
        sys.exit(f"error: {args.inp}: 'audio' must be [N, T], got shape {audio.shape}")
    hop = max(1, int(round(args.patch_hop * SR / FFT_HOP)))
    result = {}
    for model in args.models:
        for key, value in embed(audio, model, hop).items():
            result[f"{model}_{key}"] = value
    np.savez(args.out, **result)


if __name__ == "__main__":
    main()
