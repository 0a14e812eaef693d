"""Vector-quantisation bottleneck with an EMA-updated codebook (one :class:`Codebook` per level).

Maths follows Jukebox: nearest-code lookup by squared Euclidean distance, straight-through gradients, a
commitment loss, codebook updated by exponential moving averages of assigned encoder outputs, initialised
from random encoder outputs on the first training batch, and dead codes (EMA usage below a threshold)
restarted from random encoder outputs.

The codebook state lives in buffers so it follows ``.to(device)`` and is saved in the state_dict:
``codebook`` [K, D], ``ema_sum`` [K, D], ``ema_count`` [K], ``initialised`` (bool scalar).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Codebook"]

#: Row block size of the nearest-code search: small on CPU (the [rows, K] distances stay in cache), large on
#: accelerators (few kernel launches, bounded memory).
QUANTISE_ROWS = 1024
QUANTISE_ROWS_ACCEL = 32768


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class Codebook(nn.Module):
    """One level's codebook of ``bins`` vectors of size ``width``."""

    def __init__(self, bins: int, width: int, mu: float = 0.99, threshold: float = 1.0) -> None:
        super().__init__()
        self.bins, self.width, self.mu, self.threshold = bins, width, mu, threshold
        self.register_buffer("codebook", torch.zeros(bins, width))
        self.register_buffer("ema_sum", torch.zeros(bins, width))
        self.register_buffer("ema_count", torch.ones(bins))
        self.register_buffer("initialised", torch.tensor(False))

    # --- pure lookups ----------------------------------------------------------------------------------------

    @staticmethod
    def flatten(x: Tensor) -> Tensor:
        """Encoder output [B, D, T] -> vectors [B*T, D] (time-major within each item)."""
        return x.permute(0, 2, 1).reshape(-1, x.shape[1])

    def quantise(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Vectors [N, D] -> (nearest code ids [N] int64, mean squared distance to them (scalar)).

        Rows are processed in blocks (``QUANTISE_ROWS`` on CPU) so the [rows, K] distance matrix stays small
        (faster and memory-bounded for long audio; the ids are the same: each row's distances are computed alike).
        """
        rows = QUANTISE_ROWS if x.device.type == "cpu" else QUANTISE_ROWS_ACCEL
        k_t = self.codebook.t()
        k_sq = torch.sum(k_t**2, dim=0, keepdim=True)  # [1, K]
        mins, ids = [], []
        for xb in x.split(rows):
            distance = torch.sum(xb**2, dim=-1, keepdim=True) - 2 * torch.matmul(xb, k_t) + k_sq  # [rows, K]
            m, i = torch.min(distance, dim=-1)
            mins.append(m)
            ids.append(i)
        if len(ids) == 1:
            return ids[0], mins[0].mean()
        return torch.cat(ids), torch.cat(mins).mean()

    def encode(self, x: Tensor) -> Tensor:
        """Encoder output [B, D, T] -> code ids [B, T] int64."""
        b, _, t = x.shape
        ids, _ = self.quantise(self.flatten(x))
        return ids.view(b, t)

    def decode(self, ids: Tensor) -> Tensor:
        """Code ids [B, T] -> codebook vectors, channels-first [B, D, T]."""
        return F.embedding(ids, self.codebook).permute(0, 2, 1).contiguous()

    # --- training state --------------------------------------------------------------------------------------

    def _random_vectors(self, x: Tensor) -> Tensor:
        """``bins`` rows drawn without replacement from x [N, D] (tiled with small noise when N < bins)."""
        n, d = x.shape
        if n < self.bins:
            x = x.repeat((self.bins + n - 1) // n, 1)
            x = x + torch.randn_like(x) * (0.01 / math.sqrt(d))
        rand = x[torch.randperm(x.shape[0], device=x.device)][: self.bins]
        if _distributed():
            dist.broadcast(rand, 0)
        return rand

    @torch.no_grad()
    def init_from(self, x: Tensor) -> None:
        """First training batch: codebook := random encoder outputs x [N, D]; EMA counts := 1."""
        rand = self._random_vectors(x)
        self.codebook.copy_(rand)
        self.ema_sum.copy_(rand)
        self.ema_count.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def restore_ema(self, num_tokens: int | None = None, threshold: float | None = None) -> None:
        """Reset the EMA state from the current codebook (fine-tuning a loaded model, Jukebox's ``restore_k``).

        With ``num_tokens`` (tokens per batch over all ranks) the counts start at the expected usage per code.
        """
        scale = 1.0 if num_tokens is None else num_tokens / self.bins
        self.ema_sum.copy_(self.codebook * scale)
        self.ema_count.fill_(scale)
        self.initialised.fill_(True)
        if threshold is not None:
            self.threshold = threshold

    @torch.no_grad()
    def update(self, x: Tensor, ids: Tensor) -> dict[str, Tensor]:
        """EMA update from vectors x [N, D] assigned to ``ids`` [N]; restart dead codes. Returns metrics."""
        bins, mu = self.bins, self.mu
        onehot = torch.zeros(bins, x.shape[0], device=x.device, dtype=x.dtype)
        onehot.scatter_(0, ids.view(1, -1), 1)
        batch_sum = torch.matmul(onehot, x)  # [K, D]
        batch_count = onehot.sum(dim=-1)  # [K]
        rand = self._random_vectors(x)
        if _distributed():
            dist.all_reduce(batch_sum)
            dist.all_reduce(batch_count)

        old = self.codebook.clone()
        self.ema_sum.copy_(mu * self.ema_sum + (1.0 - mu) * batch_sum)
        self.ema_count.copy_(mu * self.ema_count + (1.0 - mu) * batch_count)
        alive = (self.ema_count.view(bins, 1) >= self.threshold).float()
        self.codebook.copy_(alive * (self.ema_sum / self.ema_count.view(bins, 1)) + (1 - alive) * rand)

        prob = batch_count / torch.sum(batch_count)
        return {
            "entropy": -torch.sum(prob * torch.log(prob + 1e-8)),
            "used_curr": (batch_count >= self.threshold).sum(),
            "usage": torch.sum(alive),
            "dk": torch.norm(self.codebook - old) / math.sqrt(old.numel()),
        }

    # --- forward ---------------------------------------------------------------------------------------------

    def forward(self, x: Tensor, update: bool) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Quantise encoder output x [B, D, T].

        Returns (ids [B, T], quantised [B, D, T] with straight-through gradient to x, commitment loss (scalar),
        metrics). With ``update`` (training) the codebook is initialised if needed and EMA-updated, and the
        metrics are fit, pn (encoder output scale), entropy, used_curr, usage, dk; otherwise metrics is empty.
        """
        b, _, t = x.shape
        flat = self.flatten(x)
        if update and not bool(self.initialised):
            self.init_from(flat)
        ids, fit = self.quantise(flat)
        quant = F.embedding(ids, self.codebook)
        metrics: dict[str, Tensor] = {}
        if update:
            prenorm = torch.norm(flat - torch.mean(flat)) / math.sqrt(flat.numel())
            metrics = {"fit": fit, "pn": prenorm, **self.update(flat, ids)}
        commit_loss = torch.norm(quant.detach() - flat) ** 2 / flat.numel()
        quant = flat + (quant - flat).detach()
        quant = quant.view(b, t, -1).permute(0, 2, 1).contiguous()
        return ids.view(b, t), quant, commit_loss, metrics
