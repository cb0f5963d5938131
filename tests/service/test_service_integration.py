"""A real redis-server and real `pixelscene worker` processes.

Uses the real pipeline with a random-weight model folder (pixelscene.testing) when it is
available, else the fake pipeline in service_fakes.py.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from PIL import Image
from service_fakes import wait_for

from service import create_app

pytestmark = pytest.mark.integration


@pytest.fixture
def api(real_redis, redis_server, tmp_path):
    def make(**extra):
        app = create_app(
            {
                "redis_url": redis_server.url,
                "objects_dir": str(tmp_path / "objects"),
                "webhook_secret": "test-secret",
                **extra,
            }
        )
        return app.test_client()

    return make


def submit(client, headers=None, **body):
    body = {"prompt": "a castle at night in the rain", **body}
    return client.post("/v1/generations", json=body, headers=headers or {})


def status(client, job_id):
    return client.get(f"/v1/jobs/{job_id}").get_json()


def wait_status(client, job_id, wanted, timeout=120):
    """Poll until the job reaches a status in `wanted`; fail at once on another final one."""

    def check():
        job = status(client, job_id)
        if job["status"] in wanted:
            return job
        assert job["status"] not in ("succeeded", "failed", "canceled"), job
        return None

    return wait_for(check, timeout)


def test_submit_poll_fetch_png(api, farm, real_redis):
    client = api()
    farm.spawn("w-main")
    resp = submit(client, n=2, seed=5)
    assert resp.status_code == 202
    job_id = resp.get_json()["id"]
    job = wait_status(client, job_id, {"succeeded"})
    assert [im["seed"] for im in job["output"]["images"]] == [5, 6]
    with client.get(job["output"]["images"][1]["url"]) as png:
        assert png.status_code == 200
        data = png.get_data()
    from io import BytesIO

    with Image.open(BytesIO(data)) as im:
        assert im.size == (320, 200)
    health = client.get("/v1/health").get_json()
    assert [w["name"] for w in health["workers"]] == ["w-main"]


def test_cancel_running_job(api, farm):
    client = api(progress_interval=0.05)
    farm.spawn("w-cancel")
    job_id = submit(client, n=16).get_json()["id"]
    wait_for(lambda: wait_status(client, job_id, {"running"})["progress"] > 0, 120)
    assert client.delete(f"/v1/jobs/{job_id}").status_code in (200, 202)
    job = wait_status(client, job_id, {"canceled"}, 30)
    assert job["status"] == "canceled" and job["output"] is None


def test_idempotency_bad_input_and_queue_limit(api, real_redis):
    client = api(max_queue=3)
    headers = {"Idempotency-Key": "import-1"}
    replies = [submit(client, headers=headers) for _ in range(3)]
    assert [r.status_code for r in replies] == [202] * 3, replies[0].get_json()
    ids = {r.get_json()["id"] for r in replies}
    assert len(ids) == 1
    assert submit(client, n=2, headers=headers).status_code == 422
    bad = submit(client, n=0, top_p=3)
    assert bad.status_code == 400
    assert set(bad.get_json()["error"]["details"]["fields"]) == {"n", "top_p"}
    assert submit(client).status_code == 202
    assert submit(client).status_code == 202
    full = submit(client)
    assert full.status_code == 429 and "Retry-After" in full.headers
    assert real_redis.llen("rq:queue:generate") == 3


def test_worker_killed_mid_job_is_retried_elsewhere(api, farm, real_redis):
    client = api()
    farm.spawn("w-victim")
    farm.wait_registered(real_redis, 1)
    job_id = submit(client, n=8, seed=1).get_json()["id"]
    job = wait_status(client, job_id, {"running"})
    assert job["attempts"] == 1
    farm.spawn("w-survivor")
    farm.kill("w-victim")
    t_kill = time.monotonic()
    job = wait_for(
        lambda: (j := status(client, job_id))["status"] in ("succeeded", "failed") and j, 180
    )
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    result = json.loads((farm_objects(farm) / "jobs" / job_id / "result.json").read_text())
    assert len(result["images"]) == 8
    print(f"recovered {time.monotonic() - t_kill:.1f}s after kill -9")


def farm_objects(farm):
    from pathlib import Path

    return Path(farm.env["PIXELSCENE_OBJECTS_DIR"])


@pytest.mark.slow
def test_up_starts_and_stops_cleanly(tmp_path):
    import signal
    import subprocess
    import sys

    from workers.redis_server import free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pixelscene",
            "up",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = wait_for(lambda: (out := proc.stdout.readline()) and "is up" in out and out, 90)
        assert f"127.0.0.1:{port}" in line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=5) as r:
            assert json.loads(r.read())["redis"]["reachable"] is True
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
