"""Import OpenAI Jukebox VQ-VAE hyperparameters and weights.

- :func:`config_from_openai_hps` maps an original ``hps`` mapping (as in ``jukebox/hparams.py``) to a
  :class:`~jukebox.config.VQVAEConfig`; keys the mapping lacks take the original code's defaults.
- :func:`convert_openai_state_dict` renames an original state_dict (``encoders.L.level_blocks.I.model...``,
  ``decoders...``, ``bottleneck.level_blocks.L.k``) to ours through an explicit table, checks the shape of
  every tensor and reports missing / unexpected / mis-shaped keys as one :class:`~jukebox.errors.JukeboxError`.
  The codebook's EMA state, which the original keeps outside its state_dict, is rebuilt from ``k`` the way
  the original's ``restore_k`` does (sum = k, count = 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..config import VQVAEConfig
from ..errors import JukeboxError
from ..nn.conv import openai_decoder_block_keys, openai_encoder_block_keys
from .model import VQVAE

__all__ = ["OPENAI_DEFAULTS", "config_from_openai_hps", "openai_key_table", "convert_openai_state_dict",
           "vqvae_from_openai"]

#: Defaults of the original code (``DEFAULTS["vqvae"]``, ``["vqvae_conv_block"]``, ``["audio"]``) for the keys
#: that shape the VQ-VAE or its losses.
OPENAI_DEFAULTS: dict[str, Any] = {
    "sr": 44100,
    "levels": 2,
    "downs_t": (1, 1),
    "strides_t": (2, 2),
    "hvqvae_multipliers": None,
    "revival_threshold": 1.0,
    "emb_width": 64,
    "l_bins": 512,
    "l_mu": 0.99,
    "commit": 1.0,
    "spectral": 0.0,
    "multispectral": 1.0,
    "loss_fn": "l2",
    "linf_k": 2048,
    "lmix_l1": 0.0,
    "lmix_l2": 0.0,
    "lmix_linf": 0.0,
    "use_bottleneck": True,
    "depth": 3,
    "width": 128,
    "m_conv": 1.0,
    "dilation_growth_rate": 1,
    "dilation_cycle": None,
    "vqvae_reverse_decoder_dilation": True,
    "use_nonrelative_specloss": True,
    "multispec_loss_n_fft": (2048, 1024, 512),
    "multispec_loss_hop_length": (240, 120, 50),
    "multispec_loss_window_size": (1200, 600, 240),
}

# original hps name -> our VQVAEConfig field (same-valued fields; tuples and special cases handled below)
_HPS_TO_CONFIG = {
    "sr": "sample_rate", "levels": "levels", "emb_width": "emb_width", "l_bins": "l_bins", "l_mu": "mu",
    "revival_threshold": "revival_threshold", "commit": "commit", "spectral": "spectral",
    "multispectral": "multispectral", "loss_fn": "loss_fn", "linf_k": "linf_k", "lmix_l1": "lmix_l1",
    "lmix_l2": "lmix_l2", "lmix_linf": "lmix_linf", "width": "width", "depth": "depth", "m_conv": "m_conv",
    "dilation_growth_rate": "dilation_growth_rate", "dilation_cycle": "dilation_cycle",
    "vqvae_reverse_decoder_dilation": "reverse_decoder_dilation",
    "use_nonrelative_specloss": "use_nonrelative_specloss",
}
#: The hyper-parameters of OpenAI's released VQ-VAE (the original's ``vqvae`` registry entry); a checkpoint's
#: own ``hps`` entry overrides them.
OPENAI_RELEASED_HPS: dict[str, Any] = {
    "sr": 44100, "levels": 3, "downs_t": (3, 2, 2), "strides_t": (2, 2, 2), "emb_width": 64, "l_bins": 2048,
    "l_mu": 0.99, "commit": 0.02, "spectral": 0.0, "multispectral": 1.0, "hvqvae_multipliers": (2, 1, 1),
    "loss_fn": "lmix", "lmix_l2": 1.0, "lmix_linf": 0.02, "width": 32, "depth": 4, "m_conv": 1.0,
    "dilation_growth_rate": 3,
}

_TUPLES = {
    "downs_t": "downs_t", "strides_t": "strides_t", "multispec_loss_n_fft": "multispec_n_fft",
    "multispec_loss_hop_length": "multispec_hop_length", "multispec_loss_window_size": "multispec_window_size",
}


def config_from_openai_hps(hps: Mapping[str, Any], bandwidth: Mapping[str, float] | None = None) -> VQVAEConfig:
    """Original ``hps`` (a mapping, e.g. ``dict(hps)``) -> VQVAEConfig. Unrelated keys are ignored.

    ``bandwidth`` (keys l1, l2, spec) sets the loss normalisers; without it ``hps["bandwidth"]`` is used if
    present, else our defaults (1.0). Jukebox's single-resolution STFT (2048/256/1536) is fixed in its code,
    so ``hps["n_fft"]`` etc. are deliberately not read.
    """
    h = {**OPENAI_DEFAULTS, **{k: v for k, v in hps.items() if k in OPENAI_DEFAULTS or k == "bandwidth"}}
    if not h["use_bottleneck"]:
        raise JukeboxError("OpenAI VQ-VAE with use_bottleneck=False is not supported")
    kwargs: dict[str, Any] = {ours: h[theirs] for theirs, ours in _HPS_TO_CONFIG.items()}
    kwargs.update({ours: tuple(int(v) for v in h[theirs]) for theirs, ours in _TUPLES.items()})
    for key in ("mu", "revival_threshold", "commit", "spectral", "multispectral", "lmix_l1", "lmix_l2",
                "lmix_linf", "m_conv"):
        kwargs[key] = float(kwargs[key])
    levels = int(kwargs["levels"])
    mult = h["hvqvae_multipliers"]
    kwargs["multipliers"] = (1,) * levels if mult is None else tuple(int(m) for m in mult)
    bw = bandwidth if bandwidth is not None else h.get("bandwidth")
    if bw is not None:
        kwargs.update(bandwidth_l1=float(bw["l1"]), bandwidth_l2=float(bw["l2"]), bandwidth_spec=float(bw["spec"]))
    return VQVAEConfig(**kwargs)


def openai_key_table(config: VQVAEConfig) -> dict[str, str]:
    """Our parameter/buffer name -> original name, for every weight the original state_dict holds."""
    table: dict[str, str] = {}
    mult = config.multipliers if config.multipliers else (1,) * config.levels
    for level in range(config.levels):
        depth = config.depth * mult[level]
        for i in range(level + 1):
            down = config.downs_t[i]
            for ours, theirs in openai_encoder_block_keys(down, depth).items():
                table[f"encoders.{level}.blocks.{i}.{ours}"] = f"encoders.{level}.level_blocks.{i}.{theirs}"
            for ours, theirs in openai_decoder_block_keys(down, depth).items():
                table[f"decoders.{level}.blocks.{i}.{ours}"] = f"decoders.{level}.level_blocks.{i}.{theirs}"
        for p in ("weight", "bias"):
            table[f"decoders.{level}.out.{p}"] = f"decoders.{level}.out.{p}"
        table[f"codebooks.{level}.codebook"] = f"bottleneck.level_blocks.{level}.k"
    return table


def _expected_shapes(config: VQVAEConfig) -> dict[str, torch.Size]:
    with torch.device("meta"):
        model = VQVAE(config)
    return {k: v.shape for k, v in model.state_dict().items()}


def convert_openai_state_dict(sd: Mapping[str, Tensor], config: VQVAEConfig) -> dict[str, Tensor]:
    """Original VQ-VAE state_dict -> ours (loadable with ``load_state_dict(strict=True)``).

    Accepts a whole original checkpoint too (uses its ``"model"`` entry). Raises JukeboxError listing every
    missing, unexpected and mis-shaped key.
    """
    if "model" in sd and isinstance(sd["model"], Mapping):
        sd = sd["model"]
    table = openai_key_table(config)
    shapes = _expected_shapes(config)
    wanted = set(table.values())
    missing = sorted(theirs for theirs in table.values() if theirs not in sd)
    unexpected = sorted(k for k in sd if k not in wanted)
    misshaped = []
    out: dict[str, Tensor] = {}
    for ours, theirs in table.items():
        if theirs not in sd:
            continue
        value = sd[theirs]
        if not isinstance(value, Tensor) or value.shape != shapes[ours]:
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            misshaped.append(f"{theirs}: expected {tuple(shapes[ours])}, got {got}")
            continue
        out[ours] = value.detach().clone().float()
    if missing or unexpected or misshaped:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                more = " ..." if len(items) > 20 else ""
                parts.append(f"{title} ({len(items)}): " + ", ".join(items[:20]) + more)
        raise JukeboxError("OpenAI VQ-VAE state_dict does not match the config: " + "; ".join(parts))
    for level in range(config.levels):
        k = out[f"codebooks.{level}.codebook"]
        out[f"codebooks.{level}.ema_sum"] = k.clone()
        out[f"codebooks.{level}.ema_count"] = torch.ones(k.shape[0])
        out[f"codebooks.{level}.initialised"] = torch.tensor(True)
    leftover = set(shapes) - set(out)
    if leftover:  # the table must cover the model; a bug here is ours, not the user's
        raise AssertionError(f"rename table misses {sorted(leftover)}")
    return out


def vqvae_from_openai(sd: Mapping[str, Tensor], hps: Mapping[str, Any],
                      bandwidth: Mapping[str, float] | None = None) -> VQVAE:
    """Build a VQVAE from original hps and load the converted original weights (eval mode)."""
    config = config_from_openai_hps(hps, bandwidth)
    model = VQVAE(config)
    model.load_state_dict(convert_openai_state_dict(sd, config), strict=True)
    return model.eval()
