"""CPU fast path: the lean decode step equals the module path; the inverse-CDF draw is a correct categorical."""

from __future__ import annotations

import pytest
import torch
from test_fast_sampling import TINY, _inputs, _model

from jukebox.nn.transformer import int8_linear, int8_linear_supported
from jukebox.prior.sampler import draw_tokens, sample_autoregressive
from jukebox.sampling.filters import categorical_cdf, filter_logits
from jukebox.sampling.pipeline import LevelSettings


@pytest.mark.parametrize("name", TINY)
def test_lean_step_equals_module_path(name, sampler_mode):
    """``decode="eager"`` (lean step, SDPA) gives bitwise the logits of the modules' forward; ``matmul``
    attention is within rounding and gives the same greedy samples."""
    mode = sampler_mode
    model = _model(name)
    z, z_cond, y = _inputs(model)
    with torch.no_grad():
        for prime in (None, z[:, :9]):
            mode.update(decode="module")
            ref, ref_logits = model.sample_sequence(2, z_cond, y, top_k=1, prime=prime, chunk_size=4,
                                                    return_logits=True)
            mode.update(decode="eager")
            seq, logits = model.sample_sequence(2, z_cond, y, top_k=1, prime=prime, chunk_size=4,
                                                return_logits=True)
            assert torch.equal(seq, ref) and torch.equal(logits, ref_logits)
            mode.update(attention="matmul")
            seq, logits = model.sample_sequence(2, z_cond, y, top_k=1, prime=prime, chunk_size=4,
                                                return_logits=True)
            assert torch.equal(seq, ref)
            torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)
            mode.clear()


def test_lean_step_seeded_draws_equal_module_path():
    model = _model("tiny_upsampler")
    _, z_cond, y = _inputs(model)
    cond = model.conditioning(z_cond, y)
    out = {}
    with torch.no_grad():
        for decode in ("module", "eager"):
            for draw in ("multinomial", "cdf"):
                out[decode, draw], _ = sample_autoregressive(
                    model.decoder, 2, model.n_ctx, None, cond.start, cond.cond, temperature=0.9, decode=decode,
                    generator=torch.Generator().manual_seed(3), draw=draw)
    assert torch.equal(out["module", "multinomial"], out["eager", "multinomial"])
    assert torch.equal(out["module", "cdf"], out["eager", "cdf"])
    assert not torch.equal(out["eager", "cdf"], out["eager", "multinomial"])


def test_cdf_draw_is_the_categorical():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([0.0, 1.0, float("-inf"), 2.0, float("-inf")])
    draws = categorical_cdf(logits.expand(100_000, -1), g)
    freq = torch.bincount(draws, minlength=5).double() / draws.numel()
    torch.testing.assert_close(freq, torch.softmax(logits.double(), -1), atol=6e-3, rtol=0)
    assert freq[2] == 0 and freq[4] == 0
    # deterministic by seed; leading dims kept
    x = torch.randn(3, 4, 50, generator=g)
    a = categorical_cdf(x, torch.Generator().manual_seed(5))
    assert a.shape == (3, 4) and torch.equal(a, categorical_cdf(x, torch.Generator().manual_seed(5)))


def test_cdf_draw_never_picks_filtered_tokens():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 40, generator=g) * 3
    allowed = torch.isfinite(filter_logits(logits / 1.3, top_k=4, top_p=0.7))
    for _ in range(50):
        s = draw_tokens(logits, 1.3, top_k=4, top_p=0.7, generator=g, draw="cdf")
        assert allowed.gather(-1, s[:, None]).all()
    # a single allowed token at the end of the vocabulary, uniforms at the very top of [0, 1)
    one = torch.full((8, 16), float("-inf"))
    one[:, -1] = 0.0
    assert (categorical_cdf(one, g) == 15).all()
    with pytest.raises(ValueError):
        draw_tokens(logits, draw="gumbel")
    with pytest.raises(ValueError):
        LevelSettings(draw="gumbel")


