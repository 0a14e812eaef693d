"""Sampling settings: one frozen :class:`SamplingSettings` per call, holding a :class:`LevelSettings` per level.

They are resolved once, where sampling starts (:meth:`jukebox.api.Jukebox.sampling_settings`): the model's own
defaults (the ``sampling`` entry of its ``model.json``, read by :func:`model_defaults`), then the caller's
overrides (:meth:`SamplingSettings.replace`), each value checked when the objects are made. The pipeline, the
prior and its sampler take the objects as they are; the command line and the web page only build overrides, so
they accept and refuse exactly what the Python API does.

Overrides by name (any may be None: keep the value):

- per level (:data:`LEVEL_FIELDS`): ``temperature``, ``top_k``, ``top_p``, ``hop_fraction``, ``chunk_size``,
  ``max_batch_size``, ``decode``, ``draw``, ``max_windows``, ``guidance``, ``label_guidance``, ``weights``. A number
  (or a string) sets every level, a list sets them by level index (``[T0, T1, T2]``), a mapping ``{level: value}``
  the levels it names (JSON's string keys too). A number for ``guidance`` or ``label_guidance`` sets the top level
  only (guiding upsamplers is asked for by a mapping).
- for the call: ``upsample_mode`` (``sequential``: the original's window order, or ``parallel``) and ``seed``
  (an integer between -2**53 and 2**53, or None: random).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..prior.settings import DECODE_MODES, DRAWS, LEVEL_FIELDS, LevelSettings, SettingsError, temperature_ok

__all__ = ["SamplingSettings", "LevelSettings", "SettingsError", "LEVEL_FIELDS", "CALL_FIELDS", "OVERRIDES",
           "DEFAULT_HOP_FRACTIONS", "UPSAMPLE_MODES", "model_defaults"]

#: Jukebox's default hop fractions for levels 0, 1, 2 (0.5 for any level beyond).
DEFAULT_HOP_FRACTIONS = (0.5, 0.5, 0.125)
#: Window orders of upsampler levels (:func:`jukebox.sampling.pipeline.sample_levels`).
UPSAMPLE_MODES = ("sequential", "parallel")
#: Settings of the whole call (the others are per level).
CALL_FIELDS = ("upsample_mode", "seed")
#: Every name :meth:`SamplingSettings.replace` takes.
OVERRIDES = (*LEVEL_FIELDS, *CALL_FIELDS)
#: Per-level settings a single number sets for the top level only.
TOP_ONLY = ("guidance", "label_guidance")
#: ``seed`` lies strictly between -SEED_LIMIT and SEED_LIMIT (integers a float holds exactly, as JSON passes them).
SEED_LIMIT = 2**53


@dataclass(frozen=True)
class SamplingSettings(Mapping[int, LevelSettings]):
    """How one call samples: a :class:`LevelSettings` per level (``settings[level]``), the window order of the
    upsamplers and the seed. Checked when made; immutable. Build one with
    :meth:`jukebox.api.Jukebox.sampling_settings` (the model's defaults plus overrides) and pass it as
    ``settings=`` to ``generate`` / ``continue_`` / ``upsample``."""

    per_level: Mapping[int, LevelSettings] = field(default_factory=dict)
    upsample_mode: str = "sequential"
    seed: int | None = None

    def __post_init__(self) -> None:
        levels: dict[int, LevelSettings] = {}
        for lvl, s in dict(self.per_level).items():
            if not isinstance(lvl, int) or isinstance(lvl, bool) or lvl < 0:
                raise SettingsError(f"levels are integers >= 0, got {lvl!r}")
            levels[lvl] = s if isinstance(s, LevelSettings) else LevelSettings.of(s)
        object.__setattr__(self, "per_level", dict(sorted(levels.items())))
        if self.upsample_mode not in UPSAMPLE_MODES:
            raise SettingsError(f"upsample_mode must be one of {', '.join(UPSAMPLE_MODES)}, got "
                                f"{self.upsample_mode!r}")
        if self.seed is not None:
            seed = self.seed
            if isinstance(seed, float) and seed.is_integer():
                seed = int(seed)
            if not isinstance(seed, int) or isinstance(seed, bool) or not -SEED_LIMIT < seed < SEED_LIMIT:
                raise SettingsError(f"seed must be an integer between -2**53 and 2**53, got {self.seed!r}")
            object.__setattr__(self, "seed", seed)

    # ----------------------------------------------------------------- a mapping level -> LevelSettings
    def __getitem__(self, level: int) -> LevelSettings:
        return self.per_level[level]

    def __iter__(self) -> Iterator[int]:
        return iter(self.per_level)

    def __len__(self) -> int:
        return len(self.per_level)

    @property
    def top_level(self) -> int:
        """The highest level these settings cover."""
        if not self.per_level:
            raise SettingsError("these sampling settings cover no level")
        return max(self.per_level)

    # ----------------------------------------------------------------- making
    @classmethod
    def for_levels(cls, levels: Sequence[int], **overrides: Any) -> SamplingSettings:
        """Jukebox's defaults for ``levels`` (:class:`LevelSettings`' defaults, the original's hop fractions) with
        ``overrides`` on top."""
        base = cls({lvl: LevelSettings(hop_fraction=_default_hop(lvl)) for lvl in levels})
        return base.replace(**overrides)

    def replace(self, **overrides: Any) -> SamplingSettings:
        """A copy with ``overrides`` (see the module docstring); values of None keep the current one. Unknown names
        are a ``TypeError``, as for a function's keyword arguments; bad values a :class:`SettingsError`."""
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(given) - set(OVERRIDES)
        if unknown:
            raise TypeError(f"unexpected sampling settings {sorted(unknown)}; use {', '.join(OVERRIDES)}")
        if not given:
            return self
        levels = sorted(self.per_level)
        changes: dict[int, dict[str, Any]] = {lvl: {} for lvl in levels}
        for name, value in given.items():
            if name in CALL_FIELDS:
                continue
            top_only = name in TOP_ONLY and not isinstance(value, (Mapping, list, tuple))
            for lvl, v in _per_level(name, value, levels, self.top_level if top_only else None).items():
                changes[lvl][name] = v
        per_level = {}
        for lvl in levels:
            try:
                per_level[lvl] = self.per_level[lvl].replace(**changes[lvl]) if changes[lvl] else self.per_level[lvl]
            except SettingsError as e:
                raise SettingsError(f"{e} for level {lvl}") from None
        return SamplingSettings(per_level, given.get("upsample_mode", self.upsample_mode),
                                given["seed"] if "seed" in given else self.seed)

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"upsample_mode", "seed", "per_level": {level: {field: value}}}``."""
        return {"upsample_mode": self.upsample_mode, "seed": self.seed,
                "per_level": {lvl: s.to_dict() for lvl, s in self.per_level.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SamplingSettings:
        """Rebuild (and check) what :meth:`to_dict` wrote (JSON's string level keys included)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("per_level"), Mapping):
            raise SettingsError("sampling settings must be an object with per_level")
        unknown = set(data) - {"upsample_mode", "seed", "per_level"}
        if unknown:
            raise SettingsError(f"unknown sampling settings {sorted(unknown)}")
        try:
            levels = {int(k): LevelSettings.of(v) for k, v in data["per_level"].items()}
        except (TypeError, ValueError) as e:
            raise SettingsError(f"bad per-level sampling settings ({e})") from None
        return cls(levels, data.get("upsample_mode", "sequential"), data.get("seed"))


def _default_hop(level: int) -> float:
    return DEFAULT_HOP_FRACTIONS[level] if level < len(DEFAULT_HOP_FRACTIONS) else 0.5


def _per_level(name: str, value: Any, levels: Sequence[int], only: int | None = None) -> dict[int, Any]:
    """{level: value} of one override (module docstring); ``only``: a single value sets only this level."""
    if isinstance(value, Mapping):
        try:  # JSON (batch files, saved settings) gives the levels as strings
            by_level = {int(k): v for k, v in value.items()}
        except (TypeError, ValueError):
            raise SettingsError(f"{name}: levels must be integers, got {sorted(map(str, value))}") from None
        return {lvl: by_level[lvl] for lvl in levels if lvl in by_level}
    if isinstance(value, (list, tuple)):
        if levels and len(value) <= max(levels):
            raise SettingsError(f"{name}: {list(value)} gives {len(value)} value(s) by level, but the levels go up to "
                                f"{max(levels)}; give one value, or one per level")
        return {lvl: value[lvl] for lvl in levels}
    return {only: value} if only is not None else {lvl: value for lvl in levels}


def _is_number(value: Any) -> bool:
    """An int or float from JSON or a caller, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _model_value(value: Any, ok: Any) -> float | dict[int, float]:
    """A ``model.json`` sampling value (one number, or a list indexed by level) whose numbers all pass ``ok``,
    as a number or a {level: value} dict; else 1.0."""
    if _is_number(value) and ok(value):
        return float(value)
    if isinstance(value, list) and value and all(_is_number(v) and ok(v) for v in value):
        return {lvl: float(v) for lvl, v in enumerate(value)}
    return 1.0


def model_defaults(given: Any, max_seconds: float) -> dict[str, Any]:
    """A model's own sampling defaults from the ``sampling`` entry of its ``model.json`` (values it lacks or gets
    wrong fall back to the original's): ``upsample_mode``, ``decode``, ``draw``, ``chunk_size``, ``guidance`` (a
    number: the top level's; or a {level: w} dict), ``label_guidance`` (the top level's scale of the labels
    alone for a prior with tempo; None: ``guidance`` guides them), ``temperature`` (a number or a {level: T} dict),
    ``hop_fraction`` (a number or a {level: fraction} dict, each in (0, 1]; None: the original's per level) and
    ``total_seconds`` (the song length the timing labels describe by default; None without a positive number up
    to ``max_seconds``) and ``levels`` (the levels sampled when a call names none, e.g. ``[2, 1]`` to render from
    level 1; None without a list of levels: all of them)."""
    given = given if isinstance(given, dict) else {}
    out: dict[str, Any] = {"upsample_mode": "sequential", "decode": "eager", "draw": "multinomial",
                           "chunk_size": 32}
    for key, allowed in (("upsample_mode", UPSAMPLE_MODES), ("decode", DECODE_MODES), ("draw", DRAWS)):
        if given.get(key) in allowed:
            out[key] = given[key]
    size = given.get("chunk_size")
    if isinstance(size, int) and not isinstance(size, bool) and size >= 1:
        out["chunk_size"] = size
    out["guidance"] = _model_value(given.get("guidance"), lambda g: 0 <= g <= 20)  # a number: top level only
    label = given.get("label_guidance")  # a number (top level only) or None: guidance guides the labels too
    out["label_guidance"] = float(label) if _is_number(label) and 0 <= label <= 20 else None
    out["temperature"] = _model_value(given.get("temperature"), lambda t: t > 0 and temperature_ok(t))
    hops = given.get("hop_fraction")
    hop_ok = lambda h: 0 < h <= 1  # noqa: E731
    valid = (_is_number(hops) and hop_ok(hops)) or (isinstance(hops, list) and hops and all(
        _is_number(h) and hop_ok(h) for h in hops))
    out["hop_fraction"] = _model_value(hops, hop_ok) if valid else None
    total = given.get("total_seconds")
    out["total_seconds"] = float(total) if _is_number(total) and 0 < total <= max_seconds else None
    levels = given.get("levels")
    ok = isinstance(levels, list) and levels and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                     for v in levels)
    out["levels"] = sorted(set(levels), reverse=True) if ok else None
    return out
