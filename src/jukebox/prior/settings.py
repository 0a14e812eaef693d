"""How one level is sampled: :class:`LevelSettings`, validated once when it is made.

The sampler (:mod:`jukebox.prior.sampler`), :meth:`jukebox.prior.Prior.sample` and the level pipeline
(:mod:`jukebox.sampling.pipeline`) take this one object instead of loose arguments; nothing checks a setting again
while tokens are drawn. :class:`jukebox.sampling.settings.SamplingSettings` holds one per level, built from a
model's defaults and a caller's overrides.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

__all__ = ["DECODE_MODES", "DRAWS", "WEIGHT_FORMATS", "LevelSettings", "SettingsError", "LEVEL_FIELDS",
           "TEMPERATURE_RANGE", "temperature_ok"]

#: Categorical draws: ``multinomial`` (``torch.multinomial``, one exponential per vocabulary entry; reproduces the
#: original Jukebox's seeded samples) or ``cdf`` (inverse CDF, one uniform per row; much cheaper in large batches).
DRAWS = ("multinomial", "cdf")
#: Decode steps of :func:`jukebox.prior.sampler.sample_autoregressive` (see its module docstring).
DECODE_MODES = ("eager", "module", "int8", "static", "graph", "compile", "triton")
#: Weights of the decode (:mod:`jukebox.nn.quant`): ``native`` (the model's dtype), ``int8`` or ``fp8`` (e4m3),
#: both weight-only with one scale per output channel.
WEIGHT_FORMATS = ("native", "int8", "fp8")


#: Temperatures a draw takes besides 0 (greedy): below the low end ``logits / temperature`` overflows float32 to inf
#: (1e-300 made every probability NaN), above the high end every token is equally likely to float precision.
TEMPERATURE_RANGE = (1e-3, 100.0)


def temperature_ok(value: Any) -> bool:
    """Whether ``value`` is a temperature a level samples with: 0 (greedy) or a finite number in
    :data:`TEMPERATURE_RANGE` (the one check for the settings object and a model's ``model.json`` defaults)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return False
    return value == 0 or TEMPERATURE_RANGE[0] <= value <= TEMPERATURE_RANGE[1]


class SettingsError(UsageError, ValueError):
    """A sampling setting out of its range: a usage error (the CLI exits with 2), and a ``ValueError``."""


@dataclass(frozen=True)
class LevelSettings:
    """Sampling settings of one level; every field is checked when the object is made (:class:`SettingsError`)."""

    #: Divides the logits before the draw; 0 is greedy (argmax), as is ``top_k=1``.
    temperature: float = 1.0
    #: Keep the k most likely tokens (0: off).
    top_k: int = 0
    #: Nucleus filtering: keep the most likely tokens whose mass reaches p (0 or 1: off).
    top_p: float = 0.0
    #: Window hop as a fraction of the prior's context (the pipeline's windows).
    hop_fraction: float = 0.5
    #: Tokens per chunk when a known prefix primes the cache (None: the whole prefix at once).
    chunk_size: int | None = None
    #: Most samples per sampler call (larger batches are split).
    max_batch_size: int = 16
    #: Decode step: ``eager``, ``module``, ``int8`` (CPU), ``static``, ``graph``, ``compile``, ``triton`` (CUDA); see
    #: :mod:`jukebox.prior.sampler`.
    decode: str = "eager"
    #: Categorical draw: ``multinomial`` (reproduces the original's seeded samples) or ``cdf`` (cheaper).
    draw: str = "multinomial"
    #: Parallel upsampling only: at most this many windows x samples per sampler call (None: all at once). Bounds
    #: the memory of the KV caches (each window holds one) at the cost of more sequential passes.
    max_windows: int | None = None
    #: Classifier-free guidance scale (1: off, 0: unconditional); see :meth:`jukebox.prior.Prior.sample`. Needs a
    #: prior trained with label dropout (``jukebox train prior --label-dropout``).
    guidance: float = 1.0
    #: Guidance of the artist and genre alone, for a prior with tempo (None: ``guidance`` guides labels and tempo
    #: together). Set apart from ``guidance``, the labels and the tempo get their own scales: logits
    #: ``u + label_guidance * (l - u) + guidance * (c - l)``, where ``u`` has no labels and no tempo, ``l`` the
    #: labels without the tempo and ``c`` both (one more row per sample). Larger follows the genre more closely;
    #: ``guidance`` keeps the pulse.
    label_guidance: float | None = None
    #: Weights of the transformer's block linears while sampling: ``native`` (the model's own dtype), ``int8`` or
    #: ``fp8`` (weight-only 8-bit, one scale per output channel, dequantised inside the product; half the bytes per
    #: step of bf16; the fused ``decode="triton"`` step widens them in registers). ``decode="int8"`` (CPU) has these
    #: int8 weights already; with ``fp8`` it runs the float step over the dequantised fp8 weights.
    weights: str = "native"

    def __post_init__(self) -> None:
        fix = object.__setattr__
        if not temperature_ok(self.temperature):
            lo, hi = TEMPERATURE_RANGE
            raise SettingsError(f"temperature must be 0 (greedy) or between {lo:g} and {hi:g}, got "
                                f"{self.temperature!r}")
        fix(self, "temperature", float(self.temperature))
        fix(self, "top_k", _integer("top_k", self.top_k, 0))
        fix(self, "top_p", _number("top_p", self.top_p, 0.0, 1.0))
        fix(self, "hop_fraction", _number("hop_fraction", self.hop_fraction, 0.0, 1.0, low_open=True))
        if self.chunk_size is not None:
            fix(self, "chunk_size", _integer("chunk_size", self.chunk_size, 1))
        fix(self, "max_batch_size", _integer("max_batch_size", self.max_batch_size, 1))
        if self.max_windows is not None:
            fix(self, "max_windows", _integer("max_windows", self.max_windows, 1, "or None"))
        fix(self, "guidance", _number("guidance", self.guidance, 0.0, 20.0))
        if self.label_guidance is not None:
            fix(self, "label_guidance", _number("label_guidance", self.label_guidance, 0.0, 20.0))
        if self.decode not in DECODE_MODES:
            raise SettingsError(f"decode must be one of {', '.join(DECODE_MODES)}, got {self.decode!r}")
        if self.weights not in WEIGHT_FORMATS:
            raise SettingsError(f"weights must be one of {', '.join(WEIGHT_FORMATS)}, got {self.weights!r}")
        if self.draw not in DRAWS:
            raise SettingsError(f"draw must be one of {', '.join(DRAWS)}, got {self.draw!r}")

    @property
    def split_guidance(self) -> bool:
        """The labels have a guidance scale of their own (``label_guidance`` set and unlike ``guidance``)."""
        return self.label_guidance is not None and self.label_guidance != self.guidance

    @property
    def guided(self) -> bool:
        """Sampling runs classifier-free guidance (an unconditional row, and with split guidance a label row)."""
        return self.guidance != 1.0 or self.split_guidance

    @property
    def greedy(self) -> bool:
        """Every token is the most likely one (``temperature == 0`` or ``top_k == 1``)."""
        return self.temperature == 0 or self.top_k == 1

    def replace(self, **changes: Any) -> LevelSettings:
        """A copy with ``changes`` (checked like a new object)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return dataclasses.asdict(self)

    @classmethod
    def of(cls, settings: LevelSettings | Mapping[str, Any] | None = None, **overrides: Any) -> LevelSettings:
        """``settings`` (an object, a dict of fields, or None: the defaults) with ``overrides`` on top; overrides of
        None keep the value. Unknown names are a ``TypeError``, as for a function's keyword arguments."""
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(given) - set(LEVEL_FIELDS)
        if isinstance(settings, Mapping):
            unknown |= set(settings) - set(LEVEL_FIELDS)
        if unknown:
            raise TypeError(f"unknown sampling settings {sorted(unknown)}; use {', '.join(LEVEL_FIELDS)}")
        if settings is None:
            return cls(**given)
        if isinstance(settings, Mapping):
            return cls(**{**settings, **given})
        return dataclasses.replace(settings, **given) if given else settings


#: The fields of :class:`LevelSettings`.
LEVEL_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(LevelSettings))


def _number(name: str, value: Any, lo: float, hi: float, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value > lo if low_open else value >= lo) and value <= hi:
        return float(value)
    span = f"({lo:g}, {hi:g}]" if low_open else (f">= {lo:g}" if hi == math.inf else f"in [{lo:g}, {hi:g}]")
    raise SettingsError(f"{name} must be {'in ' if low_open else ''}{span}, got {value!r}")


def _integer(name: str, value: Any, lo: int, extra: str = "") -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= lo:
        return int(value)
    raise SettingsError(f"{name} must be an integer >= {lo}{' ' + extra if extra else ''}, got {value!r}")
