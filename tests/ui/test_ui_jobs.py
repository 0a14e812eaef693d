"""The web page's job queue and results folder (plain Python, no web framework): order, cancel, checks, paths."""

from __future__ import annotations

import json
import re
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from jukebox.api import load_model
from jukebox.errors import JukeboxError, UsageError
from jukebox.testing import make_tiny_model_dir
from jukebox.ui.jobs import JOB_ID_RE, JobQueue, JobRequest, new_job_id, result_path
from jukebox.ui.media import colorize, png_rgb, spectrogram, spectrogram_png


class FakeModel:
    """Just what the queue reads from a model, for tests of the queue itself."""

    sample_rate = 8000
    prior_levels = [0, 1, 2]
    top_level = 2

    def sampling_settings(self, settings=None, **overrides):
        from jukebox.sampling.settings import SamplingSettings

        return (settings or SamplingSettings.for_levels(self.prior_levels)).replace(**overrides)


def fake_runner(log: list, gate: threading.Event | None = None, steps: int = 3):
    def run(model, job, out, progress):
        log.append(job.id)
        for step in range(steps):
            if gate is not None:
                gate.wait(5)
            progress(2, step + 1, steps)
        (out / "item_0.wav").write_bytes(b"RIFF")
        job.n_items = 1
    return run


@pytest.fixture
def fake_queue(tmp_path):
    queues = []

    def make(**kw):
        q = JobQueue(FakeModel(), tmp_path / "results", **kw)
        queues.append(q)
        return q
    yield make
    for q in queues:
        q.close()


def test_jobs_run_one_at_a_time_in_order(fake_queue):
    log: list[str] = []
    gate = threading.Event()
    q = fake_queue(runner=fake_runner(log, gate))
    a, b, c = (q.submit(JobRequest(seconds=1, artist=name)) for name in "abc")
    deadline = time.monotonic() + 5
    while a.status != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (a.status, b.status, c.status) == ("running", "queued", "queued")
    assert [q.queue_position(j.id) for j in (a, b, c)] == [0, 1, 2]
    gate.set()
    for job in (a, b, c):
        assert q.wait(job.id, 10).status == "done"
    assert log == [a.id, b.id, c.id]
    assert a.progress == {2: (3, 3)} and a.outputs == ["item_0.wav", "metadata.json"]
    assert [j.id for j in q.jobs()] == [c.id, b.id, a.id]  # newest first
    assert q.queue_position(a.id) is None


def test_cancel_queued_and_running(fake_queue):
    log: list[str] = []
    gate = threading.Event()
    q = fake_queue(runner=fake_runner(log, gate))
    a = q.submit(JobRequest(seconds=1))
    b = q.submit(JobRequest(seconds=1))
    while a.status != "running":
        time.sleep(0.01)
    assert q.cancel(b.id) and b.status == "cancelled"  # a queued job is dropped at once
    assert q.cancel_latest() is a  # the newest unfinished one: the running job, stopped at its next token
    gate.set()
    assert q.wait(a.id, 10).status == "cancelled"
    assert not q.cancel(a.id) and q.cancel_latest() is None and not q.cancel("nonsense")
    assert log == [a.id]  # b never ran
    meta = json.loads((q.results_dir / a.id / "metadata.json").read_text())
    assert meta["status"] == "cancelled" and meta["request"]["seconds"] == 1


def test_failures_are_kept_and_the_worker_survives(fake_queue):
    def runner(model, job, out, progress):
        if job.request.artist == "boom":
            raise RuntimeError("kaput\nsecond line")
        if job.request.artist == "bad":
            raise JukeboxError("a message for the user")

    q = fake_queue(runner=runner)
    jobs = [q.submit(JobRequest(seconds=1, artist=a)) for a in ("boom", "bad", "fine")]
    assert [q.wait(j.id, 10).status for j in jobs] == ["failed", "failed", "done"]
    assert jobs[0].error == "unexpected RuntimeError: kaput" and jobs[1].error == "a message for the user"


