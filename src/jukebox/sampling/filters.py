"""Logit filters and categorical draws: they live with the prior's sampler (:mod:`jukebox.prior.logits`) and are
re-exported here under their former home."""

from ..prior.logits import DRAWS, categorical_cdf, draw_tokens, filter_logits

__all__ = ["DRAWS", "categorical_cdf", "draw_tokens", "filter_logits"]
