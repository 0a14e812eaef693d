"""Import of the original OpenAI Jukebox priors: hyper-parameters -> :class:`PriorConfig`, and an explicit
rename table from the original state-dict keys to ours with a shape check on every key.

The original's ``Conv1D`` stores ``w`` as [in, out]; our ``nn.Linear`` weights are [out, in] (transposed on
import). Released 5b tops keep those weights in fp16; they are cast to the target dtype (float32 by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..errors import JukeboxError
from ..nn.conv import openai_decoder_block_keys
from .config import LabelConfig, LyricsConfig, PriorConfig, TransformerConfig, UpsamplerConditionerConfig

__all__ = ["OPENAI_PRIOR_DEFAULTS", "OPENAI_RELEASED_HPS", "openai_preset_hps", "config_from_openai_hps",
           "openai_key_table", "plan_openai_conversion", "convert_tensor", "convert_openai_state_dict"]

#: The original's defaults (hparams.DEFAULTS) for every key a prior uses; the VQ-VAE keys default to the
#: released VQ-VAE (the original takes them from the VQ-VAE the prior is built with).
OPENAI_PRIOR_DEFAULTS: dict[str, Any] = {
    "sr": 44100, "levels": 3, "downs_t": (3, 2, 2), "strides_t": (2, 2, 2), "l_bins": 2048,
    "level": 0, "labels": True, "labels_v3": False, "y_bins": 0, "t_bins": 64, "max_bow_genre_size": None,
    "min_duration": None, "max_duration": None, "n_tokens": 0, "n_vocab": 0, "use_tokens": False,
    "copy_input": False, "merged_decoder": False, "single_enc_dec": False, "alignment_layer": None,
    "alignment_head": None, "fp16_params": False, "cond_levels": None, "y_cond_as_bias": False,
    # prior_attn_block
    "n_ctx": 1024, "prior_depth": 3, "prior_width": 128, "heads": 1, "attn_order": 0, "blocks": None,
    "spread": None, "attn_dropout": 0.0, "resid_dropout": 0.0, "emb_dropout": 0.0, "zero_out": False,
    "res_scale": False, "pos_init": False, "init_scale": 1.0, "m_attn": 0.25, "m_mlp": 1.0, "c_res": 0,
    # cond_conv_block
    "cond_depth": 3, "cond_width": 128, "cond_m_conv": 1.0, "cond_zero_out": False, "cond_res_scale": False,
    "cond_dilation_growth_rate": 1, "cond_dilation_cycle": None, "cond_c_res": 0,
    # prime
    "prime_loss_fraction": 0.1, "prime_depth": 3, "prime_width": 128, "prime_heads": 1, "prime_attn_order": 0,
    "prime_blocks": None, "prime_spread": None, "prime_attn_dropout": 0.0, "prime_resid_dropout": 0.0,
    "prime_emb_dropout": 0.0, "prime_zero_out": False, "prime_res_scale": False, "prime_pos_init": False,
    "prime_init_scale": 1.0, "prime_m_attn": 0.25, "prime_m_mlp": 1.0, "prime_c_res": 0,
}


_LABELS_V2 = {"y_bins": (120, 4111), "t_bins": 128, "max_bow_genre_size": 5, "n_vocab": 80}
_LABELS_V3 = {"y_bins": (604, 7898), "t_bins": 64, "max_bow_genre_size": 1, "n_vocab": 79, "labels_v3": True}
_UPSAMPLER = {"n_ctx": 8192, "prior_width": 1920, "prior_depth": 72, "heads": 1, "attn_order": 2, "blocks": 128,
              "init_scale": 0.4, "c_res": 1, "cond_width": 1024, "cond_depth": 16, "cond_dilation_growth_rate": 3,
              "cond_dilation_cycle": 8, "cond_c_res": 1, "use_tokens": False, "prime_loss_fraction": 0.0,
              "fp16_params": False, **_LABELS_V2}

#: The hyper-parameters of OpenAI's released priors (the original's hparams registry: upsampler_level_0/1,
#: prior_5b, prior_5b_lyrics, prior_1b_lyrics). A checkpoint's own ``hps`` entry overrides these.
OPENAI_RELEASED_HPS: dict[str, dict[str, Any]] = {
    "upsampler_level_0": {**_UPSAMPLER, "level": 0},
    "upsampler_level_1": {**_UPSAMPLER, "level": 1, "cond_res_scale": True},
    "5b": {"level": 2, "n_ctx": 8192, "prior_width": 4800, "prior_depth": 72, "heads": 8, "attn_order": 2,
           "blocks": 128, "init_scale": 0.1, "c_res": 1, "min_duration": 60.0, "max_duration": 600.0,
           "use_tokens": False, "n_tokens": 0, "prime_loss_fraction": 0.0, "merged_decoder": True,
           "fp16_params": True, **_LABELS_V2},
    "5b_lyrics": {"level": 2, "n_ctx": 8192, "prior_width": 4800, "prior_depth": 79, "heads": 8, "attn_order": 10,
                  "blocks": 128, "init_scale": 0.1, "c_res": 1, "prime_width": 1280, "prime_depth": 18,
                  "prime_heads": 4, "prime_attn_order": 2, "prime_blocks": 32, "prime_init_scale": 0.7,
                  "prime_c_res": 1, "min_duration": 23.8, "max_duration": 600.0, "use_tokens": True,
                  "n_tokens": 512, "prime_loss_fraction": 0.4, "merged_decoder": True, "fp16_params": True,
                  "alignment_layer": 68, "alignment_head": 2, **_LABELS_V2},
    "1b_lyrics": {"level": 2, "n_ctx": 6144, "prior_width": 2048, "prior_depth": 72, "heads": 2, "attn_order": 12,
                  "blocks": 64, "init_scale": 0.2, "c_res": 1, "min_duration": 17.84, "max_duration": 600.0,
                  "use_tokens": True, "n_tokens": 384, "prime_loss_fraction": 0.4, "single_enc_dec": True,
                  "fp16_params": False, "alignment_layer": 63, "alignment_head": 0, **_LABELS_V3},
}


def openai_preset_hps(kind: str) -> dict[str, Any]:
    """The released hps of ``kind`` (``upsampler_level_0``, ``upsampler_level_1``, ``5b``, ``5b_lyrics``,
    ``1b_lyrics``)."""
    try:
        return dict(OPENAI_RELEASED_HPS[kind])
    except KeyError:
        raise JukeboxError(f"unknown released prior {kind!r}; choose one of {sorted(OPENAI_RELEASED_HPS)}") from None


def config_from_openai_hps(hps: Mapping[str, Any], vqvae_hps: Mapping[str, Any] | None = None) -> PriorConfig:
    """Build a :class:`PriorConfig` from the original's hps (missing keys take the original defaults).

    ``vqvae_hps`` supplies ``levels``, ``downs_t``, ``strides_t``, ``l_bins`` when ``hps`` lacks them.
    """
    h = dict(OPENAI_PRIOR_DEFAULTS)
    for k in ("levels", "downs_t", "strides_t", "l_bins"):
        if vqvae_hps is not None and k in vqvae_hps:
            h[k] = vqvae_hps[k]
    h.update(hps)
    unsupported = {"spread": None, "prime_spread": None, "pos_init": False, "prime_pos_init": False,
                   "copy_input": False, "cond_levels": None, "y_cond_as_bias": False}
    bad = {k: h[k] for k, v in unsupported.items() if h[k] != v}
    if bad:
        raise JukeboxError(f"unsupported Jukebox prior hyper-parameters: {bad}")

    def transformer(prefix: str, width_key: str, depth_key: str, heads_key: str) -> TransformerConfig:
        return TransformerConfig(
            width=int(h[width_key]), depth=int(h[depth_key]), heads=int(h[heads_key]),
            attn_order=int(h[f"{prefix}attn_order"]), blocks=h[f"{prefix}blocks"],
            m_attn=float(h[f"{prefix}m_attn"]), m_mlp=float(h[f"{prefix}m_mlp"]),
            init_scale=float(h[f"{prefix}init_scale"]), zero_out=bool(h[f"{prefix}zero_out"]),
            res_scale=bool(h[f"{prefix}res_scale"]), attn_dropout=float(h[f"{prefix}attn_dropout"]),
            resid_dropout=float(h[f"{prefix}resid_dropout"]), emb_dropout=float(h[f"{prefix}emb_dropout"]),
            checkpoint=bool(h[f"{prefix}c_res"]))

    levels, level = int(h["levels"]), int(h["level"])
    labels = None
    if h["labels"]:
        genre_bins, artist_bins = h["y_bins"]
        labels = LabelConfig(genre_bins=int(genre_bins), artist_bins=int(artist_bins),
                             max_bow_genre_size=int(h["max_bow_genre_size"]), t_bins=int(h["t_bins"]),
                             sample_rate=int(h["sr"]), min_duration=h["min_duration"],
                             max_duration=h["max_duration"], version=3 if h["labels_v3"] else 2)
    upsampler = None
    if level != levels - 1:
        upsampler = UpsamplerConditionerConfig(
            width=int(h["cond_width"]), depth=int(h["cond_depth"]), m_conv=float(h["cond_m_conv"]),
            dilation_growth_rate=int(h["cond_dilation_growth_rate"]), dilation_cycle=h["cond_dilation_cycle"],
            zero_out=bool(h["cond_zero_out"]), res_scale=bool(h["cond_res_scale"]), checkpoint=bool(h["cond_c_res"]))
    n_tokens = int(h["n_tokens"])
    if h["single_enc_dec"]:
        style, encoder = "merged", None
    elif h["use_tokens"] and n_tokens > 0:
        style = "encoder_decoder"
        encoder = transformer("prime_", "prime_width", "prime_depth", "prime_heads")
    else:
        style, encoder = "none", None
    lyrics = LyricsConfig(style=style, n_tokens=n_tokens, n_vocab=int(h["n_vocab"]),
                          prime_loss_fraction=float(h["prime_loss_fraction"]) if style != "none" else 0.0,
                          encoder=encoder)
    return PriorConfig(
        level=level, n_ctx=int(h["n_ctx"]), l_bins=int(h["l_bins"]), levels=levels,
        downs_t=tuple(int(d) for d in h["downs_t"]), strides_t=tuple(int(s) for s in h["strides_t"]),
        transformer=transformer("", "prior_width", "prior_depth", "heads"), labels=labels, upsampler=upsampler,
        lyrics=lyrics, merged_decoder=bool(h["merged_decoder"]), alignment_layer=h["alignment_layer"],
        alignment_head=h["alignment_head"], fp16_params=bool(h["fp16_params"]))


# --- rename table ---------------------------------------------------------------------------------------------

def _ar_keys(ours: str, theirs: str, tcfg: TransformerConfig, patterns: tuple[str, ...], *, start_token: bool,
             head: bool) -> dict[str, tuple[str, bool]]:
    out: dict[str, tuple[str, bool]] = {
        f"{ours}.token_emb.weight": (f"{theirs}.x_emb.weight", False),
        f"{ours}.pos_emb": (f"{theirs}.pos_emb.pos_emb", False),
    }
    if start_token:
        out[f"{ours}.start_token"] = (f"{theirs}.start_token", False)
    for i, pattern in enumerate(patterns):
        o, t = f"{ours}.transformer.blocks.{i}", f"{theirs}.transformer._attn_mods.{i}"
        q = "q" if pattern == "cross" else "qkv"
        out[f"{o}.attn.{q}.weight"] = (f"{t}.attn.c_attn.w", True)
        out[f"{o}.attn.{q}.bias"] = (f"{t}.attn.c_attn.b", False)
        if pattern == "cross":
            out[f"{o}.attn.kv.weight"] = (f"{t}.attn.c_enc_kv.w", True)
            out[f"{o}.attn.kv.bias"] = (f"{t}.attn.c_enc_kv.b", False)
        out[f"{o}.attn.proj.weight"] = (f"{t}.attn.c_proj.w", True)
        out[f"{o}.attn.proj.bias"] = (f"{t}.attn.c_proj.b", False)
        for ln_ours, ln_theirs in (("norm_attn", "ln_0"), ("norm_mlp", "ln_1")):
            out[f"{o}.{ln_ours}.weight"] = (f"{t}.{ln_theirs}.weight", False)
            out[f"{o}.{ln_ours}.bias"] = (f"{t}.{ln_theirs}.bias", False)
        for lin_ours, lin_theirs in (("fc", "c_fc"), ("proj", "c_proj")):
            out[f"{o}.mlp.{lin_ours}.weight"] = (f"{t}.mlp.{lin_theirs}.w", True)
            out[f"{o}.mlp.{lin_ours}.bias"] = (f"{t}.mlp.{lin_theirs}.b", False)
    if head:
        out[f"{ours}.head.weight"] = (f"{theirs}.x_out.weight", False)
    return out


def openai_key_table(config: PriorConfig) -> dict[str, tuple[str, bool]]:
    """Our state-dict key -> (original key, transpose?) for a prior of this config."""
    from ..nn.attention import layer_patterns

    c = config
    table: dict[str, tuple[str, bool]] = {}
    if c.upsampler is not None:
        table["upsampler_conditioner.token_emb.weight"] = ("conditioner_blocks.0.x_emb.weight", False)
        down_t = c.downs_t[c.level + 1]
        for ours, theirs in openai_decoder_block_keys(down_t, c.upsampler.depth, c.upsampler.checkpoint).items():
            table[f"upsampler_conditioner.stack.{ours}"] = (f"conditioner_blocks.0.cond.{theirs}", False)
        for p in ("weight", "bias"):
            table[f"upsampler_conditioner.ln.{p}"] = (f"conditioner_blocks.0.ln.{p}", False)
    if c.labels is not None:
        names = [("genre_emb", "bow_genre_emb"), ("artist_emb", "artist_emb")]
        table.update({f"label_conditioner.{o}.weight": (f"y_emb.{t}.emb.weight", False) for o, t in names})
        if c.has_timing:
            for name in ("total_length_emb", "absolute_pos_emb", "relative_pos_emb"):
                table[f"label_conditioner.{name}.emb.weight"] = (f"y_emb.{name}.emb.weight", False)
    if c.lyrics.style == "encoder_decoder":
        enc = c.lyrics.encoder
        table.update(_ar_keys("lyric_encoder.encoder", "prime_prior", enc, layer_patterns(enc.attn_order, enc.depth),
                              start_token=True, head=False))
        table["lyric_encoder.proj.weight"] = ("prime_state_proj.w", True)
        table["lyric_encoder.proj.bias"] = ("prime_state_proj.b", False)
        table["lyric_encoder.ln.weight"] = ("prime_state_ln.weight", False)
        table["lyric_encoder.ln.bias"] = ("prime_state_ln.bias", False)
        table["lyric_encoder.head.weight"] = ("prime_x_out.weight", False)
    t = c.transformer
    table.update(_ar_keys("decoder", "prior", t, layer_patterns(t.attn_order, t.depth), start_token=c.labels is None,
                          head=True))
    return table


def _expected_shapes(config: PriorConfig) -> dict[str, tuple[int, ...]]:
    from .model import Prior

    with torch.device("meta"):
        model = Prior(config)
    return {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}


def plan_openai_conversion(state_dict: Mapping[str, Tensor], config: PriorConfig) -> dict[str, tuple[str, bool]]:
    """Check an original prior state dict against ``config`` without touching tensor data.

    Returns {our key: (original key as found in ``state_dict``, transpose?)}. Raises :class:`JukeboxError`
    listing missing, unexpected and mis-shaped keys (``module.`` prefixes are allowed).
    """
    keys = {(k[7:] if k.startswith("module.") else k): k for k in state_dict}
    table = openai_key_table(config)
    expected = _expected_shapes(config)
    problems: list[str] = []
    missing_in_table = sorted(set(expected) - set(table))
    if missing_in_table:  # a bug in the table itself
        problems.append(f"no rename rule for our keys {missing_in_table}")
    plan: dict[str, tuple[str, bool]] = {}
    used: set[str] = set()
    missing: list[str] = []
    for ours, (theirs, transpose) in table.items():
        if theirs not in keys:
            missing.append(theirs)
            continue
        used.add(theirs)
        shape = tuple(state_dict[keys[theirs]].shape)
        if transpose:
            shape = shape[::-1]
        want = expected.get(ours)
        if want is None:
            problems.append(f"rename rule for unknown key {ours}")
            continue
        if shape != want:
            shown = tuple(state_dict[keys[theirs]].shape)
            problems.append(f"{theirs}: shape {shown} does not fit {ours} {want}" + (" (after transpose)"
                                                                                      if transpose else ""))
            continue
        plan[ours] = (keys[theirs], transpose)
    unexpected = sorted(set(keys) - used)
    if missing:
        problems.append(f"missing keys {sorted(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if problems:
        raise JukeboxError("OpenAI prior state dict does not match the config: " + "; ".join(problems))
    return plan


def convert_tensor(tensor: Tensor, transpose: bool, dtype: torch.dtype = torch.float32) -> Tensor:
    """One original tensor in our layout (Conv1D weights transposed) and ``dtype``."""
    return (tensor.t() if transpose else tensor).detach().to(dtype).contiguous()


def convert_openai_state_dict(state_dict: Mapping[str, Tensor], config: PriorConfig,
                              dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """Rename an original prior state dict (keys as saved, ``module.`` prefixes allowed) to ours.

    Every tensor is shape-checked against the model ``config`` builds and cast to ``dtype``. Raises
    :class:`JukeboxError` listing missing, unexpected and mis-shaped keys. (For large checkpoints, use
    :func:`plan_openai_conversion` and convert tensor by tensor.)
    """
    plan = plan_openai_conversion(state_dict, config)
    return {ours: convert_tensor(state_dict[theirs], transpose, dtype) for ours, (theirs, transpose) in plan.items()}
