"""Frozen configuration of a Jukebox prior (top level or upsampler) and the named presets.

Full-size presets carry every hyper-parameter of the released models (``upsampler_level_0``,
``upsampler_level_1``, ``5b``, ``5b_lyrics``, ``1b_lyrics``); ``tiny_top``/``tiny_upsampler``/
``tiny_lyrics`` build in milliseconds for tests. Configs of the original's hps dicts come from
:func:`jukebox.prior.openai.config_from_openai_hps`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ConfigBase
from ..errors import JukeboxError

__all__ = [
    "TransformerConfig",
    "LabelConfig",
    "UpsamplerConditionerConfig",
    "LyricsConfig",
    "PriorConfig",
    "PRIOR_PRESETS",
    "prior_preset",
]

LYRIC_STYLES = ("none", "encoder_decoder", "merged")


@dataclass(frozen=True)
class TransformerConfig(ConfigBase):
    """Transformer stack (original hps: prior_width, prior_depth, heads, attn_order, blocks, ...)."""

    width: int = 128
    depth: int = 3
    heads: int = 1
    attn_order: int = 0
    blocks: int | None = None
    m_attn: float = 0.25
    m_mlp: float = 1.0
    init_scale: float = 1.0
    zero_out: bool = False
    res_scale: bool = False
    attn_dropout: float = 0.0
    resid_dropout: float = 0.0
    emb_dropout: float = 0.0
    #: Activation checkpointing per block while training (original ``c_res``).
    checkpoint: bool = False


@dataclass(frozen=True)
class LabelConfig(ConfigBase):
    """Artist / genre / timing conditioning (original y_bins=(genre_bins, artist_bins), t_bins, ...)."""

    genre_bins: int = 120
    artist_bins: int = 4111
    max_bow_genre_size: int = 5
    t_bins: int = 128
    sample_rate: int = 44100
    #: Timing range in seconds; only used by top-level priors (upsamplers have no timing signal).
    min_duration: float | None = None
    max_duration: float | None = None
    #: Artist/genre id tables and lyric vocabulary version (2: 5b/5b_lyrics/upsamplers, 3: 1b_lyrics).
    version: int = 2
    #: Not in the original: also add the artist/genre embedding (through a zero-initialised W x W projection) to
    #: every position, not only as the start token, so the label reaches every window position directly.
    every_position: bool = False
    #: Not in the original: a tempo label and the beat phase at every position (top-level priors). ``y`` then
    #: holds two more label entries after the genres: the tempo in hundredths of a BPM (0: no steady pulse) and the
    #: time of a beat in samples (``beat0``): the beat grid is ``beat0 + k * 60 * sample_rate / bpm`` samples.
    #: The tempo is embedded in ``tempo_bins`` log-spaced bins over [min_bpm, max_bpm], the phase within the beat
    #: in ``phase_bins`` bins; both embeddings start at zero, so a prior gains the option without changing its output.
    tempo: bool = False
    tempo_bins: int = 64
    min_bpm: float = 40.0
    max_bpm: float = 240.0
    phase_bins: int = 48

    def __post_init__(self) -> None:
        if self.tempo and not (0 < self.min_bpm < self.max_bpm and self.tempo_bins >= 1 and self.phase_bins >= 2):
            raise JukeboxError(f"invalid tempo conditioning: bpm range [{self.min_bpm}, {self.max_bpm}], "
                               f"{self.tempo_bins} tempo bins, {self.phase_bins} phase bins")

    @property
    def n_tempo(self) -> int:
        """Label entries the tempo takes in ``y`` (2 with tempo conditioning, else 0)."""
        return 2 if self.tempo else 0


@dataclass(frozen=True)
class UpsamplerConditionerConfig(ConfigBase):
    """Conditioner on the upper level's codes (original cond_width, cond_depth, ...)."""

    width: int = 1024
    depth: int = 16
    m_conv: float = 1.0
    dilation_growth_rate: int = 3
    dilation_cycle: int | None = 8
    zero_out: bool = False
    res_scale: bool = False
    #: Original ``cond_c_res``: also decides the checkpoint key names (``blocks`` vs ``model``).
    checkpoint: bool = True


@dataclass(frozen=True)
class LyricsConfig(ConfigBase):
    """Lyric conditioning. ``style``: ``none``; ``encoder_decoder`` (5b_lyrics: a lyric encoder whose states
    feed cross-attention layers); ``merged`` (1b_lyrics: one sequence of lyric tokens then music tokens)."""

    style: str = "none"
    #: Lyric characters in the label vector y (also present, unused, for style ``none``).
    n_tokens: int = 0
    n_vocab: int = 80
    prime_loss_fraction: float = 0.0
    #: The lyric encoder's transformer (``encoder_decoder`` only).
    encoder: TransformerConfig | None = None


