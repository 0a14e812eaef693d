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
from .distributed import DistInfo, all_reduce_mean
from .fast import CompiledRegions, maybe, pin_batch
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
    """Builds the batches of upcoming micro-steps in background threads (order is fixed by the step numbers);
    with ``pin``, each batch lands in page-locked memory, so its copy to the GPU does not block."""

    def __init__(self, task: Task, rank: int, workers: int, order: Iterator[tuple[int, int]], ahead: int,
                 pin: bool = False) -> None:
        self.task, self.rank, self.pin = task, rank, pin
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
            self.pending[key] = self.pool.submit(self._build, key[0], key[1])

    def _build(self, step: int, micro: int) -> Any:
        batch = self.task.train_batch(step, micro, self.rank)
        return pin_batch(batch) if self.pin else batch

    def get(self, step: int, micro: int) -> Any:
        fut = self.pending.pop((step, micro), None)
        if fut is None:
            batch = self._build(step, micro)
        else:
            batch = fut.result()
        self._fill()
        return batch

    def close(self) -> None:
        if self.pool is not None:
            for f in self.pending.values():
                f.cancel()
            self.pool.shutdown(wait=True, cancel_futures=True)


class Trainer:
    """Train ``model`` on ``task`` with ``config``; checkpoints go to ``checkpoint_dir``.

    Args:
        model: the module to train (parameters with ``requires_grad=False`` stay frozen, e.g. under LoRA).
        dist: from :func:`jukebox.train.distributed.setup_distributed` (one process by default).
        log_dir: TensorBoard folder (rank 0; skipped with a note when tensorboard is not installed).
        extra_state: JSON-able facts stored in every checkpoint (e.g. the model config and the training options).
        record_batches: keep ``describe(batch)`` of every micro-batch in the result (tests).
        log: where one-line progress messages go (rank 0).
        data_state: JSON-able facts beside the seed, batch size and accumulation that decide which batches the
            task draws (e.g. a prior's label dropout); stored in every checkpoint, and a resumed run that differs in
            one of them says so.
        compile_kwargs: extra ``torch.compile`` arguments when ``config.compile`` is on (e.g. ``mode``, or
            ``backend="aot_eager"`` to trace without generating kernels).

    :meth:`fit` runs in named stages: :meth:`_begin` (optimiser, EMA, discriminator, resume), then per optimiser
    step :meth:`_step` (forward, backward, clip, update), :meth:`_log`, :meth:`_validate` and :meth:`_save` when
    due, and :meth:`_end`.
    """

    def __init__(self, model: nn.Module, task: Task, config: TrainConfig, checkpoint_dir: str | Path,
                 dist: DistInfo | None = None, log_dir: str | Path | None = None, progress: bool = True,
                 extra_state: dict[str, Any] | None = None, record_batches: bool = False,
                 log: Callable[[str], None] | None = None,
                 on_step: Callable[[int, dict[str, float]], None] | None = None,
                 data_state: dict[str, Any] | None = None, compile_kwargs: dict[str, Any] | None = None) -> None:
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
        self.task_data_state = dict(data_state or {})
        self.last_saved_step: int | None = None
        self.compile_kwargs = dict(compile_kwargs or {})

    # ---------------------------------------------------------------------------------------------- helpers
    def _wrap(self) -> nn.Module:
        """The module the training forward runs through: DDP over several processes, else the model."""
        if not self.dist.distributed:
            return self.model
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(self.model, device_ids=[self.device] if self.device.type == "cuda" else None,
                   broadcast_buffers=False)

    def _no_sync(self, run: _Run, last_micro: bool) -> contextlib.AbstractContextManager:
        """Inside a micro-step: gradients are averaged over the processes only on the last one."""
        if last_micro or not self.dist.distributed:
            return contextlib.nullcontext()
        return run.ddp_model.no_sync()

    def _validates_here(self) -> bool:
        """Whether this process runs validation (rank 0 alone: DDP keeps a whole model on every rank)."""
        return self.dist.is_main

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
                "grad_accum": c.grad_accum, **self.task_data_state}

    def _save(self, run: _Run, step: int) -> None:
        """Checkpoint then export (rank 0)."""
        if not self.dist.is_main:
            return
        disc = getattr(self.task, "discriminator", None) if run.d_opt is not None else None
        d_opt = run.d_opt
        state = CheckpointState(step=step, config=self.config, model=self.model.state_dict(),
                                optimizer=run.optimizer.state_dict(),
                                ema=run.ema.state_dict() if run.ema else None, rng=rng_state(),
                                data=self._data_state(), metrics=run.metrics or run.last_row, extra=self.extra_state,
                                discriminator=disc.state_dict() if disc is not None else None,
                                discriminator_optimizer=d_opt.state_dict() if d_opt is not None else None)
        save_checkpoint(self.checkpoint_dir, state)
        self.task.export(self._inference_model(run.ema))
        self.last_saved_step = step

    def _inference_model(self, ema: ModelEMA | None) -> nn.Module:
        if ema is None:
            return self.model
        m = copy.deepcopy(self.model)
        ema.apply_to(m)
        return m

    def _reduce(self, loss: Tensor, grad_norm: Tensor, metrics: dict[str, Tensor]) -> tuple[float, float,
                                                                                           dict[str, float]]:
        """(loss, gradient norm, metrics) as floats, averaged over the processes (one transfer)."""
        keys = sorted(metrics)
        packed = torch.stack([loss, grad_norm.float().to(loss.device), *[metrics[k].reshape(()) for k in keys]])
        values = all_reduce_mean(packed, self.dist).tolist()
        return values[0], values[1], dict(zip(keys, values[2:]))

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
        loss_v, norm_v, means = self._reduce(loss_sum, grad_norm, metric_sums)
        if not (math.isfinite(loss_v) and math.isfinite(norm_v)):
            raise TrainingDiverged(f"{self.task.name}: the discriminator's loss or gradient norm became "
                                   f"{loss_v}/{norm_v} at step {step + 1}; training stopped and the last good "
                                   f"checkpoint (step {self.last_saved_step}) is kept in {self.checkpoint_dir}")
        d_opt.step()
        return {"disc_loss": loss_v, "disc_grad_norm": norm_v, **means}

    @torch.no_grad()
    def validate(self, ema: ModelEMA | None = None) -> dict[str, float]:
        """Mean loss and metrics over the task's validation batches (rank 0; the model is restored to train)."""
        return self._validation_means(self._inference_model(ema))

    @torch.no_grad()
    def _validation_means(self, model: nn.Module) -> dict[str, float]:
        """Mean loss and metrics of ``model`` over the task's validation batches, in eval mode (restored)."""
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
        c = self.config
        run = self._begin(resume)
        if run.start >= c.steps:
            if self.dist.is_main:
                self.log(f"already trained {run.start} steps (>= --steps {c.steps}); nothing to do")
            return run.result
        end = c.steps if stop_at is None else max(run.start, min(stop_at, c.steps))
        self._open(run, end)
        try:
            for step in range(run.start, end):
                row = self._step(run, step)
                done, last = step + 1, step + 1 == end
                self._log(run, row, last)
                if self._validates_here() and ((c.val_every and done % c.val_every == 0) or last):
                    self._validate(run, done)
                if (c.save_every and done % c.save_every == 0) or last:
                    self._save(run, done)
        finally:
            self._close(run)
        self._end()
        return run.result

    def _begin(self, resume: bool) -> _Run:
        """Stage 1: the model on its device, a fresh optimiser, EMA and discriminator; with ``resume``, all of it
        (and the RNG) from the checkpoint."""
        c = self.config
        model = self.model.to(self.device)
        model.train()
        run = _Run(optimizer=build_optimizer(model, c), ema=ModelEMA(model, c.ema) if c.ema > 0 else None,
                   result=TrainResult(step=0, checkpoint=self.checkpoint_dir))
        disc: nn.Module | None = getattr(self.task, "discriminator", None)
        if disc is not None:
            disc.to(self.device).train()
            run.d_opt = self.task.discriminator_optimizer(c)  # type: ignore[attr-defined]
            self._d_base_lr = [g["lr"] for g in run.d_opt.param_groups]
        if resume:
            self._resume(run, disc)
        run.result.step = run.start
        return run

    def _resume(self, run: _Run, disc: nn.Module | None) -> None:
        state = load_checkpoint(self.checkpoint_dir)
        self.model.load_state_dict(state.model, strict=True)
        run.optimizer.load_state_dict(state.optimizer)
        if disc is not None and run.d_opt is not None:
            if state.discriminator is None or state.discriminator_optimizer is None:
                raise JukeboxError(f"{self.checkpoint_dir}: the checkpoint has no discriminator state to resume "
                                   "adversarial training from")
            disc.load_state_dict(state.discriminator, strict=True)
            run.d_opt.load_state_dict(state.discriminator_optimizer)
        if run.ema is not None:
            if state.ema is None:
                self.log("note: the checkpoint has no EMA weights; the EMA starts from the current weights")
            else:
                run.ema.load_state_dict(state.ema)
        set_rng_state(state.rng)
        run.start = state.step
        self._note_data_change(state.data)
        self.last_saved_step = run.start
        if self.dist.is_main:
            self.log(f"resuming from step {run.start} ({self.checkpoint_dir})")

    def _note_data_change(self, old: dict[str, Any]) -> None:
        """A note when the data settings a checkpoint was saved with (``old``, as :meth:`_data_state` gives them)
        differ from this run's: the batches then differ from an uninterrupted run."""
        now = self._data_state()
        changed = [k for k, v in now.items() if k in old and old[k] != v]
        if changed:
            names = ", ".join(k.replace("_", " ") for k in changed)
            self.log(f"note: resuming with a different {names} ({', '.join(f'{k} {old[k]}' for k in changed)}; "
                     f"now {', '.join(f'{k} {now[k]}' for k in changed)}); the batches differ from an uninterrupted "
                     "run")

    def _open(self, run: _Run, end: int) -> None:
        """DDP wrapper, TensorBoard writer, batch prefetcher and progress bar for steps ``run.start .. end``."""
        c, d = self.config, self.dist
        run.ddp_model = self._wrap()
        run.params = [p for p in self.model.parameters() if p.requires_grad]
        run.writer = _open_writer(self.log_dir) if d.is_main else None
        order = ((s, m) for s in range(run.start, end) for m in range(c.grad_accum))
        run.prefetch = _Prefetcher(self.task, d.rank, c.workers, order, ahead=2 * c.grad_accum,
                                   pin=self.device.type == "cuda")
        if c.compile != "none":
            disc = getattr(self.task, "discriminator", None) if run.d_opt is not None else None
            run.compiled = CompiledRegions([self.model] + ([disc] if disc is not None else []), c.compile,
                                           self.compile_kwargs)
            if d.is_main:
                self.log(f"torch.compile ({c.compile}): {len(run.compiled)} compiled region(s); the first steps "
                         "build them")
        if d.is_main and self.progress:
            from tqdm.auto import tqdm

            run.bar = tqdm(total=c.steps, initial=run.start, desc=f"train {self.task.name}", unit="step",
                           dynamic_ncols=True, file=sys.stderr)
        run.t0 = time.perf_counter()

    def _step(self, run: _Run, step: int) -> dict[str, float]:
        """Stage 2: one optimiser step (its micro-batches forward and backward, clipping, the update, the EMA and
        the discriminator's step); returns the step's row of the history."""
        c, d = self.config, self.dist
        torch.manual_seed(step_seed(c.seed, step, d.rank))
        lr = lr_at(step, c)
        for g in run.optimizer.param_groups:
            g["lr"] = lr
        run.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.device)
        metric_sums: dict[str, Tensor] = {}
        seen: list[str] = []
        batches: list[Any] = []
        with maybe(run.compiled):  # compiled modules only for the training forward (and its backward)
            for micro in range(c.grad_accum):
                batch = run.prefetch.get(step, micro)
                if run.d_opt is not None:
                    batches.append(batch)
                if self.record_batches:
                    seen.extend(self.task.describe(batch))
                run.tokens += self.task.tokens(batch) * d.world_size
                with self._no_sync(run, micro == c.grad_accum - 1):
                    with self._autocast():
                        loss, metrics = self.task.loss(run.ddp_model, batch, self.device)
                    (loss / c.grad_accum).backward()
                loss_sum = loss_sum + loss.detach().float() / c.grad_accum
                for k, v in metrics.items():
                    metric_sums[k] = metric_sums.get(k, 0.0) + v.detach().float() / c.grad_accum
        grad_norm = torch.nn.utils.clip_grad_norm_(run.params, c.grad_clip if c.grad_clip > 0 else math.inf)
        if hasattr(grad_norm, "full_tensor"):  # sharded parameters (FSDP): the norm over every shard
            grad_norm = grad_norm.full_tensor()
        loss_v, norm_v, means = self._reduce(loss_sum, grad_norm, metric_sums)
        if not (math.isfinite(loss_v) and math.isfinite(norm_v)):
            where = (f"the last good checkpoint (step {self.last_saved_step}) is kept in {self.checkpoint_dir}"
                     if self.last_saved_step is not None else "no checkpoint was written yet")
            raise TrainingDiverged(
                f"{self.task.name}: {'loss' if not math.isfinite(loss_v) else 'gradient norm'} became "
                f"{loss_v if not math.isfinite(loss_v) else norm_v} at step {step + 1}; training stopped "
                f"and {where}. Try a lower --lr, more warmup or --grad-clip")
        run.optimizer.step()
        if run.ema is not None:
            run.ema.update(self.model)
        d_row = {}
        if run.d_opt is not None:
            with maybe(run.compiled):
                d_row = self._discriminator_step(step, run.d_opt, batches, lr / c.lr)
        row = {"step": step + 1, "loss": loss_v, "lr": lr, "grad_norm": norm_v, **means, **d_row}
        run.result.history.append(row)
        run.result.step = step + 1
        run.last_row = row
        if self.record_batches:
            run.result.seen.append(seen)
        if self.on_step is not None:
            self.on_step(step + 1, row)
        return row

    def _log(self, run: _Run, row: dict[str, float], last: bool) -> None:
        """Stage 3: throughput, the progress bar, and every ``log_every`` steps the window's means (TensorBoard or a
        log line)."""
        c, done = self.config, int(row["step"])
        elapsed = time.perf_counter() - run.t0
        run.result.tokens_per_second = run.tokens / elapsed if elapsed > 0 else 0.0
        run.window.append(row)
        if run.bar is not None:
            run.bar.update(1)
            run.bar.set_postfix(loss=f"{row['loss']:.4g}", refresh=False)
        if not self.dist.is_main or not (done % c.log_every == 0 or last):
            return
        means = {k: float(np.mean([r[k] for r in run.window])) for k in run.window[-1]}
        run.window = []
        run.metrics = means
        if run.writer is not None:
            for k, v in means.items():
                if k != "step":
                    run.writer.add_scalar(f"train/{k}", v, done)
            run.writer.add_scalar("perf/tokens_per_second", run.result.tokens_per_second, done)
        if run.bar is None:
            extra = "".join(f" {k} {means[k]:.4g}" for k in getattr(self.task, "log_metrics", ()) if k in means)
            self.log(f"{self.task.name} step {done}/{c.steps} loss {means['loss']:.4g} lr {row['lr']:.3g} "
                     f"{run.result.tokens_per_second:.0f} tokens/s{extra}")

    def _record_validation(self, run: _Run, done: int, val: dict[str, float]) -> None:
        """Validation means ``val`` of step ``done`` into the history, TensorBoard and the log."""
        run.result.val_history.append({"step": done, **val})
        if run.writer is not None:
            for k, v in val.items():
                run.writer.add_scalar(f"val/{k}", v, done)
        msg = " ".join(f"{k} {v:.4g}" for k, v in val.items())
        (run.bar.write if run.bar is not None else self.log)(f"{self.task.name} step {done} validation: {msg}")

    def _validate(self, run: _Run, done: int) -> None:
        """Stage 4 (rank 0): the validation means into the history and the logs, TensorBoard media."""
        val = self.validate(run.ema)
        if val:
            self._record_validation(run, done, val)
        if run.writer is not None:
            m = self._inference_model(run.ema)
            m.eval()
            with torch.no_grad():
                self.task.log_media(run.writer, m, done)
            m.train()

    def _close(self, run: _Run) -> None:
        if run.prefetch is not None:
            run.prefetch.close()
        if run.bar is not None:
            run.bar.close()
        if run.writer is not None:
            run.writer.close()

    def _end(self) -> None:
        """Stage 5: every process waits for the others (rank 0 wrote the last checkpoint)."""
        if self.dist.distributed:
            import torch.distributed as tdist

            tdist.barrier()


@dataclass
class _Run:
    """The state of one :meth:`Trainer.fit`: optimisers, EMA, the steps' bookkeeping and what it writes to."""

    optimizer: torch.optim.Optimizer
    ema: ModelEMA | None
    result: TrainResult
    d_opt: torch.optim.Optimizer | None = None
    start: int = 0
    ddp_model: Any = None
    params: list[Tensor] = field(default_factory=list)
    writer: Any = None
    prefetch: _Prefetcher | None = None
    compiled: CompiledRegions | None = None
    bar: Any = None
    t0: float = 0.0
    tokens: int = 0
    window: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    last_row: dict[str, float] = field(default_factory=dict)
