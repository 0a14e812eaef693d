"""`jukebox download-openai` against a local HTTP server on 127.0.0.1 serving tiny original-layout checkpoints:
a whole release, resume after an interrupted transfer, truncated files, server errors, no network, a full disk.
Never the internet."""

from __future__ import annotations

import errno
import hashlib
import http.server
import io
import json
import re
import socket
import threading
from pathlib import Path

import pytest
import torch

from jukebox.checkpoint import download as dl
from jukebox.cli.main import main
from jukebox.errors import JukeboxError

REPO = Path(__file__).resolve().parents[2]

# Tiny hyper-parameters with the released models' structure (as in the original's hps of a checkpoint).
VQ_HPS = {"sr": 44100, "levels": 3, "downs_t": (3, 2, 2), "strides_t": (2, 2, 2), "emb_width": 16, "l_bins": 64,
          "hvqvae_multipliers": (2, 1, 1), "width": 8, "depth": 2, "dilation_growth_rate": 3}
UP_HPS = {"n_ctx": 64, "prior_width": 32, "prior_depth": 3, "heads": 1, "attn_order": 2, "blocks": 8,
          "cond_width": 16, "cond_depth": 2}
TOP_HPS = {
    "5b": {"level": 2, "n_ctx": 64, "prior_width": 32, "prior_depth": 6, "heads": 2, "attn_order": 2, "blocks": 8,
           "min_duration": 0.1, "max_duration": 2.0, "fp16_params": False},
    "1b_lyrics": {"level": 2, "n_ctx": 64, "prior_width": 32, "prior_depth": 16, "heads": 2, "attn_order": 12,
                  "blocks": 8, "min_duration": 0.1, "max_duration": 2.0, "n_tokens": 16, "alignment_layer": 15,
                  "alignment_head": 0},
}
ARTISTS = "unknown;0\nalice example;1\nbob demo;2\n"
GENRES = "unknown;0\nfolk;1\nrock;2\n"


def _original_vqvae() -> dict:
    from jukebox.vqvae import VQVAE
    from jukebox.vqvae import openai as vq_openai

    config = vq_openai.config_from_openai_hps({**vq_openai.OPENAI_RELEASED_HPS, **VQ_HPS})
    sd = VQVAE(config).state_dict()
    return {"model": {theirs: sd[ours].clone() for ours, theirs in vq_openai.openai_key_table(config).items()},
            "hps": dict(VQ_HPS)}


def _original_prior(kind: str, hps: dict) -> dict:
    from jukebox.prior import Prior
    from jukebox.prior import openai as prior_openai

    vq = {k: VQ_HPS[k] for k in ("sr", "levels", "downs_t", "strides_t", "l_bins")}
    config = prior_openai.config_from_openai_hps({**prior_openai.openai_preset_hps(kind), **hps}, vq)
    sd = Prior(config).state_dict()
    theirs = {t: (sd[o].t() if tr else sd[o]).clone() for o, (t, tr) in prior_openai.openai_key_table(config).items()}
    return {"model": theirs, "hps": dict(hps), "step": 0}


