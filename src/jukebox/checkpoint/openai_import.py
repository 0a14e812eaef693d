"""Import OpenAI's released Jukebox files into our model directory format.

SRC_DIR is laid out like the original cache folder: ``vqvae.pth.tar`` and optionally
``prior_level_{0,1,2}.pth.tar``; each file is a pickled dict whose ``model`` entry is the state_dict and whose
optional ``hps`` entry holds the hyper-parameters that differ from the released model's. Files are read with
the restricted unpickler (no code runs), converted key by key with a shape check on every tensor, and written
as safetensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import JukeboxError, UsageError
from .format import plan_shards, save_weights, write_shards
from .model_dir import ModelDir, build_model, check_sizes, prior_folder, save_component
from .safe_load import safe_torch_load, to_plain

TOP_KINDS = ("5b", "5b_lyrics", "1b_lyrics")
#: Shard size while converting: peak host memory is about the source checkpoint plus one shard.
STREAM_SHARD_BYTES = 64 * 1024**2


def _checkpoint_parts(path: Path) -> tuple[Mapping[str, torch.Tensor], dict[str, Any]]:
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, Mapping):
        raise JukeboxError(f"{path}: expected a dict checkpoint, found {type(ckpt).__name__}")
    sd = ckpt.get("model", ckpt)
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise JukeboxError(f"{path}: its 'model' entry is not a state_dict of tensors")
    hps = to_plain(ckpt.get("hps") or {})
    if not isinstance(hps, Mapping):
        raise JukeboxError(f"{path}: its 'hps' entry is not a mapping")
    return sd, dict(hps)


def _config_from_hps(path: Path, build: Callable[..., Any], *args: Any) -> Any:
    """A config from a checkpoint's ``hps`` (``build(*args)``), checked as the model directory's loader checks it
    (field types, finite numbers, size limits, no zero or negative sizes: ``sr: 0`` or a NaN ``l_mu`` is refused
    here, not written into a folder the loader then refuses); a damaged ``hps`` is a one-line error naming the
    file."""
    where = f"{path} hps"
    try:
        config = build(*args)
    except JukeboxError as e:
        raise JukeboxError(f"{where}: {e}") from None
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError, ZeroDivisionError) as e:
        raise JukeboxError(f"{where}: damaged hyper-parameters ({type(e).__name__}: {str(e)[:150]})") from None
    config = check_sizes(type(config).from_dict(config.to_dict(), where), where)
    from ..config import VQVAEConfig

    if isinstance(config, VQVAEConfig):
        from ..vqvae import VQVAE as cls
    else:
        from ..prior import Prior as cls
    build_model(cls, config, where)  # on the meta device: a config no model can be built from is refused now
    return config


def detect_top_kind(sd: Mapping[str, torch.Tensor], l_bins: int = 2048) -> str:
    """Tell 5b, 5b_lyrics and 1b_lyrics apart from the original state_dict's structure.

    5b_lyrics has a separate lyric encoder (``prime_prior.*``); 1b_lyrics embeds lyric and music tokens in one
    table (``prior.x_emb.weight`` has more rows than the VQ-VAE has codes); 5b has neither.
    """
    if any(k.startswith("prime_prior.") for k in sd):
        return "5b_lyrics"
    x_emb = sd.get("prior.x_emb.weight")
    if x_emb is None:
        raise JukeboxError("not a Jukebox top-level prior (no prior.x_emb.weight)")
    return "1b_lyrics" if x_emb.shape[0] > l_bins else "5b"


def import_openai(
    src_dir: str | Path,
    out_dir: str | Path,
    preset: str | None = None,
    ids_dir: str | Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> ModelDir:
    """Convert SRC_DIR's OpenAI checkpoints into a model directory at ``out_dir``; return it."""
    from ..prior import openai as prior_openai
    from ..vqvae import openai as vqvae_openai

    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise UsageError(f"{src}: source folder not found")
    vq_path = src / "vqvae.pth.tar"
    if not vq_path.exists():
        raise JukeboxError(f"{src}: no vqvae.pth.tar (expected the original cache layout: vqvae.pth.tar and "
                           "prior_level_{0,1,2}.pth.tar)")
    if preset is not None and preset not in TOP_KINDS:
        raise UsageError(f"unknown preset {preset!r}; choose one of {', '.join(TOP_KINDS)}")
    if out.exists() and any(out.iterdir()) and not force:
        raise JukeboxError(f"{out} already exists and is not empty; pass --force to overwrite it")

    sd, hps = _checkpoint_parts(vq_path)
    vq_config = _config_from_hps(vq_path, vqvae_openai.config_from_openai_hps,
                                 {**vqvae_openai.OPENAI_RELEASED_HPS, **hps})
    vq_sd = vqvae_openai.convert_openai_state_dict(sd, vq_config)
    del sd
    model_dir = ModelDir(out, create=True, name=out.name)
    save_component(out / "vqvae", vq_config, vq_sd)
    del vq_sd
    log(f"vqvae: {sum(1 for _ in vq_config.hop_lengths)} levels, hops {vq_config.hop_lengths} -> {out / 'vqvae'}")

    kinds: dict[int, str] = {}
    for level in range(vq_config.levels):
        path = src / f"prior_level_{level}.pth.tar"
        if not path.exists():
            continue
        sd, hps = _checkpoint_parts(path)
        if level == vq_config.levels - 1:
            detected = detect_top_kind(sd, vq_config.l_bins)
            if preset is not None and preset != detected:
                raise JukeboxError(f"{path}: --preset {preset} given, but the weights look like {detected}")
            kind = preset or detected
        else:
            kind = f"upsampler_level_{level}"
        kinds[level] = kind
        vq_hps = {"sr": vq_config.sample_rate, "levels": vq_config.levels, "downs_t": vq_config.downs_t,
                  "strides_t": vq_config.strides_t, "l_bins": vq_config.l_bins}
        config = _config_from_hps(path, prior_openai.config_from_openai_hps,
                                  {**prior_openai.openai_preset_hps(kind), **hps}, vq_hps)
        if config.level != level:
            raise JukeboxError(f"{path}: its hps say level {config.level}, but the file name says level {level}")
        n_params = _write_prior_streaming(out / prior_folder(level), sd, config)
        del sd
        log(f"prior level {level} ({kind}): {n_params:,} weights -> {out / prior_folder(level)}")

    if ids_dir is not None:
        _import_ids(Path(ids_dir), out, kinds, log)
    return model_dir


