"""A sampling run's folder, the one format ``jukebox sample`` and the web page write and read.

::

    OUT_DIR/
      item_{i}.wav          the audio of item i, decoded from the lowest sampled level
      codes.npz             ``level_L`` int64 arrays [n_samples, T_L]; rewritten after each level (resume)
      metadata.json         {"format": "jukebox-run", "version", "status": "running" | "done", "request", ...,
                            "levels_done", "settings", "timings", "outputs"}
      alignment.json        lyric models: each character's time per item
      alignment_{i}.png     lyric models: the alignment matrix of item i

Every file is written atomically, so an interrupted run leaves a consistent folder that ``--resume`` continues.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_bytes, atomic_write_text
from .fileio import read_codes_npz

#: ``metadata.json``'s format name and version (version 1 had neither field).
RUN_FORMAT = "jukebox-run"
RUN_VERSION = 2
CODES_FILE = "codes.npz"
METADATA_FILE = "metadata.json"
ALIGNMENT_FILE = "alignment.json"


def load_codes_file(path: str | Path) -> dict[int, np.ndarray]:
    """Read a codes .npz (arrays ``level_L`` of shape [T] or [B, T]) safely: {level: int64 array [B, T]}
    (see :func:`jukebox.fileio.read_codes_npz`)."""
    return read_codes_npz(path)


def save_codes(path: str | Path, codes: dict[int, Any]) -> None:
    """Write codes {level: [B, T] tensor or array} as ``level_L`` int64 arrays (empty levels left out)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"level_{lvl}": np.asarray(_numpy(c), dtype=np.int64)
                                for lvl, c in sorted(codes.items()) if c.shape[1] > 0})
    atomic_write_bytes(path, buf.getvalue())


def write_json(path: str | Path, data: Any) -> None:
    """``data`` as indented UTF-8 JSON (anything JSON lacks written as its ``str``), atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def now() -> str:
    """The local time as metadata records it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def write_outputs(out: Path, model: Any, gen: Any, metadata: dict[str, Any]) -> dict[str, Any]:
    """Write a finished :class:`~jukebox.api.Generation` into the run folder ``out``: codes, one wav per item,
    the lyric alignment (lyric models) and ``metadata`` completed with the settings, timings and outputs (status
    ``done``). Returns the metadata written."""
    from .audio import save_audio

    save_codes(out / CODES_FILE, gen.codes)
    for i in range(gen.audio.shape[0]):
        save_audio(gen.audio[i], out / f"item_{i}.wav", gen.sample_rate)
    if gen.alignments is not None:
        from .sampling.alignment import alignment_json, alignment_png

        seconds_per_token = model.hop_lengths[model.top_level] / model.sample_rate
        items = []
        for i, align in enumerate(gen.alignments):
            lyrics = clean_lyrics(model, gen.settings["items"][i]["lyrics"])
            items.append({"item": i, **alignment_json(align, lyrics, seconds_per_token)})
            atomic_write_bytes(out / f"alignment_{i}.png", alignment_png(align))
        write_json(out / ALIGNMENT_FILE, {"items": items})
    metadata.update(
        format=RUN_FORMAT, version=RUN_VERSION, status="done", level=gen.level, settings=gen.settings,
        timings=[{"level": r.level, "tokens": r.tokens, "seconds": round(r.seconds, 3),
                  "tokens_per_second": round(r.tokens_per_second, 1)} for r in gen.reports],
        outputs=sorted(p.name for p in out.iterdir() if not p.name.startswith(".")),
        finished=now())
    write_json(out / METADATA_FILE, metadata)
    return metadata


def clean_lyrics(model: Any, lyrics: str) -> str:
    """``lyrics`` as the model's top prior reads them (its lyric vocabulary's cleaning)."""
    labeller = model.labeller(model.top_level)
    if labeller is None:
        return lyrics
    return labeller.vocab.lyric_vocab.clean(lyrics)


def _numpy(codes: Any) -> np.ndarray:
    return codes.cpu().numpy() if hasattr(codes, "cpu") else np.asarray(codes)
