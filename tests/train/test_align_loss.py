"""The supervised lyric-alignment loss (``jukebox train prior --align-loss W``): targets in the batches, the loss
term on an encoder-decoder lyric prior (eager, bf16 autocast, compiled blocks), refusals and the off switch."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from jukebox.data.code_cache import CodeWindow
from jukebox.data.labels import Labeller, LabelVocab, lyric_window
from jukebox.data.word_timing import alignment_targets, word_char_spans
from jukebox.errors import UsageError
from jukebox.prior import Prior
from jukebox.prior.config import prior_preset
from jukebox.train import TrainConfig, Trainer
from jukebox.train.options import TrainOptions
from jukebox.train.tasks import PriorTask, alignment_site

SR = 1024  # tiny_lyrics: 32 codes of 128 samples: a 4 s window
LYRICS = "aa bb cc"
WORDS = (("aa", 0.0, 1.0), ("bb", 1.0, 2.0), ("cc", 2.0, 3.0))  # then a second of silence


class _Sung:
    """Four one-window songs whose lyrics are sung at known times (a CodeWindowSampler stand-in)."""

    hop = 128
    cache = SimpleNamespace(sample_rate=SR)

    def __len__(self) -> int:
        return 4

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(len(self), size=n)

    def window(self, i: int) -> CodeWindow:
        z = np.random.default_rng(i).integers(0, 64, 32)
        words = WORDS if i < 3 else ()  # the last song has no timings
        return CodeWindow(z, None, "alice", "folk", LYRICS, 0, 4096, f"s{i}", words=words)


def _labeller(cfg) -> Labeller:
    vocab = LabelVocab.from_names(["alice"], ["folk"], version="v2")
    return Labeller(vocab, cfg.labels.max_bow_genre_size, cfg.lyrics.n_tokens, cfg.sample_length)


def _setup(preset: str = "tiny_lyrics", align: float = 1.0, batch: int = 8, **kw):
    torch.manual_seed(0)
    prior = Prior(prior_preset(preset))
    task = PriorTask(2, _Sung(), _Sung(), _labeller(prior.config), batch_size=batch, seed=3, val_batches=1,
                     l_bins=64, options=TrainOptions(align_loss=align, **kw))
    return prior, task


def test_batches_carry_targets_and_stay_pure() -> None:
    prior, task = _setup(label_dropout=0.5)
    batch = task.train_batch(0, 0, 0)
    assert batch["align"].shape == (8, 32, 2) and batch["align"].dtype == torch.int64
    assert torch.equal(task.train_batch(0, 0, 0)["align"], batch["align"])  # a function of (seed, step, micro, rank)
    cfg = prior.config
    for row, ident in zip(batch["align"], batch["ids"]):
        w = _Sung().window(int(ident[1]))
        _, idx = lyric_window(_labeller(cfg).vocab.lyric_vocab.encode(LYRICS), 8, 4096, 0, cfg.sample_length)
        want = alignment_targets(w.words, word_char_spans(w.words, LYRICS), idx, 0, 32, 128, SR)
        assert row.tolist() == want.tolist()
    first = next(r for r, i in zip(batch["align"], batch["ids"]) if i != "s3@0")
    assert first[:8].tolist() == [[0, 2]] * 8 and first[8:16].tolist() == [[3, 5]] * 8  # aa, then bb
    assert first[16:24].tolist() == [[6, 8]] * 8 and (first[24:] == -1).all()  # cc, then silence
    plain = PriorTask(2, _Sung(), None, _labeller(cfg), 8, seed=3, l_bins=64).train_batch(0, 0, 0)
    assert "align" not in plain and torch.equal(plain["z"], batch["z"])


def test_the_term_is_added_and_off_is_the_plain_loss() -> None:
    prior, task = _setup(align=2.0)
    batch = task.train_batch(0, 0, 0)
    loss, metrics = task.loss(prior, batch, torch.device("cpu"))
    off_task = PriorTask(2, _Sung(), None, task.labeller, 8, seed=3, l_bins=64)
    off = off_task.train_batch(0, 0, 0)
    assert torch.equal(off["y"], batch["y"])
    plain, plain_metrics = off_task.loss(prior, off, torch.device("cpu"))
    direct, _ = prior(off["z"], None, off["y"])
    assert torch.equal(plain, direct)  # off: exactly the prior's own loss
    assert torch.equal(metrics["bpd"], plain_metrics["bpd"])  # the forward is unchanged by the pre-hook
    assert torch.allclose(loss, plain + 2.0 * metrics["align_loss"])
    share = (batch["align"][..., 0] >= 0).float().mean()
    assert metrics["align_share"] == share and 0.2 < share <= 0.75
    # near-uniform attention over 8 columns at initialisation: the word's 2 columns get ~1/4
    assert abs(float(metrics["align_loss"]) - np.log(4)) < 0.1


def _target_mass(prior, task) -> float:
    """Mean weight of the product's alignment (``Prior.alignment_weights``) on the sung word's columns."""
    layer, head = alignment_site(prior)
    batch = task.val_batches()[0]
    w = prior.alignment_weights(batch["z"], None, batch["y"], layer, head)
    has = batch["align"][..., 0] >= 0
    cols = torch.arange(w.shape[-1])
    target = (cols >= batch["align"][..., :1]) & (cols < batch["align"][..., 1:])
    return float((w * target).sum(-1)[has].mean())


def test_head_weights_are_the_models_attention() -> None:
    from jukebox.train.tasks import head_weights

    prior, task = _setup()
    for p in prior.parameters():  # cross layers start with zero output projections: make them matter
        p.data.add_(0.05 * torch.randn_like(p))
    batch = task.val_batches()[0]
    block = prior.decoder.transformer.blocks[9]
    seen = []
    handle = block.register_forward_pre_hook(lambda m, a: seen.append(a[:2]))
    w = prior.alignment_weights(batch["z"], None, batch["y"], 9, 1)
    handle.remove()
    assert torch.allclose(head_weights(block, *seen[0], head=1), w, atol=1e-6)


def test_the_loss_aligns_the_head_in_a_few_steps() -> None:
    prior, task = _setup(align=1.0, batch=4)
    before = _target_mass(prior, task)
    opt = torch.optim.Adam(prior.parameters(), lr=1e-2)
    terms = []
    for step in range(8):
        loss, metrics = task.loss(prior, task.train_batch(step, 0, 0), torch.device("cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        terms.append(float(metrics["align_loss"]))
    assert terms[-1] < 0.9 * terms[0], terms
    assert _target_mass(prior, task) > before + 0.05


def test_bf16_autocast_trains_with_it() -> None:
    prior, task = _setup(align=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, metrics = task.loss(prior, task.train_batch(0, 0, 0), torch.device("cpu"))
    loss.backward()
    assert torch.isfinite(loss) and prior.decoder.transformer.blocks[9].attn.q.weight.grad.abs().sum() > 0
    grads = {n: p.grad.clone() for n, p in prior.named_parameters() if p.grad is not None}
    prior.zero_grad()
    prior.decoder.transformer.checkpoint = True  # recomputed blocks: the same loss and gradients
    with torch.autocast("cpu", dtype=torch.bfloat16):
        again, _ = task.loss(prior, task.train_batch(0, 0, 0), torch.device("cpu"))
    again.backward()
    assert torch.equal(again, loss)
    assert all(torch.allclose(p.grad, grads[n], atol=1e-6) for n, p in prior.named_parameters() if n in grads)


@pytest.mark.slow
def test_compiled_blocks_train_with_it(tmp_path: Path) -> None:
    """The head's weights come from a pre-hook on the block (outside its compiled graph): same curve as eager."""
    results = {}
    logs: list[str] = []
    for compile in ("none", "blocks"):
        prior, task = _setup(align=1.0, batch=4)
        config = TrainConfig(steps=3, batch_size=4, warmup_steps=1, log_every=1, workers=1, compile=compile,
                             val_every=3, val_batches=1)
        trainer = Trainer(prior, task, config, tmp_path / compile, progress=False, log=logs.append,
                          compile_kwargs={"backend": "aot_eager"})
        results[compile] = trainer.fit()
    eager, compiled = ([r["align_loss"] for r in results[c].history] for c in ("none", "blocks"))
    assert np.allclose(eager, compiled, rtol=1e-4, atol=1e-5)
    assert "align_loss" in results["none"].val_history[-1]
    assert any(" tokens/s align_loss " in line and "align_share" in line for line in logs)


