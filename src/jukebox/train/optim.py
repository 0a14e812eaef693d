"""AdamW with parameter groups, the warmup/decay learning-rate schedule and an EMA of the weights."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warmup, then none/linear/cosine decay."""
    base = config.lr
    if config.warmup_steps and step < config.warmup_steps:
        return base * (step + 1) / config.warmup_steps
    if config.decay == "none":
        return base
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, max(0.0, (step - config.warmup_steps) / span))
    floor = base * config.min_lr_ratio
    if config.decay == "linear":
        return floor + (base - floor) * (1.0 - progress)
    return floor + (base - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, config: TrainConfig, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; weight decay only on matrices (not biases, norms, embeddings)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_matrix = p.dim() >= 2 and "emb" not in name
        (decay if is_matrix and config.weight_decay > 0 else no_decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": config.weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    kwargs = {}
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"])
    if fused:
        kwargs["fused"] = True
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps, **kwargs)


class ModelEMA:
    """Exponential moving average of a model's floating-point parameters; buffers are copied as they are.

    ``shadow`` maps state-dict names to tensors on the model's device. ``apply_to(model)`` copies the averaged
    values into a model of the same structure (e.g. a copy for export or validation).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.param_names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.shadow: dict[str, torch.Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """shadow <- lerp(shadow, weights, 1 - decay) for the trained floating-point parameters (one foreach
        call per device and dtype), copies of everything else."""
        params = dict(model.named_parameters())
        tracked = set(self.param_names)
        groups: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for name, value in model.state_dict().items():
            if name in tracked and value.is_floating_point():
                shadow, p = self.shadow[name], params[name].detach()
                dst, src = groups.setdefault((shadow.device, shadow.dtype), ([], []))
                dst.append(shadow)
                src.append(p)
            else:
                self.shadow[name].copy_(value)
        for dst, src in groups.values():
            torch._foreach_lerp_(dst, src, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[:5]}")
        with torch.no_grad():
            for k, v in self.shadow.items():
                v.copy_(state[k])

    @torch.no_grad()
    def apply_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow, strict=True)
