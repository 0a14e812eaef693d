"""Loading foreign pickled checkpoints (OpenAI's ``*.pth.tar``) without executing code from them.

Only ``torch.load(weights_only=True)`` is used, with a narrow allow-list: tensors and containers (torch's own
list), the original `jukebox.hparams.Hyperparams` rebuilt as a plain dict, and numpy scalars and dtypes
(the original stored some numbers as numpy scalars). A file that asks for any other global is refused with a
clear error and nothing it asked for runs. There is no fallback to ``weights_only=False``.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import JukeboxError
from ..fileio import check_regular


def _numpy_globals() -> list[Any]:
    allowed: list[Any] = [np.dtype]
    try:  # numpy >= 2
        from numpy._core.multiarray import scalar  # type: ignore[attr-defined]

        allowed += [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[attr-defined,no-redef]

        allowed.append(scalar)
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType", "Float16DType"):
        cls = getattr(np.dtypes, name, None)
        if cls is not None:
            allowed.append(cls)
    return allowed


def allowed_globals() -> list[Any]:
    # The original Hyperparams is a dict subclass; it is rebuilt as a plain dict (torch's restricted unpickler
    # fills only plain dicts), then wrapped in our Hyperparams by the caller where attribute access helps.
    return [(dict, "jukebox.hparams.Hyperparams"), *_numpy_globals()]


def safe_torch_load(path: str | Path, mmap: bool = True) -> Any:
    """Load a pickled torch checkpoint with the restricted unpickler; memory-map it where the format allows."""
    path = Path(path)
    if not path.exists():
        raise JukeboxError(f"{path}: no such file")
    if check_regular(path, "checkpoint") == 0:  # a FIFO or a device is refused before torch opens it
        raise JukeboxError(f"{path}: file is empty")
    use_mmap = mmap and zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except pickle.UnpicklingError as e:
        if "GLOBAL " in str(e):
            detail = _what_it_asked(str(e))
            raise JukeboxError(f"{path}: refused to load: the file asks to call {detail}, which a checkpoint may "
                               "not do (nothing was executed)") from None
        raise JukeboxError(f"{path}: not a loadable checkpoint ({_unpickler_reason(str(e))})") from None
    except MemoryError:
        raise JukeboxError(f"{path}: corrupt checkpoint (it asks for more memory than there is)") from None
    except Exception as e:  # noqa: BLE001 - a damaged file makes torch's reader raise many types (struct.error,
        # IndexError, AssertionError, ...); nothing in it was executed (weights_only), so all mean "corrupt".
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise JukeboxError(f"{path}: corrupt or truncated checkpoint ({first[:200]})") from None


def to_plain(obj: Any) -> Any:
    """Turn numpy scalars and arrays inside nested containers into plain Python values."""
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _unpickler_reason(message: str) -> str:
    for line in message.splitlines():
        if "WeightsUnpickler error" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip()[:200] or "unsupported content"
    lines = [ln for ln in message.splitlines() if ln.strip() and "weights_only" not in ln]
    return lines[0][:200] if lines else "unsupported content"


def _what_it_asked(message: str) -> str:
    for line in message.splitlines():
        if "GLOBAL" in line:
            part = line.split("GLOBAL", 1)[1].strip().split(" ")[0]
            return part
    return "code outside the allow-list"
