"""Our weight format: a folder with ``config.json`` and safetensors weights (sharded for large models).

Layout of one component folder::

    config.json                         the component's config dataclass, as JSON
    model.safetensors                   all weights, or, for large models,
    model-00001-of-00003.safetensors    shards plus
    model.safetensors.index.json        {"weight_map": {name: shard file}}

Every file is written to a temporary name and renamed. Loading is strict: a missing, unexpected or mis-shaped
tensor is an error naming the tensor.

Weights may be stored in int8 (:func:`quantize_for_storage`, ``recipes/export_model.py --weights int8``): a matrix
``NAME`` [N, K] is then the int8 tensor ``NAME`` plus its row scales ``NAME.qscale`` [N] (float32, symmetric, one
per row: ``w[n] = q[n] * scale[n]``; a convolution weight [N, C, k] the same, one scale per output channel), and
every loader returns the dequantised float32 tensor under ``NAME``, so models, shapes and names are those of the
float weights. Half the bytes of fp16 on disk.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import JukeboxError
from ..fileio import check_regular, read_json
from ..nn.quant import quantize_weight
from .atomic import atomic_path, atomic_write_text

WEIGHTS_NAME = "model.safetensors"
#: Suffix of the row scales of a matrix stored in int8 (``NAME`` int8 [N, K] + ``NAME.qscale`` float32 [N]).
QSCALE_SUFFIX = ".qscale"
INDEX_NAME = "model.safetensors.index.json"
DEFAULT_SHARD_BYTES = 2 * 1024**3


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def plan_shards(shapes: Mapping[str, tuple[int, ...] | torch.Size], itemsize: Mapping[str, int], max_bytes: int
                ) -> list[list[str]]:
    """Group tensor names (in order) into shards of at most ``max_bytes`` (a single larger tensor gets its own)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        n = itemsize[name]
        for d in shape:
            n *= int(d)
        if shards[-1] and size + n > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    return [s for s in shards if s]


def save_weights(folder: str | Path, state_dict: Mapping[str, torch.Tensor],
                 max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> None:
    """Write ``state_dict`` as safetensors into ``folder`` (sharded above ``max_shard_bytes``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = unshare_tensors({k: v.detach().contiguous().cpu() for k, v in state_dict.items()})
    groups = plan_shards({k: v.shape for k, v in tensors.items()},
                         {k: v.element_size() for k, v in tensors.items()}, max_shard_bytes)
    if len(groups) <= 1:
        _save_file(tensors, folder / WEIGHTS_NAME)
        (folder / INDEX_NAME).unlink(missing_ok=True)
        return
    write_shards(folder, ((names, {k: tensors[k] for k in names}) for names in groups), len(groups))


def unshare_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copy tensors that share storage with an earlier one (tied weights, views), as safetensors requires."""
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else id(v)
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def write_shards(folder: Path, shards: Iterable[tuple[list[str], dict[str, torch.Tensor]]], n_shards: int) -> None:
    """Write shards one at a time (each a dict of tensors) and the index that maps names to shard files.

    Used by streaming converters, which materialise one shard's tensors at a time.
    """
    weight_map: dict[str, str] = {}
    it = iter(shards)
    for i in range(n_shards):
        names, tensors = next(it)
        fname = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        _save_file(unshare_tensors({k: v.detach().contiguous().cpu() for k, v in tensors.items()}), folder / fname)
        weight_map.update({k: fname for k in names})
        del tensors  # drop this shard before the next one is materialised
    atomic_write_text(folder / INDEX_NAME, json.dumps({"weight_map": weight_map}, indent=1) + "\n")
    (folder / WEIGHTS_NAME).unlink(missing_ok=True)


def _save_file(tensors: dict[str, torch.Tensor], path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})


