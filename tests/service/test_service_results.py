"""Results without a shared disk: the API's upload endpoint for worker keys, and the worker's
uploader (workers.results). Two real workers, one without the directory, are in
test_service_farm.py."""

from __future__ import annotations

import errno
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from workers import results
from workers.jobstore.records import Keys, transition
from workers.redis_server import free_port
from workers.settings import Settings, SettingsError

A = {"Authorization": "Bearer key-a"}
W = {"Authorization": "Bearer key-worker", "X-Pixelscene-Worker": "w-1"}


@pytest.fixture
def client(make_app):
    return make_app(api_keys=["key-a"], worker_keys=["key-worker"]).test_client()


@pytest.fixture
def running(client, fake_redis):
    """A job running on worker w-1."""
    job_id = client.post("/v1/generations", json={"prompt": "a mill"}, headers=A).get_json()["id"]
    assert transition(fake_redis, Keys(), job_id, ("queued",), "running", worker="w-1")
    return job_id


def put(client, job_id, name, data=b"png", headers=W):
    url = f"/v1/internal/jobs/{job_id}/objects/{name}"
    return client.put(
        url, data=data, headers={"Content-Type": "application/octet-stream", **headers}
    )


def test_a_worker_key_stores_a_running_jobs_files(client, running, overrides):
    assert put(client, running, "0.png", b"\x89PNG data").status_code == 204
    assert put(client, running, "result.json", b"{}").status_code == 204
    folder = Path(overrides["objects_dir"]) / "jobs" / running
    assert (folder / "0.png").read_bytes() == b"\x89PNG data"
    assert sorted(p.name for p in folder.iterdir()) == ["0.png", "result.json"]  # no temp files


@pytest.mark.parametrize(
    ("name", "headers", "status", "code"),
    [
        ("run.sh", W, 400, "invalid_object_name"),
        ("00.png", W, 400, "invalid_object_name"),
        (".0.png.tmp", W, 400, "invalid_object_name"),
        ("0.png", {**W, "X-Pixelscene-Worker": "w-2"}, 409, "job_not_running_here"),
        ("0.png", {"Authorization": W["Authorization"]}, 409, "job_not_running_here"),
        ("0.png", A, 403, "forbidden"),
    ],
)
def test_uploads_are_refused(client, running, name, headers, status, code):
    resp = put(client, running, name, headers=headers)
    assert (resp.status_code, resp.get_json()["error"]["code"]) == (status, code)


def test_an_upload_is_size_limited(make_app, fake_redis):
    """By its own limit, above the 64 KiB of request bodies (a PNG at scale 8 is larger)."""
    limit = 100_000
    client = make_app(api_keys=["key-a"], worker_keys=["key-worker"], max_object_bytes=limit)
    client = client.test_client()
    job_id = client.post("/v1/generations", json={"prompt": "a"}, headers=A).get_json()["id"]
    transition(fake_redis, Keys(), job_id, ("queued",), "running", worker="w-1")
    assert put(client, job_id, "0.png", b"x" * limit).status_code == 204
    assert put(client, job_id, "0.png", b"x" * (limit + 1)).status_code == 413


def test_a_full_disk_is_507(client, running, monkeypatch):
    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("service.api.internal.atomic_write_bytes", full)
    resp = put(client, running, "0.png")
    assert (resp.status_code, resp.get_json()["error"]["code"]) == (507, "storage_full")


def test_a_worker_key_may_do_nothing_else(client, running):
    for method, path in [("GET", "/v1/jobs"), ("GET", f"/v1/jobs/{running}"), ("GET", "/metrics")]:
        resp = client.open(path, method=method, headers=W)
        assert resp.status_code == 403, path
    post = client.post("/v1/generations", json={"prompt": "a"}, headers=W)
    assert post.status_code == 403
    assert client.get("/v1/health", headers=W).status_code == 200


class Answer(BaseHTTPRequestHandler):
    statuses: list[int] = []

    def do_PUT(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        status = self.statuses.pop(0)
        body = b'{"error": {"code": "c", "message": "m"}}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def api_stub():
    server = HTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("statuses", "code"),
    [([503, 204], None), ([507], "storage_full"), ([409], "results_refused")],
)
def test_the_uploader_retries_busy_apis_and_reports_refusals(tmp_path, api_stub, statuses, code):
    Answer.statuses = list(statuses)
    s = Settings.load({"objects_dir": str(tmp_path), "results_url": api_stub, "worker_key": "k"})
    folder = tmp_path / "jobs" / ("a" * 32)
    folder.mkdir(parents=True)
    (folder / "0.png").write_bytes(b"png")
    if code is None:
        results.upload(s, "a" * 32, "w-1", ["0.png"])
    else:
        with pytest.raises(results.ResultsError) as e:
            results.upload(s, "a" * 32, "w-1", ["0.png"])
        assert e.value.code == code
    assert not folder.exists() and not Answer.statuses


def test_an_unreachable_api_fails_the_upload_in_time(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    s = Settings.load(
        {"objects_dir": str(tmp_path), "results_url": url, "worker_key": "k"},
        environ={"PIXELSCENE_RESULTS_UPLOAD_SECONDS": "0.6"},
    )
    (tmp_path / "jobs" / ("b" * 32)).mkdir(parents=True)
    (tmp_path / "jobs" / ("b" * 32) / "0.png").write_bytes(b"png")
    with pytest.raises(results.ResultsError) as e:
        results.upload(s, "b" * 32, "w-1", ["0.png"])
    assert e.value.code == "results_upload_failed" and url in str(e.value)


def test_results_settings():
    with pytest.raises(SettingsError, match="WORKER_KEY"):
        Settings.load({"results_url": "http://api:8000"}, environ={})
    with pytest.raises(SettingsError, match="http"):
        Settings.load({"results_url": "api:8000", "worker_key": "k"}, environ={})
    s = Settings.load({"results_url": "http://api:8000", "worker_key": "secret-k"}, environ={})
    assert "secret-k" not in repr(s)
