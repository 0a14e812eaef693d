"""Weight-only 8-bit linear layers for decoding: int8 or float8 (e4m3) weights with one scale per output channel.

A prior's decode step at batch 1 reads every weight of its transformer once per token: it is bound by memory
bandwidth, and 8-bit weights halve the bytes per step against bf16 (a quarter against float32). Activations stay in
the model's dtype; each weight row ``n`` is stored as ``q[n] = round(w[n] / scale[n])`` with
``scale[n] = max|w[n]| / QMAX`` (``QMAX`` 127 for int8, 448 for float8 e4m3) and used as ``q[n] * scale[n]``.

Where the product runs:

- CUDA, up to :data:`GEMV_MAX_ROWS` rows (the decode step): a Triton kernel that loads the 8-bit weights and
  dequantises them in registers (:func:`gemv`), so only the 8-bit bytes cross the memory bus; CUDA-graph safe.
  Where a single pass would leave the SMs short of programs, the input dimension is split over programs
  (split-K: fp32 partials summed in a fixed order by a second kernel); the tiles come from :data:`GEMV_CONFIG`
  (device timings), a rule (:func:`gemv_tiles`) or the call's ``tiles=``.
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
           "quantized_linear", "weight_only_linears", "block_linears", "triton_available", "gemv",
           "gemv_tiles", "gemv_candidates", "split_slices", "GEMV_TILES", "GEMV_CONFIG"]

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


_KERNELS: dict[str, object] = {}


def _kernels() -> dict[str, object]:
    if _KERNELS:
        return _KERNELS
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

    @triton.jit
    def gemv_dequant_split(x_ptr, q_ptr, s_ptr, p_ptr, M, N, stride_x, stride_q, K: tl.constexpr,
                           K_SLICE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                           BLOCK_K: tl.constexpr):
        # Program (n, k): BLOCK_N output channels over inputs [k * K_SLICE, (k + 1) * K_SLICE) (the last slice
        # may end past K: masked), its sum times the row scales stored as fp32 partial [k, rows, channels] of
        # p [SPLIT_K, M, N]. The loop bound is a compile-time constant, as in gemv_dequant.
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        rm = tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K_SLICE, BLOCK_K):
            rk = pid_k * K_SLICE + k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + rm[:, None] * stride_x + rk[None, :], mask=(rm[:, None] < M) & (rk[None, :] < K),
                        other=0.0).to(tl.float32)
            w = tl.load(q_ptr + rn[:, None] * stride_q + rk[None, :], mask=(rn[:, None] < N) & (rk[None, :] < K),
                        other=0.0).to(tl.float32)
            acc += tl.sum(x[:, None, :] * w[None, :, :], axis=2)
        s = tl.load(s_ptr + rn, mask=rn < N, other=0.0)
        acc = acc * s[None, :]
        tl.store(p_ptr + (pid_k * M + rm[:, None]) * N + rn[None, :], acc,
                 mask=(rm[:, None] < M) & (rn[None, :] < N))

    @triton.jit
    def gemv_split_sum(p_ptr, b_ptr, y_ptr, MN, N, HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr,
                       BLOCK: tl.constexpr):
        # y [M, N] (contiguous, x's dtype) = the SPLIT_K partials of p [SPLIT_K, M, N] summed in slice order
        # (deterministic, unlike atomics) + bias [N].
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < MN
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
        for k in range(0, SPLIT_K):
            acc += tl.load(p_ptr + k * MN + offs, mask=mask, other=0.0)
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs % N, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + offs, acc.to(y_ptr.dtype.element_ty), mask=mask)

    _KERNELS.update(single=gemv_dequant, split=gemv_dequant_split, sum=gemv_split_sum)
    return _KERNELS


#: (BLOCK_N, BLOCK_K) of :func:`gemv` by rows (BLOCK_M); BLOCK_M x BLOCK_N x BLOCK_K stays at 4096 products.
GEMV_TILES = {1: (16, 256), 2: (16, 128), 4: (16, 64), 8: (8, 64)}
#: Tiles ``(block_n, block_k, split_k)`` of :func:`gemv` by ``(block_m, N, K)`` (``block_m``: the rows rounded up
#: to a power of two: 1, 2, 4 or 8), consulted before the rule of :func:`gemv_tiles`: fill it with the tiles a
#: device timing found fastest (``benchmarks/bench_weights.py`` sweeps candidates and applies its best here).
GEMV_CONFIG: dict[tuple[int, int, int], tuple[int, int, int]] = {
    # the released upsampler's layers at batch 1 (qkv, attention output, MLP), fastest of the sweep on an H200
    (1, 1440, 1920): (8, 512, 4), (1, 1920, 480): (8, 512, 1), (1, 1920, 1920): (8, 512, 4),
}
#: The rule of :func:`gemv_tiles` splits the input dimension until the grid has about this many programs per SM.
GEMV_PROGRAMS_PER_SM = 8
#: Elements per program of the kernel that sums split-K partials.
_SUM_BLOCK = 1024

_SM_COUNT: dict[int, int] = {}


def _sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (cached); 1 elsewhere (Triton's interpreter)."""
    if device.type != "cuda":
        return 1
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNT:
        _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNT[index]


