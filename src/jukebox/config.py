"""Frozen configuration dataclasses and named presets.

Every component takes an explicit config; configs serialise to JSON next to the weights and load back
strictly (an unknown or missing key is an error, never silently ignored).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from .errors import JukeboxError

C = TypeVar("C", bound="ConfigBase")


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    return value


def _from_plain(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _from_plain(non_none[0], value, where)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp.from_dict(value, where)
    expected = {tuple: list, list: list, dict: dict}.get(origin) or (tp if tp in (int, float, bool, str) else None)
    if expected is not None:  # a hand-edited or damaged file: a clear error now, not a TypeError deep inside
        ok = isinstance(value, (list, tuple) if expected is list else (int, float) if expected is float else expected)
        if ok and expected in (int, float) and isinstance(value, bool):
            ok = False
        if not ok:
            raise JukeboxError(f"{where}: expected {expected.__name__}, got {type(value).__name__} {value!r:.40}")
        if expected in (int, float) and not math.isfinite(value):
            raise JukeboxError(f"{where}: expected a finite number, got {value!r}")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_plain(args[0], v, where) for v in value)
        return tuple(_from_plain(a, v, where) for a, v in zip(args, value))
    if origin is list:
        return [_from_plain(args[0], v, where) for v in value]
    if origin is dict:
        return {k: _from_plain(args[1], v, where) for k, v in value.items()}
    if tp is float and isinstance(value, int):
        return float(value)
    return value


class ConfigBase:
    """Mixin for frozen config dataclasses: ``to_dict``/``from_dict``, JSON files, ``replace``."""

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], where: str = "config") -> C:
        if not isinstance(data, dict):
            raise JukeboxError(f"{where}: expected a JSON object for {cls.__name__}, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise JukeboxError(f"{where}: unknown {cls.__name__} keys {unknown}")
        kwargs = {k: _from_plain(hints[k], v, f"{where}.{k}") for k, v in data.items()}
        try:
            return cls(**kwargs)  # type: ignore[call-arg]
        except TypeError as e:
            raise JukeboxError(f"{where}: invalid {cls.__name__}: {e}") from None

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def save_json(self, path: str | Path) -> None:
        from .checkpoint.atomic import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load_json(cls: type[C], path: str | Path) -> C:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise JukeboxError(f"{path}: config file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise JukeboxError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(data, str(path))


@dataclass(frozen=True)
class VQVAEConfig(ConfigBase):
    """Hierarchical VQ-VAE (Jukebox). Hop length of level l is prod(stride ** down for the first l+1 levels)."""

    sample_rate: int = 44100
    levels: int = 3
    downs_t: tuple[int, ...] = (3, 2, 2)
    strides_t: tuple[int, ...] = (2, 2, 2)
    emb_width: int = 64
    l_bins: int = 2048
    mu: float = 0.99
    # Dead-code restart: a code whose EMA usage count falls below this is replaced by a random encoder output.
    revival_threshold: float = 1.0
    commit: float = 0.02
    spectral: float = 0.0
    multispectral: float = 1.0
    multipliers: tuple[int, ...] = (2, 1, 1)
    loss_fn: str = "lmix"  # one of l1, l2, linf, lmix
    lmix_l1: float = 0.0
    lmix_l2: float = 1.0
    lmix_linf: float = 0.02
    linf_k: int = 2048
    width: int = 32
    depth: int = 4
    m_conv: float = 1.0
    dilation_growth_rate: int = 3
    dilation_cycle: int | None = None
    reverse_decoder_dilation: bool = True
    zero_out: bool = False
    res_scale: bool = False
    # STFT settings for the spectral losses: single-resolution (spectral loss and the spectral-convergence metric;
    # Jukebox fixes these at 2048/256/1536 whatever its hps say) and the multi-resolution set.
    n_fft: int = 2048
    hop_length: int = 256
    window_size: int = 1536
    # True: the single-resolution spectral loss is ||S_x - S_y|| / bandwidth_spec; False: spectral convergence.
    use_nonrelative_specloss: bool = True
    multispec_n_fft: tuple[int, ...] = (2048, 1024, 512)
    multispec_hop_length: tuple[int, ...] = (240, 120, 50)
    multispec_window_size: tuple[int, ...] = (1200, 600, 240)
    # Data statistics that normalise the losses (training measures them on the corpus; see Jukebox's
    # calculate_bandwidth). They do not affect encoding or decoding.
    bandwidth_l1: float = 1.0
    bandwidth_l2: float = 1.0
    bandwidth_spec: float = 1.0

    @property
    def hop_lengths(self) -> tuple[int, ...]:
        """Raw samples per code at each level, e.g. (8, 32, 128)."""
        hops, acc = [], 1
        for down, stride in zip(self.downs_t, self.strides_t):
            acc *= stride**down
            hops.append(acc)
        return tuple(hops)


VQVAE_PRESETS: dict[str, VQVAEConfig] = {
    "openai": VQVAEConfig(),
    # The embedded default model's codec: the released architecture at 22.05 kHz (hops 8/32/128).
    "default22k": VQVAEConfig(sample_rate=22050),
    "tiny": VQVAEConfig(emb_width=16, l_bins=64, width=8, depth=2),
}


def vqvae_preset(name: str) -> VQVAEConfig:
    """Look up a named VQ-VAE preset (``openai`` = the released 44.1 kHz model, ``tiny`` for tests)."""
    try:
        return VQVAE_PRESETS[name]
    except KeyError:
        raise JukeboxError(f"unknown VQ-VAE preset {name!r}; choose one of {sorted(VQVAE_PRESETS)}") from None