@pytest.mark.parametrize("res_scale", [False, True])
def test_channels_last_decode_equals_modules(res_scale):
    """The CPU inference decode (channels-last 2-D convolutions) equals the decoder modules within rounding."""
    from jukebox.config import vqvae_preset
    from jukebox.vqvae import VQVAE

    torch.manual_seed(0)
    vq = VQVAE(vqvae_preset("tiny").replace(res_scale=res_scale)).eval()
    codes = torch.randint(0, vq.l_bins, (2, 40))
    with torch.no_grad():
        for level in range(vq.levels):
            z = codes[:, : 40 // 2**level]
            ref = vq.decoders[level](vq.codebooks[level].decode(z))
            got = vq.decode_level(z, level)
            assert got.shape == ref.shape and got.is_contiguous()
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    with torch.enable_grad():  # with gradients the modules run as they are
        assert torch.equal(vq.decode_level(codes, 0), vq.decoders[0](vq.codebooks[0].decode(codes)))


def test_model_sampling_defaults(tmp_path):
    """Without a ``sampling`` entry a model samples as the original (imported OpenAI models); the entry in
    ``model.json`` (the embedded default model has one) picks the fast order, draw and prefill chunk."""
    import json

    from jukebox.api import Jukebox, default_model_path
    from jukebox.checkpoint.model_dir import ModelDir
    from jukebox.testing import make_tiny_model_dir

    make_tiny_model_dir(tmp_path / "m")
    jb = Jukebox(ModelDir(tmp_path / "m"), device="cpu")
    assert jb.sampling_defaults == {"upsample_mode": "sequential", "decode": "eager", "draw": "multinomial",
                                    "chunk_size": 32, "guidance": 1.0, "label_guidance": None, "temperature": 1.0,
                                    "hop_fraction": None, "total_seconds": None, "levels": None}
    meta = tmp_path / "m" / "model.json"
    info = json.loads(meta.read_text())
    info["sampling"] = {"upsample_mode": "parallel", "draw": "cdf", "chunk_size": 64, "decode": "int8", "other": 1}
    meta.write_text(json.dumps(info))
    jb = Jukebox(ModelDir(tmp_path / "m"), device="cpu")
    seconds = 2 * 32 * 8 * 4 / jb.sample_rate
    out = jb.generate(seconds=seconds, seed=0, alignment=False)
    assert (out.settings["upsample_mode"], out.settings["draw"], out.settings["chunk_size"]) == ("parallel", "cdf", 64)
    assert out.settings["per_level"][0]["draw"] == "cdf" and out.settings["per_level"][0]["decode"] == "int8"
    again = jb.generate(seconds=seconds, seed=0, alignment=False)
    assert all(torch.equal(again.codes[k], out.codes[k]) for k in out.codes)  # seeded: reproducible
    orig = jb.generate(seconds=seconds, seed=0, alignment=False, draw="multinomial", upsample_mode="sequential")
    assert orig.settings["draw"] == "multinomial" and orig.settings["upsample_mode"] == "sequential"
    if default_model_path() is not None:
        defaults = Jukebox(ModelDir(default_model_path()), device="cpu").sampling_defaults
        assert defaults["draw"] == "cdf" and defaults["upsample_mode"] == "parallel"
        assert defaults["decode"] == "int8" and defaults["hop_fraction"] == {0: 0.5, 1: 0.5, 2: 0.25}
        assert defaults["levels"] == [2, 1]  # the embedded model renders from level 1


def test_model_temperature_defaults(tmp_path):
    """``model.json`` may give the measured best temperature per level (a list indexed by level): calls and the CLI
    without a temperature use it, an explicit one wins, and an invalid entry falls back to 1.0."""
    import json
    import subprocess
    import sys

    from jukebox.api import Jukebox, default_model_path
    from jukebox.checkpoint.model_dir import ModelDir
    from jukebox.testing import make_tiny_model_dir

    make_tiny_model_dir(tmp_path / "m")
    meta = tmp_path / "m" / "model.json"
    info = json.loads(meta.read_text())
    for bad in ([0.8, "hot", 1.0], -1, [], True):
        info["sampling"] = {"temperature": bad}
        meta.write_text(json.dumps(info))
        assert Jukebox(ModelDir(tmp_path / "m"), device="cpu").sampling_defaults["temperature"] == 1.0
    info["sampling"] = {"temperature": [0.7, 0.8, 0.9]}
    meta.write_text(json.dumps(info))
    jb = Jukebox(ModelDir(tmp_path / "m"), device="cpu")
    assert jb.sampling_defaults["temperature"] == {0: 0.7, 1: 0.8, 2: 0.9}
    seconds = 2 * 32 * 8 * 4 / jb.sample_rate
    out = jb.generate(seconds=seconds, seed=0, alignment=False)
    assert {lvl: s["temperature"] for lvl, s in out.settings["per_level"].items()} == {0: 0.7, 1: 0.8, 2: 0.9}
    top = jb.generate(seconds=seconds, seed=0, alignment=False, levels=[2])
    same = jb.generate(seconds=seconds, seed=0, alignment=False, levels=[2], temperature=0.9)
    assert torch.equal(top.codes[2], same.codes[2])  # the default is the model's 0.9 at level 2
    cold = jb.generate(seconds=seconds, seed=0, alignment=False, levels=[2], temperature=0.01)
    assert cold.settings["per_level"][2]["temperature"] == 0.01
    assert not torch.equal(cold.codes[2], top.codes[2])  # an explicit temperature wins (near-greedy here)
    r = subprocess.run([sys.executable, "-m", "jukebox.cli.main", "sample", "-m", str(tmp_path / "m"), "--seconds",
                        str(seconds), "--levels", "2", "--seed", "0", "-o", str(tmp_path / "o"), "--quiet",
                        "--device", "cpu"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    saved = json.loads((tmp_path / "o" / "metadata.json").read_text())
    assert saved["settings"]["per_level"]["2"]["temperature"] == 0.9
    if default_model_path() is not None:
        t = Jukebox(ModelDir(default_model_path()), device="cpu").sampling_defaults["temperature"]
        assert t == {0: 0.7, 1: 0.7, 2: 0.9}


def test_channels_last_decode_in_pieces_equals_one_piece():
    """Long latents decode in pieces on two threads, each with its receptive field of context: same samples."""
    from jukebox.config import vqvae_preset
    from jukebox.vqvae import VQVAE
    from jukebox.vqvae.model import decode_channels_last, receptive_radius

    torch.manual_seed(0)
    vq = VQVAE(vqvae_preset("tiny")).eval()
    threads = torch.get_num_threads()
    with torch.no_grad():
        for level in range(vq.levels):
            dec = vq.decoders[level]
            n = 12 * receptive_radius(dec) + 7
            z = vq.codebooks[level].decode(torch.randint(0, vq.l_bins, (2, n)))
            one = decode_channels_last(dec, z, workers=1)
            for workers in (2, 3):
                torch.testing.assert_close(decode_channels_last(dec, z, workers=workers), one, rtol=1e-5, atol=1e-6)
            assert torch.get_num_threads() == threads
            torch.testing.assert_close(one, dec(z), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not int8_linear_supported(), reason="no quantized CPU engine in this PyTorch")
@pytest.mark.parametrize("name", TINY)
def test_int8_step_is_close_to_the_float_path(name, sampler_mode):
    """``decode="int8"`` (int8 linears, quick-GELU as one silu with its slope folded into the MLP's weights) gives
    logits within a small KL of the modules' float path at every position up to where greedy samples part."""
    model = _model(name)
    z, z_cond, y = _inputs(model)
    with torch.no_grad():
        sampler_mode.update(decode="module")
        ref, ref_logits = model.sample_sequence(2, z_cond, y, top_k=1, return_logits=True)
        sampler_mode.update(decode="int8")
        seq, logits = model.sample_sequence(2, z_cond, y, top_k=1, return_logits=True)
        sampler_mode.clear()
    differ = (seq != ref).any(0).nonzero()
    same = int(differ[0]) if len(differ) else seq.shape[1]
    upto = logits.shape[1] - seq.shape[1] + same + 1  # logits before any prefix, through the first difference
    p, q = ref_logits[:, :upto].log_softmax(-1), logits[:, :upto].log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1)
    assert same >= 3
    assert kl.mean() < 2e-3 and kl.max() < 2e-2, (kl.mean(), kl.max())
    assert not torch.equal(logits[:, :upto], ref_logits[:, :upto])  # the int8 step did run
    # a known prefix is prefilled through the same int8 linears (the modules' forward, restored afterwards)
    with torch.no_grad():
        sampler_mode.update(decode="module")
        _, ref_primed = model.sample_sequence(2, z_cond, y, top_k=1, prime=z[:, :9], chunk_size=4,
                                              return_logits=True)
        sampler_mode.update(decode="int8")
        _, primed = model.sample_sequence(2, z_cond, y, top_k=1, prime=z[:, :9], chunk_size=4, return_logits=True)
        sampler_mode.clear()
    head = ref_primed.shape[1] - (seq.shape[1] - 9)  # the prefilled positions (lyrics included)
    p, q = ref_primed[:, :head].log_softmax(-1), primed[:, :head].log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1)
    assert kl.mean() < 2e-3 and kl.max() < 2e-2, (kl.mean(), kl.max())
    assert not torch.equal(primed[:, :head], ref_primed[:, :head])
    assert all("forward" not in vars(m) for m in model.modules())


def test_int8_linear_scales_fold_into_the_packed_weights():
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 8)
    x = torch.randn(3, 16)
    if not int8_linear_supported():
        pytest.skip("no quantized CPU engine in this PyTorch")
    plain = torch.ops.quantized.linear_dynamic(x, int8_linear(lin.weight, lin.bias), True)
    folded = torch.ops.quantized.linear_dynamic(x, int8_linear(lin.weight, lin.bias, lin, 1.702, 1.702), True)
    torch.testing.assert_close(folded, 1.702 * plain, rtol=2e-2, atol=2e-2)
    assert int8_linear(lin.weight, lin.bias, lin, 1.702, 1.702) is int8_linear(lin.weight, lin.bias, lin, 1.702,
                                                                                1.702)  # cached
