"""Optimisation settings of one training run (saved with every training checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigBase
from ..errors import UsageError

DECAYS = ("none", "linear", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")
COMPILE_MODES = ("none", "blocks", "model")


@dataclass(frozen=True)
class TrainConfig(ConfigBase):
    """Hyper-parameters of the shared training loop.

    ``batch_size`` is per process and per micro-step: one optimiser step sees
    ``batch_size * grad_accum * world_size`` examples. The learning rate warms up linearly over
    ``warmup_steps`` then decays (``decay``) to ``lr * min_lr_ratio`` at ``steps``.
    """

    steps: int = 1000
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 3e-4
    warmup_steps: int = 100
    decay: str = "cosine"
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    #: EMA of the weights (0 = off, e.g. 0.999); the exported model then holds the EMA weights.
    ema: float = 0.0
    #: Validate every N steps (0 = only at the end); ``val_batches`` batches each time.
    val_every: int = 0
    val_batches: int = 4
    #: Write a training checkpoint every N steps (0 = only at the end).
    save_every: int = 0
    log_every: int = 10
    seed: int = 0
    #: ``auto``: bf16 autocast on CUDA for priors, fp32 otherwise.
    precision: str = "auto"
    #: Data-loading threads (each batch is a pure function of the step, so threads never change the order).
    workers: int = 2
    #: ``torch.compile`` of the training step: ``none`` (eager), ``blocks`` (each transformer block, VQ-VAE level
    #: encoder/decoder and sub-discriminator on its own) or ``model`` (the whole forward); see
    #: :mod:`jukebox.train.fast`.
    compile: str = "none"
    #: Shard the weights, gradients and optimiser state over the processes (PyTorch FSDP2, priors only; see
    #: :mod:`jukebox.train.fsdp`); checkpoints are then sharded (``torch.distributed.checkpoint``).
    fsdp: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}"),
            (self.lr > 0, f"learning rate must be positive, got {self.lr}"),
            (self.warmup_steps >= 0, f"warmup steps must be >= 0, got {self.warmup_steps}"),
            (self.decay in DECAYS, f"decay must be one of {DECAYS}, got {self.decay!r}"),
            (0.0 <= self.min_lr_ratio <= 1.0, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"),
            (self.grad_clip >= 0, f"grad_clip must be >= 0 (0 = off), got {self.grad_clip}"),
            (0.0 <= self.ema < 1.0, f"ema decay must be in [0, 1), got {self.ema}"),
            (self.val_every >= 0 and self.save_every >= 0 and self.log_every >= 1,
             "val_every/save_every must be >= 0 and log_every >= 1"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}"),
            (self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
            (self.compile in COMPILE_MODES, f"compile must be one of {COMPILE_MODES}, got {self.compile!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UsageError(msg)
