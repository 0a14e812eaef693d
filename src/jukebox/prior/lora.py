"""LoRA (low-rank adaptation) of a prior's attention and MLP linears: a small, dependency-free implementation.

A wrapped linear computes ``base(x) + (alpha / rank) * B(A(dropout(x)))`` with ``A`` [rank, in] (Kaiming
uniform) and ``B`` [out, rank] (zeros, so training starts from the base model). The base weight and bias keep
their names and are frozen; the adapters add ``<name>.lora_A`` and ``<name>.lora_B``.

Adapters live beside the prior, apart from its weights::

    prior_level_L/lora/adapter.safetensors   only the lora_A / lora_B tensors
    prior_level_L/lora/adapter.json          {"format": "jukebox-lora", "rank", "alpha", "targets", "modules"}

:func:`merge_lora` folds the adapters into the base weights and turns the wrappers back into plain linears.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..atomic import atomic_path, atomic_write_text
from ..errors import JukeboxError
from ..fileio import read_json

FORMAT = "jukebox-lora"
ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"
#: Module-name suffixes adapted by default: fused/split attention projections and the MLP.
DEFAULT_TARGETS = ("attn.qkv", "attn.q", "attn.kv", "attn.proj", "mlp.fc", "mlp.proj")

__all__ = ["LoRALinear", "apply_lora", "lora_state_dict", "save_lora", "load_lora", "merge_lora",
           "mark_only_lora_trainable", "DEFAULT_TARGETS"]


class LoRALinear(nn.Linear):
    """An ``nn.Linear`` with a low-rank update; x [..., in] -> [..., out]."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.rank, self.alpha = rank, float(alpha)
        self.scaling = self.alpha / rank
        p = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=p.device, dtype=p.dtype))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=p.device, dtype=p.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight, self.bias)
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype))
        return out + update * self.scaling

    def delta_weight(self) -> Tensor:
        """The low-rank update of the weight [out, in]."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}"


def _matches(name: str, targets: Sequence[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def _set_child(root: nn.Module, name: str, module: nn.Module) -> None:
    *path, leaf = name.split(".")
    owner = root
    for p in path:
        owner = getattr(owner, p)
    setattr(owner, leaf, module)


def apply_lora(model: nn.Module, rank: int, alpha: float | None = None, targets: Sequence[str] = DEFAULT_TARGETS,
               dropout: float = 0.0) -> list[str]:
    """Wrap every ``nn.Linear`` whose name ends with one of ``targets`` in a :class:`LoRALinear`.

    ``alpha`` defaults to ``rank`` (scaling 1). Returns the wrapped module names. Call
    :func:`mark_only_lora_trainable` to freeze everything else.
    """
    alpha = float(rank if alpha is None else alpha)
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and not isinstance(m, LoRALinear) and _matches(n, targets)]
    if not names:
        raise JukeboxError(f"no linear layer matches the LoRA targets {list(targets)}")
    modules = dict(model.named_modules())
    for n in names:
        _set_child(model, n, LoRALinear(modules[n], rank, alpha, dropout))
    return names


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def mark_only_lora_trainable(model: nn.Module, also: Sequence[str] = ()) -> int:
    """Freeze every parameter except the adapters (and those whose names contain one of ``also``).

    Returns the number of trainable parameters.
    """
    n = 0
    for name, p in model.named_parameters():
        p.requires_grad = "lora_" in name or any(a in name for a in also)
        n += p.numel() if p.requires_grad else 0
    return n


def lora_state_dict(model: nn.Module, include: Sequence[str] = ()) -> dict[str, Tensor]:
    """The adapter tensors (``<module>.lora_A`` / ``<module>.lora_B``) and any tensor whose name contains one of
    ``include`` (e.g. label embeddings trained alongside the adapters)."""
    return {k: v for k, v in model.state_dict().items() if ".lora_" in k or any(i in k for i in include)}


def save_lora(model: nn.Module, folder: str | Path, extra: dict | None = None, include: Sequence[str] = ()) -> Path:
    """Write the adapters of ``model`` (plus the tensors named by ``include``) into ``folder`` (safetensors +
    JSON); returns the folder."""
    mods = lora_modules(model)
    if not mods:
        raise JukeboxError("the model has no LoRA adapters to save")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    first = next(iter(mods.values()))
    tensors = {k: v.detach().contiguous().cpu() for k, v in lora_state_dict(model, include).items()}
    with atomic_path(folder / ADAPTER_WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    meta = {"format": FORMAT, "version": 1, "rank": first.rank, "alpha": first.alpha, "modules": sorted(mods),
            "include": list(include), "extra": extra or {}}
    atomic_write_text(folder / ADAPTER_CONFIG, json.dumps(meta, indent=1) + "\n")
    return folder


def read_lora_config(folder: str | Path) -> dict:
    path = Path(folder) / ADAPTER_CONFIG
    if not path.is_file():
        raise JukeboxError(f"{folder}: no LoRA adapters ({ADAPTER_CONFIG} missing)")
    try:
        meta = read_json(path, "LoRA adapter config")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise JukeboxError(f"{path}: corrupt adapter config ({e})") from None
    if meta.get("format") != FORMAT:
        raise JukeboxError(f"{path}: not a {FORMAT} adapter config")
    return meta


def load_lora(model: nn.Module, folder: str | Path) -> list[str]:
    """Wrap the modules named in ``folder``'s adapter config (if not wrapped yet) and load the adapters strictly.

    Returns the adapted module names.
    """
    meta = read_lora_config(folder)
    modules = list(meta["modules"])
    have = lora_modules(model)
    todo = [m for m in modules if m not in have]
    if todo:
        apply_lora(model, int(meta["rank"]), float(meta["alpha"]), targets=todo)
    try:
        tensors = load_file(str(Path(folder) / ADAPTER_WEIGHTS))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise JukeboxError(f"{folder}: corrupt adapter weights ({type(e).__name__})") from None
    expected = lora_state_dict(model, meta.get("include", ()))
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise JukeboxError(f"{folder}: adapters do not match the model (missing {missing[:4]}, "
                           f"unexpected {unexpected[:4]})")
    with torch.no_grad():
        for k, v in tensors.items():
            if tuple(v.shape) != tuple(expected[k].shape):
                raise JukeboxError(f"{folder}: {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
            expected[k].copy_(v)
    return modules


@torch.no_grad()
def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its base weight and replace the wrapper by a plain ``nn.Linear``.

    The merged model computes the same function (up to rounding) and has the base model's state-dict keys.
    Returns the number of merged modules.
    """
    mods = lora_modules(model)
    for name, m in mods.items():
        lin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device="meta")
        w = (m.weight.float() + m.delta_weight().float()).to(m.weight.dtype)
        lin.weight = nn.Parameter(w, requires_grad=m.weight.requires_grad)
        if m.bias is not None:
            lin.bias = m.bias
        _set_child(model, name, lin)
    return len(mods)
