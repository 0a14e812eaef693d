"""Reusable 1-D convolution stacks of Jukebox: dilated residual stacks, strided encoder blocks and
transposed-conv decoder blocks.

All tensors are channels-first, ``[B, C, T]``. The maths equals Jukebox's ``Resnet1D``,
``EncoderConvBlock`` and ``DecoderConvBock``; the module names are our own (see the ``openai_*_keys``
helpers at the bottom for the rename table to the original checkpoint names).

Public classes and their constructor arguments:

``ResidualConvBlock(channels, hidden, dilation=1, zero_out=False, res_scale=1.0)``
    ``x + res_scale * conv1x1(relu(conv3_dilated(relu(x))))``; ``[B, C, T] -> [B, C, T]``.
    Submodules: ``dilated_conv`` (Conv1d k=3, padding=dilation), ``proj`` (Conv1d k=1).
    ``zero_out`` zero-initialises ``proj`` so the block starts as the identity.

``ResidualStack(channels, depth, m_conv=1.0, dilation_growth_rate=1, dilation_cycle=None, zero_out=False,
res_scale=False, reverse_dilation=False, checkpoint_res=False)``
    ``depth`` residual blocks; block ``d`` has dilation ``dilation_growth_rate ** (d % dilation_cycle)``
    (or ``** d`` without a cycle) and hidden width ``int(m_conv * channels)``. ``res_scale=True`` scales
    each residual branch by ``1 / sqrt(depth)``. ``reverse_dilation`` runs the blocks largest dilation first
    (Jukebox decoders). ``checkpoint_res`` recomputes each block in backward (activation checkpointing,
    only while training with gradients). Submodule: ``blocks`` (ModuleList, in execution order).

``EncoderBlock(in_channels, out_channels, down_t, stride_t, width, depth, m_conv=1.0, dilation_growth_rate=1,
dilation_cycle=None, zero_out=False, res_scale=False, checkpoint_res=False)``
    ``down_t`` times (strided conv k=2*stride, stride, padding=stride//2, then a ResidualStack), then a
    k=3 conv to ``out_channels``. ``[B, in, T] -> [B, out, T // stride_t ** down_t]``. ``down_t == 0``
    is the identity. Submodules: ``stages[i].down`` (Conv1d), ``stages[i].res`` (ResidualStack), ``proj``.

``DecoderBlock(in_channels, out_channels, down_t, stride_t, width, depth, m_conv=1.0, dilation_growth_rate=1,
dilation_cycle=None, zero_out=False, res_scale=False, reverse_dilation=False, checkpoint_res=False)``
    The mirror image: a k=3 conv ``in_channels -> width``, then ``down_t`` times (ResidualStack, transposed
    conv k=2*stride, stride, padding=stride//2); the last transposed conv outputs ``out_channels``.
    ``[B, in, T] -> [B, out, T * stride_t ** down_t]``. ``down_t == 0`` is the identity.
    Submodules: ``proj`` (Conv1d), ``stages[i].res`` (ResidualStack), ``stages[i].up`` (ConvTranspose1d).
    Note the argument order is (input, output) of *this* module; Jukebox's ``DecoderConvBock(a, b, ...)``
    maps ``b -> a``, i.e. ``DecoderBlock(in_channels=b, out_channels=a)``.

Fast inference on a CPU: ``decoder_block_channels_last(block, x)`` runs a DecoderBlock on a channels-last
``[B, C, 1, T]`` tensor with every convolution as the equivalent 2-D one (oneDNN runs those about 2x faster than
1-D convolutions; same maths, float rounding aside).

Rename helpers (our relative key -> original relative key, weights and biases):
``openai_residual_stack_keys(depth, checkpoint_res=False)``, ``openai_encoder_block_keys(down_t, depth)``,
``openai_decoder_block_keys(down_t, depth, checkpoint_res=False)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "ResidualConvBlock",
    "ResidualStack",
    "EncoderBlock",
    "DecoderBlock",
    "openai_residual_stack_keys",
    "openai_encoder_block_keys",
    "openai_decoder_block_keys",
    "conv1d_channels_last",
    "decoder_block_channels_last",
]


class ResidualConvBlock(nn.Module):
    """One pre-activation residual block: ``x + s * proj(relu(dilated_conv(relu(x))))``, [B, C, T] -> same."""

    def __init__(self, channels: int, hidden: int, dilation: int = 1, zero_out: bool = False,
                 res_scale: float = 1.0) -> None:
        super().__init__()
        self.dilated_conv = nn.Conv1d(channels, hidden, kernel_size=3, stride=1, padding=dilation, dilation=dilation)
        self.proj = nn.Conv1d(hidden, channels, kernel_size=1)
        if zero_out:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        h = self.proj(F.relu(self.dilated_conv(torch.relu(x)), inplace=True))
        if self.res_scale != 1.0:  # skipping the multiply by 1.0 changes no bit
            h = self.res_scale * h
        return x + h


def _stack_dilations(depth: int, growth: int, cycle: int | None) -> list[int]:
    return [growth ** (d if cycle is None else d % cycle) for d in range(depth)]


class ResidualStack(nn.Module):
    """``depth`` dilated residual blocks, [B, C, T] -> [B, C, T]."""

    def __init__(self, channels: int, depth: int, m_conv: float = 1.0, dilation_growth_rate: int = 1,
                 dilation_cycle: int | None = None, zero_out: bool = False, res_scale: bool = False,
                 reverse_dilation: bool = False, checkpoint_res: bool = False) -> None:
        super().__init__()
        scale = 1.0 / math.sqrt(depth) if res_scale else 1.0
        hidden = int(m_conv * channels)
        dilations = _stack_dilations(depth, dilation_growth_rate, dilation_cycle)
        if reverse_dilation:
            dilations = dilations[::-1]
        self.dilations = tuple(dilations)
        self.blocks = nn.ModuleList(
            ResidualConvBlock(channels, hidden, dilation=d, zero_out=zero_out, res_scale=scale) for d in dilations
        )
        self.checkpoint_res = bool(checkpoint_res)

    def forward(self, x: Tensor) -> Tensor:
        use_ckpt = self.checkpoint_res and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if use_ckpt else block(x)
        return x


class _DownStage(nn.Module):
    def __init__(self, in_channels: int, width: int, stride_t: int, res: ResidualStack) -> None:
        super().__init__()
        self.down = nn.Conv1d(in_channels, width, kernel_size=stride_t * 2, stride=stride_t, padding=stride_t // 2)
        self.res = res

    def forward(self, x: Tensor) -> Tensor:
        return self.res(self.down(x))


class _UpStage(nn.Module):
    def __init__(self, width: int, out_channels: int, stride_t: int, res: ResidualStack) -> None:
        super().__init__()
        self.res = res
        self.up = nn.ConvTranspose1d(width, out_channels, kernel_size=stride_t * 2, stride=stride_t,
                                     padding=stride_t // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.res(x))


class EncoderBlock(nn.Module):
    """Downsample by ``stride_t ** down_t``: [B, in_channels, T] -> [B, out_channels, T // stride_t ** down_t]."""

    def __init__(self, in_channels: int, out_channels: int, down_t: int, stride_t: int, width: int, depth: int,
                 m_conv: float = 1.0, dilation_growth_rate: int = 1, dilation_cycle: int | None = None,
                 zero_out: bool = False, res_scale: bool = False, checkpoint_res: bool = False) -> None:
        super().__init__()
        self.down_t, self.stride_t = down_t, stride_t
        self.stages = nn.ModuleList(
            _DownStage(in_channels if i == 0 else width, width, stride_t,
                       ResidualStack(width, depth, m_conv, dilation_growth_rate, dilation_cycle, zero_out, res_scale,
                                     reverse_dilation=False, checkpoint_res=checkpoint_res))
            for i in range(down_t)
        )
        self.proj = nn.Conv1d(width, out_channels, kernel_size=3, padding=1) if down_t > 0 else None

    def forward(self, x: Tensor) -> Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.proj(x) if self.proj is not None else x


class DecoderBlock(nn.Module):
    """Upsample by ``stride_t ** down_t``: [B, in_channels, T] -> [B, out_channels, T * stride_t ** down_t]."""

    def __init__(self, in_channels: int, out_channels: int, down_t: int, stride_t: int, width: int, depth: int,
                 m_conv: float = 1.0, dilation_growth_rate: int = 1, dilation_cycle: int | None = None,
                 zero_out: bool = False, res_scale: bool = False, reverse_dilation: bool = False,
                 checkpoint_res: bool = False) -> None:
        super().__init__()
        self.down_t, self.stride_t = down_t, stride_t
        self.proj = nn.Conv1d(in_channels, width, kernel_size=3, padding=1) if down_t > 0 else None
        self.stages = nn.ModuleList(
            _UpStage(width, out_channels if i == down_t - 1 else width, stride_t,
                     ResidualStack(width, depth, m_conv, dilation_growth_rate, dilation_cycle, zero_out, res_scale,
                                   reverse_dilation=reverse_dilation, checkpoint_res=checkpoint_res))
            for i in range(down_t)
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.proj is not None:
            x = self.proj(x)
        for stage in self.stages:
            x = stage(x)
        return x


# --- fast CPU inference: channels-last 2-D convolutions ----------------------------------------------------------

def conv1d_channels_last(x: Tensor, conv: nn.Conv1d) -> Tensor:
    """A Conv1d applied to channels-last x [B, C, 1, T] as the equivalent 2-D convolution."""
    return F.conv2d(x, conv.weight.unsqueeze(2), conv.bias, stride=(1, conv.stride[0]), padding=(0, conv.padding[0]),
                    dilation=(1, conv.dilation[0]))


def decoder_block_channels_last(block: DecoderBlock, x: Tensor) -> Tensor:
    """:class:`~jukebox.nn.conv.DecoderBlock` on channels-last x [B, C, 1, T] -> [B, C', 1, T * stride ** down]
    (inference: residual sums are done in place on the block's own intermediates, never on ``x``)."""
    own = False
    if block.proj is not None:
        x, own = conv1d_channels_last(x, block.proj), True
    for stage in block.stages:
        for res in stage.res.blocks:
            h = conv1d_channels_last(conv1d_channels_last(torch.relu(x), res.dilated_conv).relu_(), res.proj)
            if res.res_scale != 1.0:
                h = h.mul_(res.res_scale)
            x = x.add_(h) if own else x + h
            own = True
        up = stage.up
        x = F.conv_transpose2d(x, up.weight.unsqueeze(2), up.bias, stride=(1, up.stride[0]),
                               padding=(0, up.padding[0]))
    return x


# --- rename tables to the original Jukebox checkpoint names (relative to the block) ---------------------------

def _wb(ours: str, theirs: str) -> dict[str, str]:
    return {f"{ours}.weight": f"{theirs}.weight", f"{ours}.bias": f"{theirs}.bias"}


def openai_residual_stack_keys(depth: int, checkpoint_res: bool = False) -> dict[str, str]:
    """Our ResidualStack keys -> Jukebox Resnet1D keys (``model.i`` or, built with checkpoint_res, ``blocks.i``)."""
    container = "blocks" if checkpoint_res else "model"
    out: dict[str, str] = {}
    for d in range(depth):
        out.update(_wb(f"blocks.{d}.dilated_conv", f"{container}.{d}.model.1"))
        out.update(_wb(f"blocks.{d}.proj", f"{container}.{d}.model.3"))
    return out


def openai_encoder_block_keys(down_t: int, depth: int) -> dict[str, str]:
    """Our EncoderBlock keys -> Jukebox EncoderConvBlock keys."""
    out: dict[str, str] = {}
    for i in range(down_t):
        out.update(_wb(f"stages.{i}.down", f"model.{i}.0"))
        for k, v in openai_residual_stack_keys(depth).items():
            out[f"stages.{i}.res.{k}"] = f"model.{i}.1.{v}"
    if down_t > 0:
        out.update(_wb("proj", f"model.{down_t}"))
    return out


def openai_decoder_block_keys(down_t: int, depth: int, checkpoint_res: bool = False) -> dict[str, str]:
    """Our DecoderBlock keys -> Jukebox DecoderConvBock keys (``checkpoint_res`` as the original was built)."""
    out: dict[str, str] = {}
    if down_t > 0:
        out.update(_wb("proj", "model.0"))
    for i in range(down_t):
        for k, v in openai_residual_stack_keys(depth, checkpoint_res).items():
            out[f"stages.{i}.res.{k}"] = f"model.{i + 1}.0.{v}"
        out.update(_wb(f"stages.{i}.up", f"model.{i + 1}.1"))
    return out
