"""The public Python API: ``load_model(path)`` then ``generate`` / ``continue_`` / ``upsample``.

>>> import jukebox
>>> model = jukebox.load_model("path/to/model_dir")          # or None for the embedded default model
>>> out = model.generate(artist="unknown", genre="unknown", seconds=5, n_samples=2, seed=0)
>>> out.audio.shape                                          # [batch, channels, time] at model.sample_rate
>>> jukebox.save_audio(out.audio[0], "song.wav", model.sample_rate)

Audio is always [batch, channels, time] float32 in [-1, 1] at ``model.sample_rate``; codes are dicts
``{level: LongTensor [batch, T_level]}`` (level 0 finest, hop 8 for the released models).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .audio import MAX_SECONDS
from .checkpoint.model_dir import ModelDir, prior_folder
from .distributed import current_ranks
from .errors import JukeboxError, UsageError
from .loudness import DEFAULT_LUFS, DEFAULT_PEAK_DB
from .sampling.pipeline import LevelReport, sample_levels
from .sampling.settings import SamplingSettings, model_defaults

#: ``progress(level, tokens_done, tokens_total)``
ProgressFn = Callable[[int, int, int], None]
#: ``on_level_done(level, codes)``: after each sampled level, with the codes {level: [B, T_l]} so far (CPU).
LevelDoneFn = Callable[[int, dict[int, torch.Tensor]], None]


@dataclass
class Generation:
    """What a sampling call returns."""

    audio: torch.Tensor  # [B, 1, T] float32 on the CPU
    codes: dict[int, torch.Tensor]  # level -> [B, T_l] on the CPU
    level: int  # the level the audio was decoded from
    sample_rate: int
    reports: list[LevelReport] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    alignments: list[Any] | None = None
    #: The settings the call sampled with (``settings=`` of another call samples the same way).
    sampling: SamplingSettings | None = None


def _is_number(value: Any) -> bool:
    """An int or float from JSON or a caller, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Jukebox:
    """A loaded model directory: the VQ-VAE plus whatever priors exist, on one device.

    Priors are loaded on first use and kept (``low_memory=False``) or loaded per level and released after it
    (``low_memory=True``, for big models on small GPUs).
    """

    def __init__(self, model_dir: ModelDir, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, low_memory: bool = False) -> None:
        self.model_dir = model_dir
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = dtype
        self.low_memory = low_memory
        self.vqvae = model_dir.load_vqvae(self.device)
        self.sample_rate: int = self.vqvae.config.sample_rate
        self.hop_lengths: tuple[int, ...] = self.vqvae.config.hop_lengths
        self.prior_levels: list[int] = model_dir.prior_levels()
        self._priors: dict[int, Any] = {}
        self._labellers: dict[int, Any] = {}

    def __repr__(self) -> str:
        return f"Jukebox({str(self.model_dir.path)!r}, levels={self.prior_levels}, sr={self.sample_rate})"

    @property
    def sampling_defaults(self) -> dict[str, Any]:
        """``upsample_mode``, ``decode``, ``draw``, ``chunk_size``, ``guidance`` and ``temperature`` used when a
        call does not give them: the ``sampling`` entry of the model's ``model.json`` where it has them (the
        embedded default model asks for the fast ``parallel``, ``int8`` (CPU; ``eager`` elsewhere), ``cdf`` and
        one-chunk prefills), else the original's order, draw and chunks (``sequential``, ``eager``,
        ``multinomial``, 32), so imported OpenAI models reproduce the original's samples. ``guidance`` (1 = off)
        is the model's measured best classifier-free guidance scale, for priors trained with label dropout:
        ``model.json`` gives one number (the top level's) or a list indexed by level; returned as a number (top
        level only) or a {level: w} dict; ``label_guidance`` the top level's scale of the labels alone (a prior
        with tempo; None: ``guidance`` guides labels and tempo together). ``temperature``: 1.0, or the model's
        measured best per level
        (``model.json`` gives one number or a list indexed by level, e.g. ``[0.8, 0.8, 0.98]``); returned as a
        number or a {level: T} dict. ``hop_fraction``: the window hop per level where ``model.json`` gives one (a
        number or a list indexed by level), else None (the original's). ``total_seconds``: the song length the
        timing labels describe when a call gives none (at least the piece's own length), e.g. the median length of
        the model's training songs; None where ``model.json`` gives no positive number (then the piece's own
        length)."""
        return model_defaults(self.model_dir.info.get("sampling"), MAX_SECONDS)

    @property
    def default_levels(self) -> list[int]:
        """The levels sampled when a call names none, highest first: the model's own (``levels`` in the
        ``sampling`` entry of its ``model.json``: the top level and the upsamplers down to the level whose codes
        are decoded; the embedded default model renders from level 1, whose audio keeps more of the top level's
        pulse than its level-0 upsampler does) where those are a run of its prior levels from the top, else all of
        them."""
        own = self.sampling_defaults.get("levels")
        have = sorted(self.prior_levels, reverse=True)
        if own and have and own == have[: len(own)]:
            return list(own)
        return have

    def resolve_levels(self, levels: Sequence[int] | str | None) -> list[int]:
        """The levels a call samples: ``levels`` as given, ``"all"`` for every prior level, or None for
        :attr:`default_levels`."""
        if levels is None:
            return self.default_levels
        if isinstance(levels, str):
            if levels != "all":
                raise UsageError(f"levels must be a list of levels or 'all', got {levels!r}")
            return sorted(self.prior_levels, reverse=True)
        return list(levels)

    def sampling_settings(self, settings: SamplingSettings | None = None, **overrides: Any) -> SamplingSettings:
        """The settings a sampling call uses, resolved and checked once: ``settings`` (default: the model's own,
        :attr:`sampling_defaults`; an int8 CPU decode becomes ``eager`` on other devices) with ``overrides`` on top
        (``temperature``, ``top_k``, ``top_p``, ``hop_fraction``, ``chunk_size``, ``max_batch_size``, ``decode``,
        ``draw``, ``max_windows``, ``guidance``, ``label_guidance``, ``weights``, ``upsample_mode``, ``seed``;
        per-level values as a number, a list by level or a {level: value} mapping, see
        :mod:`jukebox.sampling.settings`). Bad values raise one :class:`~jukebox.errors.UsageError`; so do
        guidance for a prior without labels, label guidance for one without tempo, ``decode="int8"`` off a CPU
        and settings that lack one of the model's levels.
        """
        if settings is None:
            d = self.sampling_defaults
            decode = "eager" if d["decode"] == "int8" and self.device.type != "cpu" else d["decode"]
            settings = SamplingSettings.for_levels(
                self.prior_levels, upsample_mode=d["upsample_mode"], decode=decode, draw=d["draw"],
                chunk_size=d["chunk_size"], temperature=d["temperature"], guidance=d["guidance"],
                label_guidance=d["label_guidance"] if self.has_tempo else None,  # a tempo prior's setting
                hop_fraction=d["hop_fraction"])
        elif not isinstance(settings, SamplingSettings):
            raise UsageError(f"settings must be a SamplingSettings (from model.sampling_settings()), got "
                             f"{type(settings).__name__}")
        out = settings.replace(**overrides)
        missing = sorted(set(self.prior_levels) - set(out))
        if missing:
            raise UsageError(f"the sampling settings cover levels {sorted(out)}; this model also samples {missing}")
        if self.device.type != "cpu" and any(out[lvl].decode == "int8" for lvl in self.prior_levels):
            raise UsageError("decode='int8' runs on a CPU only")
        for lvl in self.prior_levels:
            if out[lvl].guided and self.labeller(lvl) is None:
                which = "top prior" if lvl == self.top_level else f"level-{lvl} prior"
                raise UsageError(f"guidance needs a {which} with artist/genre labels; this one has none")
            if out[lvl].split_guidance and not getattr(self.model_dir.prior_config(lvl).labels, "tempo", False):
                raise UsageError(f"label_guidance needs a level-{lvl} prior with tempo (the embedded model's top "
                                 "prior has one); use guidance for this one")
        return out

    # ------------------------------------------------------------------ components
    @property
    def top_level(self) -> int:
        if not self.prior_levels:
            raise JukeboxError(f"{self.model_dir.path}: the model has no priors; it can only encode and decode")
        return max(self.prior_levels)

    def prior(self, level: int):
        if level in self._priors:
            return self._priors[level]
        prior = self.model_dir.load_prior(level, self.device, self.dtype)
        if prior.config.l_bins != self.vqvae.config.l_bins or prior.config.hop_lengths != self.hop_lengths:
            raise JukeboxError(f"{self.model_dir.path}: the level-{level} prior was made for another VQ-VAE "
                               f"({prior.config.l_bins} codes, hops {prior.config.hop_lengths}; the VQ-VAE has "
                               f"{self.vqvae.config.l_bins} codes, hops {self.hop_lengths})")
        if not self.low_memory:
            self._priors[level] = prior
        return prior

    def vocab(self, level: int | None = None):
        """The artist/genre vocabulary of a prior (default: the top prior), or None when it has none."""
        from .data.labels import LABELS_FILE, LabelVocab

        level = self.top_level if level is None else level
        for folder in (self.model_dir.path / prior_folder(level), self.model_dir.path):
            if (folder / LABELS_FILE).exists():
                return LabelVocab.load(folder)
        return None

    def labeller(self, level: int):
        """The :class:`~jukebox.data.labels.Labeller` that builds the level's label vectors (None: no labels)."""
        if level in self._labellers:
            return self._labellers[level]
        from .data.labels import Labeller

        config = self.model_dir.prior_config(level)
        labeller = None
        if config.labels is not None:
            vocab = self.vocab(level)
            if vocab is None:
                raise JukeboxError(f"{self.model_dir.path}: the level-{level} prior is conditioned on artist and "
                                   "genre but the model directory has no labels.json for it (import with --ids-dir)")
            if vocab.y_bins[0] > config.labels.genre_bins or vocab.y_bins[1] > config.labels.artist_bins:
                raise JukeboxError(f"{self.model_dir.path}: labels.json of level {level} has ids up to {vocab.y_bins} "
                                   f"(genres, artists), past the prior's embeddings ({config.labels.genre_bins}, "
                                   f"{config.labels.artist_bins}); the labels file is damaged or edited by hand")
            labeller = Labeller(vocab, config.labels.max_bow_genre_size, config.lyrics.n_tokens,
                                config.sample_length, tempo=config.labels.tempo)
        self._labellers[level] = labeller
        return labeller

    def item_labels(self, level: int, items: Sequence[Mapping[str, Any]], sample_length: int,
                    total_length: int | None = None, warn: bool = True):
        """The level's labels (:class:`~jukebox.data.labels.Labels`, ``y`` [B, label_width]) for songs starting at
        offset 0 (None for a prior without labels). ``items``: {artist, genre, lyrics} each, with an optional
        ``total_seconds`` (that song's length); the others get ``total_length`` samples (default:
        ``sample_length``). ``warn``: warn about names the vocabulary lacks."""
        labeller = self.labeller(level)
        if labeller is None:
            return None
        total_length = sample_length if total_length is None else total_length
        metas = [dict(artist=item["artist"], genre=item["genre"], lyrics=item["lyrics"], offset=0,
                      total_length=total_length if item.get("total_seconds") is None else
                      max(sample_length, int(round(item["total_seconds"] * self.sample_rate))),
                      bpm=item.get("bpm"), beat0=int(item.get("beat0", 0)))
                 for item in items]
        return labeller.batch_labels(metas, device=self.device, warn=warn)

    # ------------------------------------------------------------------ codec
    def encode(self, audio: torch.Tensor | np.ndarray, levels: int | None = None) -> dict[int, torch.Tensor]:
        """Audio [B, 1, T] (or [T]) at ``sample_rate`` -> codes {level: [B, T_l]}."""
        from .codec import encode_audio

        x = torch.as_tensor(audio, dtype=torch.float32)
        if x.dim() == 1:
            x = x[None, None]
        codes = encode_audio(self.vqvae, x.to(self.device), end_level=levels)
        return {lvl: c.cpu() for lvl, c in enumerate(codes)}

    def decode(self, codes: Mapping[int, torch.Tensor], level: int | None = None,
               loudness: float | None = None) -> torch.Tensor:
        """Codes {level: [B, T_l]} -> audio [B, 1, T] from ``level`` (default: the finest present).

        The codec's raw output by default; ``loudness`` (LUFS) brings each item to that level as
        :meth:`normalize` does."""
        from .codec import decode_codes

        level = min(codes) if level is None else level
        audio = decode_codes(self.vqvae, codes[level].to(self.device), level).float().cpu()
        return self.normalize(audio, loudness)[0] if loudness is not None else audio

    def normalize(self, audio: torch.Tensor, loudness: float | None = DEFAULT_LUFS) -> tuple[torch.Tensor, dict]:
        """Audio [B, C, T] -> each item at ``loudness`` LUFS (ITU-R BS.1770) with its true peak at or below
        -1 dBTP, by a static gain and a soft look-ahead limiter (:func:`jukebox.loudness.normalize_loudness`);
        ``None`` leaves the audio unchanged. Returns ``(audio, record)``: ``record`` is ``{"enabled": False}`` or
        ``{"enabled": True, "target_lufs", "peak_db", "items": [what was measured and applied, per item]}``."""
        if loudness is None:
            return audio, {"enabled": False}
        from .loudness import normalize_loudness

        target = check_loudness(loudness)
        out, items = [], []
        for item in audio:
            y, info = normalize_loudness(item, self.sample_rate, target, DEFAULT_PEAK_DB)
            out.append(y)
            items.append({k: v for k, v in info.items() if k not in ("target_lufs", "peak_db")})
        audio = torch.stack(out) if out else audio
        return audio, {"enabled": True, "target_lufs": target, "peak_db": DEFAULT_PEAK_DB, "items": items}

    # ------------------------------------------------------------------ sampling
    def _items(self, n_samples: int, artist: str, genre: str, lyrics: str,
               items: Sequence[Mapping[str, Any]] | None, bpm: float | None = None) -> list[dict[str, Any]]:
        """One {artist, genre, lyrics[, total_seconds][, bpm]} per sample; ``total_seconds`` (optional, per item)
        is that song's length for its timing labels and lyric window, overriding the call's ``total_seconds``;
        ``bpm`` (optional, per item, else the call's ``bpm``) the tempo asked of a tempo prior. A tempo prior's items
        without one get their genre's typical tempo (see :meth:`default_bpm`), recorded in the item."""
        if bpm is not None:
            self.check_bpm(bpm, "bpm")
        if items is None:
            items = [dict(artist=artist, genre=genre, lyrics=lyrics)] * n_samples
        elif len(items) != n_samples:
            raise UsageError(f"{len(items)} label items given for {n_samples} samples")
        out = []
        for i, item in enumerate(items):
            unknown = set(item) - {"artist", "genre", "lyrics", "total_seconds", "bpm"}
            if unknown:
                raise UsageError(f"label item {i} has unknown keys {sorted(unknown)}; use artist, genre, lyrics, "
                                 "total_seconds, bpm")
            entry: dict[str, Any] = dict(artist=str(item.get("artist", "unknown")),
                                         genre=str(item.get("genre", "unknown")),
                                         lyrics=str(item.get("lyrics", "") or ""))
            for key, text in entry.items():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:  # lone surrogates, e.g. from undecodable command-line bytes
                    raise UsageError(f"the {key} of item {i} is not valid Unicode text; pass UTF-8") from None
            if item.get("total_seconds") is not None:
                ts = item["total_seconds"]
                if not _is_number(ts):
                    raise UsageError(f"the total_seconds of item {i} must be a number, got {ts!r}")
                entry["total_seconds"] = self._check_seconds(float(ts), f"total_seconds of item {i}")
            item_bpm = item.get("bpm") if item.get("bpm") is not None else bpm
            if item_bpm is not None:
                entry["bpm"] = self.check_bpm(item_bpm, f"the bpm of item {i}")
            elif self.has_tempo:
                entry["bpm"] = self.default_bpm(entry["genre"])
            out.append(entry)
        return out

    @functools.cached_property
    def has_tempo(self) -> bool:
        """Whether the top prior takes a tempo (``bpm``) and beat phase (read once, like the priors)."""
        if self.top_level not in self.prior_levels:
            return False
        labels = self.model_dir.prior_config(self.top_level).labels
        return labels is not None and labels.tempo

    def default_bpm(self, genre: str) -> float:
        """The tempo a tempo prior gets when none is asked for: the typical tempo of ``genre`` in its training
        music (of the genre's first word the model knows), else of all of it, else 120."""
        default, table = self._tempi
        key = genre.strip().lower()
        if key in table:
            return table[key]
        for word in key.replace("_", " ").split():
            if word in table:
                return table[word]
        return default

    @functools.cached_property
    def _tempi(self) -> tuple[float, dict[str, float]]:
        """The top prior's typical tempi, read once: (all genres', {lower-case genre: bpm})."""
        tempi = self.model_dir.tempi(self.top_level) or {"default": 120.0, "genres": {}}
        return float(tempi["default"]), {g.lower(): v for g, v in tempi["genres"].items()}

    def check_bpm(self, bpm: Any, name: str = "bpm") -> float:
        """``bpm`` as a float, or a one-line :class:`UsageError` when it is not a tempo this model takes."""
        if not _is_number(bpm) or not math.isfinite(float(bpm)) or not 20.0 <= float(bpm) <= 400.0:
            raise UsageError(f"{name} must be a tempo between 20 and 400 BPM, got {bpm!r}")
        if not self.has_tempo:
            raise UsageError("this model's top prior takes no tempo; sample without bpm (or train the top prior "
                             "with `jukebox train prior --tempo`)")
        return float(bpm)

    @property
    def max_seconds(self) -> float:
        """The longest song the model can describe: its top prior's timing range (else 4 hours)."""
        labels = self.model_dir.prior_config(self.top_level).labels
        if labels is not None and labels.max_duration:
            return float(labels.max_duration)
        return float(MAX_SECONDS)

    def _check_seconds(self, seconds: float, name: str = "seconds") -> float:
        try:
            value = float(seconds)
        except (TypeError, ValueError):
            raise UsageError(f"{name} must be a number, got {seconds!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise UsageError(f"{name} must be a positive number of seconds, got {seconds}")
        if value > self.max_seconds:
            raise UsageError(f"{name} ({value:g} s) is beyond this model's range of {self.max_seconds:g} s; "
                             "ask for a shorter song")
        return value

    def _total_length(self, total_seconds: float | None, seconds: float) -> tuple[int, str]:
        """The song length in samples for the timing labels, and where it came from: the call's
        ``total_seconds``, else the model's (``sampling_defaults``) where longer than ``seconds``, else
        ``seconds``."""
        source = "total_seconds"
        if total_seconds is None:
            own = self.sampling_defaults["total_seconds"]
            total_seconds, source = ((min(own, self.max_seconds), "model.json") if own is not None and own > seconds
                                     else (seconds, "seconds"))
        return int(round(self._check_seconds(total_seconds, "total_seconds") * self.sample_rate)), source

    def sample_length(self, seconds: float) -> int:
        """Samples for ``seconds``: round(seconds * sr) rounded down to a multiple of the top level's hop."""
        hop = self.hop_lengths[self.top_level]
        length = int(round(self._check_seconds(seconds) * self.sample_rate)) // hop * hop
        if length <= 0:
            raise UsageError(f"{seconds} s is shorter than one top-level token ({hop / self.sample_rate:.4f} s)")
        return length

    def _check_codes(self, codes: Mapping[int, torch.Tensor], n: int, sample_length: int) -> None:
        """Codes given to continue or upsample: known levels, one batch size, in the codebook, not too long."""
        bins = self.vqvae.config.l_bins
        for lvl, c in codes.items():
            if not 0 <= lvl < len(self.hop_lengths):
                raise UsageError(f"codes for level {lvl}, but the model has levels 0-{len(self.hop_lengths) - 1}")
            if c.dim() != 2 or c.shape[0] != n:
                raise UsageError(f"level-{lvl} codes have shape {tuple(c.shape)}; expected [{n}, T] for {n} "
                                 "sample(s)")
            if c.numel() and (int(c.min()) < 0 or int(c.max()) >= bins):
                raise JukeboxError(f"level-{lvl} codes must lie in [0, {bins}), found [{int(c.min())}, "
                                   f"{int(c.max())}]; were they made with another model?")
            if c.shape[1] * self.hop_lengths[lvl] > sample_length:
                raise UsageError(f"the level-{lvl} codes ({c.shape[1] * self.hop_lengths[lvl] / self.sample_rate:.2f}"
                                 f" s) are longer than the song ({sample_length / self.sample_rate:.2f} s); ask for "
                                 "more seconds or cut them with prompt_seconds")

    def _run(self, codes: dict[int, torch.Tensor], levels: Sequence[int], sample_length: int, total_length: int,
             items: list[dict[str, Any]], settings: SamplingSettings, progress: ProgressFn | None,
             on_level_done: LevelDoneFn | None, alignment: bool, loudness: float | None,
             total_source: str = "total_seconds") -> Generation:
        """Sample ``levels`` of ``len(items)`` songs of ``sample_length`` samples with ``settings`` (resolved and
        checked by :meth:`sampling_settings`), continuing ``codes`` {level: [B, T_l]}; then decode."""
        levels = sorted(set(levels), reverse=True)
        if loudness is not None:
            check_loudness(loudness)
        missing = [lvl for lvl in levels if lvl not in self.prior_levels]
        if missing:
            raise UsageError(f"the model has no prior for level(s) {missing} (it has {self.prior_levels})")
        n = len(items)
        self._check_codes(codes, n, sample_length)
        asked = sample_length  # a piece shorter than an upsampler's window is sampled one window long, then cut
        for lvl in levels:
            cfg = self.model_dir.prior_config(lvl)
            upper = lvl + 1
            if cfg.is_upsampler and upper not in levels and (
                    upper not in codes or codes[upper].shape[1] * self.hop_lengths[upper] < sample_length):
                if upper in self.prior_levels:
                    raise UsageError(f"levels {sorted(levels, reverse=True)} leave out level {upper}, whose codes "
                                     f"the level-{lvl} upsampler needs; sample level {upper} too (e.g. levels "
                                     f"{upper},{lvl}) or upsample saved codes (--mode upsample --codes)")
                raise JukeboxError(f"{self.model_dir.path}: the level-{lvl} upsampler needs level-{upper} codes, "
                                   f"but the model has no level-{upper} prior (levels present: {self.prior_levels}); "
                                   f"is prior_level_{upper}/ missing or incomplete?")
            need = cfg.n_ctx * self.hop_lengths[lvl]
            if cfg.is_upsampler and sample_length < need and all(u in levels for u in range(upper, self.top_level + 1)):
                top_hop = self.hop_lengths[self.top_level]
                sample_length = -(-need // top_hop) * top_hop
                total_length = max(total_length, sample_length)
            elif cfg.is_upsampler and sample_length < need:
                raise UsageError(f"upsampling level {lvl} needs at least {need / self.sample_rate:.2f} s of audio "
                                 f"(one context of {cfg.n_ctx} tokens); ask for more seconds or stop at a higher "
                                 "level with levels=...")

        # unknown names are reported once, by the highest level sampled (a lower level's vocabulary may lack
        # names a fine-tuned top prior learned; they map to `unknown` there, the top level decides the style)
        labels = {lvl: self.item_labels(lvl, items, sample_length, total_length, warn=lvl == levels[0])
                  for lvl in levels}

        def label_fn(level: int, start: int):
            lab = labels[level]
            if lab is None:
                return None
            return self._labellers[level].window_y(lab, start, self.hop_lengths[level])[0]

        seed = settings.seed
        ranks = current_ranks()  # under torchrun: the processes share every level's rows (jukebox.distributed)
        if ranks is not None:
            seed = ranks.broadcast_seed(seed)

        def generator(level: int) -> torch.Generator | None:
            if seed is None:
                return None
            gen = torch.Generator(device=self.device)
            gen.manual_seed(seed * 1009 + level)  # one stream per level: resuming a level redraws the same
            return gen
        for lvl in range(len(self.hop_lengths)):
            codes.setdefault(lvl, torch.zeros(n, 0, dtype=torch.long))
        codes = {lvl: c.to(self.device).long() for lvl, c in codes.items()}

        def release(level: int, prior: Any) -> None:
            if self.low_memory and self.device.type == "cuda":
                torch.cuda.empty_cache()

        def level_done(level: int, cs: dict[int, torch.Tensor]) -> None:
            if on_level_done is not None:
                on_level_done(level, {k: v[:, :asked // self.hop_lengths[k]].cpu() for k, v in cs.items()})

        t0 = time.perf_counter()
        codes, reports = sample_levels(self.prior, codes, levels, sample_length, label_fn, settings,
                                       self.hop_lengths, generator, progress, level_done, release, ranks=ranks)
        lowest = min(levels)
        codes_cpu = {lvl: c.cpu() for lvl, c in codes.items() if c.shape[1] > 0}
        t1 = time.perf_counter()
        audio = self.decode(codes_cpu, lowest)[..., :asked]  # the whole window decoded: no edge at the cut
        codes_cpu = {lvl: c[:, :asked // self.hop_lengths[lvl]] for lvl, c in codes_cpu.items()}
        codes = {lvl: c[:, :asked // self.hop_lengths[lvl]] for lvl, c in codes.items()}
        sample_length = asked
        audio, loud = self.normalize(audio, loudness)
        decode_s = time.perf_counter() - t1
        aligns = None
        top = self.top_level
        if alignment and top in levels and labels.get(top) is not None and self.prior(top).n_tokens > 0:
            from .sampling.alignment import lyric_alignment

            aligns = lyric_alignment(self.prior(top), codes[top], labels[top], self._labellers[top],
                                     settings[top].hop_fraction)
        first = settings[levels[0]]
        info = dict(levels=levels, sample_length=sample_length, total_length=total_length,
                    total_seconds=round(total_length / self.sample_rate, 3), total_seconds_from=total_source,
                    loudness=loud, items=items,
                    seed=seed, chunk_size=first.chunk_size, max_batch_size=first.max_batch_size,
                    upsample_mode=settings.upsample_mode, draw=first.draw, guidance=settings[top].guidance,
                    label_guidance=settings[top].label_guidance,
                    per_level={lvl: settings[lvl].to_dict() for lvl in levels},
                    sampling=settings.to_dict(), sampling_seconds=t1 - t0, decode_seconds=decode_s)
        if ranks is not None:
            info.update(world_size=ranks.world, rows_per_rank=ranks.gather_work())
        return Generation(audio, codes_cpu, lowest, self.sample_rate, reports, info, aligns, settings)

    def generate(self, artist: str = "unknown", genre: str = "unknown", lyrics: str = "", seconds: float = 5.0,
                 total_seconds: float | None = None, n_samples: int = 1,
                 items: Sequence[Mapping[str, Any]] | None = None, *, settings: SamplingSettings | None = None,
                 levels: Sequence[int] | str | None = None, progress: ProgressFn | None = None,
                 on_level_done: LevelDoneFn | None = None, alignment: bool = True, bpm: float | None = None,
                 loudness: float | None = DEFAULT_LUFS, **overrides: Any) -> Generation:
        """Sample a new piece from nothing (ancestral sampling).

        ``items`` gives one {artist, genre, lyrics} per sample instead of shared labels, each optionally with its
        own ``total_seconds`` (the song length its timing labels and lyric window describe) and ``bpm``.
        ``levels`` selects the levels to sample (default: the model's own, :attr:`default_levels`; ``"all"``:
        every level it has); stopping early (e.g. ``levels=[2]``) decodes a fast, rough draft from the lowest
        sampled level. ``total_seconds`` is the song
        length the timing labels describe (default: the model's typical song length, :attr:`sampling_defaults`,
        where longer than ``seconds``; else ``seconds``).

        How tokens are drawn: ``settings`` (a :class:`~jukebox.sampling.settings.SamplingSettings`, default: the
        model's own, :meth:`sampling_settings`) with ``overrides`` by name on top, resolved and checked once:
        ``temperature`` (one value, a list indexed by level or a {level: T} mapping; default: the model's own,
        1.0 where it gives none), ``top_k``, ``top_p``, ``hop_fraction``, ``seed``, ``chunk_size``,
        ``max_batch_size``; ``upsample_mode``: ``"sequential"`` (the original's window order) or ``"parallel"``
        (each upsampler level in batched windows, much faster; see :mod:`jukebox.sampling.parallel`);
        ``decode``: the decode step (``"eager"``; on a CPU ``"int8"``; on CUDA ``"graph"``, ``"compile"`` or
        ``"triton"``; see :mod:`jukebox.prior.sampler`); ``draw``: the categorical draw, ``"multinomial"`` (the
        original's: seeded samples of imported OpenAI models equal the original's) or ``"cdf"`` (one uniform per
        token, much cheaper on a CPU); ``guidance``: classifier-free guidance scale of the top level (1: off;
        larger follows artist and genre more closely; needs a prior trained with label dropout), or a {level: w}
        mapping that guides upsamplers too; ``label_guidance``: for a top prior with tempo, the scale of artist and
        genre alone (``guidance`` then scales the tempo; one more row per sample); ``weights``: the priors' block
        linears as the model's own
        (``"native"``) or weight-only 8-bit ``"int8"`` / ``"fp8"`` weights (:mod:`jukebox.nn.quant`: half the bytes
        per decode step of bf16, for a KL to the native next-token distributions of at most 1e-2 nats per token).
        ``upsample_mode``, ``decode``, ``draw``, ``chunk_size``,
        ``guidance``, ``label_guidance`` and ``temperature`` default to the model's :attr:`sampling_defaults`.

        ``bpm``: the tempo of a model whose top prior takes one (:attr:`has_tempo`; per item with ``items``;
        default: the genre's typical tempo, :meth:`default_bpm`). ``loudness``: the level in LUFS each item of
        the returned audio is brought to, true peak <= -1 dBTP, by :meth:`normalize` (``None``: the raw decode;
        the codes are the same either way).
        """
        resolved = self.sampling_settings(settings, **overrides)
        if n_samples < 1:
            raise UsageError(f"n_samples must be >= 1, got {n_samples}")
        length = self.sample_length(seconds)
        total, source = self._total_length(total_seconds, seconds)
        if total < length:
            raise UsageError(f"total_seconds ({total_seconds}) must be at least seconds ({seconds})")
        levels = self.resolve_levels(levels)
        return self._run({}, levels, length, total, self._items(n_samples, artist, genre, lyrics, items, bpm),
                         resolved, progress, on_level_done, alignment, loudness, total_source=source)

    def continue_(self, audio: torch.Tensor | np.ndarray | None = None, seconds: float = 5.0,
                  codes: Mapping[int, torch.Tensor] | None = None, prompt_seconds: float | None = None,
                  artist: str = "unknown", genre: str = "unknown", lyrics: str = "",
                  total_seconds: float | None = None, n_samples: int | None = None,
                  items: Sequence[Mapping[str, Any]] | None = None, bpm: float | None = None, *,
                  settings: SamplingSettings | None = None, levels: Sequence[int] | str | None = None,
                  progress: ProgressFn | None = None, on_level_done: LevelDoneFn | None = None,
                  alignment: bool = True, loudness: float | None = DEFAULT_LUFS, **overrides: Any) -> Generation:
        """Continue an audio prompt [B or 1, 1, T] (primed sampling) or saved codes up to ``seconds`` in all.

        ``prompt_seconds`` cuts the prompt (rounded down to whole top-level tokens). With ``audio`` of batch 1
        and ``n_samples`` > 1 the prompt is shared by every sample. A tempo model asked for no ``bpm`` continues
        an audio prompt at the prompt's own tempo and beat (tracked over its last seconds), where it has a steady
        pulse. Codes that already cover ``seconds`` at every level asked (a resumed run whose last level was saved)
        leave nothing to sample: they are decoded (and aligned). The other arguments as for :meth:`generate`.
        """
        resolved = self.sampling_settings(settings, **overrides)
        if (audio is None) == (codes is None):
            raise UsageError("give either an audio prompt or codes to continue")
        top_hop = self.hop_lengths[self.top_level]
        if prompt_seconds is not None:
            prompt_seconds = self._check_seconds(prompt_seconds, "prompt_seconds")
        if audio is not None:
            x = torch.as_tensor(audio, dtype=torch.float32)
            x = x[None, None] if x.dim() == 1 else x[None] if x.dim() == 2 else x
            if prompt_seconds is not None:
                x = x[..., : int(prompt_seconds * self.sample_rate)]
            keep = x.shape[-1] // top_hop * top_hop
            if keep == 0:
                raise UsageError(f"the prompt is shorter than one top-level token ({top_hop} samples)")
            start_codes = self.encode(x[..., :keep])
        else:
            start_codes = {int(k): torch.as_tensor(v).long() for k, v in codes.items()}
            if prompt_seconds is not None:
                keep = int(prompt_seconds * self.sample_rate) // top_hop * top_hop
                start_codes = {k: v[:, : keep // self.hop_lengths[k]] for k, v in start_codes.items()}
        batch = next(iter(start_codes.values())).shape[0]
        n = n_samples or batch
        if batch == 1 and n > 1:
            start_codes = {k: v.expand(n, -1).clone() for k, v in start_codes.items()}
        elif batch != n:
            raise UsageError(f"the prompt has {batch} items but n_samples is {n}")
        length = self.sample_length(seconds)
        levels = self.resolve_levels(levels or None)
        if audio is not None and all(lvl in start_codes and start_codes[lvl].shape[1] * self.hop_lengths[lvl] >= length
                                     for lvl in levels):
            have = min(start_codes[lvl].shape[1] * self.hop_lengths[lvl] for lvl in levels)
            raise UsageError(f"the prompt ({have / self.sample_rate:.2f} s) is not shorter than the song "
                             f"({length / self.sample_rate:.2f} s); ask for more seconds")
        total, source = self._total_length(total_seconds, seconds)
        entries = self._items(n, artist, genre, lyrics, items, bpm)
        if audio is not None and bpm is None and self.has_tempo and not any(
                it.get("bpm") is not None for it in (items or ())):
            grid = self._prompt_grid(x[..., :keep])
            if grid is not None:
                for entry in entries:
                    entry["bpm"], entry["beat0"] = grid
        return self._run(start_codes, levels, length, max(total, length), entries, resolved, progress,
                         on_level_done, alignment, loudness, total_source=source)

    def _prompt_grid(self, prompt: torch.Tensor) -> tuple[float, int] | None:
        """The beat grid (bpm, a beat's time in samples) of the last 8 s of an audio prompt [B, 1, T] (its first
        item), or None when it has no steady pulse."""
        from .data.tempo import fit_grid, track_beats

        mono = prompt[0].mean(dim=0).numpy()
        beats = track_beats(mono, self.sample_rate)
        end = len(mono) / self.sample_rate
        bpm, beat0 = fit_grid(beats.beats, max(0.0, end - 8.0), end) if beats.bpm > 0 else (0.0, 0.0)
        if not 20.0 <= bpm <= 400.0:
            return None
        return round(float(bpm), 2), int(round(beat0 * self.sample_rate))

    def upsample(self, codes: Mapping[int, torch.Tensor], artist: str = "unknown", genre: str = "unknown",
                 lyrics: str = "", total_seconds: float | None = None,
                 items: Sequence[Mapping[str, Any]] | None = None, *, settings: SamplingSettings | None = None,
                 levels: Sequence[int] | str | None = None, progress: ProgressFn | None = None,
                 on_level_done: LevelDoneFn | None = None, alignment: bool = True,
                 loudness: float | None = DEFAULT_LUFS, **overrides: Any) -> Generation:
        """Render saved top-level codes {top: [B, T]} through the upsamplers (levels below the top); finer codes
        already sampled are kept (resume). The other arguments as for :meth:`generate`."""
        resolved = self.sampling_settings(settings, **overrides)
        top = self.top_level
        if top not in codes:
            raise UsageError(f"upsampling needs the top-level codes (level_{top})")
        z = torch.as_tensor(codes[top]).long()
        z = z[None] if z.dim() == 1 else z
        length = z.shape[1] * self.hop_lengths[top]
        if length > self.max_seconds * self.sample_rate:
            raise UsageError(f"the codes ({length / self.sample_rate:g} s) are beyond this model's range of "
                             f"{self.max_seconds:g} s")
        total, source = self._total_length(total_seconds, length / self.sample_rate)
        levels = [lvl for lvl in self.resolve_levels(levels or None) if lvl < top]
        if not levels:
            raise UsageError("the model has no upsamplers")
        start = {top: z}
        for lvl, c in codes.items():  # keep finer codes already sampled (resume)
            if lvl < top:
                start[lvl] = torch.as_tensor(c).long()
        return self._run(start, levels, length, max(total, length),
                         self._items(z.shape[0], artist, genre, lyrics, items), resolved, progress, on_level_done,
                         alignment, loudness, total_source=source)


def check_loudness(loudness: Any) -> float:
    """A loudness target in LUFS: a number between -70 and 0."""
    if not _is_number(loudness) or not -70.0 < loudness < 0.0:
        raise UsageError(f"loudness must be a level in LUFS between -70 and 0 (e.g. -16), or None for the raw "
                         f"decode; got {loudness!r}")
    return float(loudness)


def default_model_path() -> Path | None:
    """The embedded default model shipped inside the package, if this install has one."""
    path = Path(__file__).parent / "assets" / "default_model"
    return path if (path / "model.json").exists() else None


def load_model(path_or_name: str | Path | None = None, device: str | torch.device | None = None,
               dtype: torch.dtype | None = None, low_memory: bool = False) -> Jukebox:
    """Load a model directory (or, with no argument or ``"default"``, the embedded default model)."""
    if path_or_name is None or str(path_or_name) == "default":
        path = default_model_path()
        if path is None:
            raise JukeboxError("this install has no embedded default model; pass a model directory "
                               "(see `jukebox import-openai` and `jukebox train`)")
    else:
        path = Path(path_or_name)
    return Jukebox(ModelDir(path), device=device, dtype=dtype, low_memory=low_memory)
