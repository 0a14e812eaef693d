"""Sampling shared by two gloo processes gives the codes of one process for the same seed: the items of the top
level and the windows of parallel upsampling split over the ranks (uneven shares, a rank with an empty share of a
call), through the API and ``jukebox sample`` (rank 0 alone writes the run folder, with world_size and each
rank's rows)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from jukebox.distributed import share_of

KW = dict(artist="Alice Example", genre="folk", seconds=0.3, n_samples=3, seed=7, loudness=None, alignment=False,
          max_batch_size=2)
CASES = (dict(upsample_mode="parallel", draw="cdf", max_windows=5), dict(upsample_mode="sequential", temperature=0.9))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, model: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from jukebox.api import load_model
    from jukebox.cli import main as cli_main
    from jukebox.distributed import init_from_env

    init_from_env(torch.device("cpu"))
    m = load_model(model, device="cpu")
    for i, case in enumerate(CASES):
        gen = m.generate(**KW, **case)
        if rank == 0:
            np.savez(f"{out}/api{i}.npz", **{f"level_{k}": v.numpy() for k, v in gen.codes.items()})
            Path(f"{out}/api{i}.json").write_text(json.dumps(gen.settings["rows_per_rank"]))
    argv = ["sample", "-m", model, "-o", f"{out}/run", "--seconds", "0.3", "--n-samples", "3", "--seed", "7",
            "--max-batch-size", "2", "--device", "cpu", "--no-alignment", "--quiet"]
    assert cli_main.main(argv) == 0
    torch.distributed.destroy_process_group()


def test_share_of_splits_evenly() -> None:
    assert [share_of(5, r, 2) for r in range(2)] == [(0, 3), (3, 5)]
    assert [share_of(1, r, 3) for r in range(3)] == [(0, 1), (1, 1), (1, 1)]
    assert sum(hi - lo for lo, hi in (share_of(17, r, 4) for r in range(4))) == 17


def test_two_processes_sample_the_codes_of_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.multiprocessing as mp

    from jukebox.api import load_model
    from jukebox.cli import main as cli_main
    from jukebox.testing import make_tiny_model_dir

    model = str(make_tiny_model_dir(tmp_path / "model").path)
    mp.spawn(_worker, args=(2, _free_port(), model, str(tmp_path)), nprocs=2, join=True)
    m = load_model(model, device="cpu")
    for i, case in enumerate(CASES):
        one = m.generate(**KW, **case)
        two = np.load(tmp_path / f"api{i}.npz")
        assert sorted(two.files) == [f"level_{k}" for k in sorted(one.codes)]
        for k, v in one.codes.items():
            assert np.array_equal(two[f"level_{k}"], v.numpy()), (case, k)
        rows = {int(k): v for k, v in json.loads((tmp_path / f"api{i}.json").read_text()).items()}
        assert sorted(rows) == [0, 1, 2] and all(len(v) == 2 for v in rows.values())
        assert rows[2][0] > 0 and rows[2][1] > 0  # the three items shared (2 + 1 per window)
        assert min(rows[0]) > 0 and abs(rows[0][0] - rows[0][1]) <= max(rows[0]) // 2  # the windows shared

    # the CLI: rank 0 wrote the folder; its codes are one process's, and it says how the work was shared
    meta = json.loads((tmp_path / "run" / "metadata.json").read_text())
    assert meta["status"] == "done" and meta["world_size"] == 2
    assert set(meta["rows_per_rank"]) == {"0", "1", "2"} and all(min(v) > 0 for v in meta["rows_per_rank"].values())
    argv = ["sample", "-m", model, "-o", str(tmp_path / "run1"), "--seconds", "0.3", "--n-samples", "3", "--seed",
            "7", "--max-batch-size", "2", "--device", "cpu", "--no-alignment", "--quiet"]
    assert cli_main.main(argv) == 0
    a, b = np.load(tmp_path / "run" / "codes.npz"), np.load(tmp_path / "run1" / "codes.npz")
    assert a.files == b.files and all(np.array_equal(a[f], b[f]) for f in a.files)
    assert "world_size" not in json.loads((tmp_path / "run1" / "metadata.json").read_text())