@dataclass(frozen=True)
class PriorConfig(ConfigBase):
    """One level's prior: p(z_level | upper codes, labels, lyrics)."""

    level: int = 2
    n_ctx: int = 8192
    l_bins: int = 2048
    levels: int = 3
    downs_t: tuple[int, ...] = (3, 2, 2)
    strides_t: tuple[int, ...] = (2, 2, 2)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    labels: LabelConfig | None = field(default_factory=LabelConfig)
    upsampler: UpsamplerConditionerConfig | None = None
    lyrics: LyricsConfig = field(default_factory=LyricsConfig)
    #: Original ``merged_decoder`` (5b tops): untied output head and no conditioning added after the stack.
    merged_decoder: bool = False
    alignment_layer: int | None = None
    alignment_head: int | None = None
    #: The released checkpoint stores its projection weights in fp16 (cast on import).
    fp16_params: bool = False

    def __post_init__(self) -> None:
        if self.lyrics.style not in LYRIC_STYLES:
            raise JukeboxError(f"lyrics.style must be one of {LYRIC_STYLES}, got {self.lyrics.style!r}")
        if not 0 <= self.level < self.levels:
            raise JukeboxError(f"level {self.level} outside 0..{self.levels - 1}")
        if self.is_upsampler and self.upsampler is None:
            raise JukeboxError(f"level {self.level} prior needs an upsampler conditioner config")
        if self.lyrics.style == "encoder_decoder" and self.lyrics.encoder is None:
            raise JukeboxError("encoder_decoder lyrics need lyrics.encoder")
        if self.lyrics.style != "none" and self.lyrics.n_tokens <= 0:
            raise JukeboxError("lyric conditioning needs lyrics.n_tokens > 0")
        if self.is_upsampler and self.lyrics.style != "none":
            raise JukeboxError("upsamplers do not take lyrics")
        if self.is_upsampler and self.labels is not None and self.labels.tempo:
            raise JukeboxError("tempo conditioning is for top-level priors (it rides on the timing signal)")

    # --- derived quantities ---------------------------------------------------------------------------------
    @property
    def is_upsampler(self) -> bool:
        return self.level != self.levels - 1

    @property
    def hop_lengths(self) -> tuple[int, ...]:
        out, acc = [], 1
        for down, stride in zip(self.downs_t, self.strides_t):
            acc *= stride**down
            out.append(acc)
        return tuple(out)

    @property
    def raw_to_tokens(self) -> int:
        """Audio samples per code at this level (8, 32, 128 for the released VQ-VAE)."""
        return self.hop_lengths[self.level]

    @property
    def sample_length(self) -> int:
        """Audio samples covered by one context window."""
        return self.n_ctx * self.raw_to_tokens

    @property
    def cond_downsample(self) -> int | None:
        """Codes of this level per code of the level above (upsamplers)."""
        if not self.is_upsampler:
            return None
        return self.strides_t[self.level + 1] ** self.downs_t[self.level + 1]

    @property
    def n_labels(self) -> int:
        """Leading label entries of y (total_length, offset, sample_length, artist, genres[, bpm x 100, beat0])."""
        return 4 + (self.labels.max_bow_genre_size + self.labels.n_tempo if self.labels else 0)

    @property
    def y_len(self) -> int:
        return self.n_labels + self.lyrics.n_tokens

    @property
    def has_timing(self) -> bool:
        return self.labels is not None and not self.is_upsampler

    @property
    def seq_len(self) -> int:
        """Transformer sequence length (lyrics + music for the merged style)."""
        return self.n_ctx + (self.lyrics.n_tokens if self.lyrics.style == "merged" else 0)

    @property
    def bins(self) -> int:
        """Decoder vocabulary (lyric characters then codes for the merged style)."""
        return self.l_bins + (self.lyrics.n_vocab if self.lyrics.style == "merged" else 0)


def _upsampler(level: int) -> PriorConfig:
    return PriorConfig(
        level=level,
        n_ctx=8192,
        transformer=TransformerConfig(width=1920, depth=72, heads=1, attn_order=2, blocks=128, init_scale=0.4,
                                      checkpoint=True),
        labels=LabelConfig(),
        upsampler=UpsamplerConditionerConfig(res_scale=level == 1),
        lyrics=LyricsConfig(n_vocab=80),
    )


_V3 = LabelConfig(genre_bins=604, artist_bins=7898, max_bow_genre_size=1, t_bins=64, min_duration=17.84,
                  max_duration=600.0, version=3)


