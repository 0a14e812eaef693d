"""Eager against the fast training path (``TrainConfig.compile``), in one run: tokens/s and MFU of priors,
audio samples/s of the VQ-VAE, and the loss curves of both paths on the same data and seed.

Cases (``--cases``, comma-separated; default all, in this order):

- ``env``: the card, versions, and its dense bf16 matmul rate as measured (8192^3 GEMMs).
- ``prior100m``: the ~100M-parameter top prior of ``bench_train.py`` (width 1024, depth 32, attn_order 2 =
  Jukebox's released block / transpose / previous-block patterns, n_ctx 8192), batch ``--batch-100m`` (16) without
  activation checkpointing, bf16 autocast, fused AdamW: ``former`` (eager with the former 5-D attention, the
  baseline), ``none`` (eager, 4-D attention), then ``blocks`` (compiled).
- ``embedded``: the embedded default model's three priors (their own configs): former, eager and fast at the
  batch they were trained with (32), eager and fast at ``--big-batch`` (128).
- ``vqvae``: the embedded VQ-VAE, batch 16 x 65,536 samples, fp32, with and without the adversarial loss (the
  CLI's default discriminators), eager and fast.
- ``curve``: ``--curve-steps`` steps (batch ``--curve-batch``) of the embedded top prior's shape on a learnable
  synthetic code stream (a sparse Markov chain), eager and fast from the same weights, data and seed: the loss
  at a few steps, the largest and mean difference.

Each measurement times ``--steps`` optimiser steps after ``--warmup`` steps; the warm-up's extra time (compiling)
is reported as ``compile_s``. Results go to ``OUT/bench_train_fast.json`` after every case (``--out``, default
``$OUT`` or the current folder), and a table is printed at the end. Cases that would start after ``--budget``
seconds are skipped (listed in the JSON).

FLOPs per token (as ``bench_train.py``): ``6 N`` (N = parameters outside the embeddings) plus attention; the
output head, tied to the token embedding, is counted in ``mfu_with_head``. MFU is against the datasheet's dense
bf16 rate (989 TFLOP/s for H100/H200) and against the rate measured by ``env``.

    python benchmarks/bench_train_fast.py --out results/                 # everything (~7 minutes on an H200)
    python benchmarks/bench_train_fast.py --cases curve --curve-steps 2000
    python benchmarks/bench_train_fast.py --smoke --device cpu           # tiny shapes, seconds (tests the script)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import PEAK_BF16_TFLOPS, attended_keys, prior_config  # noqa: E402

from jukebox.config import VQVAEConfig  # noqa: E402
from jukebox.nn.attention import factorized_attention  # noqa: E402
from jukebox.prior import Prior  # noqa: E402
from jukebox.prior.config import PriorConfig  # noqa: E402
from jukebox.train import TrainConfig, Trainer  # noqa: E402
from jukebox.train.synthetic import SyntheticAdversarialTask, SyntheticAudioTask, SyntheticPriorTask  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1] / "src" / "jukebox" / "assets" / "default_model"
CASES = ("env", "prior100m", "embedded", "vqvae", "curve")


# ------------------------------------------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def flops_per_token(model: Prior, cfg: PriorConfig) -> tuple[float, float]:
    """(6 N + attention, the same + the output head) per token of a prior's training step."""
    n_params = sum(p.numel() for p in model.parameters())
    n_emb = sum(p.numel() for n, p in model.named_parameters() if "emb" in n)
    t = cfg.transformer
    n_state = int(t.m_attn * t.width)
    block_ctx = cfg.n_ctx // (t.blocks or 1)
    attn = sum(6 * n_state * attended_keys(b.pattern, cfg.n_ctx, block_ctx)
               for b in model.decoder.transformer.blocks)
    base = 6 * (n_params - n_emb) + attn
    return float(base), float(base + 6 * t.width * model.decoder.bins)


