"""Jukebox priors: the top-level prior (labels, timing, lyrics) and the upsamplers."""

from .config import PRIOR_PRESETS, PriorConfig, prior_preset
from .model import Prior
from .openai import config_from_openai_hps, convert_openai_state_dict

__all__ = ["PRIOR_PRESETS", "Prior", "PriorConfig", "config_from_openai_hps", "convert_openai_state_dict",
           "prior_preset"]
