"""The fast training path: ``torch.compile`` of the training step's modules, and batches in pinned memory.

``TrainConfig.compile`` chooses what is compiled (``jukebox train ... --compile``):

- ``none``: eager, as before.
- ``blocks`` (regional compilation): every transformer block of a prior, every level encoder and decoder of a
  VQ-VAE and every sub-discriminator of adversarial training is compiled on its own. Blocks of one pattern share
  one compiled graph, so building takes seconds to a minute whatever the depth; the embeddings, the head and the
  loss stay eager.
- ``model``: the model's whole forward (embeddings, stack, head and loss) as one graph (longer to build).

The compiled code is used only inside the loop's training step: validation, export, EMA copies and the audio
samples of TensorBoard run the eager modules (a deep copy of a module never carries a compiled function bound to
the original's weights, and sampling with a KV cache never triggers a compilation). Weights, their names and the
checkpoints are the same as eager training's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UsageError
from .config import COMPILE_MODES

__all__ = ["COMPILE_MODES", "CompiledRegions", "compile_regions", "pin_batch"]


def compile_regions(model: nn.Module) -> list[nn.Module]:
    """The modules ``blocks`` compiles, outermost first: transformer blocks, VQ-VAE level encoders/decoders and
    sub-discriminators (a module inside one already listed is not listed again)."""
    from ..nn.transformer import TransformerBlock
    from ..vqvae.discriminator import PeriodDiscriminator, STFTDiscriminator
    from ..vqvae.encdec import LevelDecoder, LevelEncoder

    kinds = (TransformerBlock, LevelEncoder, LevelDecoder, STFTDiscriminator, PeriodDiscriminator)
    found: list[nn.Module] = []
    inside: set[int] = set()
    for module in model.modules():
        if id(module) in inside:
            continue
        if isinstance(module, kinds):
            found.append(module)
            inside.update(id(m) for m in module.modules())
    return found


class CompiledRegions:
    """Compiled ``forward`` functions of some modules, switched on only inside ``with regions:``.

    Args:
        modules: the models to compile (e.g. the prior, and a discriminator).
        mode: ``blocks`` (each of :func:`compile_regions`) or ``model`` (each module's whole forward).
        compile_kwargs: passed to ``torch.compile`` (e.g. ``backend="aot_eager"`` in tests, ``mode=...``);
            ``dynamic`` defaults to False (the loop's shapes are fixed).

    Inside the context each compiled module's ``forward`` is its compiled function (forward hooks still run, in
    eager mode around it); on exit the class's forward is back. Nothing is compiled before the first call.
    """

    def __init__(self, modules: list[nn.Module], mode: str, compile_kwargs: dict[str, Any] | None = None) -> None:
        if mode not in COMPILE_MODES or mode == "none":
            raise UsageError(f"compile mode must be 'blocks' or 'model', got {mode!r}")
        kwargs = {"dynamic": False, **(compile_kwargs or {})}
        _raise_recompile_limit(64)
        targets: list[nn.Module] = []
        for m in modules:
            targets.extend(compile_regions(m) if mode == "blocks" else [m])
        self.mode = mode
        # Bound to each module's class forward: shared code, so blocks of one pattern share one compiled graph.
        self._fns = [(m, torch.compile(m.forward, **kwargs)) for m in targets]
        self._active = False

    def __len__(self) -> int:
        return len(self._fns)

    def __enter__(self) -> CompiledRegions:
        if not self._active:
            for m, fn in self._fns:
                m.forward = fn  # an instance attribute shadows the class's forward
            self._active = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._active:
            for m, _ in self._fns:
                m.__dict__.pop("forward", None)
            self._active = False


def _raise_recompile_limit(n: int) -> None:
    """Regions of several models (or several shapes) share code objects: allow that many compiled variants."""
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name) and getattr(cfg, name) < n:
            setattr(cfg, name, n)


def _pin(t: torch.Tensor) -> torch.Tensor:
    return t.pin_memory()


def pin_batch(batch: Any, pin: Callable[[torch.Tensor], torch.Tensor] = _pin) -> Any:
    """``batch`` with every CPU tensor, and every numeric numpy array (as a tensor), in page-locked memory, so its
    copy to the GPU with ``non_blocking=True`` runs asynchronously. Dicts, lists and tuples are walked; anything
    else is returned as it is. ``pin``: what pins one CPU tensor."""
    if isinstance(batch, torch.Tensor):
        return pin(batch) if batch.device.type == "cpu" and not batch.is_pinned() else batch
    if isinstance(batch, np.ndarray):
        return pin(torch.from_numpy(np.ascontiguousarray(batch))) if batch.dtype.kind in "biuf" else batch
    if isinstance(batch, dict):
        return {k: pin_batch(v, pin) for k, v in batch.items()}
    if isinstance(batch, list):
        return [pin_batch(v, pin) for v in batch]
    if isinstance(batch, tuple):
        return tuple(pin_batch(v, pin) for v in batch)
    return batch


@contextlib.contextmanager
def maybe(regions: CompiledRegions | None) -> Iterator[None]:
    """``with regions:`` when there are compiled regions, else nothing."""
    if regions is None:
        yield
    else:
        with regions:
            yield
