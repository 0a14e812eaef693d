"""Ancestral / primed token sampling of an :class:`AutoregressiveTransformer` with the preallocated KV cache.

Decoding modes (``decode=``), all equal in exact arithmetic and all free of per-token host synchronisation:

``eager``    each step slices exactly the keys its layers need out of the cache, through a lean step with every
             weight bound once (:class:`~jukebox.nn.transformer.LeanDecoder`: a few ``addmm`` and in-place ops per
             layer, no module calls); the default and the fastest on a CPU.
``module``   the same through the modules' ``forward`` (:meth:`AutoregressiveTransformer.step`), as a reference.
``int8``     ``eager`` with every linear layer of the step (and the head) as a dynamic int8 linear (CPU only;
             weights quantised per output channel once, activations per call): 2-3x faster linears where a step is
             bound by reading the weights, for a small change of the logits; the prefill stays in float. Falls back
             to ``eager`` where this PyTorch has no quantized CPU engine, and for models not in float32.
``static``   the fixed-shape step (:meth:`AutoregressiveTransformer.step_static`), run eagerly.
``graph``    the static step captured once in a CUDA graph and replayed for every token (CUDA only).
``compile``  the static step compiled by ``torch.compile`` (fused kernels), then captured in a CUDA graph.
``triton``   the transformer stack in fused Triton kernels (~5 per layer, :mod:`jukebox.nn.triton_decode`), captured
             in a CUDA graph; needs ``triton`` (on CPU it runs in Triton's interpreter: tests only).

Token draws (temperature, top-k/top-p, categorical) stay on the device; the sequence is written into a
preallocated output tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..nn.kv_cache import KVCache
from ..nn.transformer import LeanDecoder, int8_linear, int8_linear_supported
from .autoregressive import AutoregressiveTransformer
from .logits import DRAWS, draw_tokens

__all__ = ["DECODE_MODES", "draw_tokens", "split_chunks", "sample_autoregressive", "StaticDecoder",
           "triton_static_decoder"]

ProgressFn = Callable[[int, int], None]
#: Intra-op threads of :func:`sample_autoregressive` on a CPU (0: leave the process's setting). A decode step is a
#: few hundred small operations; synchronising cores for each costs more than it saves, and any operation split
#: over cores stalls whenever another process holds one of them (measured: a 10 s top level took 3x longer with
#: two threads than with one on a busy 2-core machine). Parallel upsampling runs its window batches on separate
#: cores instead (:mod:`jukebox.sampling.parallel`).
CPU_DECODE_THREADS = 1
DECODE_MODES = ("eager", "module", "int8", "static", "graph", "compile", "triton")


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
                 attention: str = "sdpa", int8: bool = False) -> None:
        self.stack = LeanDecoder(model.transformer, cache, attention, int8)
        self.cache = cache
        self.emb = model.token_emb.weight
        self.pos = model.pos_emb
        self.cond = cond
        self.after = model.add_cond_after
        self.head = None if model.head is None else model.head.weight.t()
        self.int8_head = None
        if int8 and model.head is not None:
            self.int8_head = int8_linear(model.head.weight, None, model.head)

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
            return torch.ops.quantized.linear_dynamic(x, self.int8_head, True).unsqueeze(1)
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
                          batch: int) -> StaticDecoder:
    """The ``decode="triton"`` step: a :class:`StaticDecoder` whose step is the fused
    :class:`~jukebox.nn.triton_decode.TritonDecodeStep`, replayed from a CUDA graph on CUDA (tiles tuned at the
    first call when :data:`TRITON_TUNE`), run eagerly on a CPU (Triton's interpreter, tests)."""
    from ..nn import triton_decode

    triton_decode.check_available(model.pos_emb.device)
    cuda = model.pos_emb.device.type == "cuda"
    dec = StaticDecoder(model, cache, cond, batch, "graph" if cuda else "static")
    dec.fn = triton_decode.TritonDecodeStep(model, cache, cond, batch, tune=TRITON_TUNE)
    return dec


@torch.no_grad()
def sample_autoregressive(model: AutoregressiveTransformer, n_samples: int, total: int, known: Tensor | None = None,
                          start: Tensor | None = None, cond: Tensor | None = None,
                          encoder_states: Tensor | None = None, temperature: float = 1.0, top_k: int = 0,
                          top_p: float = 0.0, chunk_size: int | None = None,
                          generator: torch.Generator | None = None, progress: ProgressFn | None = None,
                          logits_mask: Tensor | None = None, return_logits: bool = False,
                          known_lengths: Sequence[int] | None = None, decode: str = "eager",
                          compact_cache: bool = True, attention: str = "sdpa", draw: str = "multinomial",
                          guidance: float = 1.0, uncond: tuple[Tensor | None, Tensor | None] | None = None,
                          ) -> tuple[Tensor, Tensor | None]:
    """Sample a sequence of ``total`` tokens, continuing ``known`` [B, P] (kept as is).

    The known prefix is run through the model in chunks of ``chunk_size`` (default: one chunk) to fill the
    cache; then one token per step. ``known_lengths`` (one per row, <= P) lets rows of one batch continue
    prefixes of different lengths: positions before a row's length keep its known tokens (the shortest prefix is
    prefilled, the rest is teacher-forced step by step). ``logits_mask`` [V] (True = forbidden) masks sampled
    logits. ``decode``: see the module docstring; ``attention``: the attention kernel of the ``eager`` step
    (``sdpa`` or ``matmul``, see :class:`~jukebox.nn.transformer.LeanDecoder`). ``draw``: the categorical draw
    (``multinomial``, the original's, or ``cdf``; see :func:`draw_tokens`). ``compact_cache``: per-pattern cache
    layouts (False: every layer keeps the whole context, the unoptimised reference).
    ``guidance`` w != 1 (classifier-free guidance): ``uncond`` = (start, cond) of the unconditional input (the
    null label, same shapes as ``start`` and ``cond``); both are run in one batch of 2B rows and tokens are drawn
    from ``uncond_logits + w * (cond_logits - uncond_logits)`` (w = 0: unconditional; w > 1 follows the labels
    more closely). Returns tokens [B, total] and, if asked, the (guided) logits at every position [B, total, V]
    (prefix included).
    """
    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
    if draw not in DRAWS:
        raise ValueError(f"draw must be one of {DRAWS}, got {draw!r}")
    device = model.pos_emb.device
    if decode == "int8" and device.type != "cpu":
        raise ValueError("decode='int8' runs on a CPU only (use 'eager', 'graph' or 'triton' on a GPU)")
    guided = guidance != 1.0
    if guided:
        if uncond is None or (uncond[0] is None) != (start is None) or (uncond[1] is None) != (cond is None):
            raise ValueError("guidance != 1 needs uncond = (start, cond) shaped like start and cond")
        n_samples *= 2
        start = None if start is None else torch.cat([start, uncond[0]])
        cond = None if cond is None else torch.cat([cond, uncond[1]])
        known = None if known is None else torch.cat([known, known])
        encoder_states = None if encoder_states is None else torch.cat([encoder_states, encoder_states])
        if known_lengths is not None:
            known_lengths = [*known_lengths, *known_lengths]
    P = 0 if known is None else known.shape[1]
    if not P < total <= model.n_ctx:
        raise ValueError(f"need known length {P} < total {total} <= context {model.n_ctx}")
    lengths = None
    P0 = P
    if known_lengths is not None:
        if len(known_lengths) != n_samples or any(not 0 <= n <= P for n in known_lengths):
            raise ValueError(f"known_lengths {list(known_lengths)} must give one length in [0, {P}] per sample")
        P0 = min(known_lengths)
        if P0 < P:
            lengths = torch.as_tensor(list(known_lengths), dtype=torch.long, device=device)
    threads = torch.get_num_threads()
    if device.type == "cpu" and CPU_DECODE_THREADS and threads > CPU_DECODE_THREADS:
        torch.set_num_threads(CPU_DECODE_THREADS)
    try:
        out, logits = _sample(model, n_samples, total, known, P, P0, lengths, start, cond, encoder_states,
                              temperature, top_k, top_p, chunk_size, generator, progress, logits_mask, return_logits,
                              decode, compact_cache, attention, draw, guidance)
        return (out[:n_samples // 2] if guided else out), logits  # guided logits are [B, ...] already
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _sample(model: AutoregressiveTransformer, n_samples: int, total: int, known: Tensor | None, P: int, P0: int,
            lengths: Tensor | None, start: Tensor | None, cond: Tensor | None, encoder_states: Tensor | None,
            temperature: float, top_k: int, top_p: float, chunk_size: int | None,
            generator: torch.Generator | None, progress: ProgressFn | None, logits_mask: Tensor | None,
            return_logits: bool, decode: str, compact_cache: bool, attention: str, draw: str,
            guidance: float = 1.0) -> tuple[Tensor, Tensor | None]:
    """:func:`sample_autoregressive` after its checks: prefill, then the token-by-token loop."""
    device = model.pos_emb.device
    out = torch.zeros(n_samples, total, dtype=torch.long, device=device)
    cache = model.make_cache(n_samples, compact=compact_cache)
    all_logits: list[Tensor] = []
    if P:
        out[:, :P] = known
    if P0:
        prev = torch.cat([known[:, :1], known[:, :P0 - 1]], dim=1)
        begin = 0
        for size in split_chunks(P0, chunk_size):
            logits = model.step(prev[:, begin:begin + size], cache, start, cond, encoder_states)
            begin += size
            if return_logits:
                all_logits.append(_guide(logits.float(), guidance))
    static = None
    if decode in ("static", "graph", "compile"):
        static = StaticDecoder(model, cache, cond, n_samples, decode)
    elif decode == "triton":
        static = triton_static_decoder(model, cache, cond, n_samples)
    elif decode in ("eager", "int8") and compact_cache and not model.training:
        int8 = decode == "int8" and int8_linear_supported() and model.pos_emb.dtype == torch.float32
        static = LeanStep(model, cache, cond, attention, int8)
    prev_tok = out[:, P0 - 1:P0] if P0 else out[:, :1]
    _decode_loop(model, out, cache, P, P0, total, lengths, prev_tok, static, start, cond, encoder_states,
                 logits_mask, temperature, top_k, top_p, generator, draw, progress,
                 all_logits if return_logits else None, guidance)
    return out, (torch.cat(all_logits, dim=1) if return_logits else None)


def _guide(logits: Tensor, guidance: float) -> Tensor:
    """Classifier-free guidance of logits [2B, ...] (conditional rows first, then unconditional) -> [B, ...];
    unchanged when ``guidance`` is 1."""
    if guidance == 1.0:
        return logits
    cond, uncond = logits.chunk(2)
    return uncond + guidance * (cond - uncond)


def _decode_loop(model: AutoregressiveTransformer, out: Tensor, cache: KVCache, P: int, P0: int, total: int,
                 lengths: Tensor | None, prev_tok: Tensor, static: Callable[[Tensor, int], Tensor] | None,
                 start: Tensor | None, cond: Tensor | None, encoder_states: Tensor | None,
                 logits_mask: Tensor | None, temperature: float, top_k: int, top_p: float,
                 generator: torch.Generator | None, draw: str, progress: ProgressFn | None,
                 all_logits: list[Tensor] | None, guidance: float = 1.0) -> None:
    """Token-by-token part of :func:`sample_autoregressive`: positions ``P0 .. total - 1`` into ``out``.
    With ``guidance`` != 1 the rows are [conditional; unconditional] and both halves get the same tokens."""
    return_logits = all_logits is not None
    guided = guidance != 1.0
    for t in range(P0, total):
        if static is None or t == 0:  # position 0 takes the start embedding (and fills cross-attention caches)
            logits = model.step(prev_tok, cache, start, cond, encoder_states)
        else:
            logits = static(prev_tok, t)
        if guided:
            logits = _guide(logits.float(), guidance)
        if return_logits:
            all_logits.append(logits.float() if static is None else logits.float().clone())
        step_logits = logits[:, 0]
        if logits_mask is not None:
            step_logits = step_logits.masked_fill(logits_mask, float("-inf"))
        tok = draw_tokens(step_logits, temperature, top_k, top_p, generator, draw)
        if guided:
            tok = torch.cat([tok, tok])
        if lengths is not None and t < P:
            tok = torch.where(lengths > t, out[:, t], tok)
        out[:, t] = tok
        prev_tok = out[:, t:t + 1]
        if progress is not None:
            progress(t + 1 - P0, total - P0)
