"""Ancestral / primed token sampling of an :class:`AutoregressiveTransformer` with the preallocated KV cache.

Decoding modes (``decode=``), all equal in exact arithmetic and all free of per-token host synchronisation:

``eager``    each step slices exactly the keys its layers need out of the cache, through a lean step with every
             weight bound once (:class:`~jukebox.nn.transformer.LeanDecoder`: a few ``addmm`` and in-place ops per
             layer, no module calls); the default and the fastest on a CPU.
``module``   the same through the modules' ``forward`` (:meth:`AutoregressiveTransformer.step`), as a reference.
``int8``     ``eager`` with every linear layer of the step (and the head) as a dynamic int8 linear (CPU only;
             weights quantised per output channel once, activations per call): 2-3x faster linears where a step is
             bound by reading the weights, for a small change of the logits; the prefill of known tokens runs the
             transformer's linears as the same int8 linears (about 3x faster GEMMs; its head and lyric encoder stay
             in float). Falls back to ``eager`` where this PyTorch has no quantized CPU engine, and for models not in
             float32.
``static``   the fixed-shape step (:meth:`AutoregressiveTransformer.step_static`), run eagerly.
``graph``    the static step captured once in a CUDA graph and replayed for every token (CUDA only).
``compile``  the static step compiled by ``torch.compile`` (fused kernels), then captured in a CUDA graph.
``triton``   the transformer stack in fused Triton kernels (~5 per layer, :mod:`jukebox.nn.triton_decode`), captured
             in a CUDA graph; needs ``triton`` (on CPU it runs in Triton's interpreter: tests only).

Weights (``weights=``): ``native`` (the model's dtype), or ``int8`` / ``fp8`` weight-only 8-bit linears in the
transformer blocks (one scale per output channel, :mod:`jukebox.nn.quant`), for the prefill and every step: on CUDA
a Triton kernel widens the 8-bit weights in registers (half the bytes per step of bf16: the 8-bit GEMV of
:mod:`jukebox.nn.quant` in ``graph``, ``compile``, ``static``, ``eager`` and ``module``, the fused kernels in
``triton``); on a CPU the weights are dequantised once (the quality of
8-bit weights at the float step's speed; ``int8`` decode is the CPU's fast 8-bit path, with the same int8 weights).

Token draws (temperature, top-k/top-p, categorical) stay on the device; the sequence is written into a
preallocated output tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nn.kv_cache import KVCache
from ..nn.quant import weight_only_linears
from ..nn.transformer import (
    LeanDecoder,
    Transformer,
    int8_block_linears,
    int8_linear,
    int8_linear_supported,
    linear_dynamic,
)
from .autoregressive import AutoregressiveTransformer
from .logits import RowShare, draw_tokens, token_sampler
from .settings import DECODE_MODES, LevelSettings, SettingsError

__all__ = ["DECODE_MODES", "LevelSettings", "draw_tokens", "split_chunks", "sample_autoregressive", "StaticDecoder",
           "triton_static_decoder", "fill_cache"]

ProgressFn = Callable[[int, int], None]
#: Intra-op threads of :func:`sample_autoregressive` on a CPU (0: leave the process's setting). A decode step is a
#: few hundred small operations; synchronising cores for each costs more than it saves, and any operation split
#: over cores stalls whenever another process holds one of them (measured: a 10 s top level took 3x longer with
#: two threads than with one on a busy 2-core machine). Parallel upsampling runs its window batches on separate
#: cores instead (:mod:`jukebox.sampling.parallel`).
CPU_DECODE_THREADS = 1


def split_chunks(length: int, chunk_size: int | None) -> list[int]:
    """Sizes of consecutive chunks covering ``length`` (the last may be shorter)."""
    if length <= 0:
        return []
    size = length if not chunk_size else chunk_size
    return [size] * ((length - 1) // size) + [(length - 1) % size + 1]


class LeanStep:
    """One decoding step of an :class:`AutoregressiveTransformer` with everything bound once: token and
    position embeddings, conditioning, :class:`~jukebox.nn.transformer.LeanDecoder` and the head, over 2-D
    activations. Same arithmetic as :meth:`AutoregressiveTransformer.step` for one token (bar the attention
    kernel with ``attention="matmul"``). ``cond``: [B or 1, T or 1, W] or None."""

    def __init__(self, model: AutoregressiveTransformer, cache: KVCache, cond: Tensor | None,
                 attention: str = "sdpa", int8: bool = False, weights: str = "native") -> None:
        self.stack = LeanDecoder(model.transformer, cache, attention, int8, weights)
        self.cache = cache
        self.emb = model.token_emb.weight
        self.pos = model.pos_emb
        self.cond = cond
        self.after = model.add_cond_after
        self.head = None if model.head is None else model.head.weight.t()
        self.int8_head = None
        if int8 and model.head is not None:
            self.int8_head = int8_linear(model.head.weight, None, model.head)
            self.dyn = linear_dynamic()

    def __call__(self, prev_tokens: Tensor, t: int) -> Tensor:
        """Logits [B, 1, V] (hidden states for a model without head) at position ``t`` > 0 given the token
        before it [B, 1]; advances ``cache.length`` to ``t + 1``."""
        x = torch.nn.functional.embedding(prev_tokens.view(-1), self.emb) + self.pos[t]
        c = None
        if self.cond is not None:
            c = self.cond[:, 0] if self.cond.shape[1] == 1 else self.cond[:, t]
            x = x + c
        x = self.stack(x, t)
        if self.after and c is not None:
            x = x + c
        self.cache.length = t + 1
        if self.int8_head is not None:
            return self.dyn(x, self.int8_head, True).unsqueeze(1)
        return (x if self.head is None else torch.mm(x, self.head)).unsqueeze(1)


class StaticDecoder:
    """Runs :meth:`AutoregressiveTransformer.step_static` from fixed input buffers (token, position), either
    eagerly (``static``), replayed from a CUDA graph captured at the first call (``graph``) or compiled with
    ``torch.compile`` and then captured (``compile``). The cache and ``cond`` must outlive the decoder."""

    def __init__(self, model: AutoregressiveTransformer, cache: KVCache, cond: Tensor | None, batch: int,
                 mode: str = "graph") -> None:
        if mode not in ("static", "graph", "compile"):
            raise ValueError(f"unknown static decode mode {mode!r}")
        device = model.pos_emb.device
        if mode != "static" and device.type != "cuda":
            raise ValueError(f"decode={mode!r} needs a CUDA device (use 'eager' or 'static')")
        self.model, self.cache, self.cond, self.mode = model, cache, cond, mode
        self.tok = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.fn: Callable[[Tensor, Tensor], Tensor] = self._step
        if mode == "compile":
            self.fn = torch.compile(self._step, dynamic=False, fullgraph=False)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: Tensor | None = None

    def _step(self, tok: Tensor, pos: Tensor) -> Tensor:
        return self.model.step_static(tok, pos, self.cache, self.cond)

    def __call__(self, prev_tokens: Tensor, t: int) -> Tensor:
        """Logits [B, 1, V] at position ``t`` (> 0) given the token before it [B, 1]; advances the cache."""
        self.tok.copy_(prev_tokens)
        self.pos.fill_(t)
        if self.mode == "static":
            out = self.fn(self.tok, self.pos)
        else:
            if self.graph is None:
                self._capture()
            self.graph.replay()
            out = self.out
        self.cache.length = t + 1
        return out

    def _capture(self) -> None:
        # Warm-up and capture at the current position: the step is idempotent (it rewrites the same cache slot
        # with the same keys, and ring slots it overwrites belong to blocks no later query reads).
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                self.fn(self.tok, self.pos)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self.fn(self.tok, self.pos)


#: ``decode="triton"``: time the fused step's GEMV tiles on the device at the first call, before the CUDA graph is
#: captured (benchmarks turn it off for quick fp32 checks with the default tiles).
TRITON_TUNE = True


def triton_static_decoder(model: AutoregressiveTransformer, cache: KVCache, cond: Tensor | None,
                          batch: int, weights: str = "native") -> StaticDecoder:
    """The ``decode="triton"`` step: a :class:`StaticDecoder` whose step is the fused
    :class:`~jukebox.nn.triton_decode.TritonDecodeStep`, replayed from a CUDA graph on CUDA (tiles tuned at the
    first call when :data:`TRITON_TUNE`), run eagerly on a CPU (Triton's interpreter, tests)."""
    from ..nn import triton_decode

    triton_decode.check_available(model.pos_emb.device)
    cuda = model.pos_emb.device.type == "cuda"
    dec = StaticDecoder(model, cache, cond, batch, "graph" if cuda else "static")
    dec.fn = triton_decode.TritonDecodeStep(model, cache, cond, batch, tune=TRITON_TUNE, weights=weights)
    return dec


#: (start, cond, encoder_states) of the decoder: the start embedding [B, 1, W] (labels), the per-position or constant
#: conditioning [B, T or 1, W] and the lyric encoder's states [B, n_tokens, W] (each may be None).
Inputs = tuple["Tensor | None", "Tensor | None", "Tensor | None"]


@torch.no_grad()
def sample_autoregressive(model: AutoregressiveTransformer, n_samples: int, total: int, known: Tensor | None = None,
                          start: Tensor | None = None, cond: Tensor | None = None,
                          encoder_states: Tensor | None = None, settings: LevelSettings | None = None, *,
                          generator: torch.Generator | None = None, progress: ProgressFn | None = None,
                          logits_mask: Tensor | None = None, return_logits: bool = False,
                          known_lengths: Sequence[int] | None = None, compact_cache: bool = True,
                          attention: str = "sdpa", uncond: tuple[Tensor | None, Tensor | None] | None = None,
                          label_uncond: tuple[Tensor | None, Tensor | None] | None = None,
                          **overrides: Any) -> tuple[Tensor, Tensor | None]:
    """Sample a sequence of ``total`` tokens, continuing ``known`` [B, P] (kept as is), with ``settings``.

    ``settings``: a :class:`~jukebox.prior.settings.LevelSettings` (its ``temperature``, ``top_k``, ``top_p``,
    ``draw``, ``decode``, ``chunk_size`` and ``guidance`` apply here); ``overrides`` (those names as keywords) are
    applied on top, and the result is checked once, here. The known prefix is run through the model in chunks of
    ``chunk_size`` (default: one chunk) to fill the cache; then one token per step. ``known_lengths`` (one per row,
    <= P) lets rows of one batch continue prefixes of different lengths: positions before a row's length keep its
    known tokens (the shortest prefix is prefilled, the rest is teacher-forced step by step). ``logits_mask`` [V]
    (True = forbidden) masks sampled logits. ``decode``: see the module docstring; ``attention``: the attention
    kernel of the ``eager`` step (``sdpa`` or ``matmul``, see :class:`~jukebox.nn.transformer.LeanDecoder`).
    ``draw``: the categorical draw (``multinomial``, the original's, or ``cdf``; see
    :func:`~jukebox.prior.logits.token_sampler`). ``compact_cache``: per-pattern cache layouts (False: every layer
    keeps the whole context, the unoptimised reference).
    ``guidance`` w != 1 (classifier-free guidance): ``uncond`` = (start, cond) of the unconditional input (the
    null label, same shapes as ``start`` and ``cond``); both are run in one batch of 2B rows and tokens are drawn
    from ``uncond_logits + w * (cond_logits - uncond_logits)`` (w = 0: unconditional; w > 1 follows the labels
    more closely). With ``label_guidance`` set apart from ``guidance`` (``settings.split_guidance``),
    ``label_uncond`` = (start, cond) of the labels-only input (a tempo prior: labels kept, tempo removed) makes a
    third group of B rows, and tokens are drawn from ``u + label_guidance * (l - u) + guidance * (c - l)``.
    Returns tokens [B, total] and, if asked, the (guided) logits at every position [B, total, V] (prefix
    included).
    """
    s = LevelSettings.of(settings, **overrides)
    device = model.pos_emb.device
    share = None
    if isinstance(generator, RowShare):  # rows of a batch shared with other processes (jukebox.distributed)
        share, generator = generator, generator.generator
        if share.hi - share.lo != n_samples:
            raise ValueError(f"row share {share.lo}..{share.hi} for {n_samples} samples")
        if known_lengths is None and share.first < (0 if known is None else known.shape[1]):
            known_lengths = [known.shape[1]] * n_samples
    if s.decode == "int8" and device.type != "cpu":
        raise SettingsError("decode='int8' runs on a CPU only (use 'eager', 'graph' or 'triton' on a GPU)")
    groups = _guidance_groups(s, start, cond, uncond, label_uncond)
    if groups:
        rows = [(start, cond), *groups]
        g = len(rows)
        n_samples *= g
        start = None if start is None else torch.cat([r[0] for r in rows])
        cond = None if cond is None else torch.cat([r[1] for r in rows])
        known = None if known is None else known.repeat(g, 1)
        encoder_states = None if encoder_states is None else torch.cat([encoder_states] * g)
        if known_lengths is not None:
            known_lengths = list(known_lengths) * g
    P = 0 if known is None else known.shape[1]
    if not P < total <= model.n_ctx:
        raise ValueError(f"need known length {P} < total {total} <= context {model.n_ctx}")
    lengths = None
    if known_lengths is not None:
        if len(known_lengths) != n_samples or any(not 0 <= n <= P for n in known_lengths):
            raise ValueError(f"known_lengths {list(known_lengths)} must give one length in [0, {P}] per sample")
        if min(known_lengths) < P:
            lengths = torch.as_tensor(list(known_lengths), dtype=torch.long, device=device)
    first = min(known_lengths) if known_lengths is not None else P
    if share is not None:  # the whole batch's token loop: it starts at the batch's shortest prefix
        first = min(first, share.first)
    out = torch.zeros(n_samples, total, dtype=torch.long, device=device)
    if P:
        out[:, :P] = known
    threads = torch.get_num_threads()
    if device.type == "cpu" and CPU_DECODE_THREADS and threads > CPU_DECODE_THREADS:
        torch.set_num_threads(CPU_DECODE_THREADS)
    try:
        run = _Decoding(model, s, (start, cond, encoder_states), out, lengths, compact_cache, attention,
                        return_logits)
        with run.weights():
            run.prefill(first)
            run.tokens(P, token_sampler(s, generator, share), logits_mask, progress)
        logits = torch.cat(run.logits, dim=1) if return_logits else None
        return out[:n_samples // (1 + len(groups))], logits  # guided logits are [B, ...] already
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


class _Decoding:
    """One call of :func:`sample_autoregressive` after its checks: the cache, the prefill and the token loop that
    writes into ``out`` [N, total] (known positions already filled). With guidance the rows are [conditional;
    unconditional] (split guidance: [conditional; labels only; unconditional]) and every group gets the same
    tokens."""

    def __init__(self, model: AutoregressiveTransformer, settings: LevelSettings, inputs: Inputs, out: Tensor,
                 lengths: Tensor | None, compact_cache: bool, attention: str, keep_logits: bool) -> None:
        self.model, self.settings, self.inputs, self.out, self.lengths = model, settings, inputs, out, lengths
        self.cache = model.make_cache(out.shape[0], compact=compact_cache)
        self.compact, self.attention = compact_cache, attention
        self.logits: list[Tensor] | None = [] if keep_logits else None
        self.done = 0  # positions in the cache

    def prefill(self, n: int) -> None:
        """Run the first ``n`` known tokens through the model in chunks of ``chunk_size``. Unless the logits are
        kept, only what the cache needs runs (:func:`fill_cache`: no head, no last MLP)."""
        if not n:
            return
        known = self.out[:, :n]
        prev = torch.cat([known[:, :1], known[:, :n - 1]], dim=1)
        begin = 0
        with _int8_linears(self.model.transformer) if self._int8() else nullcontext():
            for size in split_chunks(n, self.settings.chunk_size):
                chunk = prev[:, begin:begin + size]
                begin += size
                if self.logits is None:
                    fill_cache(self.model, chunk, self.cache, *self.inputs)
                    continue
                logits = self.model.step(chunk, self.cache, *self.inputs)
                self.logits.append(_guide(logits.float(), self.settings))
        self.done = n

    def weights(self) -> AbstractContextManager:
        """Inside: the modules' block linears run with the settings' weight-only 8-bit weights
        (:func:`~jukebox.nn.quant.weight_only_linears`), unless ``native`` or the int8 CPU path (whose own int8
        weights are the same)."""
        if self.settings.weights == "native" or self._int8():
            return nullcontext()
        return weight_only_linears(self.model.transformer, self.settings.weights)

    def _int8(self) -> bool:
        """Whether the settings ask for int8 linears and this model and PyTorch can run them."""
        model = self.model
        return (self.settings.decode == "int8" and self.settings.weights != "fp8" and self.compact
                and not model.training
                and model.pos_emb.dtype == torch.float32 and int8_linear_supported())

    def _step(self) -> Callable[[Tensor, int], Tensor] | None:
        """The decode step of the settings' ``decode`` mode (None: the modules' ``step``)."""
        model, cache, cond, n = self.model, self.cache, self.inputs[1], self.out.shape[0]
        decode = self.settings.decode
        if decode in ("static", "graph", "compile"):
            return StaticDecoder(model, cache, cond, n, decode)
        if decode == "triton":
            return triton_static_decoder(model, cache, cond, n, self.settings.weights)
        if decode in ("eager", "int8") and self.compact and not model.training:
            return LeanStep(model, cache, cond, self.attention, self._int8(), self.settings.weights)
        return None

    def tokens(self, P: int, pick: Callable[[Tensor], Tensor], logits_mask: Tensor | None,
               progress: ProgressFn | None) -> None:
        """Positions ``done .. total - 1``, one token per step, drawn by ``pick`` (rows before their known length
        keep their known token)."""
        model, cache, out, lengths = self.model, self.cache, self.out, self.lengths
        first, total = self.done, out.shape[1]
        guided = self.settings.guided
        groups = 3 if self.settings.split_guidance else 2
        static = self._step()
        prev_tok = out[:, first - 1:first] if first else out[:, :1]
        for t in range(first, total):
            if static is None or t == 0:  # position 0 takes the start embedding (and fills cross-attention caches)
                logits = model.step(prev_tok, cache, *self.inputs)
            else:
                logits = static(prev_tok, t)
            if guided:
                logits = _guide(logits.float(), self.settings)
            if self.logits is not None:
                self.logits.append(logits.float() if static is None else logits.float().clone())
            step_logits = logits[:, 0]
            if logits_mask is not None:
                step_logits = step_logits.masked_fill(logits_mask, float("-inf"))
            tok = pick(step_logits)
            if guided:
                tok = tok.repeat(groups)
            if lengths is not None and t < P:
                tok = torch.where(lengths > t, out[:, t], tok)
            out[:, t] = tok
            prev_tok = out[:, t:t + 1]
            if progress is not None:
                progress(t + 1 - first, total - first)


def fill_cache(model: AutoregressiveTransformer, prev_tokens: Tensor, cache: KVCache, start: Tensor | None = None,
               cond: Tensor | None = None, encoder_states: Tensor | None = None) -> None:
    """:meth:`AutoregressiveTransformer.step` for the cache alone: positions ``cache.length ..`` given the preceding
    tokens [B, T] write their keys and values (the same values as ``step``'s) and the cache advances by T, without
    the head (T x vocabulary logits nobody reads) or the last block's MLP and residual (they feed only the head).

    Why a window's prefix is recomputed at all: a prior's input at window position t is ``emb(token) + pos[t] +
    cond[t]`` with *absolute* learned positions within the window (and labels that follow the window's offset), so
    after a hop every kept token sits at another position and every key and value of every layer changes; the old
    cache cannot be shifted into the new one."""
    begin = cache.length
    x = model.embed_inputs(prev_tokens, begin, start, cond)
    blocks = model.transformer.blocks
    for i, block in enumerate(blocks):
        if i + 1 < len(blocks):
            x = block(x, encoder_states, cache[i], begin)
        else:  # the keys and values are written by the attention; what follows it feeds only the head
            block.attn(block.norm_attn(x), encoder_states, cache[i], begin)
    cache.length = begin + prev_tokens.shape[1]


@contextmanager
def _int8_linears(transformer: Transformer) -> Iterator[None]:
    """Inside: every block's linear layers run as the int8 step's prepacked int8 linears
    (:func:`~jukebox.nn.transformer.int8_block_linears`; the MLP as ``out(silu(in(x)))``), through the modules'
    own ``forward`` (a prefill of many tokens). Restored on exit."""
    dyn = linear_dynamic()
    patched = []
    try:
        for block in transformer.blocks:
            attn, mlp = block.attn, block.mlp
            q, proj, fc, out = int8_block_linears(block)
            q_lin = attn.q if attn.pattern == "cross" else attn.qkv
            for module, fn in ((q_lin, lambda x, w=q: dyn(x, w, True)), (attn.proj, lambda x, w=proj: dyn(x, w, True)),
                               (mlp, lambda x, a=fc, b=out: dyn(F.silu(dyn(x, a, True), inplace=True), b, True))):
                module.forward = fn
                patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward  # the class's forward again


def _guidance_groups(s: LevelSettings, start: Tensor | None, cond: Tensor | None,
                     uncond: tuple[Tensor | None, Tensor | None] | None,
                     label_uncond: tuple[Tensor | None, Tensor | None] | None,
                     ) -> list[tuple[Tensor | None, Tensor | None]]:
    """The (start, cond) inputs of the rows guidance adds after the conditional ones: none, [uncond] or, with split
    guidance, [label_uncond, uncond]; each checked against ``start`` and ``cond``."""
    if not s.guided:
        return []
    groups = [("label_uncond", label_uncond)] if s.split_guidance else []
    groups.append(("uncond", uncond))
    for name, group in groups:
        if group is None or (group[0] is None) != (start is None) or (group[1] is None) != (cond is None):
            raise ValueError(f"this guidance needs {name} = (start, cond) shaped like start and cond")
    return [group for _, group in groups]


def _guide(logits: Tensor, s: LevelSettings) -> Tensor:
    """Classifier-free guidance of logits [G*B, ...] (conditional rows first; with split guidance the label rows,
    then the unconditional ones) -> [B, ...]; unchanged when ``s`` is not guided."""
    if not s.guided:
        return logits
    if s.split_guidance:
        cond, label, uncond = logits.chunk(3)
        return uncond + s.label_guidance * (label - uncond) + s.guidance * (cond - label)
    guidance = s.guidance
    cond, uncond = logits.chunk(2)
    return uncond + guidance * (cond - uncond)
