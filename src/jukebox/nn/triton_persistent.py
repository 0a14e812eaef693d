"""The whole transformer stack of one decode step as one persistent Triton kernel (experimental).

The fused step of :mod:`jukebox.nn.triton_decode` launches five dependent kernels per layer, and each launch costs
a few microseconds of latency whatever its bytes: at batch 1 the released upsampler's step is bound by that chain,
not by its weights. Here one launch runs every layer: the programs (one per SM) take the five phases of a layer in
turn (LayerNorm + QKV with the key/value stored into the cache slot, attention with one program per row and head,
output projection + residual, LayerNorm + MLP-in + quick-GELU, MLP-out + residual), separated by grid-wide barriers
(an atomic counter; the launch is cooperative, so every program is resident). Weights never change during a step:
each program reads the first chunk of its weight rows for the next phase into registers before the barrier, and
asks L2 for its rows of the phase after (a bulk prefetch), so the weight reads overlap the barriers and the small
computations of the previous phases.

Same maths and roundings to the model dtype as :class:`~jukebox.nn.triton_decode.TritonDecodeStep` (fp32: the
logits of :meth:`AutoregressiveTransformer.step_static` up to summation order). Models: every layer kind of the
priors (block, previous-block, transpose, dense and prime self-attention; cross-attention to the lyric encoder's
states), layers of one width up to :data:`MAX_WIDTH`, up to :data:`MAX_BATCH` rows (one row: row reductions; more:
``tl.dot`` tiles of 16 or more rows, each weight tile read once for all rows). In Triton's CPU interpreter (tests)
the phases run as separate launches in order, without barriers.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import UsageError
from . import triton_decode as td
from .triton_decode import tl, triton

__all__ = ["MAX_WIDTH", "MAX_BATCH", "supported", "default_chunk", "PersistentStack"]

#: Largest width, attention width or MLP width (LayerNorm statistics and tiles are sized by it).
MAX_WIDTH = 8192
#: Most rows (batch) of one step; above one row the products run as ``tl.dot`` tiles of 16 or more rows.
MAX_BATCH = 64
#: Weight rows per program (None: enough for the widest linear to need one program per SM) and warps per program
#: of the steps that :class:`~jukebox.nn.triton_decode.TritonDecodeStep` builds; benchmarks sweep them.
ROWS: int | None = None
NUM_WARPS = 8
#: Ask L2 for each program's weight rows two phases ahead (Hopper's bulk prefetch; not in the interpreter).
L2_PREFETCH = True
#: Input chunk (elements) of a program's weight rows: the first chunk is read one phase ahead into registers, the
#: others when the phase runs, from L2 where the prefetch brought them. None: :func:`default_chunk`; 0: whole rows
#: ahead (which spills registers).
CHUNK: int | None = None


def default_chunk(block_b: int, rows: int = 16) -> int:
    """Input chunk for ``block_b`` rows of activations (padded batch) and ``rows`` weight rows per program: weight
    tiles of at most 2,048 elements at one row, tiles of at most 1,024 above (at least 16). Compiled for sm_90 with
    8 warps these take 199-220 registers and spill none, 16 or 64 weight rows, 1 to 64 rows of activations (whole
    rows of 2,048 read ahead spill 1.4 KB per thread)."""
    if block_b == 1:
        return max(16, 2048 // rows)
    return max(16, min(1024 // block_b, 1024 // rows))
#: Columns of the per-layer table: pointers of the weights and caches, then the cache's layout numbers.
_COLS = ("ln1_w", "ln1_b", "qkv_w", "qkv_b", "qkv_s", "proj_w", "proj_b", "proj_s", "ln2_w", "ln2_b", "fc_w", "fc_b",
         "fc_s", "out_w", "out_b", "out_s", "key", "value", "layout", "mode", "l_flat", "size", "bc", "nb", "n_qkv")
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
    def _act(ptr, offs_b, mb, offs, n):
        """Rows ``offs_b`` (valid: ``mb``) x columns ``offs`` of a [B, n] activation written by other programs of
        this launch (read from L2), as fp32 [BB, len(offs)]."""
        m = mb[:, None] & (offs[None, :] < n)
        return tl.load(ptr + offs_b[:, None] * n + offs[None, :], mask=m, other=0.0,
                       cache_modifier=".cg").to(tl.float32)

    @triton.jit
    def _stats(x_ptr, offs_b, mb, K, eps, BK: tl.constexpr):
        """LayerNorm statistics (mean, 1/std [BB]) of the rows of a [B, K] activation, in chunks of BK (one pass,
        shifted by each row's first value, as the fused step)."""
        offs = tl.arange(0, BK)
        shift = tl.load(x_ptr + offs_b * K, mask=mb, other=0.0, cache_modifier=".cg").to(tl.float32)
        s1 = tl.zeros(shift.shape, tl.float32)
        s2 = tl.zeros(shift.shape, tl.float32)
        for k0 in range(0, K, BK):
            kk = k0 + offs
            d = tl.where(mb[:, None] & (kk[None, :] < K), _act(x_ptr, offs_b, mb, kk, K) - shift[:, None], 0.0)
            s1 += tl.sum(d, axis=1)
            s2 += tl.sum(d * d, axis=1)
        m1 = s1 / K
        return shift + m1, 1.0 / tl.sqrt(tl.maximum(s2 / K - m1 * m1, 0.0) + eps)

    @triton.jit
    def _rows(w0, w_ptr, x_ptr, offs_b, mb, rows, N, K, mean, rstd, lnw_ptr, lnb_ptr, s_ptr, b_ptr,
              BK: tl.constexpr, HAS_LN: tl.constexpr, HAS_SCALE: tl.constexpr, DT: tl.constexpr, DOT: tl.constexpr,
              DOT_F32: tl.constexpr):
        """y [BB, R] = LN?(x) [BB, K] . w[rows]^T (x the row scales) + bias, rounded to the model dtype, as fp32;
        ``w0`` is the first chunk [R, BK] of the rows (read ahead), the others are read here."""
        offs = tl.arange(0, BK)
        acc = tl.zeros([offs_b.shape[0], rows.shape[0]], tl.float32)
        acc = td._mac(acc, x_ptr, lnw_ptr, lnb_ptr, w0, offs_b, mb, offs, K, mean, rstd, HAS_LN, DOT, DOT_F32, True)
        for k0 in range(BK, K, BK):
            w = _tile(w_ptr, rows, N, k0 + offs, K)
            acc = td._mac(acc, x_ptr, lnw_ptr, lnb_ptr, w, offs_b, mb, k0 + offs, K, mean, rstd, HAS_LN, DOT, DOT_F32,
                          True)
        mn = rows < N
        if HAS_SCALE:
            acc = acc * tl.load(s_ptr + rows, mask=mn, other=0.0)[None, :]
        bias = tl.load(b_ptr + rows, mask=mn, other=0.0).to(tl.float32)
        return (acc + bias[None, :]).to(DT).to(tl.float32)

    @triton.jit
    def _residual(w0, t, COL: tl.constexpr, in_ptr, K, res_ptr, out_ptr, offs_b, mb, rows, W, wt_ptr, s_ptr,
                  BK: tl.constexpr, HAS_SCALE: tl.constexpr, DOT: tl.constexpr, DOT_F32: tl.constexpr):
        """out [B, W] (this program's rows) = res + in [B, K] . w^T + b: the attention output and MLP-out phases.
        The linear's weight, bias and row scales are the table row ``t``'s columns COL, COL + 1, COL + 2."""
        none = tl.zeros(offs_b.shape, tl.float32)
        DT = out_ptr.dtype.element_ty
        y = _rows(w0, _ptr(t, COL, wt_ptr), in_ptr, offs_b, mb, rows, W, K, none, none, out_ptr, out_ptr,
                  _ptr(t, COL + 2, s_ptr), _ptr(t, COL + 1, out_ptr), BK, False, HAS_SCALE, DT, DOT, DOT_F32)
        r = _act(res_ptr, offs_b, mb, rows, W)
        tl.store(out_ptr + offs_b[:, None] * W + rows[None, :], (r + y).to(DT), mask=mb[:, None] & (rows < W)[None, :])

    @triton.jit
    def _step_kernel(tab, eps_ptr, x_ptr, h_ptr, q_ptr, a_ptr, g_ptr, pos_ptr, bar_ptr, wt_ptr, s_ptr,
                     B, n_layers, W, S, F, H, D, scale, NPROG, PH_LO, PH_HI, L_LO, L_HI, NC: tl.constexpr,
                     HAS_SCALE: tl.constexpr, L2: tl.constexpr, SYNC: tl.constexpr, R: tl.constexpr,
                     BB: tl.constexpr, BD: tl.constexpr, BLOCK_N: tl.constexpr,
                     KW: tl.constexpr, KS: tl.constexpr, KF: tl.constexpr, DOT: tl.constexpr,
                     DOT_F32: tl.constexpr):
        """Every layer of one step for B rows (padded to BB: 1, or >= 16 for ``tl.dot``, ``DOT``): x [2, B, W] holds
        the input in [0] and layer l writes [(l+1) % 2]. Layers L_LO .. L_HI - 1 are visited and phase ``5 * l + j``
        runs only if it lies in [PH_LO, PH_HI) (the interpreter launches one phase at a time); weights are read
        either way. ``wt_ptr`` / ``s_ptr``: typed
        stand-ins of the weights' and scales' dtype. ``KW`` / ``KS`` / ``KF``: input chunk of the linears whose input
        is W / S / F wide (the first chunk of a program's rows is read one phase ahead); ``L2``: each program also
        asks L2 for its rows of the phase after next."""
        pid = tl.program_id(0)
        DT = x_ptr.dtype.element_ty
        rows = pid * R + tl.arange(0, R)
        row0 = pid * R
        offs_b = tl.arange(0, BB)
        mb = offs_b < B
        cw = tl.arange(0, KW)
        cs = tl.arange(0, KS)
        cf = tl.arange(0, KF)
        offs_d = tl.arange(0, BD)
        md = offs_d < D
        pos = tl.load(pos_ptr)
        nb = 0
        first = tab + L_LO * NC
        w1 = _tile(_ptr(first, 2, wt_ptr), rows, tl.load(first + 24), cw, W)  # the first layer's QKV rows (chunk 1)
        _l2(_ptr(first, 5, wt_ptr), row0, W, S, R, L2)
        for layer in range(L_LO, L_HI):
            t = tab + layer * NC
            x_cur = x_ptr + (layer % 2) * B * W
            x_nxt = x_ptr + ((layer + 1) % 2) * B * W
            nxt = tab + tl.minimum(layer + 1, n_layers - 1) * NC
            ph = layer * 5
            # 1: LayerNorm + QKV; the query to q, key and value into the cache slot of pos
            w3 = _tile(_ptr(t, 5, wt_ptr), rows, W, cs, S)
            _l2(_ptr(t, 10, wt_ptr), row0, F, W, R, L2)
            if (ph >= PH_LO) & (ph < PH_HI):
                nq = tl.load(t + 24)
                mean, rstd = _stats(x_cur, offs_b, mb, W, tl.load(eps_ptr + 2 * layer), KW)
                y = _rows(w1, _ptr(t, 2, wt_ptr), x_cur, offs_b, mb, rows, nq, W, mean, rstd, _ptr(t, 0, x_ptr),
                          _ptr(t, 1, x_ptr), _ptr(t, 4, s_ptr), _ptr(t, 3, x_ptr), KW, True, HAS_SCALE, DT, DOT,
                          DOT_F32).to(DT)
                slot, lim = td._cache_slot(pos, tl.load(t + 18), tl.load(t + 21), tl.load(t + 22), tl.load(t + 23))
                keep = ((rows * 0 + pos) < lim) & ((rows * 0 + nq) > S)  # cross-attention layers store no key
                c = tl.where(rows >= 2 * S, rows - 2 * S, tl.where(rows < S, 0, rows - S))
                addr = ((offs_b[:, None] * H + (c // D)[None, :]) * tl.load(t + 20) + slot) * D + (c % D)[None, :]
                mo = mb[:, None]
                tl.store(q_ptr + offs_b[:, None] * S + rows[None, :], y, mask=mo & (rows < S)[None, :])
                tl.store(_ptr(t, 16, x_ptr) + addr, y, mask=mo & ((rows >= S) & (rows < 2 * S) & keep)[None, :])
                tl.store(_ptr(t, 17, x_ptr) + addr, y, mask=mo & ((rows >= 2 * S) & (rows < 3 * S) & keep)[None, :])
            nb += 1
            _sync(bar_ptr, nb, NPROG, SYNC)
            # 2: attention of each row's query, one (row, head) per program at a time
            _l2(_ptr(t, 13, wt_ptr), row0, W, F, R, L2)
            if (ph + 1 >= PH_LO) & (ph + 1 < PH_HI):
                base, n = td._key_range(pos, tl.load(t + 19), tl.load(t + 22), tl.load(t + 21), tl.load(t + 23))
                for bh in range(pid, B * H, NPROG):
                    qv = tl.load(q_ptr + bh * D + offs_d, mask=md, other=0.0, cache_modifier=".cg").to(tl.float32)
                    kv = (bh * tl.load(t + 20) + base) * D
                    acc, m_i, l_i = td._attend(qv, _ptr(t, 16, x_ptr), _ptr(t, 17, x_ptr), kv, 0, n, D, offs_d, md,
                                               scale, BLOCK_N, True)
                    o = tl.where(l_i > 0, acc / tl.maximum(l_i, 1e-30), 0.0)
                    tl.store(a_ptr + bh * D + offs_d, o.to(DT), mask=md)
            nb += 1
            _sync(bar_ptr, nb, NPROG, SYNC)
            # 3: attention output + residual: h = x + a W^T + b
            w4 = _tile(_ptr(t, 10, wt_ptr), rows, F, cw, W)
            _l2(_ptr(nxt, 2, wt_ptr), row0, tl.load(nxt + 24), W, R, L2)
            if (ph + 2 >= PH_LO) & (ph + 2 < PH_HI):
                _residual(w3, t, 5, a_ptr, S, x_cur, h_ptr, offs_b, mb, rows, W, wt_ptr, s_ptr, KS, HAS_SCALE, DOT,
                          DOT_F32)
            nb += 1
            _sync(bar_ptr, nb, NPROG, SYNC)
            # 4: LayerNorm + MLP in + quick-GELU
            w5 = _tile(_ptr(t, 13, wt_ptr), rows, W, cf, F)
            if (ph + 3 >= PH_LO) & (ph + 3 < PH_HI):
                mean, rstd = _stats(h_ptr, offs_b, mb, W, tl.load(eps_ptr + 2 * layer + 1), KW)
                y = _rows(w4, _ptr(t, 10, wt_ptr), h_ptr, offs_b, mb, rows, F, W, mean, rstd, _ptr(t, 8, x_ptr),
                          _ptr(t, 9, x_ptr), _ptr(t, 12, s_ptr), _ptr(t, 11, x_ptr), KW, True, HAS_SCALE, DT, DOT,
                          DOT_F32)
                y = y * tl.sigmoid(1.702 * y)
                tl.store(g_ptr + offs_b[:, None] * F + rows[None, :], y.to(DT), mask=mb[:, None] & (rows < F)[None, :])
            nb += 1
            _sync(bar_ptr, nb, NPROG, SYNC)
            # 5: MLP out + residual: x' = h + g W^T + b (the next layer's QKV rows are read meanwhile)
            w1 = _tile(_ptr(nxt, 2, wt_ptr), rows, tl.load(nxt + 24), cw, W)
            _l2(_ptr(nxt, 5, wt_ptr), row0, W, S, R, L2)
            if (ph + 4 >= PH_LO) & (ph + 4 < PH_HI):
                _residual(w5, t, 13, g_ptr, F, h_ptr, x_nxt, offs_b, mb, rows, W, wt_ptr, s_ptr, KF, HAS_SCALE, DOT,
                          DOT_F32)
            nb += 1
            _sync(bar_ptr, nb, NPROG, SYNC)


def supported(step: td.TritonDecodeStep) -> str | None:
    """None when :class:`PersistentStack` can run ``step``'s model, else why not (one line)."""
    if step.batch > MAX_BATCH:
        return f"batch {step.batch} (the persistent step runs up to {MAX_BATCH} rows)"
    layers = step.layers
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
    """The transformer stack of a :class:`~jukebox.nn.triton_decode.TritonDecodeStep` (its weights, 8-bit copies and
    caches; up to :data:`MAX_BATCH` rows) as one persistent kernel: ``stack(x [B, W], pos [1]) -> [B, W]``,
    CUDA-graph safe.
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
        widest = max(max(L.params["qkv"][0].shape[0] for L in layers), self.F, W)
        sms = torch.cuda.get_device_properties(dev).multi_processor_count if dev.type == "cuda" else 8
        self.batch = B = step.batch
        self.block_b = 1 if B == 1 else max(16, triton.next_power_of_2(B))
        self.rows = rows or ROWS or triton.next_power_of_2(-(-widest // (programs or sms)))
        if B > 1:
            self.rows = max(self.rows, 16)  # tl.dot tiles
        self.programs = -(-widest // self.rows)
        if programs is not None and self.programs > programs:
            raise UsageError(f"{programs} programs of {self.rows} rows cannot cover {widest} rows")
        self.num_warps = num_warps or NUM_WARPS
        self.chunk = chunk if chunk is not None else CHUNK
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
            table[i, _C["n_qkv"]] = L.params["qkv"][0].shape[0]  # 3 x attention width, or 1 x for cross-attention
            eps[i, 0], eps[i, 1] = blk.norm_attn.eps, blk.norm_mlp.eps
        self.table, self.eps = table.to(dev), eps.to(dev)
        self.weight_like = first.params["qkv"][0]
        self.scale_like = scale_like if scale_like is not None else torch.zeros(1, dtype=torch.float32, device=dev)
        self.has_scale = scale_like is not None
        self.x = torch.zeros(2, B, W, dtype=dtype, device=dev)
        self.h = torch.zeros(B, W, dtype=dtype, device=dev)
        self.q = torch.zeros(B, self.S, dtype=dtype, device=dev)
        self.a = torch.zeros(B, self.S, dtype=dtype, device=dev)
        self.g = torch.zeros(B, self.F, dtype=dtype, device=dev)
        self.dot_f32 = td._interpreting() or dtype == torch.float32
        if self.chunk is None:
            self.chunk = default_chunk(self.block_b, self.rows)
        self.bar = torch.zeros(1, dtype=torch.int32, device=dev)
        self.block_n = first.attn.block_n
        self.scale = 1.0 / math.sqrt(self.D)

    def _launch(self, pos: Tensor, lo: int, hi: int, sync: bool, layer: int | None = None) -> None:
        opts = {"launch_cooperative_grid": True} if sync else {}
        nxt = triton.next_power_of_2
        chunk = self.chunk

        def k(n: int) -> int:  # input chunk of a linear n wide: all of it, or CHUNK
            return nxt(n) if not chunk else min(nxt(n), chunk)

        _step_kernel[(self.programs,)](
            self.table, self.eps, self.x, self.h, self.q, self.a, self.g, pos, self.bar, self.weight_like,
            self.scale_like, self.batch, len(self.step.layers), self.W, self.S, self.F, self.H, self.D, self.scale,
            self.programs, lo, hi, 0 if layer is None else layer, len(self.step.layers) if layer is None else layer + 1,
            NC=NCOL, HAS_SCALE=self.has_scale, L2=self.l2, SYNC=sync, R=self.rows, BB=self.block_b, BD=nxt(self.D),
            BLOCK_N=self.block_n, KW=k(self.W), KS=k(self.S), KF=k(self.F),
            DOT=self.block_b > 1, DOT_F32=self.dot_f32, num_warps=self.num_warps, num_stages=1, **opts)

    def __call__(self, x: Tensor, pos: Tensor) -> Tensor:
        """The stack on x [B, W] at ``pos`` ([1] long tensor): writes the caches, returns [B, W]."""
        self.x[0].copy_(x)
        n = len(self.step.layers)
        if self.interpret:  # programs run one after another here: one launch per phase, in order
            for ph in range(5 * n):
                self._launch(pos, ph, ph + 1, False, ph // 5)
        else:
            self.bar.zero_()
            self._launch(pos, 0, 5 * n, True)
        return self.x[n % 2]

