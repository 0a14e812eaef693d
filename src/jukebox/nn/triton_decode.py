"""Fused GPU decode step in Triton: about five kernels per transformer layer instead of ~20.

One decoding step of an :class:`~jukebox.prior.autoregressive.AutoregressiveTransformer` (batch ``B``, one token
per row) over the compact KV cache of :meth:`~jukebox.nn.transformer.Transformer.make_cache`, with the model's
maths (``a = attn(ln_attn(x))``, ``h = x + a``, ``out = h + mlp(ln_mlp(h))``). Per layer:

1. ``LayerNorm + QKV`` (:func:`_linear_kernel` with ``HAS_LN`` and ``KV``): the query goes to a buffer, the new
   key/value straight into the cache slot of the position (ring, columns or linear layout, slot computed on the
   device from ``pos``). Cross-attention layers project the query only.
2. attention of the one query over exactly the keys its pattern allows (:func:`_attn_kernel`); long caches
   (dense, prime, cross) are split over keys (flash-decoding) and merged by :func:`_combine_kernel`.
3. out-projection + bias + residual (``h = x + a``).
4. ``LayerNorm + MLP-in + bias + quick-GELU``.
5. MLP-out + bias + residual (``out = h + m``).

Kernels only: the sampler wires :class:`TritonDecodeStep` in for ``decode="triton"``
(:func:`jukebox.prior.sampler.triton_static_decoder`, a :class:`~jukebox.prior.sampler.StaticDecoder` replaying the
fused step from a CUDA graph).

The GEMVs read each weight row contiguously, batch rows share one weight tile (``tl.dot`` for ``B > 1``), and
every kernel takes the position from a device tensor, so the step has static shapes and is captured in a CUDA
graph by :class:`jukebox.prior.sampler.StaticDecoder`. On Hopper and later the kernels are launched with
programmatic dependent launch: a kernel's programs start while the previous kernel finishes, read their first
chunk of weights (which no kernel writes) and only then wait for the previous kernel's results. Weight-only 8-bit
weights (``weights="int8"`` / ``"fp8"``, one scale per row) are widened in registers. The tiles of each GEMV shape
are chosen at the first step by timing the whole step in a CUDA graph with each candidate (:meth:`TritonDecodeStep.
tune`). Results equal the PyTorch step up to
summation order (fp32: greedy samples identical; bf16: logits close), with the same roundings to the model dtype
after LayerNorm, each Linear, attention and each residual add.

Triton is optional: :func:`available` says whether it can run here; on CPU the kernels run in Triton's interpreter
(``TRITON_INTERPRET=1``, for tests only).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import UsageError
from .quant import quantized_linear

try:  # optional dependency
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the environment
    triton = None
    tl = None
try:  # grid dependency control (Triton >= 3.3)
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # pragma: no cover - depends on the environment
    gdc_launch_dependents = gdc_wait = None

__all__ = ["available", "check_available", "TritonDecodeStep", "fused_linear", "decode_attention", "graph_time_ms"]

#: Layout codes of the kernels (cache layouts of :mod:`jukebox.nn.kv_cache`).
_LINEAR, _RING, _COLUMNS = 0, 1, 2
#: Key-range modes of the attention kernel.
_M_BLOCK, _M_PREV, _M_COLUMNS, _M_LINEAR, _M_CROSS = 0, 1, 2, 3, 4
#: Keys per program of the attention kernel beyond which a layer's keys are split over programs.
SPLIT_KEYS = 256


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def available(device: torch.device | str) -> bool:
    """True when the Triton decode path can run on ``device`` (CUDA with Triton, or CPU under the interpreter)."""
    if triton is None:
        return False
    return torch.device(device).type == "cuda" or _interpreting()


def check_available(device: torch.device | str) -> None:
    """Raise a one-line :class:`~jukebox.errors.UsageError` when the Triton decode path cannot run on ``device``."""
    if triton is None:
        raise UsageError("decode='triton' needs the triton package (pip install triton)")
    if not available(device):
        raise UsageError(f"decode='triton' needs a CUDA device (or TRITON_INTERPRET=1 for tests), got {device}")


if triton is not None:

    @triton.jit
    def _gdc(PDL: tl.constexpr):
        """Programmatic dependent launch (Hopper and later; ``PDL`` set only where the launch asks for it): let the
        next kernel of the stream start its programs now, then wait until every earlier kernel has finished and
        its writes are visible. Loads placed before this call must not read anything an earlier kernel writes."""
        if PDL:
            gdc_launch_dependents()
            gdc_wait()

    @triton.jit
    def _mac(acc, x_ptr, lnw_ptr, lnb_ptr, w, offs_b, mb, kk, K, mean, rstd,
             HAS_LN: tl.constexpr, USE_DOT: tl.constexpr, DOT_F32: tl.constexpr, CG: tl.constexpr = False):
        """acc [BLOCK_B, BLOCK_N] += LN?(x[:, kk]) @ w^T for one chunk of inputs ``kk`` and its weights
        w [BLOCK_N, BLOCK_K] (model dtype, or 8-bit: widened exactly to the model dtype). ``CG``: read x from L2
        (written by other programs of the same launch)."""
        dt = x_ptr.dtype.element_ty
        mk = kk < K
        m2 = mb[:, None] & mk[None, :]
        if CG:
            xv = tl.load(x_ptr + offs_b[:, None] * K + kk[None, :], mask=m2, other=0.0, cache_modifier=".cg")
        else:
            xv = tl.load(x_ptr + offs_b[:, None] * K + kk[None, :], mask=m2, other=0.0)
        if HAS_LN:
            g = tl.load(lnw_ptr + kk, mask=mk, other=0.0).to(tl.float32)
            bb = tl.load(lnb_ptr + kk, mask=mk, other=0.0).to(tl.float32)
            xn = (xv.to(tl.float32) - mean[:, None]) * rstd[:, None] * g[None, :] + bb[None, :]
            xv = tl.where(m2, xn, 0.0).to(dt)  # LayerNorm output in the model dtype, as nn.LayerNorm
        if USE_DOT:
            if DOT_F32:  # fp32 models (no tf32), and the interpreter, whose bf16 dot is wrong: exact fp32 copies
                acc += tl.dot(xv.to(dt).to(tl.float32), tl.trans(w.to(tl.float32)), input_precision="ieee")
            else:
                acc += tl.dot(xv.to(dt), tl.trans(w.to(dt)))
        else:  # BLOCK_B == 1
            acc += tl.sum(w.to(tl.float32) * xv.to(tl.float32), axis=1)[None, :]
        return acc

    @triton.jit
    def _cache_slot(pos, LAYOUT, SIZE, BC, NB):
        """(slot, limit) of position ``pos`` in a compact cache of ``LAYOUT`` (linear, ring, columns; a compile-time
        constant in :func:`_linear_kernel`, a runtime value elsewhere): the key/value is stored when ``pos < limit``
        (every position, except past a linear cache: prime layers' visible prefix)."""
        lim = pos + 1
        if LAYOUT == 0:
            slot = tl.minimum(pos, SIZE - 1)
            lim = SIZE + pos * 0
        elif LAYOUT == 1:
            slot = pos % SIZE
        else:
            slot = (pos % BC) * NB + pos // BC
        return slot, lim

    @triton.jit
    def _linear_kernel(x_ptr, w_ptr, scale_ptr, bias_ptr, out_ptr, res_ptr, lnw_ptr, lnb_ptr, key_ptr, val_ptr,
                       pos_ptr, B, N, K, eps, S, D, H, L_FLAT, SIZE, BC, NB,
                       HAS_LN: tl.constexpr, GELU: tl.constexpr, HAS_RES: tl.constexpr, KV: tl.constexpr,
                       LAYOUT: tl.constexpr, USE_DOT: tl.constexpr, DOT_F32: tl.constexpr,
                       HAS_SCALE: tl.constexpr, PDL: tl.constexpr,
                       BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """y [B, N] = act(LN?(x) [B, K] @ w[N, K]^T + bias) (+ res); rows of x, out, res are contiguous.

        ``HAS_SCALE``: w holds 8-bit weights (int8 or float8 e4m3) with one fp32 scale per row (``scale_ptr``
        [N]), widened in registers. ``PDL``: the first chunk of weights (all of them when ``K <= BLOCK_K``) is
        loaded before waiting for the previous kernel (:func:`_gdc`), so the weight reads of consecutive kernels
        overlap. ``KV``: columns [0, S) go to ``out`` [B, S] (query), [S, 2S) / [2S, 3S) into the key/value
        cache at the slot of position ``*pos_ptr`` (heads of size ``D``; cache rows of ``L_FLAT`` slots,
        ``LAYOUT``)."""
        pid_n = tl.program_id(0)
        pid_b = tl.program_id(1)
        offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        mb = offs_b < B
        mn = offs_n < N
        dt = x_ptr.dtype.element_ty
        # weights never change during a step: the first chunk may be read before the previous kernel ends
        w0 = tl.load(w_ptr + offs_n[:, None] * K + offs_k[None, :], mask=mn[:, None] & (offs_k[None, :] < K),
                     other=0.0)
        _gdc(PDL)
        mean = tl.zeros([BLOCK_B], tl.float32)
        rstd = tl.zeros([BLOCK_B], tl.float32)
        if HAS_LN:  # row statistics in one pass, shifted by the row's first value (no cancellation)
            shift = tl.load(x_ptr + offs_b * K, mask=mb, other=0.0).to(tl.float32)
            s1 = tl.zeros([BLOCK_B], tl.float32)
            s2 = tl.zeros([BLOCK_B], tl.float32)
            for k0 in range(0, K, BLOCK_K):
                kk = k0 + offs_k
                m2 = mb[:, None] & (kk[None, :] < K)
                xv = tl.load(x_ptr + offs_b[:, None] * K + kk[None, :], mask=m2, other=0.0).to(tl.float32)
                dv = tl.where(m2, xv - shift[:, None], 0.0)
                s1 += tl.sum(dv, axis=1)
                s2 += tl.sum(dv * dv, axis=1)
            m1 = s1 / K
            mean = shift + m1
            rstd = 1.0 / tl.sqrt(tl.maximum(s2 / K - m1 * m1, 0.0) + eps)
        acc = tl.zeros([BLOCK_B, BLOCK_N], tl.float32)
        acc = _mac(acc, x_ptr, lnw_ptr, lnb_ptr, w0, offs_b, mb, offs_k, K, mean, rstd, HAS_LN, USE_DOT, DOT_F32)
        for k0 in range(BLOCK_K, K, BLOCK_K):
            kk = k0 + offs_k
            w = tl.load(w_ptr + offs_n[:, None] * K + kk[None, :], mask=mn[:, None] & (kk[None, :] < K), other=0.0)
            acc = _mac(acc, x_ptr, lnw_ptr, lnb_ptr, w, offs_b, mb, kk, K, mean, rstd, HAS_LN, USE_DOT, DOT_F32)
        if HAS_SCALE:
            acc = acc * tl.load(scale_ptr + offs_n, mask=mn, other=0.0)[None, :]
        bias = tl.load(bias_ptr + offs_n, mask=mn, other=0.0).to(tl.float32)
        y = (acc + bias[None, :]).to(dt).to(tl.float32)  # nn.Linear output in the model dtype
        if GELU:
            y = y * tl.sigmoid(1.702 * y)
        mo = mb[:, None] & mn[None, :]
        if HAS_RES:
            r = tl.load(res_ptr + offs_b[:, None] * N + offs_n[None, :], mask=mo, other=0.0).to(tl.float32)
            y = r + y
        if KV:
            pos = tl.load(pos_ptr)
            slot, lim = _cache_slot(pos, LAYOUT, SIZE, BC, NB)
            is_q = offs_n < S
            keep = (offs_n * 0 + pos) < lim
            is_k = (offs_n >= S) & (offs_n < 2 * S) & keep
            is_v = (offs_n >= 2 * S) & keep
            c = tl.where(offs_n >= 2 * S, offs_n - 2 * S, tl.where(is_q, 0, offs_n - S))
            hh = c // D
            addr = ((offs_b[:, None] * H + hh[None, :]) * L_FLAT + slot) * D + (c % D)[None, :]
            yo = y.to(dt)
            tl.store(out_ptr + offs_b[:, None] * S + offs_n[None, :], yo, mask=mo & is_q[None, :])
            tl.store(key_ptr + addr, yo, mask=mo & is_k[None, :])
            tl.store(val_ptr + addr, yo, mask=mo & is_v[None, :])
        else:
            tl.store(out_ptr + offs_b[:, None] * N + offs_n[None, :], y.to(dt), mask=mo)

    @triton.jit
    def _key_range(pos, MODE, BC, SIZE, NB):
        """(first slot, number of keys) that the query at ``pos`` attends to in a compact cache (``MODE``: one of
        the key-range modes; a compile-time constant in :func:`_attn_kernel`, a runtime value elsewhere)."""
        if MODE == 0:  # block: ring of one block, slots 0 .. pos % BC
            base = pos * 0
            n = pos % BC + 1
        elif MODE == 1:  # prev_block: ring of two blocks, the whole previous one (none in the first block)
            base = ((pos // BC + 1) % 2) * BC
            n = tl.where(pos >= BC, BC, 0)
        elif MODE == 2:  # transpose: column pos % BC of the grid, rows 0 .. pos // BC
            base = (pos % BC) * NB
            n = pos // BC + 1
        elif MODE == 3:  # dense / prime: linear, positions 0 .. min(pos, SIZE - 1)
            base = pos * 0
            n = tl.minimum(pos + 1, SIZE)
        else:  # cross: every encoder position
            base = pos * 0
            n = pos * 0 + SIZE
        return base, n

    @triton.jit
    def _attend(q, k_ptr, v_ptr, kv, lo, hi, D, offs_d, md, scale, BLOCK_N: tl.constexpr, CG: tl.constexpr):
        """Online softmax of one head's query q [BLOCK_D] (fp32) over cache rows ``lo .. hi - 1`` (``D`` values each,
        from element ``kv``): (unnormalised output [BLOCK_D], running max, running sum). ``CG``: keys and values
        are read from L2 (other programs of the same launch wrote some of them)."""
        m_i = tl.max(tl.full([BLOCK_N], float("-inf"), tl.float32), axis=0)
        l_i = tl.sum(tl.zeros([BLOCK_N], tl.float32), axis=0)
        acc = tl.zeros(q.shape, tl.float32)
        offs_n = tl.arange(0, BLOCK_N)
        for start in range(lo, hi, BLOCK_N):
            kn = start + offs_n
            mn = kn < hi
            m2 = mn[:, None] & md[None, :]
            ptrs = kv + kn[:, None] * D + offs_d[None, :]
            if CG:
                kt = tl.load(k_ptr + ptrs, mask=m2, other=0.0, cache_modifier=".cg").to(tl.float32)
            else:
                kt = tl.load(k_ptr + ptrs, mask=m2, other=0.0).to(tl.float32)
            s = tl.sum(kt * q[None, :], axis=1) * scale
            s = tl.where(mn, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=0))
            p = tl.exp(s - m_new)
            alpha = tl.exp(m_i - m_new)
            if CG:
                vt = tl.load(v_ptr + ptrs, mask=m2, other=0.0, cache_modifier=".cg").to(tl.float32)
            else:
                vt = tl.load(v_ptr + ptrs, mask=m2, other=0.0).to(tl.float32)
            l_i = l_i * alpha + tl.sum(p, axis=0)
            acc = acc * alpha + tl.sum(p[:, None] * vt, axis=0)
            m_i = m_new
        return acc, m_i, l_i

    @triton.jit
    def _attn_kernel(q_ptr, k_ptr, v_ptr, out_ptr, part_ptr, ml_ptr, pos_ptr, H, D, L_FLAT, SIZE, BC, NB, scale,
                     MODE: tl.constexpr, N_SPLIT: tl.constexpr, SPLIT: tl.constexpr, PDL: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        """One query per (batch row, head) over the keys its pattern allows at position ``*pos_ptr``; program
        (bh, s) takes keys [s * SPLIT, (s + 1) * SPLIT) of that range. ``N_SPLIT == 1``: writes the output
        [B, H * D] in the model dtype (zeros where there is no key); else fp32 partials for :func:`_combine_kernel`:
        ``part`` [B * H, N_SPLIT, BLOCK_D] (unnormalised) and ``ml`` [B * H, N_SPLIT, 2] (running max, sum)."""
        bh = tl.program_id(0)
        sp = tl.program_id(1)
        b = bh // H
        h = bh % H
        pos = tl.load(pos_ptr)  # set before the step, never written by its kernels
        _gdc(PDL)
        base, n = _key_range(pos, MODE, BC, SIZE, NB)
        offs_d = tl.arange(0, BLOCK_D)
        md = offs_d < D
        q = tl.load(q_ptr + b * H * D + h * D + offs_d, mask=md, other=0.0).to(tl.float32)
        kv = (bh * L_FLAT + base) * D
        lo = sp * SPLIT
        hi = tl.minimum(lo + SPLIT, n)
        acc, m_i, l_i = _attend(q, k_ptr, v_ptr, kv, lo, hi, D, offs_d, md, scale, BLOCK_N, False)
        if N_SPLIT == 1:
            o = tl.where(l_i > 0, acc / tl.maximum(l_i, 1e-30), 0.0)
            tl.store(out_ptr + b * H * D + h * D + offs_d, o.to(out_ptr.dtype.element_ty), mask=md)
        else:
            tl.store(part_ptr + (bh * N_SPLIT + sp) * BLOCK_D + offs_d, acc)
            tl.store(ml_ptr + (bh * N_SPLIT + sp) * 2, m_i)
            tl.store(ml_ptr + (bh * N_SPLIT + sp) * 2 + 1, l_i)

    @triton.jit
    def _combine_kernel(part_ptr, ml_ptr, out_ptr, H, D, N_SPLIT: tl.constexpr, BLOCK_S: tl.constexpr,
                        BLOCK_D: tl.constexpr, PDL: tl.constexpr):
        """Merge the key-split partials of :func:`_attn_kernel` into the output [B, H * D] (model dtype)."""
        _gdc(PDL)
        bh = tl.program_id(0)
        b = bh // H
        h = bh % H
        offs_s = tl.arange(0, BLOCK_S)
        ms = offs_s < N_SPLIT
        offs_d = tl.arange(0, BLOCK_D)
        m = tl.load(ml_ptr + (bh * N_SPLIT + offs_s) * 2, mask=ms, other=float("-inf"))
        ll = tl.load(ml_ptr + (bh * N_SPLIT + offs_s) * 2 + 1, mask=ms, other=0.0)
        mx = tl.max(m, axis=0)
        w = tl.where(ll > 0, tl.exp(m - tl.where(mx == float("-inf"), 0.0, mx)), 0.0)
        den = tl.sum(w * ll, axis=0)
        part = tl.load(part_ptr + (bh * N_SPLIT + offs_s[:, None]) * BLOCK_D + offs_d[None, :], mask=ms[:, None],
                       other=0.0)
        o = tl.sum(w[:, None] * part, axis=0)
        o = tl.where(den > 0, o / tl.maximum(den, 1e-30), 0.0)
        tl.store(out_ptr + b * H * D + h * D + offs_d, o.to(out_ptr.dtype.element_ty), mask=offs_d < D)


# --- launch helpers -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinearConfig:
    """Tile sizes of :func:`_linear_kernel`. ``dot``: batch rows padded to 16 for ``tl.dot`` (always for
    batch > 1; at batch 1 it buys the pipelined ``cp.async`` loads of the dot path), else a row reduction."""

    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 3
    dot: bool = False


#: Candidates timed by :meth:`TritonDecodeStep.tune` (batch 1 / batch > 1, where ``tl.dot`` needs 16-wide tiles).
#: At batch 1 :func:`candidates` adds tiles that span the whole input (a program's weights all read before it
#: waits for the previous kernel, see :func:`_linear_kernel`).
CANDIDATES_B1 = (LinearConfig(4, 512), LinearConfig(8, 512), LinearConfig(4, 1024), LinearConfig(8, 1024, 8),
                 LinearConfig(16, 256, 4, 3, True), LinearConfig(16, 512, 8, 3, True),
                 LinearConfig(32, 256, 8, 4, True))
CANDIDATES_BN = (LinearConfig(16, 128, 4, 3, True), LinearConfig(16, 256, 4, 3, True),
                 LinearConfig(32, 128, 4, 4, True), LinearConfig(16, 512, 8, 3, True),
                 LinearConfig(32, 256, 8, 3, True))
#: Largest input width for which whole-row tiles are timed (registers: 4 rows x 4,096 x 2 bytes per program).
WHOLE_ROW_MAX_K = 4096


#: Shared memory a tile may ask for (bytes; an H100/H200 SM has 227 KB per block).
SMEM_LIMIT = 200 * 1024


def _smem(cfg: LinearConfig, batch: int, elem: int) -> int:
    """Shared memory of the pipelined ``tl.dot`` path: ``num_stages`` copies of the input and weight tiles."""
    return cfg.num_stages * (_block_b(batch) + cfg.block_n) * cfg.block_k * elem if cfg.dot else 0


def candidates(batch: int, n: int, k: int, elem: int = 2) -> list[LinearConfig]:
    """Tiles worth timing for a [n, k] weight at ``batch`` rows (activations of ``elem`` bytes). At batch 1 they
    include whole-row tiles from 1 row per program (many programs) to 16 (one wave of programs, each holding its
    weights in registers while the previous kernel finishes)."""
    if batch > 1:
        return [c for c in CANDIDATES_BN if _smem(c, batch, elem) <= SMEM_LIMIT]
    out = list(CANDIDATES_B1)
    whole = triton.next_power_of_2(k)
    if whole <= WHOLE_ROW_MAX_K:
        out += [LinearConfig(1, whole, 4, 1), LinearConfig(2, whole, 4, 1), LinearConfig(4, whole, 8, 1),
                LinearConfig(8, whole, 8, 1)]
        if whole <= 2048:
            out.append(LinearConfig(16, whole, 8, 1))
    return list(dict.fromkeys(out))


#: Tiles chosen by :meth:`TritonDecodeStep.tune`: (device name, dtype, weights, PDL, batch, linear, N, K) -> config.
_TUNED: dict[tuple, LinearConfig] = {}
#: One entry per tuned shape: linear, N, K, batch, dtype, weights, PDL, microseconds of the whole step with each
#: candidate, best, and the step time with the tiles tuned so far.
TUNE_LOG: list[dict] = []
#: Programmatic dependent launch on devices that have it (compute capability 9.0 and later); benchmarks turn it off
#: to compare.
PDL = True
#: Run the stack of each step as one persistent kernel (:mod:`jukebox.nn.triton_persistent`) where the model
#: allows it. Experimental, off by default; benchmarks turn it on to measure it.
PERSISTENT = False


def pdl_supported(device: torch.device | str) -> bool:
    """Whether kernels on ``device`` can be launched with programmatic dependent launch (Hopper and later, a Triton
    with grid dependency control; never in the interpreter)."""
    device = torch.device(device)
    if triton is None or gdc_wait is None or _interpreting() or device.type != "cuda":
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9


def _cfg_str(cfg: LinearConfig) -> str:
    return f"{cfg.block_n}x{cfg.block_k}/{cfg.num_warps}w/{cfg.num_stages}s{'/dot' if cfg.dot else ''}"


def _block_b(batch: int, dot: bool = True) -> int:
    return 1 if batch == 1 and not dot else min(64, max(16, triton.next_power_of_2(batch)))


def default_config(batch: int, n: int, k: int) -> LinearConfig:
    """A reasonable tile for an [n, k] weight without timing: enough programs to cover the SMs."""
    if batch > 1:
        return LinearConfig(16, 128 if k <= 1024 else 256, 4, 3, True)
    return LinearConfig(8 if n >= 2048 else 4, 512)


def _launch_opts(pdl: bool) -> dict:
    return {"launch_pdl": True} if pdl else {}


def fused_linear(x: Tensor, weight: Tensor, bias: Tensor, out: Tensor, *, res: Tensor | None = None,
                 ln: tuple[Tensor, Tensor, float] | None = None, gelu: bool = False,
                 kv: tuple[Tensor, Tensor, Tensor, int, int, int, int, int, int] | None = None,
                 scale: Tensor | None = None, config: LinearConfig | None = None, pdl: bool = False) -> Tensor:
    """``out = act(LN(x) @ weight.T + bias) (+ res)`` for x [B, K] (rows contiguous), weight [N, K], bias [N].

    ``ln``: (weight, bias, eps) of a LayerNorm applied to x first. ``gelu``: quick-GELU on the Linear output.
    ``res`` [B, N]: residual added last. ``kv``: (key, value, pos, layout, size, block_ctx, n_blocks, heads,
    head_dim): the QKV case; ``out`` [B, S] receives the query and key/value go into the cache slot of ``pos``.
    ``scale`` [N] (fp32): ``weight`` holds weight-only 8-bit weights (int8 or float8 e4m3, one scale per row, as
    :func:`jukebox.nn.quant.quantize_weight` makes them); the product is ``x @ (weight * scale).T``. ``pdl``:
    launch with programmatic dependent launch (see :func:`pdl_supported`).
    """
    B, K = x.shape
    N = weight.shape[0]
    cfg = config or default_config(B, N, K)
    if B > 1 and (not cfg.dot or cfg.block_n < 16):  # batch rows need the tl.dot path (tiles of >= 16)
        cfg = default_config(B, N, K)
    bb = _block_b(B, cfg.dot)
    grid = (triton.cdiv(N, cfg.block_n), triton.cdiv(B, bb))
    dummy = bias
    lnw, lnb, eps = ln if ln is not None else (dummy, dummy, 0.0)
    if kv is not None:
        key, val, pos, layout, size, bc, nb, heads, hd = kv
        S = heads * hd
        l_flat = key.shape[2] * (key.shape[3] if key.dim() == 5 else 1)
    else:  # unused pointers (their branches are compiled out)
        key = val = pos = dummy
        layout, size, bc, nb, heads, hd, S, l_flat = 0, 1, 1, 1, 1, 1, N, 1
    _linear_kernel[grid](x, weight, scale if scale is not None else dummy, bias, out,
                         res if res is not None else dummy, lnw, lnb, key, val, pos,
                         B, N, K, eps, S, hd, heads, l_flat, size, bc, nb,
                         HAS_LN=ln is not None, GELU=gelu, HAS_RES=res is not None, KV=kv is not None,
                         LAYOUT=layout, USE_DOT=bb > 1, DOT_F32=_interpreting() or x.dtype == torch.float32,
                         HAS_SCALE=scale is not None, PDL=pdl, BLOCK_B=bb,
                         BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
                         num_warps=cfg.num_warps, num_stages=cfg.num_stages, **_launch_opts(pdl))
    return out


def _attn_mode(pattern: str, layout: str) -> int:
    table = {("block", "ring"): _M_BLOCK, ("prev_block", "ring"): _M_PREV, ("transpose", "columns"): _M_COLUMNS,
             ("dense", "linear"): _M_LINEAR, ("prime", "linear"): _M_LINEAR, ("cross", "linear"): _M_CROSS}
    if (pattern, layout) not in table:
        raise UsageError(f"decode='triton' needs the compact cache (pattern {pattern!r} has layout {layout!r})")
    return table[(pattern, layout)]


def _max_keys(mode: int, cache) -> int:
    if mode in (_M_BLOCK, _M_PREV):
        return cache.size if mode == _M_BLOCK else cache.size // 2
    if mode == _M_COLUMNS:
        return cache.n_blocks
    return cache.size


class _AttnLaunch:
    """Static launch of :func:`_attn_kernel` (+ :func:`_combine_kernel` for long key ranges) for one layer."""

    def __init__(self, pattern: str, cache, block_ctx: int, heads: int, head_dim: int, batch: int,
                 pdl: bool = False) -> None:
        self.mode = _attn_mode(pattern, cache.layout)
        self.pdl = pdl
        self.cache = cache
        self.heads, self.head_dim = heads, head_dim
        self.block_ctx = block_ctx
        self.block_d = triton.next_power_of_2(head_dim)
        self.block_n = max(16, min(64, 16384 // self.block_d))
        self.num_warps = 8 if self.block_n * self.block_d >= 16384 else 4
        keys = _max_keys(self.mode, cache)
        self.n_split = 1 if keys <= 2 * SPLIT_KEYS else triton.cdiv(keys, SPLIT_KEYS)
        self.split = keys if self.n_split == 1 else SPLIT_KEYS
        self.l_flat = cache.key.shape[2] * (cache.key.shape[3] if cache.key.dim() == 5 else 1)
        dev = cache.key.device
        if self.n_split > 1:
            self.part = torch.empty(batch * heads, self.n_split, self.block_d, dtype=torch.float32, device=dev)
            self.ml = torch.empty(batch * heads, self.n_split, 2, dtype=torch.float32, device=dev)
        else:
            self.part = self.ml = torch.empty(1, dtype=torch.float32, device=dev)
        self.scale = 1.0 / math.sqrt(head_dim)

    def __call__(self, q: Tensor, out: Tensor, pos: Tensor) -> Tensor:
        B = q.shape[0]
        c = self.cache
        _attn_kernel[(B * self.heads, self.n_split)](
            q, c.key, c.value, out, self.part, self.ml, pos, self.heads, self.head_dim, self.l_flat, c.size,
            self.block_ctx, c.n_blocks, self.scale, MODE=self.mode, N_SPLIT=self.n_split, SPLIT=self.split,
            PDL=self.pdl, BLOCK_N=self.block_n, BLOCK_D=self.block_d, num_warps=self.num_warps,
            **_launch_opts(self.pdl))
        if self.n_split > 1:
            _combine_kernel[(B * self.heads,)](self.part, self.ml, out, self.heads, self.head_dim,
                                               N_SPLIT=self.n_split, BLOCK_S=triton.next_power_of_2(self.n_split),
                                               BLOCK_D=self.block_d, PDL=self.pdl, num_warps=4,
                                               **_launch_opts(self.pdl))
        return out


def decode_attention(q: Tensor, cache, pattern: str, block_ctx: int, pos: Tensor) -> Tensor:
    """Attention of one query per row, q [B, H, D] (or [B, H * D]), over a compact layer cache at position ``pos``
    ([1] long tensor; the cache already holds that position's key) -> [B, H * D] in q's dtype."""
    B = q.shape[0]
    heads, head_dim = cache.key.shape[1], cache.key.shape[-1]
    launch = _AttnLaunch(pattern, cache, block_ctx, heads, head_dim, B)
    out = torch.empty(B, heads * head_dim, dtype=q.dtype, device=q.device)
    return launch(q.reshape(B, heads * head_dim).contiguous(), out, pos)


# --- the fused step ---------------------------------------------------------------------------------------------
class _Layer:
    """Weights, cache and launch settings of one transformer block."""

    def __init__(self, block, cache, batch: int, weights: str, pdl: bool) -> None:
        attn = block.attn
        if block.res_scale != 1.0:
            raise UsageError("decode='triton' does not support res_scale transformers")
        self.block, self.cache = block, cache
        self.cross = attn.pattern == "cross"
        self.heads, self.head_dim, self.n_state = attn.heads, attn.head_dim, attn.n_state
        self.attn = _AttnLaunch(attn.pattern, cache, attn.block_ctx, attn.heads, attn.head_dim, batch, pdl)
        layout = {"linear": _LINEAR, "ring": _RING, "columns": _COLUMNS}[cache.layout]
        self.layout = layout
        self.pdl = pdl
        self.configs: dict[str, LinearConfig | None] = {"qkv": None, "proj": None, "fc": None, "out": None}
        #: name -> (weight [N, K], row scales [N] or None, bias [N]): the model's own weights, or their weight-only
        #: 8-bit copies (the ones :func:`jukebox.nn.quant.weight_only_linears` runs the modules with)
        self.params: dict[str, tuple[Tensor, Tensor | None, Tensor]] = {}
        for name, lin in self.linears().items():
            if weights == "native":
                self.params[name] = (lin.weight, None, lin.bias)
            else:
                ql = quantized_linear(lin, weights)
                self.params[name] = (ql.q, ql.scale, ql.bias)

    def linears(self) -> dict[str, torch.nn.Linear]:
        a, m = self.block.attn, self.block.mlp
        return {"qkv": a.q if self.cross else a.qkv, "proj": a.proj, "fc": m.fc, "out": m.proj}

    def linear(self, name: str, x: Tensor, out: Tensor, **kw) -> Tensor:
        w, scale, bias = self.params[name]
        return fused_linear(x, w, bias, out, scale=scale, config=self.configs[name], pdl=self.pdl, **kw)


class TritonDecodeStep:
    """``step(prev_tokens [B, 1], pos [1]) -> logits [B, 1, bins]``: :meth:`AutoregressiveTransformer.step_static`
    with the transformer stack in fused Triton kernels (5 per layer, + 1 for layers whose keys are split).

    Holds references to the model's parameters and to ``cache`` (no copies); the intermediate buffers are
    allocated once here, so the call can be captured in a CUDA graph. ``cond`` is the per-position or constant
    conditioning of the model (as for ``step_static``). Cross-attention caches must already be filled.
    ``weights``: ``native`` or a weight-only 8-bit format (``int8``, ``fp8``: the block linears' 8-bit copies of
    :func:`jukebox.nn.quant.quantized_linear`, widened in registers). ``pdl``: programmatic dependent launch
    (default: :data:`PDL` where :func:`pdl_supported`). ``persistent``: the stack as one persistent kernel
    (:class:`~jukebox.nn.triton_persistent.PersistentStack`; default :data:`PERSISTENT` where supported)."""

    def __init__(self, model, cache, cond: Tensor | None, batch: int, tune: bool = True,
                 weights: str = "native", pdl: bool | None = None, persistent: bool | None = None) -> None:
        dev = model.pos_emb.device
        check_available(dev)
        tr = model.transformer
        if len(cache) != len(tr.blocks):
            raise UsageError(f"cache has {len(cache)} layers, the transformer {len(tr.blocks)}")
        if any(layer.reference for layer in cache.layers):
            raise UsageError("decode='triton' needs the compact cache (compact_cache=True)")
        self.pdl = (PDL and pdl_supported(dev)) if pdl is None else bool(pdl)
        self.weights = weights
        self.model, self.cache, self.cond, self.batch = model, cache, cond, batch
        self.layers = [_Layer(b, c, batch, weights, self.pdl) for b, c in zip(tr.blocks, cache.layers)]
        dtype = model.pos_emb.dtype
        W = tr.width

        def buf(n: int) -> Tensor:
            return torch.empty(batch, n, dtype=dtype, device=dev)

        self.xa, self.xb, self.h = buf(W), buf(W), buf(W)
        #: Time the GEMV tiles at the first CUDA call (results are shared by later steps of the same shapes).
        self.pending_tune = tune and dev.type == "cuda"
        self.tuned: dict[str, str] = {}
        # per-size buffers: rows must be contiguous ([B, n] with stride n)
        self._q = {n: buf(n) for n in {layer.n_state for layer in self.layers}}
        self._a = {n: buf(n) for n in self._q}
        self._g = {n: buf(n) for n in {layer.block.mlp.fc.out_features for layer in self.layers}}
        #: the whole stack as one persistent kernel (``persistent``, default :data:`PERSISTENT` where supported)
        self.persistent = None
        if persistent or persistent is None and PERSISTENT:
            from . import triton_persistent

            if persistent or triton_persistent.supported(self) is None:
                self.persistent = triton_persistent.PersistentStack(self)
                self.pending_tune = False  # no GEMV tiles to choose

    # one layer ---------------------------------------------------------------------------------------------------
    def _layer(self, L: _Layer, x: Tensor, out: Tensor, pos: Tensor) -> None:
        blk = L.block
        S = L.n_state
        q, a = self._q[S], self._a[S]
        ln1 = (blk.norm_attn.weight, blk.norm_attn.bias, blk.norm_attn.eps)
        if L.cross:
            L.linear("qkv", x, q, ln=ln1)
        else:
            c = L.cache
            kv = (c.key, c.value, pos, L.layout, c.size, L.attn.block_ctx, c.n_blocks, L.heads, L.head_dim)
            L.linear("qkv", x, q, ln=ln1, kv=kv)
        L.attn(q, a, pos)
        L.linear("proj", a, self.h, res=x)
        g = self._g[blk.mlp.fc.out_features]
        ln2 = (blk.norm_mlp.weight, blk.norm_mlp.bias, blk.norm_mlp.eps)
        L.linear("fc", self.h, g, ln=ln2, gelu=True)
        L.linear("out", g, out, res=self.h)

    def stack(self, x: Tensor, pos: Tensor) -> Tensor:
        """The transformer stack on x [B, width] at ``pos``: writes the caches, returns [B, width]."""
        if self.persistent is not None:
            return self.persistent(x, pos)
        self.xa.copy_(x)
        cur, nxt = self.xa, self.xb
        for L in self.layers:
            self._layer(L, cur, nxt, pos)
            cur, nxt = nxt, cur
        return cur

    def __call__(self, prev_tokens: Tensor, pos: Tensor) -> Tensor:
        m = self.model
        x = m.token_emb(prev_tokens) + m.pos_emb.index_select(0, pos)
        cond = self.cond
        c = None if cond is None else (cond if cond.shape[1] == 1 else cond.index_select(1, pos))
        if c is not None:
            x = x + c
        B = x.shape[0]
        if self.pending_tune:  # before any graph capture: the first call runs eagerly
            self.tuned = self.tune(x.reshape(B, -1), pos)
            self.pending_tune = False
        y = self.stack(x.reshape(B, -1), pos).view(B, 1, -1)
        if m.add_cond_after and c is not None:
            y = y + c
        return y if m.head is None else m.head(y)

    # tuning ------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def tune(self, x: Tensor, pos: Tensor, reps: int = 10) -> dict[str, str]:
        """Choose the GEMV tiles by timing the whole stack (CUDA only): for each distinct (linear, N, K) shape in
        turn, every candidate of :func:`candidates` is set on all layers of that shape and the stack on x [B, W]
        at ``pos`` is captured in a CUDA graph and replayed (each kernel reads its own layer's weights from
        memory, launched as in the real step, with its neighbours' overlap); the fastest stays. Remembered per
        device, dtype, weights, PDL, batch and shape for later decoders. Timing runs write the cache slot of
        ``pos`` with the keys of ``x``; the step that follows at ``pos`` rewrites it."""
        if self.model.pos_emb.device.type != "cuda":
            return {}
        B = self.batch
        x0 = x.detach().clone()
        dev = torch.cuda.get_device_name(x.device)
        groups: dict[tuple, list[_Layer]] = {}
        for L in self.layers:
            for name, (w, _, _) in L.params.items():
                N, K = w.shape
                key = (dev, x.dtype, self.weights, self.pdl, B, name, N, K)
                groups.setdefault(key, []).append(L)
                L.configs[name] = _TUNED.get(key, default_config(B, N, K))
        chosen: dict[str, str] = {}
        for key, members in groups.items():
            name, N, K = key[-3:]
            if key in _TUNED:
                continue
            times = []
            for cfg in candidates(B, N, K, x.element_size()):
                for L in members:
                    L.configs[name] = cfg
                try:
                    times.append((graph_time_ms(lambda: self.stack(x0, pos), reps, trials=2), cfg))
                except triton.runtime.errors.OutOfResources:  # too large for this device: not a candidate
                    torch.cuda.synchronize()
            if not times:
                raise UsageError(f"decode='triton': no tile fits this device for the {name} linear ({N}x{K})")
            t, cfg = min(times, key=lambda tc: tc[0])
            _TUNED[key] = cfg
            for L in members:
                L.configs[name] = cfg
            chosen[f"{name} {N}x{K}"] = f"{_cfg_str(cfg)}: step {t * 1e3:.1f} us"
            TUNE_LOG.append(dict(linear=name, N=N, K=K, layers=len(members), batch=B,
                                 dtype=str(x.dtype).split(".")[-1], weights=self.weights, pdl=self.pdl,
                                 step_us={_cfg_str(c): round(tt * 1e3, 1) for tt, c in times},
                                 best=_cfg_str(cfg), best_step_us=round(t * 1e3, 1)))
        return chosen


def graph_time_ms(fn, reps: int, trials: int = 1) -> float:
    """Milliseconds per replay of ``fn()`` captured in a CUDA graph (warmed up and compiled on a side stream first;
    the best of ``trials`` runs of ``reps`` replays between CUDA events: no Python launch overhead in the time)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # compiles the kernels of new tiles
        fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(trials):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / reps)
    return best
