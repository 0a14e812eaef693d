"""A lyric top prior grown from a lyric-free top prior's weights, so that it plays music from its first step.

Both lyric styles keep every weight of the base prior in a layer of the same attention pattern and add layers whose
output projections (attention and MLP) start at zero, so an added layer is the identity until it trains:

* ``encoder_decoder`` (5b_lyrics style): ``attn_order`` 6 at depth ``D + D/3`` (block, transpose, prev-block,
  cross repeated): the base's D layers keep their order and patterns at the non-cross positions and a
  cross-attention layer over a new lyric encoder follows every third one. The grown prior's music logits equal the
  base prior's exactly at initialisation, whatever the lyrics.
* ``merged`` (1b_lyrics style): ``attn_order`` 12 at depth 16: the base's layers, new self-attention layers and
  the "prime" layer 15 (music attends to the lyric tokens); the sequence is ``n_tokens`` lyric characters then the
  codes. ``blocks`` keeps the base's block length, so the music keeps its block structure shifted by whole blocks;
  the code rows of the token embedding and output head and the music positions are the base's, the lyric rows
  are new. The transposed and previous-block layers also see the lyric blocks, so the start is close to the base
  prior, not equal to it.

Everything else (width, heads, context, codebook size, labels and their tables) is the base's. The base must use
``attn_order`` 2 (block, transpose, prev-block) with a depth divisible by 3, like every lyric-free top prior
preset.
"""

from __future__ import annotations

from ..data.text import lyric_vocab
from ..errors import UsageError
from ..nn.attention import layer_patterns
from ..prior import Prior
from ..prior.config import LyricsConfig, PriorConfig

__all__ = ["lyric_growth_config", "base_layer_positions", "grow_prior"]

_BLOCKS = "decoder.transformer.blocks."


def _lyric_version(config: PriorConfig) -> str:
    return "v3" if config.labels is not None and config.labels.version == 3 else "v2"


def _check_base(base: PriorConfig) -> None:
    t = base.transformer
    if base.lyrics.style != "none" or base.is_upsampler:
        raise UsageError("the base prior must be a lyric-free top-level prior; this one "
                         f"{'is an upsampler' if base.is_upsampler else 'already has lyrics'}: pick another base")
    if base.labels is None:
        raise UsageError("the base prior has no labels; a lyric prior reads its lyrics through them: pick another "
                         "base")
    if t.attn_order != 2 or t.depth % 3:
        raise UsageError(f"the base prior has attn_order {t.attn_order}, depth {t.depth}; growing it needs "
                         "attn_order 2 and a depth divisible by 3: pick another base or train the preset from scratch")