def _write_prior_streaming(folder: Path, sd: Mapping[str, torch.Tensor], config: Any,
                           shard_bytes: int = STREAM_SHARD_BYTES) -> int:
    """Convert and write a prior shard by shard, so host memory holds the (memory-mapped) source plus one shard.

    Tensors keep their stored dtype (the released 5b tops' fp16 projections stay fp16 on disk; loading casts).
    Returns the number of weights written.
    """
    from ..prior.openai import convert_tensor, plan_openai_conversion

    plan = plan_openai_conversion(sd, config)
    shapes = {ours: tuple(sd[theirs].shape[::-1] if transpose else sd[theirs].shape)
              for ours, (theirs, transpose) in plan.items()}
    sizes = {ours: sd[theirs].element_size() for ours, (theirs, _) in plan.items()}

    def materialise(names: list[str]) -> dict[str, torch.Tensor]:
        return {n: convert_tensor(sd[plan[n][0]], plan[n][1], sd[plan[n][0]].dtype) for n in names}

    groups = plan_shards(shapes, sizes, shard_bytes)
    folder.mkdir(parents=True, exist_ok=True)
    if len(groups) == 1:
        save_weights(folder, materialise(groups[0]))
    else:
        write_shards(folder, ((names, materialise(names)) for names in groups), len(groups))
    config.save_json(folder / "config.json")
    return sum(math.prod(s) for s in shapes.values())


def _import_ids(ids_dir: Path, out: Path, kinds: Mapping[int, str], log: Callable[[str], None]) -> None:
    """Store the original artist/genre tables each prior uses (v3 for 1b_lyrics, v2 otherwise) with the prior."""
    from ..data.labels import LabelVocab

    if not ids_dir.is_dir():
        raise UsageError(f"{ids_dir}: ids folder not found (expected the original jukebox/data/ids/)")
    for level, kind in kinds.items():
        version = "v3" if kind == "1b_lyrics" else "v2"
        try:
            vocab = LabelVocab.from_openai_ids_dir(ids_dir, version=version)
        except FileNotFoundError as e:
            raise JukeboxError(f"{ids_dir}: missing {version} id table ({e.filename})") from None
        vocab.save(out / prior_folder(level))
        log(f"labels for level {level}: {len(vocab.list_artists())} artists, {len(vocab.list_genres())} genres "
            f"({version})")

