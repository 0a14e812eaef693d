"""Training checkpoints: model + optimiser + schedule + RNG + data-order state, written atomically.

A checkpoint is a folder (by default ``<component>/checkpoint/`` inside the model directory)::

    model.safetensors   the raw trained weights (all of the state_dict, LoRA adapters included)
    trainer.safetensors optimiser moments (``optim/<param index>/<key>``), EMA weights (``ema/<name>``),
                        RNG states (``rng/torch``, ``rng/cuda/<i>``); with a discriminator (adversarial
                        training) also its weights (``disc/<name>``) and moments (``disc_optim/<i>/<key>``)
    trainer.json        step, TrainConfig, optimiser param groups, data-order state, last metrics, extra

It is written into a temporary folder which then replaces the previous checkpoint with two renames, so a crash
leaves either the old or the new checkpoint complete (``checkpoint.old`` is used if the swap was cut short).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..atomic import swap_in_folder
from ..checkpoint.format import load_weights, save_weights, unshare_tensors
from ..errors import JukeboxError
from ..fileio import read_json
from .config import TrainConfig

FORMAT = "jukebox-train-state"
VERSION = 1
STATE_JSON = "trainer.json"
STATE_TENSORS = "trainer.safetensors"


@dataclass
class CheckpointState:
    """What a training checkpoint holds, in memory."""

    step: int
    config: TrainConfig
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    ema: dict[str, torch.Tensor] | None = None
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    #: A second model trained alongside (the GAN discriminator) and its optimiser, or None.
    discriminator: dict[str, torch.Tensor] | None = None
    discriminator_optimizer: dict[str, Any] | None = None


def _flatten_optimizer(sd: dict[str, Any], prefix: str = "optim") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}/{idx}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str = "optim"
                         ) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(f"{prefix}/"):
            _, idx, key = name.split("/", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, scalars in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(scalars)
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else dict(g) for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def rng_state() -> dict[str, torch.Tensor]:
    """The torch CPU and CUDA generator states."""
    out = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng/cuda/{i}"] = s
    return out


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    if "rng/torch" in state:
        torch.set_rng_state(state["rng/torch"])
    cuda = [state[k] for k in sorted(k for k in state if k.startswith("rng/cuda/"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(folder: str | Path, state: CheckpointState) -> Path:
    """Write ``state`` into ``folder`` atomically (see the module docstring); returns ``folder``."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        save_weights(tmp, state.model)
        tensors, optim_meta = _flatten_optimizer(state.optimizer)
        if state.ema is not None:
            tensors.update({f"ema/{k}": v.detach().cpu().contiguous() for k, v in state.ema.items()})
        tensors.update({k: v.cpu().contiguous() for k, v in state.rng.items()})
        disc_meta = None
        if state.discriminator is not None:
            tensors.update({f"disc/{k}": v.detach().cpu().contiguous() for k, v in state.discriminator.items()})
        if state.discriminator_optimizer is not None:
            disc_tensors, disc_meta = _flatten_optimizer(state.discriminator_optimizer, "disc_optim")
            tensors.update(disc_tensors)
        tensors = {k: (v.clone() if v.numel() == 0 else v) for k, v in tensors.items()}
        save_file(unshare_tensors(tensors), str(tmp / STATE_TENSORS))
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "step": state.step,
            "config": state.config.to_dict(),
            "optimizer": optim_meta,
            "has_ema": state.ema is not None,
            **({"has_discriminator": True} if state.discriminator is not None else {}),
            **({"discriminator_optimizer": disc_meta} if disc_meta is not None else {}),
            "data": state.data,
            "metrics": state.metrics,
            "extra": state.extra,
        }
        (tmp / STATE_JSON).write_text(json.dumps(meta, indent=1) + "\n")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        swap_in_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def checkpoint_exists(folder: str | Path) -> bool:
    folder = Path(folder)
    return any((f / STATE_JSON).is_file() for f in (folder, folder.with_name(folder.name + ".old")))


def read_checkpoint_extra(folder: str | Path) -> dict[str, Any]:
    """The ``extra`` facts of a checkpoint (model config, vocabulary, LoRA settings) without loading tensors."""
    folder = Path(folder)
    for f in (folder, folder.with_name(folder.name + ".old")):
        if (f / STATE_JSON).is_file():
            try:
                return dict(read_json(f / STATE_JSON, "training state").get("extra", {}))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise JukeboxError(f"{f / STATE_JSON}: corrupt training state ({e})") from None
    raise JukeboxError(f"{folder}: no training checkpoint to resume from")


def load_checkpoint(folder: str | Path) -> CheckpointState:
    """Read a checkpoint written by :func:`save_checkpoint` onto the CPU (falls back to ``<folder>.old`` after a
    cut swap)."""
    folder = Path(folder)
    if not (folder / STATE_JSON).is_file():
        old = folder.with_name(folder.name + ".old")
        if (old / STATE_JSON).is_file():
            folder = old
        else:
            raise JukeboxError(f"{folder}: no training checkpoint to resume from")
    try:
        meta = read_json(folder / STATE_JSON, "training state")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise JukeboxError(f"{folder / STATE_JSON}: corrupt training state ({e})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise JukeboxError(f"{folder}: not a {FORMAT} v{VERSION} checkpoint")
    if meta.get("sharded"):
        raise JukeboxError(f"{folder}: a sharded checkpoint of `jukebox train prior --fsdp`; resume it with --fsdp, or "
                           "write its weights into the model directory with `jukebox train export-fsdp`")
    try:
        tensors = load_file(str(folder / STATE_TENSORS), device="cpu")
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise JukeboxError(f"{folder / STATE_TENSORS}: corrupt training state ({type(e).__name__})") from None
    model = load_weights(folder, device="cpu")
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema/")} if meta["has_ema"] else None
    return CheckpointState(
        step=int(meta["step"]),
        config=TrainConfig.from_dict(meta["config"], f"{folder}/{STATE_JSON}:config"),
        model=model,
        optimizer=_unflatten_optimizer(tensors, meta["optimizer"]),
        ema=ema,
        rng={k: v.cpu() for k, v in tensors.items() if k.startswith("rng/")},
        data=meta.get("data", {}),
        metrics=meta.get("metrics", {}),
        extra=meta.get("extra", {}),
        discriminator={k[5:]: v for k, v in tensors.items() if k.startswith("disc/")}
        if meta.get("has_discriminator") else None,
        discriminator_optimizer=_unflatten_optimizer(tensors, meta["discriminator_optimizer"], "disc_optim")
        if meta.get("discriminator_optimizer") is not None else None,
    )
