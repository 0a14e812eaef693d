"""``python -m jukebox.demo [OUT.wav]``: the README's first command.

With the embedded default model it generates a few seconds of music. An install without that model cannot
generate; it then writes a short synthesized clip, round-tripped through the codec when a VQ-VAE is available,
and says so plainly.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

#: A composer and style the embedded default model was trained on (Widelands' classical soundtrack).
DEMO_LABELS = ("Jan Bruns", "classical")


def synth_clip(sample_rate: int, seconds: float = 4.0) -> np.ndarray:
    """A short plucked melody over a bass line (float32 [T]); deterministic."""
    t_note = 0.25
    melody = [0, 4, 7, 12, 7, 4, 0, 4, 5, 9, 12, 9, 7, 4, 2, 0]
    bass = [-12, -12, -7, -7]
    n = int(seconds * sample_rate)
    out = np.zeros(n, np.float32)
    for i in range(int(seconds / t_note)):
        start = int(i * t_note * sample_rate)
        length = min(int(t_note * sample_rate * 1.5), n - start)
        tt = np.arange(length) / sample_rate
        env = np.exp(-4.0 * tt)
        f = 440.0 * 2 ** (melody[i % len(melody)] / 12)
        fb = 440.0 * 2 ** (bass[(i // 4) % len(bass)] / 12) / 2
        note = sum(np.sin(2 * np.pi * f * k * tt) / k**1.5 for k in (1, 2, 3)) * env
        note += 0.6 * np.sin(2 * np.pi * fb * tt) * np.exp(-2.0 * tt)
        out[start:start + length] += 0.25 * note.astype(np.float32)
    return np.clip(out, -1, 1)


def main(argv: list[str] | None = None) -> int:
    import jukebox
    from jukebox.api import default_model_path

    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "demo.wav")
    path = default_model_path()
    if path is not None:
        model = jukebox.load_model(path)
        if model.prior_levels:
            vocab = model.vocab()
            artist, genre = DEMO_LABELS
            if vocab is not None and artist.lower() not in vocab.list_artists():
                artist, genre = "unknown", "unknown"
            t0 = time.perf_counter()
            gen = model.generate(artist=artist, genre=genre, seconds=5.0, seed=0, upsample_mode="parallel")
            jukebox.save_audio(gen.audio[0], out, model.sample_rate, force=True)
            print(f"wrote {out}: 5 s of music by the embedded default model (artist {artist!r}, genre {genre!r}), "
                  f"generated in {time.perf_counter() - t0:.1f} s")
            return 0
    print("note: this install has no embedded default model yet, so it cannot generate music; writing a "
          "synthesized demo clip instead (see README: `jukebox import-openai` or `jukebox train`).")
    sr = 44100
    clip = synth_clip(sr)
    jukebox.save_audio(clip[None], out, sr, force=True)
    print(f"wrote {out}: {len(clip) / sr:.1f} s synthesized clip (not generated)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