#: Labels of the embedded default model's priors (22.05 kHz, v3 lyric vocabulary); the top level also bounds durations.
_DEFAULT_UP_LABELS = LabelConfig(genre_bins=16, artist_bins=128, max_bow_genre_size=1, t_bins=64, sample_rate=22050,
                                 version=3)
_DEFAULT_TOP_LABELS = _DEFAULT_UP_LABELS.replace(min_duration=10.0, max_duration=900.0)

PRIOR_PRESETS: dict[str, PriorConfig] = {
    "upsampler_level_0": _upsampler(0),
    "upsampler_level_1": _upsampler(1),
    "5b": PriorConfig(
        level=2,
        n_ctx=8192,
        transformer=TransformerConfig(width=4800, depth=72, heads=8, attn_order=2, blocks=128, init_scale=0.1,
                                      checkpoint=True),
        labels=LabelConfig(min_duration=60.0, max_duration=600.0),
        merged_decoder=True,
        fp16_params=True,
    ),
    "5b_lyrics": PriorConfig(
        level=2,
        n_ctx=8192,
        transformer=TransformerConfig(width=4800, depth=79, heads=8, attn_order=10, blocks=128, init_scale=0.1,
                                      checkpoint=True),
        labels=LabelConfig(min_duration=23.8, max_duration=600.0),
        lyrics=LyricsConfig(
            style="encoder_decoder", n_tokens=512, n_vocab=80, prime_loss_fraction=0.4,
            encoder=TransformerConfig(width=1280, depth=18, heads=4, attn_order=2, blocks=32, init_scale=0.7,
                                      checkpoint=True),
        ),
        merged_decoder=True,
        alignment_layer=68,
        alignment_head=2,
        fp16_params=True,
    ),
    "1b_lyrics": PriorConfig(
        level=2,
        n_ctx=6144,
        transformer=TransformerConfig(width=2048, depth=72, heads=2, attn_order=12, blocks=64, init_scale=0.2,
                                      checkpoint=True),
        labels=_V3,
        lyrics=LyricsConfig(style="merged", n_tokens=384, n_vocab=79, prime_loss_fraction=0.4),
        alignment_layer=63,
        alignment_head=0,
    ),
    # The embedded default model (22.05 kHz, ~30 MB in fp16 with its VQ-VAE): a 6 s top context, small upsamplers.
    "default_top": PriorConfig(
        level=2,
        n_ctx=1024,
        transformer=TransformerConfig(width=384, depth=12, heads=4, attn_order=2, blocks=16, init_scale=0.2),
        labels=_DEFAULT_TOP_LABELS,
    ),
    "default_upsampler_level_1": PriorConfig(
        level=1,
        n_ctx=1024,
        transformer=TransformerConfig(width=256, depth=8, heads=2, attn_order=2, blocks=16, init_scale=0.4),
        labels=_DEFAULT_UP_LABELS,
        upsampler=UpsamplerConditionerConfig(width=128, depth=4, dilation_cycle=4, res_scale=True),
    ),
    "default_upsampler_level_0": PriorConfig(
        level=0,
        n_ctx=1024,
        transformer=TransformerConfig(width=256, depth=8, heads=2, attn_order=2, blocks=16, init_scale=0.4),
        labels=_DEFAULT_UP_LABELS,
        upsampler=UpsamplerConditionerConfig(width=128, depth=4, dilation_cycle=4),
    ),
    # Faster upsamplers for the embedded model's hierarchy: two fewer layers and half the context (0.74 s at level 1,
    # 0.19 s at level 0), so parallel upsampling runs half the sequential steps per level on a CPU.
    "default_fast_upsampler_level_1": PriorConfig(
        level=1,
        n_ctx=512,
        transformer=TransformerConfig(width=256, depth=6, heads=2, attn_order=2, blocks=16, init_scale=0.4),
        labels=_DEFAULT_UP_LABELS,
        upsampler=UpsamplerConditionerConfig(width=128, depth=4, dilation_cycle=4, res_scale=True),
    ),
    "default_fast_upsampler_level_0": PriorConfig(
        level=0,
        n_ctx=512,
        transformer=TransformerConfig(width=256, depth=6, heads=2, attn_order=2, blocks=16, init_scale=0.4),
        labels=_DEFAULT_UP_LABELS,
        upsampler=UpsamplerConditionerConfig(width=128, depth=4, dilation_cycle=4),
    ),
    # Lyric top priors in the default model's size class (research/lyrics.md): default_top's decoder and
    # labels (v3: 79 lyric characters) plus lyrics. ``default_lyrics`` (5b_lyrics style): attn_order 6 makes
    # every 4th layer cross-attention over a dense 4-layer lyric encoder (layers 3, 7, 11); 6.96 M parameters.
    # ``default_merged`` (1b_lyrics style): 128 lyric characters before the 1024 codes; attn_order 12 has its
    # "prime" layer (music over the lyric tokens) at layer 15, hence depth 16; 8.51 M parameters. 128 characters
    # span ~20 s of these songs' lyrics around the window's proportional position (a window is 5.9 s). The
    # alignment head is a placeholder until a trained model shows which head aligns (research/scripts/eval_lyrics.py
    # alignment scores them all).
    "default_lyrics": PriorConfig(
        level=2,
        n_ctx=1024,
        transformer=TransformerConfig(width=384, depth=12, heads=4, attn_order=6, blocks=16, init_scale=0.2),
        labels=_DEFAULT_TOP_LABELS,
        lyrics=LyricsConfig(style="encoder_decoder", n_tokens=128, n_vocab=79, prime_loss_fraction=0.4,
                            encoder=TransformerConfig(width=128, depth=4, heads=2, attn_order=0, init_scale=0.7)),
        alignment_layer=11,
        alignment_head=0,
    ),
    "default_merged": PriorConfig(
        level=2,
        n_ctx=1024,
        transformer=TransformerConfig(width=384, depth=16, heads=4, attn_order=12, blocks=16, init_scale=0.2),
        labels=_DEFAULT_TOP_LABELS,
        lyrics=LyricsConfig(style="merged", n_tokens=128, n_vocab=79, prime_loss_fraction=0.4),
        alignment_layer=15,
        alignment_head=0,
    ),
    # Tiny shapes for tests (built in milliseconds on CPU).
    "tiny_top": PriorConfig(
        level=2,
        n_ctx=32,
        l_bins=64,
        transformer=TransformerConfig(width=32, depth=3, heads=2, attn_order=2, blocks=4),
        labels=LabelConfig(genre_bins=10, artist_bins=10, max_bow_genre_size=2, t_bins=16, min_duration=0.1,
                           max_duration=20.0),
    ),
    "tiny_upsampler": PriorConfig(
        level=1,
        n_ctx=32,
        l_bins=64,
        transformer=TransformerConfig(width=32, depth=3, heads=1, attn_order=2, blocks=4),
        labels=LabelConfig(genre_bins=10, artist_bins=10, max_bow_genre_size=2, t_bins=16),
        upsampler=UpsamplerConditionerConfig(width=16, depth=2, dilation_cycle=8),
    ),
    "tiny_lyrics": PriorConfig(
        level=2,
        n_ctx=32,
        l_bins=64,
        transformer=TransformerConfig(width=32, depth=10, heads=2, attn_order=8, blocks=4),
        labels=LabelConfig(genre_bins=10, artist_bins=10, max_bow_genre_size=2, t_bins=16, min_duration=0.1,
                           max_duration=20.0),
        lyrics=LyricsConfig(style="encoder_decoder", n_tokens=8, n_vocab=80, prime_loss_fraction=0.4,
                            encoder=TransformerConfig(width=16, depth=2, heads=2, attn_order=2, blocks=2)),
        merged_decoder=True,
        alignment_layer=9,
        alignment_head=0,
    ),
    "tiny_merged": PriorConfig(
        level=2,
        n_ctx=32,
        l_bins=64,
        transformer=TransformerConfig(width=32, depth=16, heads=2, attn_order=12, blocks=5),
        labels=LabelConfig(genre_bins=10, artist_bins=10, max_bow_genre_size=1, t_bins=16, min_duration=0.1,
                           max_duration=20.0, version=3),
        lyrics=LyricsConfig(style="merged", n_tokens=8, n_vocab=79, prime_loss_fraction=0.4),
        alignment_layer=15,
        alignment_head=0,
    ),
}
# The embedded upsamplers with a conditioner twice as wide and twice as deep (256 x 8: two dilation cycles, 161
# upper-level tokens of receptive field; 7.9 M parameters against 3.8 M): more capacity for what the upper codes carry
# at little sampling cost (the conditioner runs once per window, in parallel; the sequential transformer is the
# shipped one's).
for _level in (1, 0):
    _shipped = PRIOR_PRESETS[f"default_upsampler_level_{_level}"]
    PRIOR_PRESETS[f"default_wide_upsampler_level_{_level}"] = _shipped.replace(
        upsampler=_shipped.upsampler.replace(width=256, depth=8, res_scale=True))
del _level, _shipped


def prior_preset(name: str) -> PriorConfig:
    """A named prior preset (released shapes or ``tiny_*``)."""
    try:
        return PRIOR_PRESETS[name]
    except KeyError:
        raise JukeboxError(f"unknown prior preset {name!r}; choose one of {sorted(PRIOR_PRESETS)}") from None

