"""`jukebox serve` and the page's server side without a browser: the install hint, the results route, the HTML."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from jukebox.cli.main import main
from jukebox.testing import make_tiny_model_dir
from jukebox.ui.app import render_results, render_status
from jukebox.ui.jobs import Job, JobQueue, JobRequest


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("m") / "tiny", lyrics="encoder_decoder").path


def test_serve_without_gradio_says_how_to_install(monkeypatch, capsys, tiny):
    import jukebox.cli.serve as serve

    real = serve.importlib.util.find_spec
    monkeypatch.setattr(serve.importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name))
    assert main(["serve", "-m", str(tiny)]) == 1
    err = capsys.readouterr().err
    assert err == "error: the web page needs Gradio; install it with: pip install 'jukebox[ui]'\n"


def test_serve_bad_port(tiny, capsys):
    pytest.importorskip("gradio")
    assert main(["serve", "-m", str(tiny), "--port", "70000"]) == 2
    assert "--port must be 0 to 65535" in capsys.readouterr().err


class _Model:
    sample_rate = 8000
    prior_levels = [0, 1, 2]


def test_html_escapes_everything_and_shows_progress(tmp_path):
    q = JobQueue(_Model(), tmp_path, runner=lambda *a: None)
    q.close()
    evil = "<script>alert(1)</script>"
    run = Job("20250101-000000-aaaaaaaaaaaa", JobRequest(artist=evil, genre="folk", seconds=2), status="running",
              stage="sampling level 1", progress={2: (17, 17), 1: (10, 68)})
    wait = Job("20250101-000001-bbbbbbbbbbbb", JobRequest(seconds=3), created=run.created + 1)
    done = Job("20250101-000002-cccccccccccc", JobRequest(lyrics=evil, seed=4), status="done",
               outputs=["item_0.wav", "spectrogram_0.png", "alignment_0.png", "codes.npz", "metadata.json"],
               created=run.created + 2)
    bad = Job("20250101-000003-dddddddddddd", JobRequest(), status="failed", error=evil, created=run.created + 3)
    q._jobs = {j.id: j for j in (run, wait, done, bad)}
    status = render_status(q)
    assert evil not in status and "&lt;script&gt;" in status
    assert '<progress value="17" max="17">' in status and '<progress value="10" max="68">' in status
    assert "level 0: <progress value=\"0\"" in status and "Queued #1" in status
    _Model.default_levels = [2, 1]  # a model that renders from level 1: the running job shows levels 2 and 1
    try:
        own = render_status(q)
    finally:
        del _Model.default_levels
    assert "level 1: <progress" in own and "level 0: <progress" not in own
    results = render_results(q)
    assert evil not in results and results.count("&lt;script&gt;") == 2  # the lyrics (settings) and the error
    base = f"results/{done.id}"
    assert f'<audio controls preload="metadata" src="{base}/item_0.wav">' in results
    assert f'download="jukebox-{done.id}-0.wav"' in results and f'src="{base}/spectrogram_0.png"' in results
    assert f'src="{base}/alignment_0.png"' in results and "alignment.json" not in results
    assert f'data-job="{bad.id}" data-status="failed"' in results


def test_results_route_serves_only_result_files(tmp_path, tiny):
    pytest.importorskip("gradio")
    from fastapi.testclient import TestClient

    from jukebox.api import load_model
    from jukebox.ui.app import build_app

    q = JobQueue(load_model(tiny, device="cpu"), tmp_path / "results")
    try:
        job = q.submit(JobRequest(seconds=0.05, levels=[2], seed=0))
        assert q.wait(job.id, 60).status == "done", job.error
        (tmp_path / "results" / "secret.txt").write_text("no")
        client = TestClient(build_app(q))
        r = client.get(f"/results/{job.id}/item_0.wav")
        assert r.status_code == 200 and r.headers["content-type"] == "audio/wav" and r.content[:4] == b"RIFF"
        assert client.get(f"/results/{job.id}/spectrogram_0.png").content[:4] == b"\x89PNG"
        assert json.loads(client.get(f"/results/{job.id}/metadata.json").content)["status"] == "done"
        for bad in ("/results/..%2Fsecret.txt/x", f"/results/{job.id}/..%2F..%2Fsecret.txt",
                    f"/results/{job.id}/item_1.wav", "/results/nope/item_0.wav", f"/results/{job.id}/prompt.wav"):
            assert client.get(bad).status_code == 404, bad
        page = client.get("/")
        assert page.status_code == 200 and "<html" in page.text
    finally:
        q.close()


def test_jukebox_serve_starts_and_stops(tmp_path, tiny):
    pytest.importorskip("gradio")
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "jukebox.cli.main", "serve", "-m", str(tiny), "--port", "0",
                             "--results-dir", str(tmp_path / "res")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            # a CI script run in the background ignores SIGINT, and children inherit that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        assert line.startswith("jukebox: serving tiny at http://127.0.0.1:"), (line, proc.stderr.read())
        url = line.split(" at ")[1].split(" ")[0]
        with urllib.request.urlopen(url, timeout=20) as r:
            assert r.status == 200 and b"<html" in r.read()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url + "results/x/y", timeout=20)
        assert (tmp_path / "res").is_dir()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)  # a loaded 2-core CI machine can take a while to shut Gradio down
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, 130)
    assert "Traceback" not in proc.stderr.read()


def test_page_temperature_starts_at_the_models_own_top_level_temperature():
    """The page's temperature slider starts where the model's model.json puts the top level (the embedded model's
    measured best), and at 0.98 for a model without its own."""
    from types import SimpleNamespace

    from jukebox.ui.app import _top_temperature

    assert _top_temperature(SimpleNamespace(sampling_defaults={"temperature": {0: 0.7, 1: 0.7, 2: 0.9}},
                                            top_level=2)) == 0.9
    assert _top_temperature(SimpleNamespace(sampling_defaults={"temperature": 0.85}, top_level=2)) == 0.85
    assert _top_temperature(SimpleNamespace(sampling_defaults={}, top_level=2)) == 0.98
    assert _top_temperature(SimpleNamespace(top_level=2)) == 0.98
    assert _top_temperature(SimpleNamespace(sampling_defaults={"temperature": {2: "hot"}}, top_level=2)) == 0.98


def test_values_out_of_a_controls_range_are_one_line_in_the_server_terminal(capsys, monkeypatch):
    """Gradio's own range checks (gradio.Error) print one line in the terminal instead of a whole traceback; other
    errors keep theirs."""
    pytest.importorskip("gradio")
    from gradio import queueing
    from gradio.exceptions import Error

    from jukebox.ui.app import quiet_refused_requests

    monkeypatch.setattr(queueing, "traceback", queueing.traceback)  # restored after the test
    monkeypatch.delenv("JUKEBOX_DEBUG", raising=False)
    quiet_refused_requests()
    quiet_refused_requests()  # idempotent
    try:
        raise Error("Value -5.0 is less than minimum value 0.\x1b[2J")
    except Error:
        queueing.traceback.print_exc()
    err = capsys.readouterr().err
    assert err == "jukebox serve: refused a request: Value -5.0 is less than minimum value 0.?[2J\n"
    try:
        raise ValueError("a real bug")
    except ValueError:
        queueing.traceback.print_exc()
    err = capsys.readouterr().err
    assert "Traceback" in err and "a real bug" in err