def _block_m(rows: int) -> int:
    return 1 << (rows - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def split_slices(K: int, block_k: int, split_k: int) -> tuple[int, int]:
    """The inputs per slice (a multiple of ``block_k``) and the number of slices when ``split_k`` slices of K are
    asked for: ``split_k`` rounded down to what whole ``block_k`` chunks allow (1: the single-pass kernel)."""
    k_slice = _cdiv(_cdiv(K, max(split_k, 1)), block_k) * block_k
    return k_slice, _cdiv(K, k_slice)


def _rule_tiles(M: int, N: int, K: int, sms: int) -> tuple[int, int, int]:
    block_n, block_k = GEMV_TILES[_block_m(M)]
    split = min(_cdiv(GEMV_PROGRAMS_PER_SM * sms, _cdiv(N, block_n)), _cdiv(K, block_k))
    return block_n, block_k, split_slices(K, block_k, split)[1]


def gemv_tiles(M: int, N: int, K: int, sms: int = 132) -> tuple[int, int, int]:
    """Tiles ``(block_n, block_k, split_k)`` of :func:`gemv` for x [M, K] and q [N, K] on a device of ``sms``
    SMs: :data:`GEMV_CONFIG` ``[(block_m, N, K)]`` where set; otherwise :data:`GEMV_TILES` of the row bucket with
    the input dimension split until the grid has about :data:`GEMV_PROGRAMS_PER_SM` programs per SM (each slice
    at least one ``block_k`` chunk; ``split_k`` 1 is the single-pass kernel, each program walking all of K)."""
    hit = GEMV_CONFIG.get((_block_m(M), N, K))
    return hit if hit is not None else _rule_tiles(M, N, K, sms)


def gemv_candidates(M: int, N: int, K: int, splits: tuple[int, ...] = (2, 4, 8, 16),
                    sms: int = 132) -> list[tuple[int, int, int]]:
    """Tiles worth timing for x [M, K] and q [N, K]: today's single-pass tile (:data:`GEMV_TILES`, split 1)
    first, then that tile, one twice as wide in N (half in K) and one half as wide (twice in K), each at the
    ``splits`` that whole ``block_k`` chunks allow, and the rule of :func:`gemv_tiles`; duplicates (the same
    slices) once, split_k given as the number of slices it makes."""
    block_n, block_k = GEMV_TILES[_block_m(M)]
    out = [(block_n, block_k, 1)]
    shapes = [(block_n, block_k), (2 * block_n, block_k // 2), (block_n // 2, 2 * block_k)]
    for bn, bk in shapes:
        if bn < 1 or bk < 16:
            continue
        for split in splits:
            out.append((bn, bk, split_slices(K, bk, split)[1]))
    out.append(_rule_tiles(M, N, K, sms))
    return list(dict.fromkeys(out))


def _check_tiles(tiles: tuple[int, int, int]) -> tuple[int, int, int]:
    ok = (isinstance(tiles, (tuple, list)) and len(tiles) == 3 and all(isinstance(t, int) and t >= 1 for t in tiles)
          and all(t & (t - 1) == 0 for t in tiles[:2]))
    if not ok:
        raise ValueError(f"gemv tiles are (block_n, block_k, split_k): block_n and block_k powers of two, "
                         f"split_k >= 1, got {tiles!r}")
    return tuple(tiles)


def gemv(x: Tensor, q: Tensor, scale: Tensor, bias: Tensor | None = None,
         tiles: tuple[int, int, int] | None = None) -> Tensor:
    """x [M, K] (M <= :data:`GEMV_MAX_ROWS`) times dequantised q [N, K] (int8 or float8_e4m3fn) with row scales
    [N], plus bias [N] -> [M, N] in x's dtype, weights widened in registers.

    ``tiles``: ``(block_n, block_k, split_k)``, default :func:`gemv_tiles` (:data:`GEMV_CONFIG`, then a rule).
    ``split_k`` 1 (or one that whole ``block_k`` chunks reduce to 1): one kernel, each program BLOCK_N output
    channels over all of K. Above: the inputs split into that many slices, a grid of (N / BLOCK_N, slices)
    programs storing fp32 partials (times the row scales) and a second kernel summing them in slice order, plus
    the bias, into x's dtype (deterministic). Both are CUDA-graph safe (fixed shapes, no host syncs)."""
    M, K = x.shape
    N = q.shape[0]
    if not 0 < M <= GEMV_MAX_ROWS or q.shape[1] != K:
        raise ValueError(f"gemv takes x [M <= {GEMV_MAX_ROWS}, K] and q [N, K], got {tuple(x.shape)} and "
                         f"{tuple(q.shape)}")
    x = x.contiguous()
    block_m = _block_m(M)
    if tiles is None:
        tiles = gemv_tiles(M, N, K, _sm_count(x.device))
    block_n, block_k, split_k = _check_tiles(tiles)
    k_slice, split_k = split_slices(K, block_k, split_k)
    kernels = _kernels()
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    n_blocks = _cdiv(N, block_n)
    if split_k == 1:
        kernels["single"][(n_blocks,)](x, q, scale, scale if bias is None else bias, y, M, N, x.stride(0),
                                       q.stride(0), y.stride(0), K=K, HAS_BIAS=bias is not None, BLOCK_M=block_m,
                                       BLOCK_N=block_n, BLOCK_K=block_k)
        return y
    part = torch.empty(split_k, M, N, dtype=torch.float32, device=x.device)
    kernels["split"][(n_blocks, split_k)](x, q, scale, part, M, N, x.stride(0), q.stride(0), K=K, K_SLICE=k_slice,
                                          BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)
    kernels["sum"][(_cdiv(M * N, _SUM_BLOCK),)](part, scale if bias is None else bias, y, M * N, N,
                                                HAS_BIAS=bias is not None, SPLIT_K=split_k, BLOCK=_SUM_BLOCK)
    return y
