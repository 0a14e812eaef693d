"""One run format (jukebox.runs) for the command line and the web page: request, folder, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jukebox.cli.main import main
from jukebox.errors import JukeboxError, UsageError
from jukebox.runs import RUN_FORMAT, RUN_VERSION, RunFolder, SamplingRequest, load_codes_file
from jukebox.testing import make_tiny_model_dir


def test_request_round_trip_and_checks():
    r = SamplingRequest(mode="continue", codes="c.npz", seconds=2.0, temperature={2: 0.5}, seed=4,
                        items=[{"artist": "a"}, {"artist": "b"}])
    assert r.n_samples == 2 and r.overrides() == {"temperature": {2: 0.5}, "seed": 4}
    again = SamplingRequest.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again.overrides() == {"temperature": {"2": 0.5}, "seed": 4} and again.codes == "c.npz"
    for bad in (dict(mode="remix", seconds=1), dict(mode="primed", seconds=1), dict(mode="upsample"),
                dict(seconds=None), dict(seconds=1, n_samples=0), dict(seconds=1, items=[])):
        with pytest.raises(UsageError):
            SamplingRequest(**bad)


def test_version_1_requests_still_resume():
    """metadata.json of version 1 stored per-level settings as the command line's lists."""
    old = {"mode": "ancestral", "artist": "unknown", "genre": "unknown", "lyrics": "", "items": None,
           "n_samples": 1, "seconds": 1.0, "total_seconds": None, "temperature": [0.9], "top_k": [0, 5, 10],
           "top_p": None, "hop_fraction": None, "seed": 3, "levels": None, "prompt": None, "prompt_seconds": None,
           "codes": None, "chunk_size": None, "max_batch_size": 16, "guidance": None, "bpm": None,
           "loudness": -16.0}
    r = SamplingRequest.from_dict(old)
    assert r.overrides() == {"temperature": 0.9, "top_k": {0: 0, 1: 5, 2: 10}, "seed": 3, "max_batch_size": 16}


def test_folder_metadata_is_versioned(tmp_path):
    folder = RunFolder(tmp_path / "run")
    with pytest.raises(JukeboxError, match="nothing to resume"):
        folder.read()
    folder.path.mkdir()
    folder.metadata_path.write_text(json.dumps({"format": RUN_FORMAT, "version": RUN_VERSION + 1, "request": {}}))
    with pytest.raises(JukeboxError, match="newer jukebox"):
        folder.read()
    folder.metadata_path.write_text("{not json")
    with pytest.raises(JukeboxError, match="corrupt"):
        folder.read()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("runs") / "m")


def test_cli_and_page_write_the_same_run(tiny, tmp_path, capsys):
    """The same request through `jukebox sample` and through the page's queue: the same codes, the same
    metadata format; and a page result is a run folder that `jukebox sample --resume` continues."""
    from jukebox.api import load_model
    from jukebox.ui.jobs import JobQueue, JobRequest

    cli = tmp_path / "cli"
    assert main(["sample", "-m", str(tiny.path), "--seconds", "0.3", "--seed", "3", "--levels", "2,1",
                 "-o", str(cli), "--quiet"]) == 0
    q = JobQueue(load_model(tiny.path, device="cpu"), tmp_path / "results")
    try:
        job = q.submit(JobRequest(seconds=0.3, seed=3, levels=[2, 1]))
        assert q.wait(job.id, 60).status == "done", job.error
    finally:
        q.close()
    page = q.results_dir / job.id
    a, b = load_codes_file(cli / "codes.npz"), load_codes_file(page / "codes.npz")
    assert sorted(a) == sorted(b) == [1, 2] and all(np.array_equal(a[k], b[k]) for k in a)
    meta_cli = json.loads((cli / "metadata.json").read_text())
    meta_page = json.loads((page / "metadata.json").read_text())
    for meta in (meta_cli, meta_page):
        assert (meta["format"], meta["version"], meta["status"]) == (RUN_FORMAT, RUN_VERSION, "done")
        assert meta["levels_done"] == [2, 1] and meta["request"]["mode"] == "ancestral"
    assert meta_page["page"]["seed"] == 3 and meta_page["settings"]["sampling"] == meta_cli["settings"]["sampling"]

    # interrupt the page's result after its top level, then let the command line finish it
    codes = load_codes_file(page / "codes.npz")
    np.savez(page / "codes.npz", level_2=codes[2])
    meta_page.update(status="running", levels_done=[2])
    (page / "metadata.json").write_text(json.dumps(meta_page))
    (page / "item_0.wav").unlink()
    assert main(["sample", "-o", str(page), "--resume", "--quiet"]) == 0
    assert "wrote 1 item(s)" in capsys.readouterr().out
    again = load_codes_file(page / "codes.npz")
    assert all(np.array_equal(again[k], a[k]) for k in a) and (page / "item_0.wav").is_file()
    assert main(["sample", "-o", str(page), "--resume", "--quiet"]) == 0
    assert "already complete" in capsys.readouterr().out
