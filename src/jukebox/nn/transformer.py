"""Jukebox's pre-LayerNorm transformer: fused-QKV factorized attention, quick-GELU MLP, one pattern per layer.

Block maths (as the original): ``a = attn(ln_attn(x))``, ``m = mlp(ln_mlp(x + a))``, ``out = x + a + m``
(or ``x + (a + m) / depth`` with ``res_scale``). Learned positions and token embeddings live in the model
that owns the transformer (see :mod:`jukebox.prior.autoregressive`).
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .attention import DecodePlan, FactorizedAttention
from .kv_cache import KVCache, LayerKVCache
from .quant import quantized_linear

__all__ = ["quick_gelu", "MLP", "TransformerBlock", "Transformer", "LeanDecoder", "int8_linear",
           "int8_linear_supported", "int8_block_linears", "GELU_SCALE"]


#: quick-GELU's slope: ``quick_gelu(x) = silu(GELU_SCALE * x) / GELU_SCALE``.
GELU_SCALE = 1.702


def quick_gelu(x: Tensor) -> Tensor:
    """``x * sigmoid(1.702 x)``."""
    return x * torch.sigmoid(GELU_SCALE * x)


class MLP(nn.Module):
    """[B, T, width] -> [B, T, width]: Linear(width, hidden), quick-GELU, Linear(hidden, width)."""

    def __init__(self, width: int, hidden: int, resid_dropout: float = 0.0, zero_out: bool = False,
                 init_scale: float = 1.0) -> None:
        super().__init__()
        self.fc = nn.Linear(width, hidden)
        self.proj = nn.Linear(hidden, width)
        nn.init.normal_(self.fc.weight, std=0.02 * init_scale)
        nn.init.zeros_(self.fc.bias)
        if zero_out:
            nn.init.zeros_(self.proj.weight)
        else:
            nn.init.normal_(self.proj.weight, std=0.02 * init_scale)
        nn.init.zeros_(self.proj.bias)
        self.dropout = nn.Dropout(resid_dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(quick_gelu(self.fc(x))))


class TransformerBlock(nn.Module):
    """One residual attention block, [B, T, width] -> [B, T, width]."""

    def __init__(self, width: int, heads: int, pattern: str, n_ctx: int, block_ctx: int = 1, prime_keys: int = 0,
                 m_attn: float = 0.25, m_mlp: float = 1.0, attn_dropout: float = 0.0, resid_dropout: float = 0.0,
                 zero_out: bool = False, init_scale: float = 1.0, res_scale: float = 1.0) -> None:
        super().__init__()
        self.pattern = pattern
        self.norm_attn = nn.LayerNorm(width)
        self.attn = FactorizedAttention(width, int(m_attn * width), heads, pattern, n_ctx, block_ctx, prime_keys,
                                        attn_dropout, resid_dropout, zero_out, init_scale)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = MLP(width, int(m_mlp * width), resid_dropout, zero_out, init_scale)
        self.res_scale = res_scale

    def forward(self, x: Tensor, encoder_states: Tensor | None = None, cache: LayerKVCache | None = None,
                start: int = 0) -> Tensor:
        a = self.attn(self.norm_attn(x), encoder_states, cache, start)
        return self._residual(x, a)

    def _residual(self, x: Tensor, a: Tensor) -> Tensor:
        m = self.mlp(self.norm_mlp(x + a))
        if self.res_scale == 1.0:
            return x + a + m
        return x + self.res_scale * (a + m)

    def decode_static(self, x: Tensor, cache: LayerKVCache, plan: DecodePlan) -> Tensor:
        """One token [B, 1, width] at the device position of ``plan`` (static shapes, CUDA-graph safe)."""
        return self._residual(x, self.attn.decode_static(self.norm_attn(x), cache, plan))


class Transformer(nn.Module):
    """A stack of :class:`TransformerBlock` with per-layer attention patterns.

    Args:
        width: model width. depth = ``len(patterns)``.
        heads: attention heads. n_ctx: maximum sequence length (a multiple of ``n_ctx // blocks``).
        patterns: pattern of each layer (see :mod:`jukebox.nn.attention`).
        blocks: number of rows the context is factored into (``block_ctx = n_ctx // blocks``).
        prime_keys: visible prefix of ``prime`` layers. encoder_len: length of the encoder states (``cross``).
        checkpoint: recompute each block in backward (activation checkpointing) while training.
    """

    def __init__(self, width: int, heads: int, n_ctx: int, patterns: Sequence[str], blocks: int | None = None,
                 prime_keys: int = 0, encoder_len: int = 0, m_attn: float = 0.25, m_mlp: float = 1.0,
                 attn_dropout: float = 0.0, resid_dropout: float = 0.0, zero_out: bool = False,
                 init_scale: float = 1.0, res_scale: bool = False, checkpoint: bool = False) -> None:
        super().__init__()
        self.width, self.heads, self.n_ctx = width, heads, n_ctx
        self.patterns = tuple(patterns)
        if blocks is not None and n_ctx % blocks:
            raise ValueError(f"n_ctx {n_ctx} is not a multiple of blocks {blocks}")
        self.block_ctx = n_ctx // blocks if blocks else n_ctx
        self.encoder_len = encoder_len
        scale = 1.0 / len(self.patterns) if res_scale else 1.0
        self.blocks = nn.ModuleList(
            TransformerBlock(width, heads, p, n_ctx, self.block_ctx, prime_keys, m_attn, m_mlp, attn_dropout,
                             resid_dropout, zero_out or p == "cross", init_scale, scale)
            for p in self.patterns
        )
        self.checkpoint = checkpoint

    def forward(self, x: Tensor, encoder_states: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        """x: [B, T, width] -> [B, T, width]. With ``cache``, x holds positions ``cache.length ..`` and the
        cache advances by T; ``encoder_states`` [B, S, width] feed ``cross`` layers (needed once per cache)."""
        start = 0 if cache is None else cache.length
        use_ckpt = self.checkpoint and self.training and torch.is_grad_enabled() and cache is None
        for i, block in enumerate(self.blocks):
            layer_cache = None if cache is None else cache[i]
            if use_ckpt:
                x = checkpoint(block, x, encoder_states, use_reentrant=False)
            else:
                x = block(x, encoder_states, layer_cache, start)
        if cache is not None:
            cache.length = start + x.shape[1]
        return x

    def decode_static(self, x: Tensor, cache: KVCache, pos: Tensor) -> Tensor:
        """One decoding step x [B, 1, width] at position ``pos`` ([1] long tensor on the device): fixed shapes,
        no host synchronisation, masks computed once per step (:class:`~jukebox.nn.attention.DecodePlan`).
        Does not advance ``cache.length`` (the caller owns the position)."""
        plan = DecodePlan(pos, x.dtype)
        for i, block in enumerate(self.blocks):
            x = block.decode_static(x, cache[i], plan)
        return x

    def make_cache(self, batch: int, dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None, compact: bool = True) -> KVCache:
        """Allocate a :class:`KVCache` for ``batch`` sequences (dtype/device default to the parameters').

        ``compact``: each layer gets the layout its pattern reads fastest (local blocks keep one or two blocks,
        transposed blocks a column-major grid); otherwise every layer keeps the full context and single tokens
        are decoded the unoptimised way (mask rebuilt per layer per step: the benchmarks' reference path)."""
        ref = next(self.parameters())
        dtype = dtype or ref.dtype
        device = device if device is not None else ref.device
        layers = []
        for block in self.blocks:
            attn = block.attn
            cross = attn.pattern == "cross"
            if cross:
                layout, length, n_blocks = "linear", self.encoder_len, 1
            elif compact:
                layout, length, n_blocks = attn.cache_spec()
            else:
                layout, length, n_blocks = "linear", attn.cache_len(), 1
            layers.append(LayerKVCache(batch, attn.heads, length, attn.head_dim, cross=cross, dtype=dtype,
                                       device=device, layout=layout, n_blocks=n_blocks, reference=not compact))
        return KVCache(layers)


_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def int8_linear_supported() -> bool:
    """Whether this PyTorch build has the fbgemm/oneDNN dynamic int8 linear on the CPU (:func:`int8_linear`)."""
    try:
        ops = torch.ops.quantized
        engine = torch.backends.quantized.engine
        return (engine in ("x86", "fbgemm", "onednn") and hasattr(torch, "quantize_per_channel")
                and hasattr(ops, "linear_dynamic") and hasattr(ops, "linear_prepack"))
    except (AttributeError, RuntimeError):
        return False


def linear_dynamic() -> Callable[..., Tensor]:
    """``torch.ops.quantized.linear_dynamic(x, packed, reduce_range)`` as its C++ function: the operator packet's
    own call first checks every argument for fake script objects in Python (its packed weights are a TorchBind
    class), about 3-5 us of the ~30 us of a small int8 linear, and the int8 decode step makes one such call per
    linear layer and token."""
    packet = torch.ops.quantized.linear_dynamic
    return getattr(packet, "_op", packet)


def int8_linear(weight: Tensor, bias: Tensor | None, owner: object | None = None, weight_scale: float = 1.0,
                bias_scale: float = 1.0):
    """``weight`` [out, in] (times ``weight_scale``) quantised to int8 per output channel (symmetric) and prepacked
    with ``bias`` (times ``bias_scale``) for ``torch.ops.quantized.linear_dynamic`` (activations quantised per call).
    Cached per ``owner`` (a module, or the weight itself) until the weight or the scales change. Uses PyTorch's
    quantized tensors, deprecated in recent releases (still present in 2.13): check :func:`int8_linear_supported`
    first."""
    key = weight if owner is None else owner
    version = (weight.data_ptr(), weight._version, None if bias is None else (bias.data_ptr(), bias._version),
               weight_scale, bias_scale)
    hit = _PACKED.get(key)
    if hit is not None and hit[0] == version:
        return hit[1]
    w = weight.detach().float() * weight_scale
    scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the deprecation notice of quantized tensors
        qw = torch.quantize_per_channel(w, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)
        packed = torch.ops.quantized.linear_prepack(qw, None if bias is None else bias.detach().float() * bias_scale)
    _PACKED[key] = (version, packed)
    return packed


def int8_block_linears(block: TransformerBlock) -> tuple[Any, Any, Any, Any]:
    """A block's query (or qkv), attention output, MLP in and MLP out linears as prepacked int8 linears
    (:func:`int8_linear`, cached), quick-GELU's slope folded into the MLP: ``mlp(x) = out(silu(in(x)))``."""
    attn, mlp = block.attn, block.mlp
    q_lin = attn.q if attn.pattern == "cross" else attn.qkv
    return (int8_linear(q_lin.weight, q_lin.bias, q_lin), int8_linear(attn.proj.weight, attn.proj.bias, attn.proj),
            int8_linear(mlp.fc.weight, mlp.fc.bias, mlp.fc, GELU_SCALE, GELU_SCALE),
            int8_linear(mlp.proj.weight, mlp.proj.bias, mlp.proj, 1.0 / GELU_SCALE))


class LeanDecoder:
    """The stack of a :class:`Transformer` for one token per step, with everything bound once: a few ``addmm``
    and in-place ops per layer over 2-D [B, width] activations, no module calls, exactly the keys each pattern
    allows read straight out of a compact :class:`KVCache` (the fastest step on a CPU, where a decode step of a
    small prior costs mostly per-op dispatch).

    Same arithmetic as :meth:`Transformer.forward` with a cache, operation for operation, except the attention
    kernel (``attention="sdpa"``: ``scaled_dot_product_attention`` as the eager path; ``"matmul"``: two batched
    matmuls and a softmax, cheaper for few keys). Needs a compact cache whose cross-attention layers are filled
    (after the first step) and a model in eval mode.

    ``int8``: every linear layer runs as a dynamic int8 linear (weights quantised per output channel once and
    cached, activations per call; :func:`int8_linear`): on a CPU where a step is bound by reading the weights,
    2-3x faster linears for a small change of the logits (the default model's real codes: KL 2e-3, 7e-4 and
    2.5e-2 nats per token at levels 0, 1, 2; weight-only int8 weights alone: 2e-5 to 2.5e-4).
    The MLP's quick-GELU ``m * sigmoid(1.702 m)`` then runs as one ``silu``, its 1.702 folded into the first
    linear's weight and bias and 1 / 1.702 into the second's weight (the same function, two operations fewer per
    layer; the float path keeps the modules' exact arithmetic).

    ``weights``: ``int8`` or ``fp8`` runs the linears with weight-only 8-bit weights (:mod:`jukebox.nn.quant`):
    on a CPU their dequantised copy in the float step, elsewhere the dequantising GEMV. Ignored with ``int8``.
    """

    def __init__(self, transformer: Transformer, cache: KVCache, attention: str = "sdpa", int8: bool = False,
                 weights: str = "native") -> None:
        if attention not in ("sdpa", "matmul"):
            raise ValueError(f"attention must be 'sdpa' or 'matmul', got {attention!r}")
        if transformer.training:
            raise ValueError("LeanDecoder needs a model in eval mode (no dropout)")
        if int8 and not int8_linear_supported():
            raise ValueError("int8 decoding needs PyTorch's fbgemm/oneDNN quantized engine on the CPU")
        self.cache = cache
        self.matmul = attention == "matmul"
        self.int8 = int8
        quant = None if int8 or weights == "native" else weights
        # weight-only 8-bit off a CPU: each linear is a callable (the dequantising Triton GEMV), not (weight, bias)
        self.calls = quant is not None and next(transformer.parameters()).device.type != "cpu"
        self.layers = []
        for block, layer_cache in zip(transformer.blocks, cache.layers):
            if layer_cache.reference:
                raise ValueError("LeanDecoder needs a compact cache")
            attn, mlp = block.attn, block.mlp
            if attn.record_weights:
                raise ValueError("LeanDecoder does not record attention weights")
            q_lin = attn.q if attn.pattern == "cross" else attn.qkv
            lins = [q_lin, attn.proj, mlp.fc, mlp.proj]
            if int8:  # (packed weights, None): the bias is inside the packed linear; quick-GELU's 1.702 folded in
                wb = [(packed, None) for packed in int8_block_linears(block)]
            elif quant is not None:  # weight-only 8-bit (jukebox.nn.quant): dequantised once on a CPU
                qls = [quantized_linear(lin, quant) for lin in lins]
                if self.calls:
                    wb = [(ql, None) for ql in qls]
                else:
                    dtype = lins[0].weight.dtype
                    wb = [(ql.dense(dtype).t(), lin.bias) for ql, lin in zip(qls, lins)]
            else:
                wb = [(lin.weight.t(), lin.bias) for lin in lins]
            (qw, qb), (pw, pb), (fw, fb), (mw, mb) = wb
            self.layers.append((
                attn.pattern, layer_cache, attn.heads, attn.head_dim, attn.n_state, attn.block_ctx,
                block.norm_attn.normalized_shape, block.norm_attn.weight, block.norm_attn.bias, block.norm_attn.eps,
                qw, qb, pw, pb, block.norm_mlp.weight, block.norm_mlp.bias, block.norm_mlp.eps,
                fw, fb, mw, mb, block.res_scale, 1.0 / math.sqrt(attn.head_dim),
                attn.proj.bias if int8 or self.calls else pb))

    def _keys(self, pattern: str, cache: LayerKVCache, k: Tensor, v: Tensor, t: int, bc: int,
              ) -> tuple[Tensor | None, Tensor | None]:
        """Write key/value [B, H, D] of position ``t``; the keys/values [B, H, L, D] query ``t`` may attend to."""
        key, value = cache.key, cache.value
        if pattern == "block":  # ring of one block: the block so far
            s = t % bc
            key.select(2, s).copy_(k)
            value.select(2, s).copy_(v)
            return key.narrow(2, 0, s + 1), value.narrow(2, 0, s + 1)
        if pattern == "prev_block":  # ring of two blocks: the whole previous block
            key.select(2, t % cache.size).copy_(k)
            value.select(2, t % cache.size).copy_(v)
            lo = (t // bc - 1) * bc
            if lo < 0:
                return None, None
            s = lo % cache.size
            return key.narrow(2, s, bc), value.narrow(2, s, bc)
        if pattern == "transpose":  # columns: the column of position t, rows so far
            c, r = t % bc, t // bc
            kc, vc = key.select(2, c), value.select(2, c)
            kc.select(2, r).copy_(k)
            vc.select(2, r).copy_(v)
            return kc.narrow(2, 0, r + 1), vc.narrow(2, 0, r + 1)
        if t < cache.size:  # dense, prime (positions past the prime prefix are not kept)
            key.select(2, t).copy_(k)
            value.select(2, t).copy_(v)
        n = min(t + 1, cache.size)
        return key.narrow(2, 0, n), value.narrow(2, 0, n)

    def __call__(self, x: Tensor, t: int) -> Tensor:
        """Hidden state x [B, width] of position ``t`` (> 0, a Python int) -> output [B, width]."""
        B = x.shape[0]
        layer_norm, sdpa, sigmoid, silu = torch.layer_norm, F.scaled_dot_product_attention, torch.sigmoid, F.silu
        int8 = self.int8
        if self.int8:
            dyn = linear_dynamic()

            def addmm(_bias: None, inp: Tensor, packed) -> Tensor:  # bias packed with the weight
                return dyn(inp, packed, True)
        elif self.calls:
            def addmm(_bias: None, inp: Tensor, linear) -> Tensor:  # a QuantizedLinear, bias inside
                return linear(inp)
        else:
            addmm = torch.addmm
        cudnn = torch.backends.cudnn.enabled
        for (pattern, cache, H, D, ns, bc, shape, w1, b1, e1, qw, qb, pw, pb, w2, b2, e2, fw, fb, mw, mb, rs,
             scale, proj_bias) in self.layers:
            h = layer_norm(x, shape, w1, b1, e1, cudnn)
            if pattern == "cross":
                q = addmm(qb, h, qw)
                kk, vv = cache.key, cache.value
            else:
                qkv = addmm(qb, h, qw)
                q = qkv[:, :ns]
                kk, vv = self._keys(pattern, cache, qkv[:, ns:2 * ns].view(B, H, D), qkv[:, 2 * ns:].view(B, H, D),
                                    t, bc)
            if kk is None:  # prev_block in the first block: no key, the attention output is exactly zero
                a = proj_bias.expand(B, -1)
            else:
                q = q.view(B, H, 1, D)
                if self.matmul:
                    o = torch.matmul(torch.matmul(q, kk.transpose(-1, -2)).mul_(scale).softmax(-1), vv)
                else:
                    o = sdpa(q, kk, vv)
                a = addmm(pb, o.reshape(B, ns), pw)
            h = x + a
            m = addmm(fb, layer_norm(h, shape, w2, b2, e2, cudnn), fw)
            m = addmm(mb, silu(m, inplace=True) if int8 else m * sigmoid(GELU_SCALE * m), mw)  # quick-GELU
            x = h.add_(m) if rs == 1.0 else x + rs * (a + m)
        return x