def lyric_growth_config(base: PriorConfig, lyrics: LyricsConfig) -> PriorConfig:
    """The config of the lyric prior grown from the lyric-free top prior config ``base`` with the lyric settings
    ``lyrics`` (its ``style``, ``n_tokens``, ``prime_loss_fraction`` and, for ``encoder_decoder``, ``encoder``;
    ``n_vocab`` is the lyric vocabulary of the base's label version). Everything else is the base's; the
    alignment layer is the last cross-attention (or the prime) layer, head 0. Raises :class:`UsageError` when the
    base cannot be grown so."""
    _check_base(base)
    t = base.transformer
    n_vocab = lyric_vocab(_lyric_version(base)).n_vocab
    if lyrics.style not in ("encoder_decoder", "merged"):
        raise UsageError(f"growing a prior needs a lyric preset (encoder_decoder or merged), not lyric style "
                         f"{lyrics.style!r}")
    if lyrics.n_tokens < 1:
        raise UsageError(f"the lyric window must have at least one character, got n_tokens {lyrics.n_tokens}")
    if lyrics.style == "encoder_decoder":
        if lyrics.encoder is None:
            raise UsageError("an encoder_decoder lyric preset needs a lyric encoder config")
        depth = t.depth + t.depth // 3
        new_t = t.replace(depth=depth, attn_order=6)
        align = depth - 1
    else:
        if t.depth > 15:
            raise UsageError(f"the merged style's prime layer is layer 15; the base prior has {t.depth} layers: use "
                             "an encoder_decoder preset (e.g. default_lyrics)")
        block_ctx = base.n_ctx // (t.blocks or 1)
        if lyrics.n_tokens % block_ctx:
            raise UsageError(f"the lyric window ({lyrics.n_tokens} characters) must be a multiple of the base's "
                             f"block length {block_ctx} so the music keeps its block structure")
        new_t = t.replace(depth=16, attn_order=12, blocks=(base.n_ctx + lyrics.n_tokens) // block_ctx)
        align = 15
    new_lyrics = LyricsConfig(style=lyrics.style, n_tokens=lyrics.n_tokens, n_vocab=n_vocab,
                              prime_loss_fraction=lyrics.prime_loss_fraction,
                              encoder=lyrics.encoder if lyrics.style == "encoder_decoder" else None)
    return base.replace(transformer=new_t, lyrics=new_lyrics, alignment_layer=align, alignment_head=0)


def base_layer_positions(base: PriorConfig, config: PriorConfig) -> list[int]:
    """For each decoder layer of the lyric-free prior config ``base``, its index in the grown prior of ``config``
    (layers of the same attention pattern). Raises :class:`UsageError` when ``config`` is not a growth of ``base``
    (see :func:`lyric_growth_config`)."""
    _check_base(base)
    t, nt = base.transformer, config.transformer
    if config.lyrics.style == "encoder_decoder":
        if nt.depth != t.depth + t.depth // 3 or nt.attn_order != 6:
            raise UsageError(f"an encoder_decoder growth of a {t.depth}-layer prior has {t.depth + t.depth // 3} "
                             f"layers with attn_order 6, not {nt.depth} with attn_order {nt.attn_order}")
        mapping = [i + i // 3 for i in range(t.depth)]  # base layer i -> after i // 3 inserted cross layers
    elif config.lyrics.style == "merged":
        if nt.depth != 16 or nt.attn_order != 12:
            raise UsageError(f"a merged growth has 16 layers with attn_order 12, not {nt.depth} with attn_order "
                             f"{nt.attn_order}")
        mapping = list(range(t.depth))
    else:
        raise UsageError("the grown prior's config has no lyrics")
    same = nt.replace(depth=t.depth, attn_order=t.attn_order, blocks=t.blocks) == t
    rest = config.replace(transformer=base.transformer, lyrics=base.lyrics, alignment_layer=base.alignment_layer,
                          alignment_head=base.alignment_head) == base
    if not (same and rest):
        raise UsageError("the lyric prior's config differs from the base prior's beyond its depth, attention "
                         "pattern, blocks, lyrics and alignment head; build it with lyric_growth_config")
    old_p, new_p = layer_patterns(t.attn_order, t.depth), layer_patterns(nt.attn_order, nt.depth)
    for i, j in enumerate(mapping):
        if old_p[i] != new_p[j]:
            raise UsageError(f"base layer {i} ({old_p[i]}) would land on layer {j} ({new_p[j]})")
    return mapping


def grow_prior(base: Prior, config: PriorConfig) -> Prior:
    """A new prior of ``config`` (a lyric growth of ``base``'s config: :func:`lyric_growth_config`) holding the
    weights of the lyric-free top prior ``base``: its decoder layers at :func:`base_layer_positions`, its label
    conditioner, embeddings and output head (``merged``: in the code rows and music positions). The lyric
    encoder, the added layers and the lyric rows are new, built from the global torch RNG (seed it first), the
    added layers' attention and MLP output projections at zero. Returns the prior in training mode, on the CPU,
    in float32. Raises :class:`UsageError` when ``config`` is not a growth of ``base.config``."""
    mapping = base_layer_positions(base.config, config)
    new = Prior(config)
    state = new.state_dict()
    n_vocab, n_tokens = config.lyrics.n_vocab, config.lyrics.n_tokens
    merged = config.lyrics.style == "merged"
    for k, v in base.state_dict().items():
        v = v.detach().float().cpu()
        target = k
        if k.startswith(_BLOCKS):
            i, rest = k[len(_BLOCKS):].split(".", 1)
            target = f"{_BLOCKS}{mapping[int(i)]}.{rest}"
        if target not in state:
            raise UsageError(f"the lyric prior has no weight {target} (from the base's {k})")
        dst = state[target]
        if merged and target in ("decoder.token_emb.weight", "decoder.head.weight"):
            dst[n_vocab:] = v  # codes come after the lyric characters
        elif merged and target == "decoder.pos_emb":
            dst[n_tokens:] = v  # music positions come after the lyric window
        elif dst.shape != v.shape:
            raise UsageError(f"{target}: shape {tuple(dst.shape)} in the lyric prior, {tuple(v.shape)} in the base")
        else:
            dst.copy_(v)
    for j in sorted(set(range(config.transformer.depth)) - set(mapping)):  # added layers start as the identity
        for part in ("attn.proj", "mlp.proj"):
            state[f"{_BLOCKS}{j}.{part}.weight"].zero_()
            state[f"{_BLOCKS}{j}.{part}.bias"].zero_()
    new.load_state_dict(state, strict=True)
    return new.train()