@pytest.mark.parametrize("request_kw, message", [
    (dict(action="remix"), "unknown action"),
    (dict(seconds=0), "length"),
    (dict(seconds=10_000), "length"),
    (dict(n_samples=0), "number of samples"),
    (dict(n_samples=99), "number of samples"),
    (dict(temperature=-0.5), "temperature"),
    (dict(top_k=-1), "top_k"),
    (dict(top_p=1.5), "top_p"),
    (dict(seed=2**60), "seed"),
    (dict(levels=[]), "at least one level"),
    (dict(levels=[5]), "no level"),
    (dict(seconds=5, total_seconds=2), "song length"),
    (dict(loudness=3.0), "loudness"),
    (dict(action="continue"), "choose a previous result"),
    (dict(action="upsample", source="../../etc"), "choose a previous result"),
    (dict(source="20250101-000000-000000000000"), "no source"),
])
def test_bad_requests_are_refused_before_queueing(fake_queue, request_kw, message):
    q = fake_queue(runner=fake_runner([]))
    with pytest.raises(UsageError, match=message):
        q.submit(JobRequest(**request_kw))
    assert q.jobs() == [] and list(q.results_dir.iterdir()) == []


@pytest.mark.parametrize("overrides", [dict(temperature=0.0), dict(temperature=-0.1), dict(seed=-5),
                                       dict(seed=2**53), dict(top_k=0), dict(top_k=-2), dict(top_p=1.0),
                                       dict(top_p=-0.1), dict(seed=2**53 - 1)])
def test_the_page_accepts_exactly_what_the_api_accepts(fake_queue, overrides):
    """The queue checks a request's settings with the API's own resolution: temperature 0 (greedy) and negative
    seeds pass, out-of-range values fail with the API's message."""
    from jukebox.sampling.settings import SamplingSettings

    q = fake_queue(runner=fake_runner([]))
    try:
        SamplingSettings.for_levels([0, 1, 2], **overrides)
    except UsageError as e:
        with pytest.raises(UsageError, match=re.escape(str(e))):
            q.submit(JobRequest(seconds=1, **overrides))
        assert q.jobs() == []
    else:
        assert q.wait(q.submit(JobRequest(seconds=1, **overrides)).id, 10).status == "done"


def test_uploads_are_type_and_size_checked(fake_queue, tmp_path):
    q = fake_queue(runner=fake_runner([]), max_upload_bytes=10_000, max_prompt_seconds=1.0)
    with pytest.raises(UsageError, match="must be an audio file"):
        q.submit(JobRequest(seconds=1), prompt_file=tmp_path / "evil.exe")
    big = tmp_path / "big.wav"
    sf.write(big, np.zeros(20_000, np.float32), 8000)
    with pytest.raises(UsageError, match="limit is 0 MB"):
        q.submit(JobRequest(seconds=1), prompt_file=big)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio" * 10)
    with pytest.raises(JukeboxError, match="^the uploaded prompt: not a readable audio file") as err:
        q.submit(JobRequest(seconds=1), prompt_file=junk)
    assert str(tmp_path) not in str(err.value)  # the server's temporary path is not shown
    long = tmp_path / "long.flac"
    sf.write(long, np.zeros(4000, np.float32), 1000)  # 4 s at 1 kHz: small, but longer than the 1 s limit
    with pytest.raises(UsageError, match="4 s long"):
        q.submit(JobRequest(seconds=1), prompt_file=long)
    assert q.jobs() == [] and list(q.results_dir.iterdir()) == []
    ok = tmp_path / "ok.flac"
    sf.write(ok, np.zeros(400, np.float32), 4000)  # resampled to the model's 8 kHz on the way in
    job = q.submit(JobRequest(seconds=1), prompt_file=ok)
    assert sf.info(q.result_file(job.id, "prompt.wav")).samplerate == 8000
    with pytest.raises(UsageError, match="previous result, not on an upload"):
        q.submit(JobRequest(action="continue", source=job.id), prompt_file=ok)


def test_result_paths_only_by_generated_id(tmp_path):
    job_id = new_job_id()
    assert JOB_ID_RE.fullmatch(job_id) and new_job_id() != job_id
    (tmp_path / job_id).mkdir()
    (tmp_path / job_id / "item_0.wav").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("no")
    assert result_path(tmp_path, job_id, "item_0.wav") == tmp_path / job_id / "item_0.wav"
    for bad_id, name in [("..", "secret.txt"), (job_id, "../secret.txt"), (job_id, "/etc/passwd"),
                         (f"{job_id}/..", "secret.txt"), (job_id, "item_0.wav/.."), ("x" * 27, "item_0.wav"),
                         (job_id, "item_0.exe"), (job_id, "item_0.wav\n")]:
        with pytest.raises(UsageError):
            result_path(tmp_path, bad_id, name)
    with pytest.raises(JukeboxError, match="has no item_1.wav"):
        result_path(tmp_path, job_id, "item_1.wav")


