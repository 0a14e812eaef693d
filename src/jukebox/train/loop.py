"""The one training loop shared by the VQ-VAE and every prior.

What a model needs is a :class:`Task`: how to build the batch of a given step (a pure function of the step,
so the data order is reproducible and ``--resume`` continues bit for bit), its loss, validation batches and
how to export the trained weights. :class:`Trainer` does the rest: AdamW with warmup and decay, gradient
accumulation and clipping, bf16 autocast on CUDA, EMA of the weights, DDP, periodic validation, TensorBoard
logs, atomic checkpoints, a NaN/inf guard and a progress bar with ETA.

Determinism: before each optimiser step the torch generator is seeded from ``(seed, step, rank)``, so dropout
and codebook restarts do not depend on what ran before (validation, logging, a restart). The checkpoint also
stores the generator state for completeness.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import JukeboxError
from .config import TrainConfig
from .distributed import DistInfo
from .optim import ModelEMA, build_optimizer, lr_at
from .state import CheckpointState, load_checkpoint, rng_state, save_checkpoint, set_rng_state


class TrainingDiverged(JukeboxError):
    """The loss or the gradient became NaN or infinite; training stopped and the last good checkpoint is kept."""


class Task(Protocol):
    """What the loop needs to know about one model (see :mod:`jukebox.train.tasks`)."""

    name: str
    #: bf16 autocast by default on CUDA (``precision="auto"``).
    prefers_bf16: bool

    def train_batch(self, step: int, micro: int, rank: int) -> Any:
        """The batch of micro-step ``micro`` of optimiser step ``step`` on ``rank`` (pure: same args, same batch)."""

    def val_batches(self) -> list[Any]:
        """A fixed list of validation batches."""

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
        """(scalar loss, detached scalar metrics) of ``batch`` under ``model`` (may be DDP-wrapped)."""

    def tokens(self, batch: Any) -> int:
        """Tokens (codes, or audio samples for the VQ-VAE) in ``batch``, for throughput numbers."""

    def describe(self, batch: Any) -> list[str]:
        """One identifier per item (e.g. ``path@offset``), for tests and debugging."""

    def export(self, model: nn.Module) -> None:
        """Write the inference weights of ``model`` (unwrapped, EMA applied) where sampling finds them."""

    def log_media(self, writer: Any, model: nn.Module, step: int) -> None:
        """Optional TensorBoard media (audio); ``model`` is unwrapped, in eval mode."""


class AdversarialTask(Task, Protocol):
    """A task that also trains a second model with its own optimiser (a GAN discriminator).

    After every optimiser step of the model, the loop takes one step of ``discriminator`` on the same
    micro-batches: ``discriminator_loss(batch)`` may use what ``loss`` left in ``batch`` (e.g. the detached
    reconstructions). The discriminator's weights and optimiser state are checkpointed and resumed with the rest;
    its learning rate follows the model's schedule, scaled by its optimiser's initial learning rate / ``lr``.
    """

    discriminator: nn.Module

    def discriminator_optimizer(self, config: TrainConfig) -> torch.optim.Optimizer:
        """A fresh optimiser over the discriminator's parameters."""

    def discriminator_loss(self, batch: Any, device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
        """(scalar loss, detached scalar metrics) of the discriminator on ``batch`` after ``loss`` saw it."""


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns: the final step, per-step history and (optionally) the batches seen."""

    step: int
    history: list[dict[str, float]] = field(default_factory=list)
    val_history: list[dict[str, float]] = field(default_factory=list)
    seen: list[list[str]] = field(default_factory=list)
    tokens_per_second: float = 0.0
    checkpoint: Path | None = None


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of one optimiser step on one rank."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] & ((1 << 63) - 1))


def _open_writer(log_dir: str | Path | None) -> Any:
    if log_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("note: tensorboard is not installed (pip install 'jukebox[train]'); no TensorBoard logs",
              file=sys.stderr)
        return None
    return SummaryWriter(log_dir=str(log_dir))


class _Prefetcher:
    """Builds the batches of upcoming micro-steps in background threads (order is fixed by the step numbers)."""

    def __init__(self, task: Task, rank: int, workers: int, order: Iterator[tuple[int, int]], ahead: int) -> None:
        self.task, self.rank = task, rank
        self.pool = ThreadPoolExecutor(max_workers=workers) if workers > 0 else None
        self.order = order
        self.ahead = max(1, ahead)
        self.pending: dict[tuple[int, int], Future] = {}
        self._fill()

    def _fill(self) -> None:
        if self.pool is None:
            return
        while len(self.pending) < self.ahead:
            key = next(self.order, None)
            if key is None:
                return
            self.pending[key] = self.pool.submit(self.task.train_batch, key[0], key[1], self.rank)

    def get(self, step: int, micro: int) -> Any:
        fut = self.pending.pop((step, micro), None)
        if fut is None:
            batch = self.task.train_batch(step, micro, self.rank)
        else:
            batch = fut.result()
        self._fill()
        return batch

    def close(self) -> None:
        if self.pool is not None:
            for f in self.pending.values():
                f.cancel()
            self.pool.shutdown(wait=True, cancel_futures=True)


#: A task's batch-shaping rates that are part of the resume state (0 when the task has none or an older
#: checkpoint did not record them).
_TASK_RATES = ("label_dropout", "input_noise", "scheduled_sampling")


class Trainer:
    """Train ``model`` on ``task`` with ``config``; checkpoints go to ``checkpoint_dir``.

    Args:
        model: the module to train (parameters with ``requires_grad=False`` stay frozen, e.g. under LoRA).
        dist: from :func:`jukebox.train.distributed.setup_distributed` (one process by default).
        log_dir: TensorBoard folder (rank 0; skipped with a note when tensorboard is not installed).
        extra_state: JSON-able facts stored in every checkpoint (e.g. the preset or the LoRA settings).
        record_batches: keep ``describe(batch)`` of every micro-batch in the result (tests).
        log: where one-line progress messages go (rank 0).
    """

    def __init__(self, model: nn.Module, task: Task, config: TrainConfig, checkpoint_dir: str | Path,
                 dist: DistInfo | None = None, log_dir: str | Path | None = None, progress: bool = True,
                 extra_state: dict[str, Any] | None = None, record_batches: bool = False,
                 log: Callable[[str], None] | None = None,
                 on_step: Callable[[int, dict[str, float]], None] | None = None) -> None:
        self.model = model
        self.task = task
        self.config = config
        self.checkpoint_dir = Path(checkpoint_dir)
        self.dist = dist or DistInfo()
        self.device = self.dist.device
        self.log_dir = log_dir
        self.progress = progress
        self.extra_state = dict(extra_state or {})
        self.record_batches = record_batches
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.on_step = on_step
        self.last_saved_step: int | None = None

    # ---------------------------------------------------------------------------------------------- helpers
    def _autocast(self) -> contextlib.AbstractContextManager:
        c = self.config
        if c.precision == "bf16" and self.device.type == "cpu":
            # explicit only: about 1.7x faster prior training on CPUs with AVX512-BF16/AMX (measured on a 2-core
            # AMD EPYC), slower on CPUs without them
            return torch.autocast("cpu", dtype=torch.bfloat16)
        use = self.device.type == "cuda" and (c.precision == "bf16" or (c.precision == "auto"
                                                                         and self.task.prefers_bf16))
        return torch.autocast("cuda", dtype=torch.bfloat16) if use else contextlib.nullcontext()

    def _data_state(self) -> dict[str, Any]:
        c = self.config
        return {"seed": c.seed, "world_size": self.dist.world_size, "batch_size": c.batch_size,
                "grad_accum": c.grad_accum, **{k: float(getattr(self.task, k, 0.0)) for k in _TASK_RATES}}

    def _save(self, step: int, optimizer: torch.optim.Optimizer, ema: ModelEMA | None,
              metrics: dict[str, float], d_opt: torch.optim.Optimizer | None = None) -> None:
        """Checkpoint then export (rank 0)."""
        if not self.dist.is_main:
            return
        disc = getattr(self.task, "discriminator", None) if d_opt is not None else None
        state = CheckpointState(step=step, config=self.config, model=self.model.state_dict(),
                                optimizer=optimizer.state_dict(), ema=ema.state_dict() if ema else None,
                                rng=rng_state(), data=self._data_state(), metrics=metrics,
                                extra=self.extra_state,
                                discriminator=disc.state_dict() if disc is not None else None,
                                discriminator_optimizer=d_opt.state_dict() if d_opt is not None else None)
        save_checkpoint(self.checkpoint_dir, state)
        self.task.export(self._inference_model(ema))
        self.last_saved_step = step

    def _inference_model(self, ema: ModelEMA | None) -> nn.Module:
        if ema is None:
            return self.model
        m = copy.deepcopy(self.model)
        ema.apply_to(m)
        return m

    def _discriminator_step(self, step: int, d_opt: torch.optim.Optimizer, batches: list[Any],
                            lr_scale: float) -> dict[str, float]:
        """One optimiser step of the task's discriminator on this step's micro-batches; returns its metrics."""
        c, d = self.config, self.dist
        disc: nn.Module = self.task.discriminator  # type: ignore[attr-defined]
        for g, base in zip(d_opt.param_groups, self._d_base_lr):
            g["lr"] = base * lr_scale
        d_opt.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.device)
        metric_sums: dict[str, Tensor] = {}
        for batch in batches:
            with self._autocast():
                loss, metrics = self.task.discriminator_loss(batch, self.device)  # type: ignore[attr-defined]
            (loss / len(batches)).backward()
            loss_sum = loss_sum + loss.detach().float() / len(batches)
            for k, v in metrics.items():
                metric_sums[k] = metric_sums.get(k, 0.0) + v.detach().float() / len(batches)
        params = [p for p in disc.parameters() if p.requires_grad]
        if d.distributed:  # the discriminator is not DDP-wrapped: average its gradients by hand
            import torch.distributed as tdist

            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                tdist.all_reduce(p.grad)
                p.grad.div_(d.world_size)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, c.grad_clip if c.grad_clip > 0 else math.inf)
        keys = sorted(metric_sums)
        packed = torch.stack([loss_sum, grad_norm.float().to(loss_sum.device),
                              *[metric_sums[k].reshape(()) for k in keys]])
        if d.distributed:
            import torch.distributed as tdist

            tdist.all_reduce(packed)
            packed = packed / d.world_size
        values = packed.tolist()
        if not all(math.isfinite(v) for v in values[:2]):
            raise TrainingDiverged(f"{self.task.name}: the discriminator's loss or gradient norm became "
                                   f"{values[0]}/{values[1]} at step {step + 1}; training stopped and the last good "
                                   f"checkpoint (step {self.last_saved_step}) is kept in {self.checkpoint_dir}")
        d_opt.step()
        return {"disc_loss": values[0], "disc_grad_norm": values[1], **dict(zip(keys, values[2:]))}

    @torch.no_grad()
    def validate(self, ema: ModelEMA | None = None) -> dict[str, float]:
        """Mean loss and metrics over the task's validation batches (rank 0; the model is restored to train)."""
        model = self._inference_model(ema)
        was_training = model.training
        model.eval()
        sums: dict[str, float] = {}
        batches = self.task.val_batches()
        try:
            for batch in batches:
                with self._autocast():
                    loss, metrics = self.task.loss(model, batch, self.device)
                for k, v in {"loss": loss, **metrics}.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
        finally:
            model.train(was_training)
        return {k: v / max(1, len(batches)) for k, v in sums.items()}

    # ---------------------------------------------------------------------------------------------- fit
    def fit(self, resume: bool = False, stop_at: int | None = None) -> TrainResult:
        """Run from step 0 (or from the checkpoint with ``resume``) to ``config.steps``.

        ``stop_at``: stop after that step (checkpointing it) while keeping the schedule of ``config.steps``, so
        a long run can be split into pieces that ``resume`` joins bit for bit.
        """
        c, d = self.config, self.dist
        model = self.model.to(self.device)
        model.train()
        optimizer = build_optimizer(model, c)
        ema = ModelEMA(model, c.ema) if c.ema > 0 else None
        disc: nn.Module | None = getattr(self.task, "discriminator", None)
        d_opt: torch.optim.Optimizer | None = None
        if disc is not None:
            disc.to(self.device).train()
            d_opt = self.task.discriminator_optimizer(c)  # type: ignore[attr-defined]
            self._d_base_lr = [g["lr"] for g in d_opt.param_groups]
        start = 0
        if resume:
            state = load_checkpoint(self.checkpoint_dir)
            model.load_state_dict(state.model, strict=True)
            optimizer.load_state_dict(state.optimizer)
            if disc is not None and d_opt is not None:
                if state.discriminator is None or state.discriminator_optimizer is None:
                    raise JukeboxError(f"{self.checkpoint_dir}: the checkpoint has no discriminator state to resume "
                                       "adversarial training from")
                disc.load_state_dict(state.discriminator, strict=True)
                d_opt.load_state_dict(state.discriminator_optimizer)
            if ema is not None:
                if state.ema is None:
                    self.log("note: the checkpoint has no EMA weights; the EMA starts from the current weights")
                else:
                    ema.load_state_dict(state.ema)
            set_rng_state(state.rng)
            start = state.step
            old = state.data
            now = self._data_state()
            if any(old.get(k, 0.0 if k in _TASK_RATES else None) != v for k, v in now.items()):
                self.log(f"note: resuming with a different seed, batch size, accumulation, label dropout, input "
                         f"noise, scheduled sampling or number of processes ({old}, now {now}); the batches "
                         "differ from an uninterrupted run")
            self.last_saved_step = start
            if d.is_main:
                self.log(f"resuming from step {start} ({self.checkpoint_dir})")
        if start >= c.steps:
            if d.is_main:
                self.log(f"already trained {start} steps (>= --steps {c.steps}); nothing to do")
            return TrainResult(step=start, checkpoint=self.checkpoint_dir)

        ddp_model: nn.Module = model
        if d.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ddp_model = DDP(model, device_ids=[self.device] if self.device.type == "cuda" else None,
                            broadcast_buffers=False)
        params = [p for p in model.parameters() if p.requires_grad]
        writer = _open_writer(self.log_dir) if d.is_main else None
        end = c.steps if stop_at is None else max(start, min(stop_at, c.steps))
        order = ((s, m) for s in range(start, end) for m in range(c.grad_accum))
        prefetch = _Prefetcher(self.task, d.rank, c.workers, order, ahead=2 * c.grad_accum)
        result = TrainResult(step=start, checkpoint=self.checkpoint_dir)
        bar = None
        if d.is_main and self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=c.steps, initial=start, desc=f"train {self.task.name}", unit="step",
                       dynamic_ncols=True, file=sys.stderr)
        metrics_out: dict[str, float] = {}
        t0, tokens_done = time.perf_counter(), 0
        window: list[dict[str, float]] = []
        try:
            for step in range(start, end):
                torch.manual_seed(step_seed(c.seed, step, d.rank))
                lr = lr_at(step, c)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                loss_sum = torch.zeros((), device=self.device)
                metric_sums: dict[str, Tensor] = {}
                seen_step: list[str] = []
                step_batches: list[Any] = []
                for micro in range(c.grad_accum):
                    batch = prefetch.get(step, micro)
                    if d_opt is not None:
                        step_batches.append(batch)
                    if self.record_batches:
                        seen_step.extend(self.task.describe(batch))
                    tokens_done += self.task.tokens(batch) * d.world_size
                    sync = micro == c.grad_accum - 1 or not d.distributed
                    ctx = contextlib.nullcontext() if sync else ddp_model.no_sync()  # type: ignore[operator]
                    with ctx:
                        with self._autocast():
                            loss, metrics = self.task.loss(ddp_model, batch, self.device)
                        (loss / c.grad_accum).backward()
                    loss_sum = loss_sum + loss.detach().float() / c.grad_accum
                    for k, v in metrics.items():
                        metric_sums[k] = metric_sums.get(k, 0.0) + v.detach().float() / c.grad_accum
                max_norm = c.grad_clip if c.grad_clip > 0 else math.inf
                grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
                keys = sorted(metric_sums)
                packed = torch.stack([loss_sum, grad_norm.float().to(loss_sum.device),
                                      *[metric_sums[k].reshape(()) for k in keys]])
                if d.distributed:
                    import torch.distributed as tdist

                    tdist.all_reduce(packed)
                    packed = packed / d.world_size
                values = packed.tolist()
                loss_v, norm_v = values[0], values[1]
                if not (math.isfinite(loss_v) and math.isfinite(norm_v)):
                    where = (f"the last good checkpoint (step {self.last_saved_step}) is kept in "
                             f"{self.checkpoint_dir}" if self.last_saved_step is not None
                             else "no checkpoint was written yet")
                    raise TrainingDiverged(
                        f"{self.task.name}: {'loss' if not math.isfinite(loss_v) else 'gradient norm'} became "
                        f"{loss_v if not math.isfinite(loss_v) else norm_v} at step {step + 1}; training stopped "
                        f"and {where}. Try a lower --lr, more warmup or --grad-clip")
                optimizer.step()
                if ema is not None:
                    ema.update(model)
                d_row = self._discriminator_step(step, d_opt, step_batches, lr / c.lr) if d_opt is not None else {}
                done = step + 1
                row = {"step": done, "loss": loss_v, "lr": lr, "grad_norm": norm_v,
                       **{k: v for k, v in zip(keys, values[2:])}, **d_row}
                result.history.append(row)
                result.step = done
                window.append(row)
                if self.record_batches:
                    result.seen.append(seen_step)
                if self.on_step is not None:
                    self.on_step(done, row)
                elapsed = time.perf_counter() - t0
                result.tokens_per_second = tokens_done / elapsed if elapsed > 0 else 0.0
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_v:.4g}", refresh=False)
                if d.is_main and (done % c.log_every == 0 or done == end):
                    means = {k: float(np.mean([r[k] for r in window])) for k in window[-1]}
                    window = []
                    metrics_out = means
                    if writer is not None:
                        for k, v in means.items():
                            if k != "step":
                                writer.add_scalar(f"train/{k}", v, done)
                        writer.add_scalar("perf/tokens_per_second", result.tokens_per_second, done)
                    if bar is None:
                        self.log(f"{self.task.name} step {done}/{c.steps} loss {means['loss']:.4g} "
                                 f"lr {lr:.3g} {result.tokens_per_second:.0f} tokens/s")
                last = done == end
                if d.is_main and ((c.val_every and done % c.val_every == 0) or last):
                    val = self.validate(ema)
                    if val:
                        result.val_history.append({"step": done, **val})
                        if writer is not None:
                            for k, v in val.items():
                                writer.add_scalar(f"val/{k}", v, done)
                        msg = " ".join(f"{k} {v:.4g}" for k, v in val.items())
                        (bar.write if bar is not None else self.log)(f"{self.task.name} step {done} validation: {msg}")
                    if writer is not None:
                        m = self._inference_model(ema)
                        m.eval()
                        with torch.no_grad():
                            self.task.log_media(writer, m, done)
                        m.train()
                if (c.save_every and done % c.save_every == 0) or last:
                    self._save(done, optimizer, ema, metrics_out or row, d_opt)
        finally:
            prefetch.close()
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        if d.distributed:
            import torch.distributed as tdist

            tdist.barrier()
        return result