def weight_files(folder: str | Path) -> dict[str, Path]:
    """Map each tensor name to the safetensors file that holds it."""
    folder = Path(folder)
    index = folder / INDEX_NAME
    if index.exists() or index.is_symlink():
        data = read_json(index, "weight index")
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map or not all(
                isinstance(v, str) and v and "/" not in v and v not in (".", "..") for v in weight_map.values()):
            raise JukeboxError(f"{index}: corrupt weight index (weight_map must map each tensor name to a shard "
                               "file in this folder)")
        files = {k: folder / v for k, v in weight_map.items()}
        for path in set(files.values()):
            check_regular(path, "weights file")
        return files
    single = folder / WEIGHTS_NAME
    if not single.exists() and not single.is_symlink():
        raise JukeboxError(f"{folder}: no weights found (expected {WEIGHTS_NAME})")
    check_regular(single, "weights file")  # safetensors would block on a FIFO
    try:
        with safe_open(str(single), framework="pt") as f:
            return {k: single for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise JukeboxError(f"{single}: corrupt or truncated weights file ({e})") from None


def iter_weights(folder: str | Path, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) one at a time, memory-mapped from disk; floats cast to ``dtype`` when given. Matrices
    stored in int8 come dequantised (float32, or ``dtype``); their ``.qscale`` tensors are not yielded."""
    files = weight_files(folder)
    by_file: dict[Path, list[str]] = {}
    for name, path in files.items():
        if not name.endswith(QSCALE_SUFFIX):
            by_file.setdefault(path, []).append(name)
    for path, names in by_file.items():
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                for name in names:
                    t = f.get_tensor(name)
                    scale_name = name + QSCALE_SUFFIX
                    scale_file = files.get(scale_name)
                    if scale_file is not None:  # mostly in the same file (a shard may split the pair)
                        scale = f.get_tensor(scale_name) if scale_file == path else _read_tensor(scale_file,
                                                                                                 scale_name, device)
                        t = _dequantize(name, t, scale)
                    if dtype is not None and t.is_floating_point():
                        t = t.to(dtype)
                    yield name, t
        except (SafetensorError, OSError) as e:
            raise JukeboxError(f"{path}: corrupt or truncated weights file ({e})") from None


def _read_tensor(path: Path, name: str, device: str | torch.device) -> torch.Tensor:
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        return f.get_tensor(name)


def _dequantize(name: str, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """An int8 matrix [N, K] (or convolution weight [N, C, k...]) and its per-row scales [N] -> float32, same shape."""
    if q.dtype != torch.int8 or q.dim() < 2 or scale.shape != (q.shape[0],) or not scale.is_floating_point():
        raise JukeboxError(f"{name}: an int8 weight must be an int8 matrix [N, K] with float row scales [N] in "
                           f"{name + QSCALE_SUFFIX}; got {q.dtype} {tuple(q.shape)} and {tuple(scale.shape)}")
    return q.float() * scale.float().reshape(-1, *([1] * (q.dim() - 1)))


def quantize_for_storage(state_dict: Mapping[str, torch.Tensor], min_elements: int = 16384,
                         convolutions: bool = False) -> dict[str, torch.Tensor]:
    """``state_dict`` with every floating-point matrix (2-D, at least ``min_elements`` entries: linear weights,
    embeddings, position tables) as int8 plus ``NAME.qscale`` row scales (symmetric, per row, round half to even:
    the same integers as the int8 CPU decode's); with ``convolutions``, every convolution weight [out, in, k...] of
    that size the same way, per output channel; other tensors as they are. :func:`iter_weights` reads it back."""
    out: dict[str, torch.Tensor] = {}
    for name, t in state_dict.items():
        if t.is_floating_point() and (t.dim() == 2 or (convolutions and t.dim() > 2)) and t.numel() >= min_elements:
            q, out[name + QSCALE_SUFFIX] = quantize_weight(t.reshape(t.shape[0], -1), "int8")
            out[name] = q.reshape(t.shape)
        else:
            out[name] = t
    return out


def load_weights(folder: str | Path, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Load every tensor of a component folder."""
    return dict(iter_weights(folder, device, dtype))


def weight_shapes(folder: str | Path) -> dict[str, tuple[int, ...]]:
    """Shapes of every stored tensor, read from the file headers (no tensor data is loaded)."""
    shapes: dict[str, tuple[int, ...]] = {}
    by_file: dict[Path, list[str]] = {}
    for name, path in weight_files(folder).items():
        if not name.endswith(QSCALE_SUFFIX):  # an int8 matrix's scales travel with it
            by_file.setdefault(path, []).append(name)
    for path, names in by_file.items():
        try:
            with safe_open(str(path), framework="pt") as f:
                for name in names:
                    shapes[name] = tuple(f.get_slice(name).get_shape())
        except (SafetensorError, OSError) as e:
            raise JukeboxError(f"{path}: corrupt or truncated weights file ({e})") from None
    return shapes


def check_shapes(expected: Mapping[str, tuple[int, ...]], given: Mapping[str, tuple[int, ...]], where: str) -> None:
    """Raise a precise error unless ``given`` has exactly the names and shapes of ``expected``."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    misshaped = [f"{k} {tuple(given[k])} != {tuple(v)}" for k, v in expected.items()
                 if k in given and tuple(given[k]) != tuple(v)]
    if missing or unexpected or misshaped:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise JukeboxError(f"{where}: weights do not match the model ({'; '.join(parts)})")


def load_into(module: torch.nn.Module, folder: str | Path, where: str | None = None) -> None:
    """Strictly load a component folder's weights into ``module``, streaming one tensor at a time.

    Works for modules built on the meta device too (tensors are assigned, keeping their dtype cast to the
    module's), so only one copy of the weights is ever in memory.
    """
    where = where or str(folder)
    expected = module.state_dict()
    check_shapes({k: tuple(v.shape) for k, v in expected.items()}, weight_shapes(folder), where)
    on_meta = any(t.is_meta for t in expected.values())
    aliases: dict[int, list[str]] = {}  # tied parameters share one object; keep them tied
    for pname, param in module.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(param), []).append(pname)
    tied = {n: names for names in aliases.values() if len(names) > 1 for n in names}
    done: set[str] = set()
    for name, tensor in iter_weights(folder):
        target = expected[name]
        if on_meta:
            if name in done:
                continue
            names = tied.get(name, [name])
            _assign(module, names, tensor.to(target.dtype))
            done.update(names)
        else:
            with torch.no_grad():
                target.copy_(tensor)


def _assign(module: torch.nn.Module, names: list[str], tensor: torch.Tensor) -> None:
    """Replace a (meta) parameter or buffer by ``tensor``, under every name that shares it."""
    new: torch.Tensor | None = None
    for name in names:
        *path, leaf = name.split(".")
        owner = module
        for p in path:
            owner = getattr(owner, p)
        if leaf in owner._parameters:
            old = owner._parameters[leaf]
            if new is None:
                new = torch.nn.Parameter(tensor, requires_grad=old.requires_grad if old is not None else True)
            owner._parameters[leaf] = new
        elif leaf in owner._buffers:
            owner._buffers[leaf] = tensor
        else:
            raise JukeboxError(f"cannot place tensor {name}")