def test_seed_is_recorded_and_history_reloads(fake_queue, tmp_path):
    q = fake_queue(runner=fake_runner([]))
    job = q.submit(JobRequest(seconds=1, lyrics="hello"))
    assert isinstance(job.request.seed, int)  # drawn at submit time, so the result can be reproduced
    q.wait(job.id, 10)
    # a job that was running when a server died shows as interrupted; junk folders are ignored
    dead = new_job_id()
    (q.results_dir / dead).mkdir()
    (q.results_dir / dead / "metadata.json").write_text(json.dumps({"status": "running", "request": {"seconds": 2}}))
    (q.results_dir / "not-a-job").mkdir()
    again = fake_queue(runner=fake_runner([]))
    by_id = {j.id: j for j in again.jobs()}
    assert set(by_id) == {job.id, dead}
    assert by_id[job.id].status == "done" and by_id[job.id].request.seed == job.request.seed
    assert by_id[job.id].request.lyrics == "hello" and by_id[dead].status == "interrupted"


def test_media_png():
    sr = 8000
    t = np.arange(sr) / sr
    spec = spectrogram(np.sin(2 * np.pi * 1000 * t).astype(np.float32), n_fft=256, hop=64)
    assert spec.shape == (129, 122) and spec.min() >= 0 and spec.max() == 1
    assert abs(int(spec.mean(axis=1).argmax()) - 32) <= 1  # 1 kHz is bin 32 of 256 at 8 kHz
    assert spectrogram(np.zeros(100)).max() == 0
    rgb = colorize(np.array([[0.0, 1.0]]))
    assert rgb.shape == (1, 2, 3) and tuple(rgb[0, 0]) == (0, 0, 4) and tuple(rgb[0, 1]) == (252, 255, 164)
    png = spectrogram_png(np.random.default_rng(0).standard_normal(sr).astype(np.float32) * 0.1, sr,
                          width=100, height=50)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[20:24], "big") == 50
    with pytest.raises(ValueError):
        png_rgb(np.zeros((0, 1, 3), np.uint8))


@pytest.fixture(scope="module")
def tiny_lyrics(tmp_path_factory):
    return load_model(make_tiny_model_dir(tmp_path_factory.mktemp("m") / "tiny", lyrics="encoder_decoder").path,
                      device="cpu")


def test_real_jobs_generate_continue_upsample_prompt(tiny_lyrics, tmp_path):
    q = JobQueue(tiny_lyrics, tmp_path / "results")
    try:
        gen = q.submit(JobRequest(artist="Alice Example", genre="folk", lyrics="la la la", seconds=0.05,
                                  n_samples=2, top_p=0.9, seed=3))
        assert q.wait(gen.id, 60).status == "done", gen.error
        assert gen.outputs == ["alignment.json", "alignment_0.png", "alignment_1.png", "codes.npz", "item_0.wav",
                               "item_1.wav", "metadata.json", "spectrogram_0.png", "spectrogram_1.png"]
        assert gen.progress == {2: (17, 17), 1: (68, 68), 0: (272, 272)} and gen.n_items == 2
        meta = json.loads(q.result_file(gen.id, "metadata.json").read_text())
        assert meta["status"] == "done" and meta["request"]["seed"] == 3 and meta["level"] == 0
        assert sf.info(q.result_file(gen.id, "item_1.wav")).frames == 2176
        # the same settings give the same song (the seed is part of the settings shown)
        same = q.submit(JobRequest(artist="Alice Example", genre="folk", lyrics="la la la", seconds=0.05,
                                   n_samples=2, top_p=0.9, seed=3, levels=[2]))
        assert q.wait(same.id, 60).status == "done" and same.level == 2
        with np.load(q.result_file(gen.id, "codes.npz")) as a, np.load(q.result_file(same.id, "codes.npz")) as b:
            assert np.array_equal(a["level_2"], b["level_2"]) and "level_0" not in b.files

        up = q.submit(JobRequest(action="upsample", source=same.id, seed=1))
        cont = q.submit(JobRequest(action="continue", source=gen.id, seconds=0.1, prompt_seconds=0.03, seed=1))
        primed = q.submit(JobRequest(seconds=0.1, levels=[2], seed=1),
                          prompt_file=q.result_file(gen.id, "item_0.wav"))
        for job in (up, cont, primed):
            assert q.wait(job.id, 60).status == "done", job.error
        assert up.n_items == 2 and up.level == 0 and "alignment.json" not in up.outputs
        # continue/upsample keep the source's labels and samples (the recorded request says so)
        assert (up.request.artist, up.request.genre, up.request.n_samples, up.request.seconds) == (
            "Alice Example", "folk", 2, 0.05)
        assert cont.request.lyrics == "la la la" and cont.request.seconds == 0.1
        assert sf.info(q.result_file(cont.id, "item_0.wav")).frames == 4352
        with np.load(q.result_file(cont.id, "codes.npz")) as c, np.load(q.result_file(gen.id, "codes.npz")) as g:
            assert np.array_equal(c["level_2"][:, :8], g["level_2"][:, :8])  # 0.03 s kept = 8 top tokens
        assert "prompt.wav" in primed.outputs and primed.n_items == 1

        # shorter than an upsampler's context: sampled one window long, cut to the asked length (3 top tokens)
        short = q.submit(JobRequest(seconds=0.01))
        assert q.wait(short.id, 60).status == "done", short.error
        assert sf.info(q.result_file(short.id, "item_0.wav")).frames == 384
    finally:
        q.close()


