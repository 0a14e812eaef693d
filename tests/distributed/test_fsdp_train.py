"""``jukebox train prior --fsdp`` on the CPU: two gloo processes give the loss curve of one process (same global
batch), a run stopped and resumed from its sharded checkpoint continues identically, the export (at checkpoints and
by ``train export-fsdp``) matches, and a single process re-shards the two-process checkpoint to go on."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
import torch

from jukebox.checkpoint.format import load_weights
from jukebox.errors import JukeboxError, UsageError
from jukebox.train import TrainConfig, train_prior

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from test_train import make_corpus  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=2, lr=1e-3, warmup_steps=1, log_every=1, workers=0, val_batches=1)
    base.update(kw)
    return TrainConfig(**base)


def _global_slots(world: int) -> None:
    """Make every (micro-step, rank) draw the windows of global slot ``micro * world + rank``: one process with
    ``grad_accum=world`` then sees the global batch of ``world`` processes with ``grad_accum=1``."""
    from jukebox.train.tasks import PriorTask

    original = PriorTask.train_batch

    def train_batch(self, step, micro, rank):
        return original(self, step, 0, micro * world + rank)

    PriorTask.train_batch = train_batch


def _worker(rank: int, world: int, port: int, a: str, b: str, data: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)  # one group for the three runs
    _global_slots(world)
    kw = dict(level=2, log_dir="none", progress=False, device="cpu", log=lambda m: None)
    full = train_prior(a, data, config=_cfg(fsdp=True, save_every=2), **kw)
    # with activation checkpointing (recomputed blocks give the same numbers)
    train_prior(b, data, config=_cfg(fsdp=True), stop_at=2, checkpoint_activations=True, **kw)
    rest = train_prior(b, data, config=_cfg(fsdp=True), resume=True, checkpoint_activations=True, **kw)
    if rank == 0:
        Path(out).write_text(json.dumps({"full": full.history, "rest": rest.history, "val": full.val_history}))
    torch.distributed.destroy_process_group()


def _close(x: list[float], y: list[float], rel: float) -> bool:
    return all(abs(p - q) <= rel * max(1.0, abs(q)) for p, q in zip(x, y, strict=True))


def test_fsdp_two_processes_match_one_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.multiprocessing as mp

    from jukebox.testing import make_tiny_model_dir

    data = make_corpus(tmp_path / "music", n=4)
    base = make_tiny_model_dir(tmp_path / "base", levels=(2,))
    a, b, c = (shutil.copytree(base.path, tmp_path / n) for n in ("a", "b", "c"))
    mp.spawn(_worker, args=(2, _free_port(), str(a), str(b), str(data), str(tmp_path / "fsdp.json")), nprocs=2,
             join=True)
    got = json.loads((tmp_path / "fsdp.json").read_text())

    # one process, plain training (no FSDP), the same two windows per step as grad_accum=2
    _global_slots(1)
    ref = train_prior(c, data, level=2, config=_cfg(grad_accum=2), log_dir="none", progress=False, device="cpu",
                      log=lambda m: None)
    monkeypatch.undo()
    losses = [r["loss"] for r in got["full"]]
    assert _close(losses, [r["loss"] for r in ref.history], 1e-5)
    assert _close([r["grad_norm"] for r in got["full"]], [r["grad_norm"] for r in ref.history], 1e-4)
    assert losses[-1] < losses[0]  # it trained
    assert _close([got["val"][-1]["loss"]], [ref.val_history[-1]["loss"]], 1e-5)

    # the run stopped at step 2 and resumed from its sharded checkpoint continues as the uninterrupted one
    assert [r["step"] for r in got["rest"]] == [3, 4]
    assert _close([r["loss"] for r in got["rest"]], losses[2:], 1e-6)

    # rank 0 exported the gathered weights: those of one process's training, and of the resumed run
    wa, wb, wc = (load_weights(p / "prior_level_2") for p in (a, b, c))
    for k in wc:
        assert torch.allclose(wa[k], wc[k], atol=2e-5), k
        assert torch.allclose(wa[k], wb[k], atol=1e-6), k
    w0 = load_weights(base.path / "prior_level_2")
    assert any(not torch.equal(wa[k], w0[k]) for k in w0)  # and it trained

    # the checkpoint is sharded: a plain resume says what to do, export-fsdp rebuilds the exported weights
    with pytest.raises(JukeboxError, match="--fsdp"):
        train_prior(a, data, level=2, config=_cfg(steps=6), resume=True, log_dir="none", progress=False,
                    device="cpu", log=lambda m: None)
    from jukebox.cli import main as cli_main

    if "train" not in cli_main.COMMAND_MODULES:
        monkeypatch.setattr(cli_main, "COMMAND_MODULES", (*cli_main.COMMAND_MODULES, "train"))
    d = shutil.copytree(a, tmp_path / "d")
    (d / "prior_level_2" / "model.safetensors").unlink(missing_ok=True)
    assert cli_main.main(["train", "export-fsdp", "-m", str(d), "--level", "2"]) == 0
    wd = load_weights(d / "prior_level_2")
    assert all(torch.equal(wd[k], wa[k]) for k in wa)

    # one process (a group of one) re-shards the two-process checkpoint and goes on, through the CLI (with bf16
    # parameters and fp32 gradient reduction)
    argv = ["train", "prior", "-m", str(a), "--data", str(data), "--level", "2", "--steps", "5", "--batch-size", "2",
            "--warmup", "1", "--lr", "1e-3", "--workers", "0", "--val-batches", "1", "--log-dir", "none",
            "--device", "cpu", "--fsdp", "--resume", "--no-progress", "--json", "--precision", "bf16"]
    assert cli_main.main(argv) == 0
    assert not all(torch.equal(v, wa[k]) for k, v in load_weights(a / "prior_level_2").items())
    meta = json.loads((a / "prior_level_2" / "checkpoint" / "trainer.json").read_text())
    assert meta["step"] == 5 and meta["sharded"] == "dcp" and meta["data"]["world_size"] == 1


def test_fsdp_refusals(tmp_path: Path) -> None:
    from jukebox.train import train_vqvae

    with pytest.raises(UsageError, match="LoRA"):
        train_prior(tmp_path, tmp_path, level=2, config=_cfg(fsdp=True), lora_rank=4)
    with pytest.raises(UsageError, match="--compile"):
        train_prior(tmp_path, tmp_path, level=2, config=_cfg(fsdp=True, compile="blocks"))
    with pytest.raises(UsageError, match="priors only"):
        train_vqvae(tmp_path, tmp_path / "m", config=_cfg(fsdp=True))
