"""What a prior's training does beyond the optimisation settings: one frozen :class:`TrainOptions`.

``jukebox train prior`` builds it from its flags, :func:`jukebox.train.train_prior` takes it (or the same names as
keywords), and every training checkpoint stores it, so ``--resume`` continues with the options the run started
with. A new option is a field here, where it acts, and its flag.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..config import ConfigBase
from ..data.code_cache import BALANCE_KEYS
from ..errors import UsageError

__all__ = ["TrainOptions", "OptionError", "OPTION_NAMES", "BALANCE_KEYS"]


class OptionError(UsageError, ValueError):
    """A training option out of its range: a usage error (the CLI exits with 2), and a ``ValueError``."""


@dataclass(frozen=True)
class TrainOptions(ConfigBase):
    """Options of training one prior (see :func:`jukebox.train.train_prior`); checked when made."""

    #: Prior preset of a new prior (None: the default for the VQ-VAE and level).
    preset: str | None = None
    #: Context length of a new prior (None: the preset's).
    n_ctx: int | None = None
    #: Train LoRA adapters of this rank only (0: the whole prior).
    lora_rank: int = 0
    #: LoRA alpha (None: the rank).
    lora_alpha: float | None = None
    #: Fold the adapters into the prior's weights at the end.
    merge_lora: bool = False
    #: Recompute transformer blocks in backward (None: the preset's choice).
    checkpoint_activations: bool | None = None
    #: Probability that an item's artist and genre become ``unknown`` (classifier-free guidance).
    label_dropout: float = 0.0
    #: Give the prior's labels to every position (an existing prior is upgraded in place).
    labels_every_position: bool = False
    #: Probability that the decoder reads a random code in place of a real one.
    input_noise: float = 0.0
    #: Probability that the decoder reads the prior's own guess in place of a real code.
    scheduled_sampling: float = 0.0
    #: Condition the top-level prior on tempo and beat phase.
    tempo: bool = False
    #: With tempo labels: tracks whose stored pulse clarity (``tempo.json``) is below this train with the "no
    #: steady pulse" label (no beats, bpm 0), so that a tempo label means a clear pulse (0: every track with beats).
    min_pulse: float = 0.0
    #: Share of tracks held out for validation when the data has no split yet.
    val_fraction: float = 0.1
    #: Draw training windows so that each ``genre`` (or ``artist``) gets a share of the batches in proportion to
    #: its amount of music to the power ``balance_power`` (0: equal shares; 1: as ``none``, in proportion to its
    #: music); ``none``: uniform over all windows of the corpus (Jukebox's).
    balance: str = "none"
    #: See ``balance``.
    balance_power: float = 0.0
    #: Weight W of the supervised lyric-alignment loss (encoder-decoder lyric priors; 0: off): where a track has word
    #: timings, one cross-attention head is pulled onto the characters of the word being sung, adding
    #: ``W * mean(-log(head's weight on the word's characters + 1e-6))`` over the positions with a sung word.
    align_loss: float = 0.0
    #: The cross-attention layer the alignment loss supervises (None: the prior's ``alignment_layer``, else its
    #: last cross-attention layer).
    align_layer: int | None = None
    #: Its head (None: the prior's ``alignment_head``, else 0).
    align_head: int | None = None

    def __post_init__(self) -> None:
        for name in ("label_dropout", "input_noise", "scheduled_sampling"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise OptionError(f"{name} must be in [0, 1), got {value!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise OptionError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.lora_rank < 0:
            raise OptionError(f"lora_rank must be >= 0, got {self.lora_rank}")
        if self.merge_lora and not self.lora_rank:
            raise OptionError("merge_lora needs lora_rank (adapters to merge)")
        if self.n_ctx is not None and self.n_ctx < 1:
            raise OptionError(f"n_ctx must be >= 1, got {self.n_ctx}")
        if self.balance not in BALANCE_KEYS:
            raise OptionError(f"balance must be one of {', '.join(BALANCE_KEYS)}, got {self.balance!r}")
        w = self.align_loss
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= w < float("inf"):
            raise OptionError(f"align_loss must be a number >= 0, got {w!r}")
        for name in ("align_layer", "align_head"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise OptionError(f"{name} must be an integer >= 0, got {value!r}")
            if not w:
                raise OptionError(f"{name} chooses the head of the alignment loss; give align_loss > 0 too")
        p = self.min_pulse
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise OptionError(f"min_pulse must be a pulse clarity in [0, 1), got {p!r}")
        power = self.balance_power
        if isinstance(power, bool) or not isinstance(power, (int, float)) or not 0.0 <= power <= 1.0:
            raise OptionError(f"balance_power must be in [0, 1], got {power!r}")

    def data_state(self) -> dict[str, float]:
        """The options that decide which batches are drawn (part of a checkpoint's data state)."""
        state = {"label_dropout": float(self.label_dropout), "input_noise": float(self.input_noise),
                 "scheduled_sampling": float(self.scheduled_sampling)}
        if self.balance != "none":  # checkpoints of unbalanced runs keep their former data state
            state.update(balance=self.balance, balance_power=float(self.balance_power))
        if self.min_pulse:  # so are those of runs that label every track with beats
            state["min_pulse"] = float(self.min_pulse)
        return state

    @classmethod
    def of(cls, options: TrainOptions | None = None, **overrides: Any) -> TrainOptions:
        """``options`` (default: the defaults) with ``overrides`` by name on top; unknown names are a
        ``TypeError``, as for a function's keyword arguments."""
        unknown = set(overrides) - set(OPTION_NAMES)
        if unknown:
            raise TypeError(f"unexpected training options {sorted(unknown)}; use {', '.join(OPTION_NAMES)}")
        base = options if options is not None else cls()
        return base.replace(**overrides) if overrides else base


#: The fields of :class:`TrainOptions`.
OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(TrainOptions))