def test_page_temperature_is_the_top_levels_when_the_model_has_its_own(tmp_path):
    """A model with per-level temperatures in model.json (the embedded one): the page's temperature sets the top
    level and the upsamplers keep the model's; without them it applies to every level."""
    md = make_tiny_model_dir(tmp_path / "m")
    meta = md.path / "model.json"
    for own, want in (([0.7, 0.8, 0.9], {0: 0.7, 1: 0.8, 2: 0.5}), (None, {0: 0.5, 1: 0.5, 2: 0.5})):
        info = json.loads(meta.read_text())
        info["sampling"] = {} if own is None else {"temperature": own}
        meta.write_text(json.dumps(info))
        q = JobQueue(load_model(md.path, device="cpu"), tmp_path / f"results{own is None}")
        try:
            job = q.submit(JobRequest(seconds=0.05, temperature=0.5, seed=0))
            assert q.wait(job.id, 60).status == "done", job.error
            assert {int(k): v["temperature"] for k, v in job.settings["per_level"].items()} == want
        finally:
            q.close()


def test_page_loudness(tiny_lyrics, tmp_path):
    """Jobs bring their audio to the request's loudness (default -16 LUFS); None writes the raw decode."""
    from jukebox.loudness import integrated_loudness

    q = JobQueue(tiny_lyrics, tmp_path / "results")
    try:
        on = q.submit(JobRequest(seconds=0.6, levels=[2], seed=0))
        off = q.submit(JobRequest(seconds=0.6, levels=[2], seed=0, loudness=None))
        for job in (on, off):
            assert q.wait(job.id, 60).status == "done", job.error
        assert off.settings["loudness"] == {"enabled": False}
        assert on.settings["loudness"]["items"][0]["applied"]
        y, sr = sf.read(q.result_file(on.id, "item_0.wav"), dtype="float32")
        assert integrated_loudness(y, sr) == pytest.approx(-16.0, abs=0.5)
    finally:
        q.close()


def test_cancel_a_real_job_midway(tiny_lyrics, tmp_path):
    q = JobQueue(tiny_lyrics, tmp_path / "results")
    try:
        job = q.submit(JobRequest(seconds=0.05, n_samples=1))
        deadline = time.monotonic() + 30
        while not job.progress and time.monotonic() < deadline:
            time.sleep(0.002)
        q.cancel(job.id)
        assert q.wait(job.id, 60).status == "cancelled"
        assert "item_0.wav" not in job.outputs
    finally:
        q.close()


def test_page_tempo(tiny_lyrics, tmp_path):
    """A tempo model's jobs take the page's tempo (recorded with the items); other models refuse one."""
    from jukebox.train.runner import with_tempo

    md = make_tiny_model_dir(tmp_path / "m", levels=(2,))
    md.save_prior(with_tempo(md.load_prior(2))[0].eval())
    q = JobQueue(load_model(md.path, device="cpu"), tmp_path / "results")
    plain = JobQueue(tiny_lyrics, tmp_path / "plain")
    try:
        job = q.submit(JobRequest(genre="folk", seconds=0.2, levels=[2], seed=0, bpm=96.0))
        default = q.submit(JobRequest(genre="folk", seconds=0.2, levels=[2], seed=0))
        for j in (job, default):
            assert q.wait(j.id, 60).status == "done", j.error
        assert job.settings["items"][0]["bpm"] == 96.0
        assert default.settings["items"][0]["bpm"] == 120.0  # no tempo table: the general default
        with pytest.raises(UsageError, match="between 20 and 400"):
            q.submit(JobRequest(seconds=0.2, bpm=5.0))
        with pytest.raises(UsageError, match="takes no tempo"):
            plain.submit(JobRequest(seconds=0.2, bpm=100.0))
    finally:
        q.close()
        plain.close()
