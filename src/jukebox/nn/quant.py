"""Weight-only 8-bit linear layers for decoding: int8 or float8 (e4m3) weights with one scale per output channel.

A prior's decode step at batch 1 reads every weight of its transformer once per token: it is bound by memory
bandwidth, and 8-bit weights halve the bytes per step against bf16 (a quarter against float32). Activations stay in
the model's dtype; each weight row ``n`` is stored as ``q[n] = round(w[n] / scale[n])`` with
``scale[n] = max|w[n]| / QMAX`` (``QMAX`` 127 for int8, 448 for float8 e4m3) and used as ``q[n] * scale[n]``.

Where the product runs:

- CUDA, up to :data:`GEMV_MAX_ROWS` rows (the decode step): a Triton kernel that loads the 8-bit weights and
  dequantises them in registers (:func:`gemv`), so only the 8-bit bytes cross the memory bus; CUDA-graph safe.
- anything else (a CPU, a long prefill, no Triton): the weights dequantised to the activations' dtype and a plain
  matmul. On a CPU the dequantised copy is made once and cached (the arithmetic of weight-only quantisation, at
  the speed of the float step; the CPU's fast path stays ``decode="int8"``, whose int8 weights are the same).

:func:`weight_only_linears` swaps a transformer's block linears (attention in/out and both MLP linears; not the
head, the embeddings or the cross-attention keys/values of the encoder, read once) for these within a ``with``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WEIGHT_FORMATS", "QMAX", "GEMV_MAX_ROWS", "quantize_weight", "dequantize", "QuantizedLinear",
           "quantized_linear", "weight_only_linears", "block_linears", "triton_available", "gemv"]

#: ``weights=`` of the sampler: ``native`` (the model's own dtype, unchanged), ``int8`` or ``fp8`` (e4m3).
WEIGHT_FORMATS = ("native", "int8", "fp8")
#: Largest magnitude of each 8-bit format (the scale maps a row's largest weight onto it).
QMAX = {"int8": 127.0, "fp8": 448.0}
#: The Triton kernel handles up to this many rows (tokens x batch) per call; longer inputs dequantise.
GEMV_MAX_ROWS = 8


def _storage_dtype(fmt: str) -> torch.dtype:
    if fmt == "int8":
        return torch.int8
    if fmt == "fp8":
        if not hasattr(torch, "float8_e4m3fn"):
            raise ValueError("weights='fp8' needs a PyTorch with torch.float8_e4m3fn (2.1 or newer)")
        return torch.float8_e4m3fn
    raise ValueError(f"weight format must be one of {', '.join(WEIGHT_FORMATS[1:])}, got {fmt!r}")


@torch.no_grad()
def quantize_weight(weight: Tensor, fmt: str, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """``weight * scale`` [N, K] -> (q [N, K] int8 or float8_e4m3fn, row scales [N] float32), symmetric per output
    channel; int8 rounds half to even, as ``torch.quantize_per_channel`` (so ``int8`` weights equal the
    ``decode="int8"`` path's)."""
    dtype = _storage_dtype(fmt)
    w = weight.detach().float() * scale
    s = (w.abs().amax(dim=1) / QMAX[fmt]).clamp_min(1e-12)
    if fmt == "int8":
        q = torch.round(w / s[:, None]).clamp_(-127, 127).to(dtype)
    else:
        q = (w / s[:, None]).clamp_(-QMAX[fmt], QMAX[fmt]).to(dtype)
    return q, s


def dequantize(q: Tensor, scale: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """q [N, K] and row scales [N] -> weights [N, K] in ``dtype``."""
    return (q.float() * scale[:, None]).to(dtype)


class QuantizedLinear:
    """A weight-only 8-bit copy of an ``nn.Linear`` (weights [N, K], bias [N]): call it on x [..., K] -> [..., N]
    in x's dtype (see the module docstring for where the product runs)."""

    def __init__(self, linear: nn.Linear, fmt: str) -> None:
        self.fmt = fmt
        self.q, self.scale = quantize_weight(linear.weight, fmt)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self._dense: dict[torch.dtype, Tensor] = {}

    @property
    def nbytes(self) -> int:
        """Bytes read per full product: the 8-bit weights and the scales."""
        return self.q.numel() * self.q.element_size() + self.scale.numel() * 4

    def dense(self, dtype: torch.dtype) -> Tensor:
        """The dequantised weights [N, K] in ``dtype`` (cached off CUDA, where memory is not the point)."""
        hit = self._dense.get(dtype)
        if hit is not None:
            return hit
        w = dequantize(self.q, self.scale, dtype)
        if self.q.device.type != "cuda":
            self._dense[dtype] = w
        return w

    def __call__(self, x: Tensor) -> Tensor:
        rows = x.numel() // x.shape[-1] if x.numel() else 0
        if x.is_cuda and 0 < rows <= GEMV_MAX_ROWS and triton_available():
            out = gemv(x.reshape(rows, x.shape[-1]), self.q, self.scale, self.bias)
            return out.view(*x.shape[:-1], out.shape[-1])
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dense(x.dtype), bias)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def quantized_linear(linear: nn.Linear, fmt: str) -> QuantizedLinear:
    """:class:`QuantizedLinear` of ``linear``, cached per module until its weight or bias changes."""
    w, b = linear.weight, linear.bias
    version = (fmt, w.data_ptr(), w._version, w.device, None if b is None else (b.data_ptr(), b._version))
    hit = _CACHE.get(linear)
    if hit is not None and hit[0] == version:
        return hit[1]
    ql = QuantizedLinear(linear, fmt)
    _CACHE[linear] = (version, ql)
    return ql


def block_linears(block: nn.Module) -> list[nn.Linear]:
    """A :class:`~jukebox.nn.transformer.TransformerBlock`'s query (cross) or qkv, attention output, MLP in and
    MLP out linears (the ones read at every decode step)."""
    attn, mlp = block.attn, block.mlp
    return [attn.q if attn.pattern == "cross" else attn.qkv, attn.proj, mlp.fc, mlp.proj]


@contextmanager
def weight_only_linears(transformer: nn.Module, fmt: str) -> Iterator[list[QuantizedLinear]]:
    """Inside: every block linear of ``transformer`` (:func:`block_linears`) runs as its weight-only ``fmt``
    copy through the modules' own ``forward`` (prefill, module, static, graph and compile steps); yields the
    copies. ``fmt="native"`` changes nothing. Restored on exit."""
    if fmt == "native":
        yield []
        return
    patched, copies = [], []
    try:
        for block in transformer.blocks:
            for lin in block_linears(block):
                ql = quantized_linear(lin, fmt)
                lin.forward = ql
                patched.append(lin)
                copies.append(ql)
        yield copies
    finally:
        for lin in patched:
            del lin.forward  # the class's forward again


# ------------------------------------------------------------------------------------------------ Triton kernel
def triton_available() -> bool:
    """Whether ``triton`` imports (the CUDA GEMV; Triton's interpreter on a CPU for tests)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


_KERNEL = None


def _kernel():
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import triton
    import triton.language as tl

    @triton.jit
    def gemv_dequant(x_ptr, q_ptr, s_ptr, b_ptr, y_ptr, M, N, stride_x, stride_q, stride_y, K: tl.constexpr,
                     HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        # One program: BLOCK_N output channels for all (<= BLOCK_M) rows; 8-bit weights loaded once, widened in
        # registers; fp32 accumulation; the row scale applied once at the end. K is a compile-time constant (a
        # prior has three widths), which also keeps the loop bound a plain int in the interpreter.
        pid = tl.program_id(0)
        rm = tl.arange(0, BLOCK_M)
        rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + rm[:, None] * stride_x + rk[None, :], mask=(rm[:, None] < M) & (rk[None, :] < K),
                        other=0.0).to(tl.float32)
            w = tl.load(q_ptr + rn[:, None] * stride_q + rk[None, :], mask=(rn[:, None] < N) & (rk[None, :] < K),
                        other=0.0).to(tl.float32)
            acc += tl.sum(x[:, None, :] * w[None, :, :], axis=2)
        s = tl.load(s_ptr + rn, mask=rn < N, other=0.0)
        acc = acc * s[None, :]
        if HAS_BIAS:
            acc += tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptr + rm[:, None] * stride_y + rn[None, :], acc.to(y_ptr.dtype.element_ty),
                 mask=(rm[:, None] < M) & (rn[None, :] < N))

    _KERNEL = gemv_dequant
    return _KERNEL


#: (BLOCK_N, BLOCK_K) of :func:`gemv` by rows (BLOCK_M); BLOCK_M x BLOCK_N x BLOCK_K stays at 4096 products.
GEMV_TILES = {1: (16, 256), 2: (16, 128), 4: (16, 64), 8: (8, 64)}


def gemv(x: Tensor, q: Tensor, scale: Tensor, bias: Tensor | None = None) -> Tensor:
    """x [M, K] (M <= :data:`GEMV_MAX_ROWS`) times dequantised q [N, K] (int8 or float8_e4m3fn) with row scales
    [N], plus bias [N] -> [M, N] in x's dtype, in one Triton kernel (weights widened in registers)."""
    M, K = x.shape
    N = q.shape[0]
    if not 0 < M <= GEMV_MAX_ROWS or q.shape[1] != K:
        raise ValueError(f"gemv takes x [M <= {GEMV_MAX_ROWS}, K] and q [N, K], got {tuple(x.shape)} and "
                         f"{tuple(q.shape)}")
    x = x.contiguous()
    block_m = 1 << (M - 1).bit_length()
    block_n, block_k = GEMV_TILES[block_m]
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    grid = ((N + block_n - 1) // block_n,)
    _kernel()[grid](x, q, scale, scale if bias is None else bias, y, M, N, x.stride(0), q.stride(0), y.stride(0), K=K,
                    HAS_BIAS=bias is not None, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)
    return y