def run_loop(model: torch.nn.Module, task: Any, device: torch.device, args: argparse.Namespace, compile: str,
             steps: int, warmup: int, precision: str = "auto", lr: float = 3e-4, warmup_lr: int = 1,
             ) -> dict[str, Any]:
    """Train ``warmup + steps`` steps through the real loop; per-step wall times and the losses."""
    times: list[float] = []

    def on_step(step: int, row: dict[str, float]) -> None:
        _sync(device)
        times.append(time.perf_counter())

    config = TrainConfig(steps=warmup + steps, batch_size=task.batch_size, warmup_steps=warmup_lr, lr=lr,
                         decay="none", log_every=10**9, precision=precision, workers=2, compile=compile)
    kwargs = {"backend": args.compile_backend} if args.compile_backend else {}
    if args.inductor_mode:
        kwargs["mode"] = args.inductor_mode
    _free(device)
    from jukebox.train import DistInfo

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, task, config, f"{tmp}/ckpt", DistInfo(device=device), progress=False,
                          on_step=on_step, log=lambda m: None, compile_kwargs=kwargs)
        trainer._save = lambda *a, **k: None  # type: ignore[method-assign]  # time training, not disk
        _sync(device)
        t0 = time.perf_counter()
        result = trainer.fit()
    steady = (times[-1] - times[warmup - 1]) / steps if steps else float("nan")
    first = times[warmup - 1] - t0
    return {"seconds_per_step": steady, "compile_s": max(0.0, first - warmup * steady),
            "losses": [r["loss"] for r in result.history],
            "max_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            if device.type == "cuda" else None}


def _error(e: Exception) -> str:
    print(traceback.format_exc()[-3000:], file=sys.stderr)
    if isinstance(e, torch.OutOfMemoryError):
        return "out of memory"
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"


def _peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def former_attention(q, k, v, pattern, block_ctx=1, prime_keys=0, dropout_p=0.0):
    """The attention of releases before the 4-D path (5-D SDPA for block patterns: the math kernel on CUDA);
    cross, dense and prime attention were already 4-D and are today's."""
    import torch.nn.functional as F

    if pattern in ("cross", "dense", "prime"):
        return factorized_attention(q, k, v, pattern, block_ctx, prime_keys, dropout_p)
    B, H, T, D = q.shape
    nb = -(-T // block_ctx)
    L = nb * block_ctx
    qg, kg, vg = ((t if t.shape[2] == L else F.pad(t, (0, 0, 0, L - T))).reshape(B, H, nb, block_ctx, D)
                  for t in (q, k, v))
    if pattern == "block":
        out = F.scaled_dot_product_attention(qg, kg, vg, is_causal=True, dropout_p=dropout_p)
    elif pattern == "transpose":
        qg, kg, vg = (t.transpose(2, 3) for t in (qg, kg, vg))
        out = F.scaled_dot_product_attention(qg, kg, vg, is_causal=True, dropout_p=dropout_p).transpose(2, 3)
    else:
        kg = F.pad(kg[:, :, :-1], (0, 0, 0, 0, 1, 0))
        vg = F.pad(vg[:, :, :-1], (0, 0, 0, 0, 1, 0))
        out = F.scaled_dot_product_attention(qg, kg, vg, dropout_p=dropout_p)
    return out.reshape(B, H, L, D)[:, :, :T]


def prior_case(name: str, cfg: PriorConfig, batch: int, device: torch.device, args: argparse.Namespace,
               compile: str, state: dict[str, Any], data: str = "random") -> dict[str, Any]:
    """One prior measurement; ``compile="former"``: eager with the former 5-D attention (the baseline)."""
    if compile == "former":
        import jukebox.nn.attention as attention

        current = attention.factorized_attention
        attention.factorized_attention = former_attention
        try:
            row = prior_case(name, cfg, batch, device, args, "none", state, data)
        finally:
            attention.factorized_attention = current
        row["compile"] = "former"
        return row
    if time.perf_counter() > state.get("deadline", float("inf")):
        return {"case": name, "compile": compile, "batch": batch, "error": "skipped: past --budget"}
    torch.manual_seed(0)
    model = Prior(cfg)
    f, f_head = flops_per_token(model, cfg)
    task = SyntheticPriorTask(cfg, batch, data, stream_tokens=1 << 18)
    row: dict[str, Any] = {"case": name, "compile": compile, "batch": batch, "n_ctx": cfg.n_ctx,
                           "params": sum(p.numel() for p in model.parameters()),
                           "checkpoint_activations": bool(cfg.transformer.checkpoint)}
    try:
        r = run_loop(model, task, device, args, compile, args.steps, args.warmup)
    except Exception as e:  # noqa: BLE001  (out of memory, a compiler error: the row says so, the run goes on)
        row["error"] = _error(e)
        return row
    tps = batch * cfg.n_ctx / r["seconds_per_step"]
    row.update(tokens_per_second=round(tps, 1), compile_s=round(r["compile_s"], 1),
               max_memory_gib=r["max_memory_gib"], flops_per_token=f,
               model_tflops=round(tps * f / 1e12, 2), loss_last=round(r["losses"][-1], 4))
    peak, measured = _peak(device), state.get("measured_bf16_tflops")
    if peak:
        row["mfu"] = round(tps * f / (peak * 1e12), 4)
        row["mfu_with_head"] = round(tps * f_head / (peak * 1e12), 4)
    if measured:
        row["mfu_vs_measured"] = round(tps * f / (measured * 1e12), 4)
    return row


# ------------------------------------------------------------------------------------------------- cases
def case_env(device: torch.device, args: argparse.Namespace, state: dict[str, Any]) -> None:
    row: dict[str, Any] = {"case": "env", "torch": torch.__version__, "python": sys.version.split()[0],
                           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    try:
        import triton

        row["triton"] = triton.__version__
    except ImportError:
        row["triton"] = None
    if device.type == "cuda":
        row["cuda"] = torch.version.cuda
        row["datasheet_bf16_tflops"] = _peak(device)
        n = 8192
        a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        for _ in range(10):
            a @ b
        _sync(device)
        reps = 100
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        row["measured_bf16_tflops"] = round(2 * n**3 * reps / (time.perf_counter() - t0) / 1e12, 1)
        state["measured_bf16_tflops"] = row["measured_bf16_tflops"]
        del a, b
    state["emit"](row)


def case_prior100m(device: torch.device, args: argparse.Namespace, state: dict[str, Any]) -> None:
    cfg = prior_config("tiny" if args.smoke else "100m", None, False)
    batch = 2 if args.smoke else args.batch_100m
    for compile in ("former", "none", "blocks"):
        row = prior_case("prior100m", cfg, batch, device, args, compile, state)
        state["emit"](row)
        if row.get("error") == "out of memory" and not args.smoke:  # too big without checkpointing: then half
            state["emit"](prior_case("prior100m", cfg, batch // 2, device, args, compile, state))


def _embedded(level: int, smoke: bool) -> PriorConfig:
    cfg = PriorConfig.load_json(ASSETS / f"prior_level_{level}" / "config.json")
    return cfg.replace(n_ctx=64) if smoke else cfg


def case_embedded(device: torch.device, args: argparse.Namespace, state: dict[str, Any]) -> None:
    small, big = (2, 4) if args.smoke else (32, args.big_batch)
    for level in (2, 1, 0):
        cfg = _embedded(level, args.smoke)
        for compile, batch in (("former", small), ("none", small), ("blocks", small), ("none", big), ("blocks", big)):
            state["emit"](prior_case(f"embedded_level_{level}", cfg, batch, device, args, compile, state))


def case_vqvae(device: torch.device, args: argparse.Namespace, state: dict[str, Any]) -> None:
    from jukebox.train.adversarial import GeneratorVQVAE
    from jukebox.vqvae import VQVAE
    from jukebox.vqvae.discriminator import AdversarialConfig, Discriminator

    cfg = VQVAEConfig.load_json(ASSETS / "vqvae" / "config.json")
    batch, window = (2, 8192) if args.smoke else (16, 65536)
    audio = SyntheticAudioTask(batch, window, cfg.sample_rate)
    combos = [(adversarial, precision, compile) for adversarial in (False, True)
              for precision in args.vqvae_precisions.split(",") for compile in ("none", "blocks")]
    for adversarial, precision, compile in combos:
        torch.manual_seed(0)
        model: torch.nn.Module = VQVAE(cfg)
        task: Any = audio
        if adversarial:
            adv = AdversarialConfig(stft_n_ffts=(512, 256), periods=(2, 3), stft_channels=4, mpd_channels=4,
                                    mpd_max_channels=8) if args.smoke else AdversarialConfig()
            model = GeneratorVQVAE(model, tuple(range(cfg.levels)), decoder_only=False)
            task = SyntheticAdversarialTask(audio, adv, Discriminator(adv))
        name = ("vqvae_adversarial" if adversarial else "vqvae") + ("" if precision == "auto" else f"_{precision}")
        row: dict[str, Any] = {"case": name, "compile": compile,
                               "precision": precision, "batch": batch, "window": window}
        if time.perf_counter() > state.get("deadline", float("inf")):
            row["error"] = "skipped: past --budget"
            state["emit"](row)
            continue
        try:
            r = run_loop(model, task, device, args, compile, args.steps, args.warmup, precision=precision)
            row.update(samples_per_second=round(batch * window / r["seconds_per_step"], 1),
                       compile_s=round(r["compile_s"], 1), max_memory_gib=r["max_memory_gib"],
                       loss_last=round(r["losses"][-1], 4))
        except Exception as e:  # noqa: BLE001
            row["error"] = _error(e)
        state["emit"](row)
        del model, task


def case_curve(device: torch.device, args: argparse.Namespace, state: dict[str, Any]) -> None:
    cfg = _embedded(2, args.smoke)
    batch, steps = (2, min(args.curve_steps, 20)) if args.smoke else (args.curve_batch, args.curve_steps)
    task = SyntheticPriorTask(cfg, batch, "markov", seed=1, stream_tokens=1 << 18 if args.smoke else 1 << 21)
    curves = {}
    for path in args.curve_paths.split(","):
        compile, seed, precision = (path.split(":") + ["auto"])[:3]
        torch.manual_seed(int(seed))
        model = Prior(cfg)
        r = run_loop(model, task, device, args, compile, steps - 1, 1, precision=precision, lr=3e-4,
                     warmup_lr=min(100, steps // 10))
        curves[path] = r["losses"]
    names = list(curves)
    e, f = curves[names[0]], curves[names[-1]]
    diffs = [abs(a - b) for a, b in zip(e, f)]
    tail = max(1, len(e) // 10)
    marks = sorted({s for s in (1, 10, 50, 100, 200, 500, 1000, 1500, 2000, len(e)) if s <= len(e)})
    state["emit"]({"case": "curve", "model": "embedded_level_2 shape", "batch": batch, "steps": len(e),
                   "data": "markov (successors 4: ~1.9 bits/token floor)", "paths": names,
                   "loss_at": {str(s): [round(e[s - 1], 4), round(f[s - 1], 4)] for s in marks},
                   "max_abs_diff": round(max(diffs), 5), "mean_abs_diff": round(sum(diffs) / len(diffs), 5),
                   "tail_mean_eager": round(sum(e[-tail:]) / tail, 4),
                   "tail_mean_fast": round(sum(f[-tail:]) / tail, 4),
                   # the first and the last path under their historical names; every path by name
                   "eager": [round(x, 5) for x in e], "fast": [round(x, 5) for x in f],
                   "curves": {k: [round(x, 5) for x in v] for k, v in curves.items()}})


# ------------------------------------------------------------------------------------------------- report
def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'case':<22} {'compile':<7} {'batch':>5} {'rate':>14} {'TFLOP/s':>8} {'MFU':>6} {'MFU*':>6} "
             f"{'compile_s':>9} {'mem GiB':>7}"]
    for r in rows:
        if r["case"] == "env":
            lines.insert(0, f"# {r['device']}, torch {r['torch']}, triton {r.get('triton')}, measured bf16 "
                            f"{r.get('measured_bf16_tflops')} TFLOP/s (datasheet {r.get('datasheet_bf16_tflops')})")
            continue
        if r["case"] == "curve":
            lines.append(f"curve: {r['steps']} steps, max |loss diff| {r['max_abs_diff']}, mean {r['mean_abs_diff']}, "
                         f"last-10% mean eager {r['tail_mean_eager']} fast {r['tail_mean_fast']}; "
                         + ", ".join(f"@{k}: {v[0]}/{v[1]}" for k, v in r["loss_at"].items()))
            continue
        if "error" in r:
            lines.append(f"{r['case']:<22} {r.get('compile', ''):<7} {r.get('batch', ''):>5} {r['error']}")
            continue
        rate = (f"{r['tokens_per_second']:,.0f} tok/s" if "tokens_per_second" in r
                else f"{r['samples_per_second'] / 1e6:.2f} M smp/s")

        mfu, mfu2 = (f"{100 * r[k]:.1f}%" if r.get(k) is not None else "-" for k in ("mfu", "mfu_vs_measured"))
        lines.append(f"{r['case']:<22} {r['compile']:<7} {r['batch']:>5} {rate:>14} "
                     f"{r.get('model_tflops', '-'):>8} {mfu:>6} {mfu2:>6} "
                     f"{r.get('compile_s', '-'):>9} {r.get('max_memory_gib') or '-':>7}")
    lines.append("MFU: against the datasheet's dense bf16 rate; MFU*: against the rate measured here")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    ap.add_argument("--out", default=os.environ.get("OUT", "."), help="folder of bench_train_fast.json")
    ap.add_argument("--device", default=None, help="default: cuda when available")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 8; smoke 2)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (they include compiling)")
    ap.add_argument("--batch-100m", type=int, default=16)
    ap.add_argument("--big-batch", type=int, default=128, help="the throughput batch of the embedded priors")
    ap.add_argument("--vqvae-precisions", default="auto",
                    help="comma-separated training precisions of the VQ-VAE cases (auto = fp32 for the VQ-VAE, bf16)")
    ap.add_argument("--curve-paths", default="none:0,blocks:0",
                    help="COMPILE:SEED[:PRECISION] curves of the curve case (the seed initialises the model; same "
                         "data): the first is compared with the last; e.g. none:0,none:1 for the spread between "
                         "seeds, none:0:fp32 for an fp32 eager curve")
    ap.add_argument("--curve-steps", type=int, default=300)
    ap.add_argument("--curve-batch", type=int, default=16)
    ap.add_argument("--budget", type=float, default=420.0, help="seconds; later cases are skipped past it")
    ap.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor)")
    ap.add_argument("--inductor-mode", default=None, help="e.g. max-autotune-no-cudagraphs")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (checks the script on a CPU)")
    args = ap.parse_args()
    if args.steps is None:
        args.steps = 2 if args.smoke else 8
    if args.smoke:
        args.warmup = min(args.warmup, 1)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(wanted) - set(CASES)
    if unknown:
        ap.error(f"unknown cases {sorted(unknown)}; choose from {', '.join(CASES)}")
    fns = {"env": case_env, "prior100m": case_prior100m, "embedded": case_embedded, "vqvae": case_vqvae,
           "curve": case_curve}
    rows: list[dict[str, Any]] = []
    report: dict[str, Any] = {"args": vars(args), "rows": rows, "skipped": [], "errors": {}}
    def emit(row: dict[str, Any]) -> None:
        rows.append(row)
        (out / "bench_train_fast.json").write_text(json.dumps(report, indent=1) + "\n")
        (out / "bench_train_fast.txt").write_text(table(rows) + "\n")
        brief = {k: v for k, v in row.items() if k not in ("eager", "fast", "curves")}
        print(json.dumps(brief), file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    state: dict[str, Any] = {"emit": emit, "deadline": t0 + args.budget}
    for name in wanted:
        if time.perf_counter() - t0 > args.budget:
            report["skipped"].append(name)
            continue
        start = time.perf_counter()
        try:
            fns[name](device, args, state)
        except Exception:  # one case failing (e.g. a compiler missing) must not lose the others
            report["errors"][name] = traceback.format_exc()[-4000:]
            print(f"case {name} failed:\n{report['errors'][name]}", file=sys.stderr)
        report.setdefault("case_seconds", {})[name] = round(time.perf_counter() - start, 1)
        (out / "bench_train_fast.json").write_text(json.dumps(report, indent=1) + "\n")
        (out / "bench_train_fast.txt").write_text(table(rows) + "\n")
        print(f"[{time.perf_counter() - t0:.0f}s] {name} done", file=sys.stderr, flush=True)
    text = table(rows)
    (out / "bench_train_fast.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
