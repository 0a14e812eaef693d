"""The persistent decode step (:mod:`jukebox.nn.triton_persistent`) in Triton's CPU interpreter: its phases run as
separate launches in order (the grid-wide barriers of the GPU launch are not exercised here; the device check is
``benchmarks/bench_sampling.py --persistent on --check``)."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")

from jukebox.errors import UsageError  # noqa: E402
from jukebox.nn import triton_decode as td  # noqa: E402
from jukebox.nn import triton_persistent as tp  # noqa: E402

if os.environ.get("TRITON_INTERPRET", "0") in ("", "0") and not torch.cuda.is_available():
    pytest.skip("needs TRITON_INTERPRET=1 or a CUDA device", allow_module_level=True)

from tests.nn.test_triton_decode import _model, _rel, _run_steps  # noqa: E402


def _steps(name: str, steps: int, weights: str = "native", batch: int = 1, **kw):
    """Logits [steps, B, V] of step_static and of the persistent step (``kw``: its PersistentStack keywords) from
    the same prefilled cache (fp32), and whether the caches agree (rtol 1e-4)."""
    return _run_steps(name, torch.float32, steps, batch, weights, persistent=kw, cache_rtol=1e-4)


@pytest.mark.parametrize("name", ["tiny_top", "tiny_upsampler"])
def test_persistent_step_equals_static_step(name):
    """fp32: every layer's five phases in one kernel give step_static's logits over positions crossing block edges
    (block, previous-block and transpose patterns; ring and column caches), and write the caches alike."""
    ref, got, same = _steps(name, 6)
    assert _rel(got, ref) < 1e-5 and same


def test_persistent_step_8bit_weights_and_several_rows_per_program():
    """int8 weights widened in the kernel; 4 programs of many rows each, inputs read in chunks of 16 (the first
    one ahead) give the same logits."""
    ref, got, same = _steps("tiny_upsampler", 4, weights="int8", programs=4, chunk=16)
    assert _rel(got, ref) < 1e-5 and same


def test_persistent_step_batch_of_rows():
    """Three rows (tl.dot tiles of 16 rows, two of them padding) give step_static's logits for every row."""
    ref, got, same = _steps("tiny_upsampler", 3, batch=3)
    assert _rel(got, ref) < 1e-5 and same


def test_persistent_step_whole_rows_ahead():
    """chunk 0: each program's whole rows are read one phase ahead."""
    ref, got, same = _steps("tiny_top", 3, chunk=0)
    assert _rel(got, ref) < 1e-5 and same


@pytest.mark.parametrize("name", ["tiny_lyrics", "tiny_merged"])
def test_persistent_step_lyric_decoders(name):
    """Cross-attention layers (queries only, keys from the lyric encoder's states) and a merged prior's prime layer
    (a linear cache that stops at the lyrics) give step_static's logits too."""
    ref, got, same = _steps(name, 2)
    assert _rel(got, ref) < 1e-5 and same


def test_persistent_refuses_what_it_cannot_run():
    top = _model("tiny_top", torch.float32).decoder
    step = td.TritonDecodeStep(top, top.make_cache(tp.MAX_BATCH + 1), None, tp.MAX_BATCH + 1)
    assert f"batch {tp.MAX_BATCH + 1}" in tp.supported(step)
    with pytest.raises(UsageError, match="persistent"):
        tp.PersistentStack(step)


def test_default_tiles_compile_for_sm90_without_spills():
    """The persistent kernel compiled for sm_90 (Triton's own ptxas, no GPU; ``benchmarks/kernel_resources.py``): the
    default tiles spill no registers at 1, 16 and 64 rows with bf16 and int8 weights, and at 5b_lyrics' widths;
    whole rows read ahead do spill (so the check can fail). In a fresh process: here Triton runs as its
    interpreter."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "kernel_resources.py"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}

    def run(*args: str) -> list[dict]:
        out = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env,
                             timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]

    defaults = run("--batch", "1", "16", "64", "--weights", "native", "int8")
    defaults += run("--batch", "1", "--rows", "64", "--width", "4800", "1200", "4800", "--head-dim", "150")  # 5b
    assert len(defaults) == 8 and all(r["stack"] == 0 for r in defaults), defaults
    assert run("--batch", "1", "--weights", "native", "--chunk", "0")[0]["stack"] > 0