def test_refusals() -> None:
    prior, task = _setup("tiny_merged", align=1.0)
    with pytest.raises(UsageError, match="merged-sequence"):
        task.loss(prior, task.train_batch(0, 0, 0), torch.device("cpu"))
    with pytest.raises(UsageError, match="without lyrics"):
        alignment_site(Prior(prior_preset("tiny_top")))
    lyr = Prior(prior_preset("tiny_lyrics"))
    assert alignment_site(lyr) == (9, 0) and alignment_site(lyr, head=1) == (9, 1)
    with pytest.raises(UsageError, match="not a cross-attention layer"):
        alignment_site(lyr, layer=3)
    with pytest.raises(UsageError, match="outside the layer's 2 heads"):
        alignment_site(lyr, head=2)
    cfg = prior_preset("tiny_top")
    vocab = LabelVocab.from_names(["alice"], ["folk"], version="v2")
    with pytest.raises(UsageError, match="needs a prior with lyrics"):
        PriorTask(2, _Sung(), None, Labeller(vocab, 2, 0, cfg.sample_length), 2,
                  options=TrainOptions(align_loss=1.0))
    for bad in ({"align_loss": -1.0}, {"align_loss": float("nan")}, {"align_loss": True}, {"align_head": 0},
                {"align_loss": 1.0, "align_layer": -1}):
        with pytest.raises(UsageError):
            TrainOptions(**bad)


def test_cli_flags_become_options() -> None:
    from jukebox.cli import train as cli_train

    parser = argparse.ArgumentParser()
    cli_train.register(parser.add_subparsers())
    base = ["train", "prior", "-m", "x", "--level", "2", "--data", "d", "--steps", "1"]
    args = parser.parse_args([*base, "--align-loss", "0.5", "--align-layer", "3", "--align-head", "1"])
    assert cli_train.prior_options(args) == {"align_loss": 0.5, "align_layer": 3, "align_head": 1}
    stored = TrainOptions(align_loss=0.5, align_layer=3, align_head=1)
    assert TrainOptions.from_dict(stored.to_dict()) == stored
    old = {k: v for k, v in TrainOptions().to_dict().items() if not k.startswith("align")}
    assert TrainOptions.from_dict(old) == TrainOptions()  # checkpoints written before the option resume unchanged
    args = parser.parse_args([*base, "--align-loss", "-1"])
    with pytest.raises(UsageError, match="--align-loss must be"):
        cli_train.prior_options(args)
