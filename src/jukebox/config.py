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
from .fileio import read_json

C = TypeVar("C", bound="ConfigBase")

#: Largest config file read (a real one is a few kB).
MAX_CONFIG_BYTES = 2**20

#: Upper bounds of the size fields of every config (by field name; each element of a tuple is checked). Each is
#: far above any released or sensible model (e.g. width 4800 and depth 79 for the 5b_lyrics top prior), and low
#: enough that one edited number cannot ask for terabytes or build millions of layers. Checked when a config is
#: built (so also for configs made from an original checkpoint's ``hps``) and when one is loaded from JSON.
SIZE_LIMITS: dict[str, float] = {
    # audio and codec
    "sample_rate": 768_000, "levels": 8, "downs_t": 16, "strides_t": 16, "multipliers": 64, "emb_width": 8192,
    "l_bins": 65_536, "linf_k": 2**24, "dilation_growth_rate": 64, "dilation_cycle": 1024,
    "n_fft": 2**16, "hop_length": 2**16, "window_size": 2**16,
    "multispec_n_fft": 2**16, "multispec_hop_length": 2**16, "multispec_window_size": 2**16,
    # transformers and conditioners
    "width": 16_384, "depth": 512, "heads": 1024, "attn_order": 64, "blocks": 2**16, "n_ctx": 2**18,
    "m_attn": 64, "m_mlp": 64, "m_conv": 64, "level": 7, "alignment_layer": 4096, "alignment_head": 1024,
    # labels and lyrics
    "genre_bins": 2**20, "artist_bins": 2**20, "max_bow_genre_size": 64, "t_bins": 2**16, "version": 16,
    "tempo_bins": 4096, "phase_bins": 4096, "n_tokens": 2**16, "n_vocab": 4096,
    # discriminator
    "stft_n_ffts": 2**16, "stft_channels": 16_384, "periods": 2**16, "mpd_channels": 16_384,
    "mpd_max_channels": 16_384, "mel_n_ffts": 2**16, "mel_n_mels": 4096,
}


def check_limits(config: Any, where: str | None = None) -> None:
    """Refuse a config whose size fields exceed :data:`SIZE_LIMITS` (nested configs are checked when built)."""
    for f in fields(config):
        _check_limit(f.name, getattr(config, f.name), where or type(config).__name__)


def _check_limit(name: str, value: Any, where: str) -> None:
    limit = SIZE_LIMITS.get(name)
    if limit is None:
        return
    for v in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > limit:
            raise JukeboxError(f"{where}.{name}: {v!r:.30} is above the limit {limit:,} for this size; the config is "
                               "damaged or was edited by hand")


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
    """Mixin for frozen config dataclasses: ``to_dict``/``from_dict``, JSON files, ``replace``.

    Every config's size fields are checked against :data:`SIZE_LIMITS` when it is built, before its own
    ``__post_init__`` (if it has one) runs.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is not None and not getattr(own, "_checks_limits", False):
            def __post_init__(self: Any) -> None:
                check_limits(self)
                own(self)

            __post_init__._checks_limits = True  # type: ignore[attr-defined]
            __post_init__.__doc__ = own.__doc__
            cls.__post_init__ = __post_init__  # type: ignore[attr-defined]

    def __post_init__(self) -> None:
        check_limits(self)

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
        for k, v in kwargs.items():  # name the file and field before the dataclass is built
            _check_limit(k, v, where)
        try:
            return cls(**kwargs)  # type: ignore[call-arg]
        except TypeError as e:
            raise JukeboxError(f"{where}: invalid {cls.__name__}: {e}") from None

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def save_json(self, path: str | Path) -> None:
        from .atomic import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load_json(cls: type[C], path: str | Path) -> C:
        """Load a config file: a regular file of at most :data:`MAX_CONFIG_BYTES`, strictly checked."""
        path = Path(path)
        if not path.exists() and not path.is_symlink():
            raise JukeboxError(f"{path}: config file not found")
        return cls.from_dict(read_json(path, "config file", MAX_CONFIG_BYTES), str(path))


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
