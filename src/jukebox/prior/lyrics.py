"""5b_lyrics-style lyric encoder: a causal transformer over the lyric window whose projected, normalised states
feed the decoder's cross-attention layers; a head predicts the lyric characters (the ``prime_loss``).

The 1b_lyrics style needs no module of its own: lyric and music tokens form one sequence (see
:meth:`jukebox.prior.model.Prior.merged_sequence`).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from .autoregressive import AutoregressiveTransformer
from .config import TransformerConfig

__all__ = ["LyricEncoder"]


class LyricEncoder(nn.Module):
    """Lyric tokens [B, n_tokens] -> encoder states [B, n_tokens, out_width].

    ``head`` maps states to lyric-vocabulary logits; the state at position i has seen tokens < i only.
    """

    def __init__(self, config: TransformerConfig, n_tokens: int, n_vocab: int, out_width: int,
                 head_init_scale: float = 1.0) -> None:
        super().__init__()
        self.n_tokens, self.n_vocab = n_tokens, n_vocab
        self.encoder = AutoregressiveTransformer(n_vocab, n_tokens, config, start_token=True, head="none")
        self.proj = nn.Linear(config.width, out_width)
        nn.init.normal_(self.proj.weight, std=0.02 * config.init_scale)
        nn.init.zeros_(self.proj.bias)
        self.ln = nn.LayerNorm(out_width)
        self.head = nn.Linear(out_width, n_vocab, bias=False)
        nn.init.normal_(self.head.weight, std=0.02 * head_init_scale)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.ln(self.proj(self.encoder(tokens)))

    def loss(self, states: Tensor, tokens: Tensor) -> Tensor:
        """Per-item cross-entropy of the lyric characters in bits, [B]."""
        logits = self.head(states.to(self.head.weight.dtype)).float()  # the model's dtype (bf16 inference too)
        ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")  # [B, n_tokens]
        return ce.mean(dim=1) / math.log(2.0)