def _pickle(obj: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def release() -> dict[str, bytes]:
    """Server path -> bytes: the original's models/ tree (5b and 1b_lyrics tops) and ids/ tables, tiny."""
    torch.manual_seed(0)
    files = {
        "models/5b/vqvae.pth.tar": _pickle(_original_vqvae()),
        "models/5b/prior_level_0.pth.tar": _pickle(_original_prior("upsampler_level_0", {**UP_HPS, "level": 0})),
        "models/5b/prior_level_1.pth.tar": _pickle(_original_prior("upsampler_level_1", {**UP_HPS, "level": 1})),
    }
    for kind, hps in TOP_HPS.items():
        files[f"models/{kind}/prior_level_2.pth.tar"] = _pickle(_original_prior(kind, hps))
    for v in ("v2", "v3"):
        files[f"ids/{v}_artist_ids.txt"] = ARTISTS.encode()
        files[f"ids/{v}_genre_ids.txt"] = GENRES.encode()
    return files


class Server:
    """A threaded HTTP/1.0 server on 127.0.0.1 with Range/If-Range support and scripted faults.

    ``drops[path] = [n, ...]``: the next GETs of ``path`` send only n bytes of their body, then close.
    ``errors[path] = [status, ...]``: the next requests (HEAD or GET) of ``path`` answer with that status.
    ``head_size[path]``: the size HEAD announces instead of the true one. ``ranges``: honour Range headers.
    ``log``: (method, path, Range header) per request; ``sent[path]``: body bytes sent.
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.drops: dict[str, list[int]] = {}
        self.errors: dict[str, list[int]] = {}
        self.head_size: dict[str, int] = {}
        self.ranges = True
        self.log: list[tuple[str, str, str | None]] = []
        self.sent: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                path = self.path.lstrip("/")
                server.log.append((self.command, path, self.headers.get("Range")))
                if server.errors.get(path):
                    self.send_error(server.errors[path].pop(0))
                    return
                data = server.files.get(path)
                if data is None:
                    self.send_error(404)
                    return
                etag = '"' + hashlib.sha1(data).hexdigest()[:16] + '"'
                start, status = 0, 200
                m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if body and m and server.ranges and self.headers.get("If-Range") in (None, etag):
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_error(416)
                        return
                    status = 206
                self.send_response(status)
                size = server.head_size.get(path, len(data)) if not body else len(data)
                self.send_header("Content-Length", str(size - start))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", etag)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if not body:
                    return
                chunk = data[start:]
                if server.drops.get(path):
                    chunk = chunk[: server.drops[path].pop(0)]
                self.wfile.write(chunk)
                self.wfile.flush()
                server.sent[path] = server.sent.get(path, 0) + len(chunk)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def gets(self, path: str) -> list[str | None]:
        return [rng for method, p, rng in self.log if method == "GET" and p == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(release):
    srv = Server(release)
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_WAIT_S", 0.0)
    monkeypatch.delenv(dl.MODELS_URL_ENV, raising=False)
    monkeypatch.delenv(dl.IDS_URL_ENV, raising=False)


def _run(server: Server, name: str, out: Path, *extra: str) -> int:
    return main(["download-openai", name, "-o", str(out), "--base-url", server.url + "models/",
                 "--ids-url", server.url + "ids/", "--quiet", *extra])


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def test_download_imports_and_removes_the_originals(tmp_path, server, capsys):
    out = tmp_path / "models" / "5b"
    assert _run(server, "5b", out) == 0
    assert "done:" in capsys.readouterr().out
    from jukebox.checkpoint.model_dir import ModelDir

    md = ModelDir(out)
    assert md.has_vqvae() and md.prior_levels() == [0, 1, 2]
    for level in range(3):
        labels = json.loads((out / f"prior_level_{level}" / "labels.json").read_text())
        assert labels["version"] == "v2" and labels["artists"]["alice example"] == 1
    assert not (tmp_path / "models" / "5b.download").exists()  # originals deleted after the import
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["5b"]
    for path in ("models/5b/vqvae.pth.tar", "models/5b/prior_level_2.pth.tar", "ids/v2_artist_ids.txt"):
        assert server.gets(path) == [None], path  # each fetched once, whole
    assert main(["sample", "-m", str(out), "--list-artists", "alice"]) == 0
    assert "alice example" in capsys.readouterr().out.lower()


def test_keep_source_original_layout_and_v3_tables(tmp_path, server):
    src = tmp_path / "src"
    assert _run(server, "1b_lyrics", tmp_path / "m", "--source-dir", str(src), "--keep-source") == 0
    names = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    assert names == ["download.json", "ids/v2_artist_ids.txt", "ids/v2_genre_ids.txt", "ids/v3_artist_ids.txt",
                     "ids/v3_genre_ids.txt", "prior_level_0.pth.tar", "prior_level_1.pth.tar",
                     "prior_level_2.pth.tar", "vqvae.pth.tar"]
    assert (src / "prior_level_2.pth.tar").read_bytes() == server.files["models/1b_lyrics/prior_level_2.pth.tar"]
    assert json.loads((tmp_path / "m" / "prior_level_2" / "labels.json").read_text())["version"] == "v3"
    assert json.loads((tmp_path / "m" / "prior_level_1" / "labels.json").read_text())["version"] == "v2"
    # The kept originals import again without the network (import-openai), and a rerun fetches nothing.
    assert main(["import-openai", str(src), "-o", str(tmp_path / "again"), "--ids-dir", str(src / "ids")]) == 0
    n = len(server.log)
    assert _run(server, "1b_lyrics", tmp_path / "m3", "--source-dir", str(src), "--keep-source") == 0
    assert len(server.log) == n
    # That folder holds 1b_lyrics's top prior: another release refuses to mix into it.
    with pytest.raises(JukeboxError, match="holds 1b_lyrics/prior_level_2.pth.tar"):
        dl.download_openai("5b", tmp_path / "m2", source_dir=src, models_url=server.url + "models/",
                           ids_url=server.url + "ids/", progress=False, log=lambda s: None)


def test_interrupted_download_resumes_with_a_range_request(tmp_path, server, capsys):
    path = "models/5b/prior_level_2.pth.tar"
    size = len(server.files[path])
    half = size // 2
    server.drops[path] = [half]
    out = tmp_path / "m"
    assert _run(server, "5b", out, "--retries", "0") == 1
    err = _one_line_error(capsys)
    assert "stopped at" in err and "run the same command again to resume" in err, err
    part = tmp_path / "m.download" / "prior_level_2.pth.tar.part"
    assert part.stat().st_size == half
    assert not out.exists()
    assert _run(server, "5b", out) == 0
    assert server.gets(path) == [None, f"bytes={half}-"]
    assert server.sent[path] == size  # the second request sent only the missing half
    assert server.gets("models/5b/vqvae.pth.tar") == [None]  # completed files are not fetched again
    assert (out / "prior_level_2").is_dir() and not part.exists()


def test_a_dropped_connection_resumes_within_the_run(tmp_path, server):
    path = "models/5b/prior_level_0.pth.tar"
    size = len(server.files[path])
    server.drops[path] = [1000, 5000]
    assert _run(server, "5b", tmp_path / "m") == 0
    assert server.gets(path) == [None, "bytes=1000-", "bytes=6000-"]
    assert server.sent[path] == size


def test_resume_starts_over_when_ranges_are_ignored_or_the_file_changed(tmp_path, server):
    path = "models/5b/vqvae.pth.tar"
    data = server.files[path]
    remote = dl.Remote(server.url + path, tmp_path / "vqvae.pth.tar", "vqvae.pth.tar", "5b/vqvae.pth.tar")
    server.drops[path] = [100]
    with pytest.raises(dl.DownloadError, match="stopped at 100 of"):
        dl.download_file(remote, retries=0, progress=False)
    server.ranges = False  # the server answers 200 with the whole file: the part is rewritten from byte 0
    assert dl.download_file(remote, retries=0, progress=False) == len(data)
    assert remote.dest.read_bytes() == data
    # A file that changed on the server (new ETag) makes If-Range answer with the whole new file.
    server.ranges = True
    remote.dest.unlink()
    server.drops[path] = [100]
    with pytest.raises(dl.DownloadError):
        dl.download_file(remote, retries=0, progress=False)
    changed = bytes(reversed(data))
    server.files[path] = changed
    assert dl.download_file(remote, retries=0, progress=False) == len(changed)
    assert remote.dest.read_bytes() == changed
    assert server.gets(path)[-1] == "bytes=100-"  # asked to resume, got the new file whole


def test_a_transfer_that_always_stops_early_fails_clearly(tmp_path, server, capsys):
    path = "models/5b/prior_level_1.pth.tar"
    server.drops[path] = [10, 10, 10, 10]
    assert _run(server, "5b", tmp_path / "m", "--retries", "3") == 1
    err = _one_line_error(capsys)
    assert "prior_level_1.pth.tar: the transfer stopped at 40 of" in err and "resume" in err, err
    assert len(server.gets(path)) == 4
    assert not (tmp_path / "m").exists()


def test_size_announced_by_head_must_match(tmp_path, server, capsys):
    path = "models/5b/prior_level_2.pth.tar"
    server.head_size[path] = len(server.files[path]) + 7
    assert _run(server, "5b", tmp_path / "m") == 1
    err = _one_line_error(capsys)
    assert "size mismatch" in err and str(len(server.files[path]) + 7) in err, err
    assert not (tmp_path / "m.download" / "prior_level_2.pth.tar.part").exists()


def test_a_truncated_checkpoint_fails_the_import_and_keeps_the_download(tmp_path, server, capsys):
    path = "models/5b/vqvae.pth.tar"
    server.files[path] = server.files[path][: len(server.files[path]) // 2]  # consistently short on the server
    out = tmp_path / "m"
    assert _run(server, "5b", out) == 1
    err = _one_line_error(capsys)
    assert "vqvae.pth.tar" in err and "the downloaded files stay in" in err, err
    assert not out.exists()  # no half-imported model directory
    assert (tmp_path / "m.download" / "prior_level_2.pth.tar").exists()


def test_server_errors_are_retried_then_reported(tmp_path, server, capsys):
    path = "models/5b/prior_level_0.pth.tar"
    server.errors[path] = [500]  # one transient error on its HEAD: retried
    server.errors["models/5b/prior_level_1.pth.tar"] = [503]  # and one on another file's HEAD
    assert _run(server, "5b", tmp_path / "ok") == 0
    server.errors[path] = [500] * 3
    assert _run(server, "5b", tmp_path / "bad", "--retries", "2") == 1
    err = _one_line_error(capsys)
    assert "HTTP 500" in err and "prior_level_0.pth.tar" in err, err
    assert main(["download-openai", "5b", "-o", str(tmp_path / "x"), "--base-url", server.url + "nowhere/",
                 "--ids-url", server.url + "ids/", "--quiet"]) == 1
    assert "HTTP 404" in _one_line_error(capsys)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network_is_one_line(tmp_path, capsys, monkeypatch):
    port = _closed_port()
    monkeypatch.setenv(dl.MODELS_URL_ENV, f"http://127.0.0.1:{port}/models/")
    assert main(["download-openai", "5b_lyrics", "-o", str(tmp_path / "m"), "--quiet"]) == 1
    err = _one_line_error(capsys)
    assert err.startswith("error: cannot reach 127.0.0.1:") and "refused" in err.lower(), err
    assert not any(tmp_path.iterdir())  # nothing created


def test_default_addresses_fall_back_to_the_storage_account(tmp_path, server, monkeypatch):
    port = _closed_port()
    monkeypatch.setattr(dl, "MODELS_URLS", (f"http://127.0.0.1:{port}/models/", server.url + "models/"))
    assert main(["download-openai", "5b", "-o", str(tmp_path / "m"), "--ids-url", server.url + "ids/",
                 "--quiet"]) == 0


def test_full_disk_is_refused_before_downloading(tmp_path, server, capsys, monkeypatch):
    total = sum(len(v) for k, v in server.files.items() if k.startswith("models/5b/"))
    real = dl.shutil.disk_usage
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: real(p)._replace(free=total))  # < download + import
    assert _run(server, "5b", tmp_path / "m") == 1
    err = _one_line_error(capsys)
    assert "not enough disk space" in err and "MB needed" in err, err
    assert not [entry for entry in server.log if entry[0] == "GET"]  # only HEAD requests were made


def test_disk_full_while_writing(tmp_path, server, capsys, monkeypatch):
    class Full(io.BytesIO):
        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dl, "_open_part", lambda path, append: Full())
    assert _run(server, "5b", tmp_path / "m") == 1
    err = _one_line_error(capsys)
    assert "is full" in err and "run the same command again to resume" in err, err


def test_bad_arguments(tmp_path, server, capsys):
    assert _run(server, "5b", tmp_path / "m", "--retries", "-1") == 2
    assert "--retries" in _one_line_error(capsys)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    assert _run(server, "5b", tmp_path / "busy") == 1
    assert "--force" in _one_line_error(capsys)
    assert main(["download-openai", "5b", "-o", str(tmp_path / "m"), "--base-url", "ftp://example/"]) == 2
    assert "http" in _one_line_error(capsys)
    assert server.log == []
    with pytest.raises(SystemExit):
        main(["download-openai", "7b", "-o", str(tmp_path / "m")])


def test_id_tables_are_checked_against_the_originals(tmp_path, server, reference_ids_dir):
    for name, (size, sha) in dl.ID_TABLES.items():
        data = (reference_ids_dir / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, sha), name
    remote = dl.Remote(server.url + "ids/v2_artist_ids.txt", tmp_path / "t.txt", "t.txt", "ids/t.txt",
                       size=len(ARTISTS), sha256="0" * 64)
    with pytest.raises(dl.DownloadError, match="checksum mismatch"):
        dl.download_file(remote, retries=0, progress=False)
    assert not remote.dest.exists() and not (tmp_path / "t.txt.part").exists()


def test_only_this_command_reaches_the_network():
    """Loading and sampling never download: no other module of the package opens network connections."""
    pattern = re.compile(r"\b(urllib\.request|urlopen|http\.client|import requests|httpx)\b")
    allowed = {"checkpoint/download.py"}
    src = REPO / "src" / "jukebox"
    offenders = [p.relative_to(src).as_posix() for p in src.rglob("*.py")
                 if p.relative_to(src).as_posix() not in allowed and pattern.search(p.read_text())]
    assert offenders == []
