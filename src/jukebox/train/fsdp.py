"""Full fine-tuning of large priors with PyTorch FSDP2 (``jukebox train prior --fsdp``).

DDP keeps the whole model, its gradients and the AdamW moments on every GPU: 5b_lyrics (5.6B parameters) needs
about 90 GB for them, more than one GPU holds. Here each transformer block, then the rest of the prior, is
sharded with ``torch.distributed.fsdp.fully_shard`` over the processes of ``torchrun``: every process keeps
1/N of the fp32 master weights, gradients and moments; a block's weights are gathered (in bf16 on a GPU, by
:class:`~torch.distributed.fsdp.MixedPrecisionPolicy`) just before it runs and freed after; gradients are
reduce-scattered in fp32. ``--checkpoint-activations`` recomputes each block in backward.

Checkpoints are sharded (``torch.distributed.checkpoint``, each process writes its own shards in parallel)::

    prior_level_L/checkpoint/trainer.json   step, TrainConfig, data-order state, options ("sharded": "dcp")
    prior_level_L/checkpoint/dcp/           model, optimiser and (with --ema) EMA shards

and are written atomically like the single-file ones (:func:`jukebox.train.state.save_checkpoint`). A run
resumes from them with ``--resume --fsdp`` on any number of processes (they are re-sharded on load). At every
checkpoint rank 0 also writes the gathered weights into the model directory, so sampling finds them;
:func:`export_sharded_checkpoint` (``jukebox train export-fsdp``) does the same later from the checkpoint alone,
in one process without GPUs.

Without ``torchrun``, ``--fsdp`` runs as a group of one process (useful to check a setup on one GPU).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..atomic import swap_in_folder
from ..errors import JukeboxError
from ..fileio import read_json
from .distributed import DistInfo, broadcast_object
from .loop import Trainer, _Run
from .optim import ModelEMA, build_optimizer
from .state import FORMAT, STATE_JSON, VERSION

__all__ = ["SHARDS", "ensure_process_group", "shard_prior", "FSDPTrainer", "export_sharded_checkpoint",
           "is_sharded_checkpoint"]

#: The folder of a sharded checkpoint that holds the torch.distributed.checkpoint files.
SHARDS = "dcp"


def ensure_process_group(info: DistInfo) -> DistInfo:
    """``info`` with a process group: FSDP needs one even for a single process (a group of one, made here)."""
    if dist.is_initialized():
        return info
    backend = "nccl" if info.device.type == "cuda" else "gloo"
    kwargs = {"device_id": info.device} if info.device.type == "cuda" else {}
    dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1, **kwargs)
    return DistInfo(0, 1, 0, info.device, True)


def shard_prior(model: nn.Module, device: torch.device, bf16: bool, world_size: int) -> nn.Module:
    """``fully_shard`` every transformer block of ``model`` (decoder and lyric encoder), then the model itself,
    over a 1-D mesh of ``world_size`` processes on ``device``'s type. ``bf16``: parameters are gathered and
    computed in bf16, gradients reduced in fp32 (the fp32 master weights stay sharded). Returns ``model``."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from ..nn.transformer import Transformer

    mesh = init_device_mesh(device.type, (world_size,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 \
        else MixedPrecisionPolicy()
    for m in list(model.modules()):
        if isinstance(m, Transformer):
            for block in m.blocks:
                fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def _full(value: torch.Tensor, keep: bool) -> torch.Tensor | None:
    """The whole tensor of a (possibly sharded) value on the CPU where ``keep`` (a collective for DTensors)."""
    if hasattr(value, "full_tensor"):
        value = value.full_tensor()
    return value.detach().cpu() if keep else None


def gather_state(state: dict[str, torch.Tensor], main: bool) -> dict[str, torch.Tensor]:
    """The whole tensors of a state dict of sharded values, one at a time, kept on the CPU of rank 0 (``main``;
    other ranks get an empty dict). Every rank must call it."""
    out = {}
    for name, value in state.items():
        full = _full(value, main)
        if main:
            out[name] = full
    return out


def _full_prior(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """A plain prior of ``model``'s config holding ``state`` (whole CPU tensors), built without random fills."""
    from ..checkpoint.model_dir import build_model
    from ..prior import Prior

    prior = build_model(Prior, model.config, "the trained prior")
    prior.load_state_dict(state, strict=True, assign=True)
    return prior.train(model.training)


def is_sharded_checkpoint(folder: str | Path) -> bool:
    """Whether ``folder`` (or its ``.old`` twin after a cut swap) is a sharded checkpoint of ``--fsdp``."""
    folder = Path(folder)
    for f in (folder, folder.with_name(folder.name + ".old")):
        if (f / STATE_JSON).is_file():
            try:
                return bool(read_json(f / STATE_JSON, "training state").get("sharded"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                return False
    return False


def _checkpoint_folder(folder: Path) -> tuple[Path, dict[str, Any]]:
    for f in (folder, folder.with_name(folder.name + ".old")):
        if (f / STATE_JSON).is_file() and (f / SHARDS).is_dir():
            try:
                meta = read_json(f / STATE_JSON, "training state")
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise JukeboxError(f"{f / STATE_JSON}: corrupt training state ({e})") from None
            if meta.get("format") != FORMAT or meta.get("version") != VERSION or not meta.get("sharded"):
                break
            return f, meta
    if (folder / STATE_JSON).is_file():
        raise JukeboxError(f"{folder}: not a sharded checkpoint of --fsdp training; resume it without --fsdp")
    raise JukeboxError(f"{folder}: no training checkpoint to resume from")


class FSDPTrainer(Trainer):
    """The shared loop with the model sharded by :func:`shard_prior` (module docstring).

    Differences from :class:`Trainer`: the model is sharded before the optimiser is built; gradients of the
    micro-steps before the last are kept local (``set_requires_gradient_sync``); validation runs on every rank
    (each forward gathers the weights), the EMA is swapped into the sharded model for it; checkpoints are sharded
    and every rank takes part in writing them and in gathering the exported weights. TensorBoard media are not
    written (they would need the whole model on rank 0).
    """

    def _bf16(self) -> bool:
        c = self.config
        if self.device.type == "cuda":
            return c.precision == "bf16" or (c.precision == "auto" and self.task.prefers_bf16)
        return c.precision == "bf16"

    def _begin(self, resume: bool) -> _Run:
        from .loop import TrainResult

        c = self.config
        model = shard_prior(self.model.to(self.device), self.device, self._bf16(), self.dist.world_size)
        model.train()
        run = _Run(optimizer=build_optimizer(model, c), ema=ModelEMA(model, c.ema) if c.ema > 0 else None,
                   result=TrainResult(step=0, checkpoint=self.checkpoint_dir))
        if resume:
            self._resume(run, None)
        run.result.step = run.start
        return run

    def _wrap(self) -> nn.Module:
        return self.model

    def _no_sync(self, run: _Run, last_micro: bool) -> contextlib.AbstractContextManager:
        self.model.set_requires_gradient_sync(last_micro)  # type: ignore[operator]
        return contextlib.nullcontext()

    def _validates_here(self) -> bool:
        return True

    # ------------------------------------------------------------------------------------------ checkpoints
    def _state(self, run: _Run) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        state: dict[str, Any] = {"model": get_model_state_dict(self.model),
                                 "optim": get_optimizer_state_dict(self.model, run.optimizer)}
        if run.ema is not None:
            state["ema"] = run.ema.shadow
        return state

    def _save(self, run: _Run, step: int) -> None:
        """Sharded checkpoint (every rank writes its shards), then the gathered weights exported by rank 0."""
        import torch.distributed.checkpoint as dcp

        d, folder = self.dist, self.checkpoint_dir
        tmp = None
        if d.is_main:
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent)
        tmp = Path(str(broadcast_object(tmp, d)))
        try:
            dcp.save(self._state(run), checkpoint_id=str(tmp / SHARDS))
            dist.barrier()
            if d.is_main:
                meta = {"format": FORMAT, "version": VERSION, "sharded": SHARDS, "step": step,
                        "config": self.config.to_dict(), "has_ema": run.ema is not None,
                        "data": self._data_state(), "metrics": run.metrics or run.last_row, "extra": self.extra_state}
                (tmp / STATE_JSON).write_text(json.dumps(meta, indent=1) + "\n")
                for f in [tmp / STATE_JSON, *sorted((tmp / SHARDS).iterdir())]:
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
                swap_in_folder(tmp, folder)
        except BaseException:
            if d.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        dist.barrier()
        weights = run.ema.shadow if run.ema is not None else self.model.state_dict()
        full = gather_state(weights, d.is_main)
        if d.is_main:
            self.task.export(_full_prior(self.model, full))
        self.last_saved_step = step

    def _resume(self, run: _Run, disc: nn.Module | None) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        folder, meta = _checkpoint_folder(self.checkpoint_dir)
        state = self._state(run)
        if run.ema is not None and not meta.get("has_ema"):
            del state["ema"]
            if self.dist.is_main:
                self.log("note: the checkpoint has no EMA weights; the EMA starts from the current weights")
        dcp.load(state, checkpoint_id=str(folder / SHARDS))
        set_model_state_dict(self.model, state["model"])
        set_optimizer_state_dict(self.model, run.optimizer, state["optim"])
        if run.ema is not None and "ema" not in state:
            run.ema = ModelEMA(self.model, self.config.ema)
        run.start = int(meta["step"])
        if self.dist.is_main:
            self._note_data_change(meta.get("data", {}))
        self.last_saved_step = run.start
        if self.dist.is_main:
            self.log(f"resuming from step {run.start} ({folder}, sharded)")

    # ------------------------------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self, ema: ModelEMA | None = None) -> dict[str, float]:
        """Mean loss and metrics over the validation batches, computed by every rank (with ``ema``: the
        averaged weights swapped into the sharded model, then swapped back)."""
        params = dict(self.model.named_parameters())
        saved = {}
        if ema is not None:
            for name, p in params.items():
                if name in ema.shadow:
                    saved[name] = p.detach().clone()
                    p.detach().copy_(ema.shadow[name])
        try:
            return self._validation_means(self.model)
        finally:
            for name, value in saved.items():
                params[name].detach().copy_(value)

    def _validate(self, run: _Run, done: int) -> None:
        val = self.validate(run.ema)
        if val and self.dist.is_main:
            self._record_validation(run, done, val)


def export_sharded_checkpoint(checkpoint: str | Path, ema: bool | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The prior held by a sharded checkpoint of ``--fsdp`` training, read in this process alone (no GPU, no
    process group: the shards are re-assembled on the CPU). ``ema``: the EMA weights (default: them when the
    checkpoint has them, as the training's own export). Returns ``(prior, checkpoint extra)``; the prior is in
    fp32 on the CPU, in eval mode."""
    import torch.distributed.checkpoint as dcp

    from ..checkpoint.model_dir import build_model
    from ..prior import Prior
    from ..prior.config import PriorConfig

    folder, meta = _checkpoint_folder(Path(checkpoint))
    extra = dict(meta.get("extra", {}))
    if "model_config" not in extra:
        raise JukeboxError(f"{folder}: the checkpoint does not name its prior's config")
    has_ema = bool(meta.get("has_ema"))
    if ema and not has_ema:
        raise JukeboxError(f"{folder}: the checkpoint has no EMA weights (training ran without --ema)")
    use_ema = has_ema if ema is None else ema
    cfg = PriorConfig.from_dict(extra["model_config"], f"{folder}: model_config")
    prior = build_model(Prior, cfg, f"{folder}: model_config").to_empty(device="cpu")
    state = prior.state_dict()
    key = "ema" if use_ema else "model"
    box = {key: state}
    dcp.load(box, checkpoint_id=str(folder / SHARDS), no_dist=True)
    prior.load_state_dict(box[key], strict=True)
    return prior.eval(), extra
