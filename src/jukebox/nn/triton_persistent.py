"""The whole transformer stack of one decode step as one persistent Triton kernel (batch 1; experimental).

The fused step of :mod:`jukebox.nn.triton_decode` launches five dependent kernels per layer, and each launch costs
a few microseconds of latency whatever its bytes: at batch 1 the released upsampler's step is bound by that chain,
not by its weights. Here one launch runs every layer: the programs (one per SM) take the five phases of a layer in
turn (LayerNorm + QKV with the key/value stored into the cache slot, attention with one program per head, output
projection + residual, LayerNorm + MLP-in + quick-GELU, MLP-out + residual), separated by grid-wide barriers
(an atomic counter; the launch is cooperative, so every program is resident). A program's rows of the next phases'
weights are loaded into registers one or two phases ahead (weights never change during a step), so the weight
reads of a layer overlap the barriers and the small computations of the previous phases.

Same maths and roundings to the model dtype as :class:`~jukebox.nn.triton_decode.TritonDecodeStep` (fp32: the
logits of :meth:`AutoregressiveTransformer.step_static` up to summation order). Models: batch 1, self-attention
layers only (no cross-attention), widths up to :data:`MAX_WIDTH` (the upsamplers and the top priors without lyric
encoder). In Triton's CPU interpreter (tests) the phases run as separate launches in order, without barriers.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import UsageError
from . import triton_decode as td
from .triton_decode import tl, triton

__all__ = ["MAX_WIDTH", "supported", "PersistentStack"]

#: Largest width, attention width or MLP width (a program holds whole weight rows of this length in registers).
MAX_WIDTH = 2048
#: Weight rows per program (None: enough for the widest linear to need one program per SM) and warps per program
#: of the steps that :class:`~jukebox.nn.triton_decode.TritonDecodeStep` builds; benchmarks sweep them.
ROWS: int | None = None
NUM_WARPS = 8
#: Ask L2 for each program's weight rows two phases ahead (Hopper's bulk prefetch; not in the interpreter).
L2_PREFETCH = True
#: Input chunk (elements) of a program's weight rows: the first chunk is read one phase ahead into registers, the
#: others when the phase runs, from L2 where the prefetch brought them (0: whole rows ahead, which spills registers:
#: compiled for sm_90, 16 rows x 128 with 8 warps take 187 registers and no spill; whole rows of 2,048 spill 1.4 KB).
CHUNK = 128
#: Columns of the per-layer table: pointers of the weights and caches, then the cache's layout numbers.
_COLS = ("ln1_w", "ln1_b", "qkv_w", "qkv_b", "qkv_s", "proj_w", "proj_b", "proj_s", "ln2_w", "ln2_b", "fc_w", "fc_b",
         "fc_s", "out_w", "out_b", "out_s", "key", "value", "layout", "mode", "l_flat", "size", "bc", "nb")
_C = {name: i for i, name in enumerate(_COLS)}
NCOL = len(_COLS)

if triton is not None:

    @triton.jit
    def _ptr(row, col: tl.constexpr, like):
        """Entry ``col`` of a layer's table row as a pointer of ``like``'s type."""
        return tl.load(row + col).to(like.dtype, bitcast=True)

    @triton.jit
    def _sync(bar_ptr, n, NPROG, SYNC: tl.constexpr):
        """Grid-wide barrier number ``n`` (1, 2, ...) of the launch: every program's writes before it are visible to
        every program after it (release / acquire at GPU scope around a counter of arrivals)."""
        if SYNC:
            tl.debug_barrier()
            tl.atomic_add(bar_ptr, 1, sem="release", scope="gpu")
            seen = tl.atomic_add(bar_ptr, 0, sem="acquire", scope="gpu")
            while seen < n * NPROG:
                seen = tl.atomic_add(bar_ptr, 0, sem="acquire", scope="gpu")
            tl.debug_barrier()

    @triton.jit
    def _tile(w_ptr, rows, N, offs_k, K):
        """Rows ``rows`` of a [N, K] weight, whole (``offs_k`` covers K), in its stored dtype."""
        return tl.load(w_ptr + rows[:, None] * K + offs_k[None, :], mask=(rows[:, None] < N) & (offs_k[None, :] < K),
                       other=0.0)

    @triton.jit
    def _l2(w_ptr, row0, N, K, R: tl.constexpr, L2: tl.constexpr):
        """Ask the L2 cache for rows ``row0 .. row0 + R - 1`` of a [N, K] weight (contiguous: one bulk prefetch,
        issued by one thread; Hopper's ``cp.async.bulk.prefetch.L2``). Nothing when ``L2`` is off."""
        if L2:
            n = tl.minimum(N - row0, R)
            if n > 0:
                nbytes = (n * K * (w_ptr.dtype.element_ty.primitive_bitwidth // 8)).to(tl.int32)
                tl.inline_asm_elementwise(
                    "{ .reg .pred p; .reg .b32 t; mov.u32 t, %tid.x; setp.eq.u32 p, t, 0; "
                    "@p cp.async.bulk.prefetch.L2.global [$1], $2; mov.u32 $0, 0; }",
                    "=r,l,r", [w_ptr + row0 * K, nbytes], dtype=tl.int32, is_pure=False, pack=1)

    @triton.jit
    def _vec(ptr, offs, n):
        """An activation vector written by other programs of this launch (read from L2), as fp32."""
        return tl.load(ptr + offs, mask=offs < n, other=0.0, cache_modifier=".cg").to(tl.float32)

    @triton.jit
    def _stats(x_ptr, offs, K, eps):
        """Mean and 1/std of an activation vector of K values (LayerNorm statistics, two passes in fp32)."""
        xv = _vec(x_ptr, offs, K)
        mean = tl.sum(xv, axis=0) / K
        d = tl.where(offs < K, xv - mean, 0.0)
        return mean, 1.0 / tl.sqrt(tl.sum(d * d, axis=0) / K + eps)

    @triton.jit
    def _chunk(acc, w, x_ptr, kk, K, mean, rstd, lnw_ptr, lnb_ptr, HAS_LN: tl.constexpr, DT: tl.constexpr):
        """acc [R] += w [R, BK] . LN?(x[kk]) for one chunk ``kk`` of the inputs."""
        mk = kk < K
        xv = _vec(x_ptr, kk, K)
        if HAS_LN:
            g = tl.load(lnw_ptr + kk, mask=mk, other=0.0).to(tl.float32)
            b = tl.load(lnb_ptr + kk, mask=mk, other=0.0).to(tl.float32)
            xv = tl.where(mk, ((xv - mean) * rstd * g + b).to(DT).to(tl.float32), 0.0)  # as nn.LayerNorm's output
        return acc + tl.sum(w.to(tl.float32) * xv[None, :], axis=1)

    @triton.jit
    def _rows(w0, w_ptr, x_ptr, rows, N, K, mean, rstd, lnw_ptr, lnb_ptr, s_ptr, b_ptr, BK: tl.constexpr,
              HAS_LN: tl.constexpr, HAS_SCALE: tl.constexpr, DT: tl.constexpr):
        """y [R] = LN?(x) [K] . w[rows]^T (x the row scales) + bias, rounded to the model dtype, as fp32; ``w0`` is
        the first chunk [R, BK] of the rows (read ahead), the others are read here."""
        offs = tl.arange(0, BK)
        acc = _chunk(tl.zeros(rows.shape, tl.float32), w0, x_ptr, offs, K, mean, rstd, lnw_ptr, lnb_ptr, HAS_LN, DT)
        for k0 in range(BK, K, BK):
            w = _tile(w_ptr, rows, N, k0 + offs, K)
            acc = _chunk(acc, w, x_ptr, k0 + offs, K, mean, rstd, lnw_ptr, lnb_ptr, HAS_LN, DT)
        mn = rows < N
        if HAS_SCALE:
            acc = acc * tl.load(s_ptr + rows, mask=mn, other=0.0)
        bias = tl.load(b_ptr + rows, mask=mn, other=0.0).to(tl.float32)
        return (acc + bias).to(DT).to(tl.float32)

    @triton.jit
    def _step_kernel(tab, eps_ptr, x_ptr, h_ptr, q_ptr, a_ptr, g_ptr, pos_ptr, bar_ptr, wt_ptr, s_ptr,
                     n_layers, W, S, F, H, D, scale, NPROG, PH_LO, PH_HI, NC: tl.constexpr,
                     HAS_SCALE: tl.constexpr, L2: tl.constexpr, SYNC: tl.constexpr, R: tl.constexpr,
                     BW: tl.constexpr, BS: tl.constexpr, BF: tl.constexpr, BD: tl.constexpr, BLOCK_N: tl.constexpr,
                     KW: tl.constexpr, KS: tl.constexpr, KF: tl.constexpr):
        """Every layer of one step at batch 1: x [2, W] holds the input in row 0 and layer l writes row (l+1) % 2.
        Phase ``5 * l + j`` runs only if it lies in [PH_LO, PH_HI) (the interpreter launches one phase at a time);
        weights are read either way. ``wt_ptr`` / ``s_ptr``: typed stand-ins of the weights' and scales' dtype.
        ``KW`` / ``KS`` / ``KF``: input chunk of the linears whose input is W / S / F wide (the whole padded width:
        a program's rows are read entirely one phase ahead); ``L2``: each program also asks L2 for its rows of the
        phase after next."""
        pid = tl.program_id(0)
        DT = x_ptr.dtype.element_ty
        rows = pid * R + tl.arange(0, R)
        row0 = pid * R
        kw = tl.arange(0, BW)
        cw = tl.arange(0, KW)
        cs = tl.arange(0, KS)
        cf = tl.arange(0, KF)
        pos = tl.load(pos_ptr)
        nb = 0
        w1 = _tile(_ptr(tab, 2, wt_ptr), rows, 3 * S, cw, W)  # layer 0's QKV rows (first chunk)
        _l2(_ptr(tab, 5, wt_ptr), row0, W, S, R, L2)
        for layer in range(0, n_layers):
            t = tab + layer * NC
            x_cur = x_ptr + (layer % 2) * W
            x_nxt = x_ptr + ((layer + 1) % 2) * W
            nxt = tab + tl.minimum(layer + 1, n_layers - 1) * NC
            ph = layer * 5
            # 1: LayerNorm + QKV; the query to q, key and value into the cache slot of pos
            w3 = _tile(_ptr(t, 5, wt_ptr), rows, W, cs, S)
            _l2(_ptr(t, 10, wt_ptr), row0, F, W, R, L2)
            if (ph >= PH_LO) & (ph < PH_HI):
                mean, rstd = _stats(x_cur, kw, W, tl.load(eps_ptr + 2 * layer))
                y = _rows(w1, _ptr(t, 2, wt_ptr), x_cur, rows, 3 * S, W, mean, rstd, _ptr(t, 0, x_ptr),
                          _ptr(t, 1, x_ptr), _ptr(t, 4, s_ptr), _ptr(t, 3, x_ptr), KW, True, HAS_SCALE, DT).to(DT)
                slot, lim = td._cache_slot(pos, tl.load(t + 18), tl.load(t + 21), tl.load(t + 22), tl.load(t + 23))
                keep = (rows * 0 + pos) < lim
                c = tl.where(rows >= 2 * S, rows - 2 * S, tl.where(rows < S, 0, rows - S))
                addr = ((c // D) * tl.load(t + 20) + slot) * D + c % D
                tl.store(q_ptr + rows, y, mask=rows < S)
                tl.store(_ptr(t, 16, x_ptr) + addr, y, mask=(rows >= S) & (rows < 2 * S) & keep)
                tl.store(_ptr(t, 17, x_ptr) + addr, y, mask=(rows >= 2 * S) & (rows < 3 * S) & keep)
            nb += 1
            _sync(bar_ptr, nb, NPROG, SYNC)
            # 2: attention of the query, one program per head
            _l2(_ptr(t, 13, wt_ptr), row0, W, F, R, L2)
            if (ph + 1 >= PH_LO) & (ph + 1 < PH_HI) & (pid < H):
                base, n = td._key_range(pos, tl.load(t + 19), tl.load(t + 22), tl.load(t + 21), tl.load(t + 23))
                offs_d = tl.arange(0, BD)
                md = offs_d < D
                qv = tl.load(q_ptr + pid * D + offs_d, mask=md, other=0.0, cache_modifier=".cg").to(tl.float32)
                kv = (pid * tl.load(t + 20) + base) * D
                acc, m_i, l_i = td._attend(qv, _ptr(t, 16, x_ptr), _ptr(t, 17, x_ptr), kv, 0, n, D, offs_d, md,
                                           scale, BLOCK_N, True)
                o = tl.where(l_i > 0, acc / tl.maximum(l_i, 1e-30), 0.0)
                tl.store(a_ptr + pid * D + offs_d, o.to(DT), mask=md)
            nb += 1
            _sync(bar_ptr, nb, NPROG, SYNC)
            # 3: attention output + residual: h = x + a W^T + b
            w4 = _tile(_ptr(t, 10, wt_ptr), rows, F, cw, W)
            _l2(_ptr(nxt, 2, wt_ptr), row0, 3 * S, W, R, L2)
            if (ph + 2 >= PH_LO) & (ph + 2 < PH_HI):
                y = _rows(w3, _ptr(t, 5, wt_ptr), a_ptr, rows, W, S, 0.0, 0.0, x_ptr, x_ptr, _ptr(t, 7, s_ptr),
                          _ptr(t, 6, x_ptr), KS, False, HAS_SCALE, DT)
                r = _vec(x_cur, rows, W)
                tl.store(h_ptr + rows, (r + y).to(DT), mask=rows < W)
            nb += 1
            _sync(bar_ptr, nb, NPROG, SYNC)
            # 4: LayerNorm + MLP in + quick-GELU
            w5 = _tile(_ptr(t, 13, wt_ptr), rows, W, cf, F)
            if (ph + 3 >= PH_LO) & (ph + 3 < PH_HI):
                mean, rstd = _stats(h_ptr, kw, W, tl.load(eps_ptr + 2 * layer + 1))
                y = _rows(w4, _ptr(t, 10, wt_ptr), h_ptr, rows, F, W, mean, rstd, _ptr(t, 8, x_ptr),
                          _ptr(t, 9, x_ptr), _ptr(t, 12, s_ptr), _ptr(t, 11, x_ptr), KW, True, HAS_SCALE, DT)
                y = y * tl.sigmoid(1.702 * y)
                tl.store(g_ptr + rows, y.to(DT), mask=rows < F)
            nb += 1
            _sync(bar_ptr, nb, NPROG, SYNC)
            # 5: MLP out + residual: x' = h + g W^T + b (the next layer's QKV rows are read meanwhile)
            w1 = _tile(_ptr(nxt, 2, wt_ptr), rows, 3 * S, cw, W)
            _l2(_ptr(nxt, 5, wt_ptr), row0, W, S, R, L2)
            if (ph + 4 >= PH_LO) & (ph + 4 < PH_HI):
                y = _rows(w5, _ptr(t, 13, wt_ptr), g_ptr, rows, W, F, 0.0, 0.0, x_ptr, x_ptr, _ptr(t, 15, s_ptr),
                          _ptr(t, 14, x_ptr), KF, False, HAS_SCALE, DT)
                r = _vec(h_ptr, rows, W)
                tl.store(x_nxt + rows, (r + y).to(DT), mask=rows < W)
            nb += 1
            _sync(bar_ptr, nb, NPROG, SYNC)


def supported(step: td.TritonDecodeStep) -> str | None:
    """None when :class:`PersistentStack` can run ``step``'s model, else why not (one line)."""
    if step.batch != 1:
        return f"batch {step.batch} (the persistent step runs batch 1)"
    layers = step.layers
    if any(L.cross for L in layers):
        return "cross-attention layers"
    first = layers[0]
    for L in layers:
        if (L.n_state, L.heads, L.head_dim, L.block.mlp.fc.out_features) != (
                first.n_state, first.heads, first.head_dim, first.block.mlp.fc.out_features):
            return "layers of different widths"
    W = step.model.transformer.width
    if max(W, first.n_state, first.block.mlp.fc.out_features) > MAX_WIDTH:
        return f"width over {MAX_WIDTH}"
    return None


class PersistentStack:
    """The transformer stack of a batch-1 :class:`~jukebox.nn.triton_decode.TritonDecodeStep` (its weights, 8-bit
    copies and caches) as one persistent kernel: ``stack(x [1, W], pos [1]) -> [1, W]``, CUDA-graph safe.
    ``programs``: one per SM by default; ``rows``: weight rows per program (default: enough for the widest linear
    to need at most ``programs`` programs); ``num_warps``, ``chunk``: default :data:`NUM_WARPS`, :data:`CHUNK`."""

    def __init__(self, step: td.TritonDecodeStep, programs: int | None = None, rows: int | None = None,
                 num_warps: int | None = None, chunk: int | None = None) -> None:
        why = supported(step)
        if why:
            raise UsageError(f"the persistent decode step cannot run this model: {why}")
        self.step = step
        layers = step.layers
        dev = step.xa.device
        dtype = step.xa.dtype
        first = layers[0]
        self.W = W = step.model.transformer.width
        self.S, self.F = first.n_state, first.block.mlp.fc.out_features
        self.H, self.D = first.heads, first.head_dim
        widest = max(3 * self.S, self.F, W)
        sms = torch.cuda.get_device_properties(dev).multi_processor_count if dev.type == "cuda" else 8
        self.rows = rows or ROWS or triton.next_power_of_2(-(-widest // (programs or sms)))
        self.programs = -(-widest // self.rows)
        if programs is not None and self.programs > programs:
            raise UsageError(f"{programs} programs of {self.rows} rows cannot cover {widest} rows")
        self.num_warps = num_warps or NUM_WARPS
        self.chunk = CHUNK if chunk is None else chunk
        # bulk prefetches move multiples of 16 bytes from 16-byte aligned addresses
        row_bytes = [w.shape[1] * w.element_size() for L in layers for w, _, _ in L.params.values()]
        self.l2 = (L2_PREFETCH and dev.type == "cuda" and not td._interpreting()
                   and torch.cuda.get_device_capability(dev)[0] >= 9 and all(b % 16 == 0 for b in row_bytes)
                   and all(w.data_ptr() % 16 == 0 for L in layers for w, _, _ in L.params.values()))
        self.interpret = td._interpreting()
        table = torch.zeros(len(layers), NCOL, dtype=torch.int64)
        eps = torch.zeros(len(layers), 2, dtype=torch.float32)
        scale_like = None
        for i, L in enumerate(layers):
            blk, c = L.block, L.cache
            row = {"ln1_w": blk.norm_attn.weight, "ln1_b": blk.norm_attn.bias,
                   "ln2_w": blk.norm_mlp.weight, "ln2_b": blk.norm_mlp.bias, "key": c.key, "value": c.value}
            for name in ("qkv", "proj", "fc", "out"):
                w, s, b = L.params[name]
                row[f"{name}_w"], row[f"{name}_b"] = w, b
                if s is not None:
                    row[f"{name}_s"] = s
                    scale_like = s
            for name, tensor in row.items():
                table[i, _C[name]] = tensor.data_ptr()
            table[i, _C["layout"]] = L.layout
            table[i, _C["mode"]] = L.attn.mode
            table[i, _C["l_flat"]] = L.attn.l_flat
            table[i, _C["size"]] = c.size
            table[i, _C["bc"]] = L.attn.block_ctx
            table[i, _C["nb"]] = c.n_blocks
            eps[i, 0], eps[i, 1] = blk.norm_attn.eps, blk.norm_mlp.eps
        self.table, self.eps = table.to(dev), eps.to(dev)
        self.weight_like = first.params["qkv"][0]
        self.scale_like = scale_like if scale_like is not None else torch.zeros(1, dtype=torch.float32, device=dev)
        self.has_scale = scale_like is not None
        self.x = torch.zeros(2, W, dtype=dtype, device=dev)
        self.h = torch.zeros(W, dtype=dtype, device=dev)
        self.q = torch.zeros(self.S, dtype=dtype, device=dev)
        self.a = torch.zeros(self.S, dtype=dtype, device=dev)
        self.g = torch.zeros(self.F, dtype=dtype, device=dev)
        self.bar = torch.zeros(1, dtype=torch.int32, device=dev)
        self.block_n = first.attn.block_n
        self.scale = 1.0 / math.sqrt(self.D)

    def _launch(self, pos: Tensor, lo: int, hi: int, sync: bool) -> None:
        opts = {"launch_cooperative_grid": True} if sync else {}
        nxt = triton.next_power_of_2
        chunk = self.chunk

        def k(n: int) -> int:  # input chunk of a linear n wide: all of it, or CHUNK
            return nxt(n) if not chunk else min(nxt(n), chunk)

        _step_kernel[(self.programs,)](
            self.table, self.eps, self.x, self.h, self.q, self.a, self.g, pos, self.bar, self.weight_like,
            self.scale_like, len(self.step.layers), self.W, self.S, self.F, self.H, self.D, self.scale,
            self.programs, lo, hi, NC=NCOL, HAS_SCALE=self.has_scale, L2=self.l2, SYNC=sync, R=self.rows,
            BW=nxt(self.W), BS=nxt(self.S), BF=nxt(self.F), BD=nxt(self.D), BLOCK_N=self.block_n,
            KW=k(self.W), KS=k(self.S), KF=k(self.F), num_warps=self.num_warps, num_stages=1, **opts)

    def __call__(self, x: Tensor, pos: Tensor) -> Tensor:
        """The stack on x [1, W] at ``pos`` ([1] long tensor): writes the caches, returns [1, W]."""
        self.x[0].copy_(x[0])
        n = len(self.step.layers)
        if self.interpret:  # programs run one after another here: one launch per phase, in order
            for ph in range(5 * n):
                self._launch(pos, ph, ph + 1, False)
        else:
            self.bar.zero_()
            self._launch(pos, 0, 5 * n, True)
        return self.x[n % 2].view(1, self.W)
