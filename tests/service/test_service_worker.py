"""Workers against fakeredis with a fake pipeline: jobs, objects, cancel, retries, webhooks."""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rq import Queue, Retry
from rq.registry import StartedJobRegistry
from service_fakes import FakePixelScene, wait_for

from pixelscene.data.synth import write_dataset
from pixelscene.errors import ModelLoadError, PixelsceneError
from pixelscene.train.loop import TrainResult
from pixelscene.train.stages import VqganRequest
from workers import training, webhooks
from workers.jobstore import hooks
from workers.jobstore.objects import ObjectPathError, collect_garbage, job_dir
from workers.jobstore.records import Keys, get_job
from workers.registry import ModelRegistry
from workers.settings import Settings
from workers.worker import PixelsceneWorker, reap_abandoned

# The receivers below listen on this machine: these tests opt in to loopback webhooks.
LOOPBACK = {"webhook_private_networks": "127.0.0.0/8"}


def submit(client, **body):
    resp = client.post("/v1/generations", json={"prompt": "a castle at dusk", **body})
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()["id"]


def test_job_runs_and_objects_are_served(client, run_worker, fake_model, overrides):
    job_id = submit(client, n=3, seed=11, scale=2, palette="auto:8", temperature=0.7)
    run_worker()
    job = client.get(f"/v1/jobs/{job_id}").get_json()
    assert job["status"] == "succeeded", job
    assert job["progress"] == 1.0 and job["attempts"] == 1
    out = job["output"]
    assert [im["seed"] for im in out["images"]] == [11, 12, 13]
    assert out["model_version"] == "fake-000000000001"
    assert out["timings"]["generate_s"] >= 0 and out["peak_memory_bytes"] >= 0
    assert fake_model.calls[0]["temperature"] == 0.7 and fake_model.closed == 1

    png = client.get(out["images"][2]["url"])
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert png.get_data()[:8] == b"\x89PNG\r\n\x1a\n"
    png.close()
    path = Path(overrides["objects_dir"]) / "jobs" / job_id
    with Image.open(path / "2.png") as im:
        assert im.size == (640, 400) and im.mode == "P" and len(im.getpalette()) <= 8 * 3
        assert im.text["seed"] == "13" and im.text["prompt"] == "a castle at dusk"
        # settings the client left out are recorded as the values actually used
        assert im.text["temperature"] == "0.7" and im.text["cfg_scale"] == "3.0"
    with client.get(out["images"][0]["codes_url"]) as resp:
        codes = resp.get_json()
    assert codes["rows"] == 13 and codes["cols"] == 20 and codes["seed"] == 11
    assert codes["palette"] == "auto:8" and codes["scale"] == 2  # `pixelscene decode` repeats them
    result = json.loads((path / "result.json").read_text())
    assert result["id"] == job_id and len(result["images"]) == 3
    assert not [p for p in path.iterdir() if p.name.startswith(".")]  # no temp files left
    assert client.get(f"/v1/jobs/{job_id}/images/3.png").status_code == 404


def test_models_are_loaded_once_per_worker(client, run_worker):
    submit(client)
    submit(client)
    worker = run_worker()
    assert worker.registry.loads == 1


def test_canceled_queued_job_never_runs(client, run_worker, fake_model):
    job_id = submit(client)
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 200
    run_worker()
    assert fake_model.calls == []
    assert client.get(f"/v1/jobs/{job_id}").get_json()["status"] == "canceled"


def test_running_job_stops_at_next_step(client, run_worker, fake_model, overrides, fake_redis):
    fake_model.step_seconds = 0.02
    job_id = submit(client, n=16)
    keys = Keys()
    # Cancel as soon as the worker reports progress.
    threading.Thread(
        target=lambda: (
            wait_for(lambda: (get_job(fake_redis, keys, job_id) or {}).get("progress", 0) > 0),
            client.delete(f"/v1/jobs/{job_id}"),
        ),
        daemon=True,
    ).start()
    t0 = time.monotonic()
    run_worker()
    job = client.get(f"/v1/jobs/{job_id}").get_json()
    assert job["status"] == "canceled" and job["cancel_requested"]
    assert fake_model.closed == 1
    assert time.monotonic() - t0 < 0.02 * 64  # stopped well before the 64 steps
    assert not (Path(overrides["objects_dir"]) / "jobs" / job_id / "result.json").exists()


def test_progress_goes_to_job_meta(client, run_worker, fake_redis):
    from rq.job import Job

    job_id = submit(client, n=2)
    run_worker()
    assert Job.fetch(job_id, connection=fake_redis).meta["progress"] > 0


def test_job_error_fails_without_retry_and_says_why(client, run_worker, fake_model):
    def broken(*a, **k):
        raise PixelsceneError("palette file has no colors")
        yield

    fake_model.iter_generate = broken
    job_id = submit(client)
    run_worker()
    job = client.get(f"/v1/jobs/{job_id}").get_json()
    assert job["status"] == "failed" and job["attempts"] == 1
    assert job["error"] == {"code": "job_error", "message": "palette file has no colors"}


def test_model_load_error_names_the_model_not_its_folder(client, run_worker, fake_model, caplog):
    def broken(*a, **k):
        raise ModelLoadError("/srv/models/tiny/vqgan.safetensors is corrupt")
        yield

    fake_model.iter_generate = broken
    job_id = submit(client, model="tiny")
    run_worker()
    job = client.get(f"/v1/jobs/{job_id}").get_json()
    assert job["status"] == "failed"
    assert job["error"] == {
        "code": "model_unavailable",
        "message": "model 'tiny' is unavailable on this worker: see the worker log",
    }
    assert "/srv/models" in caplog.text  # the details stay in the server log


def _fake_trainer(monkeypatch, interrupted=False):
    """Replace `run_stage` by one that records its request and ends (or is interrupted)."""
    ran = []

    def run_stage(request, progress=None):
        ran.append((request, progress))
        return TrainResult(3, interrupted, 0.5, {"psnr": 20.0}, last_train={"loss": 0.1})

    monkeypatch.setattr(training, "run_stage", run_stage)
    return ran


def _train(client, run_worker, datasets):
    """A vqgan training (the older stage name) on a 3-image folder of `datasets_dir`."""
    write_dataset(datasets / "synth-1k", 3, seed=1, captions=1)
    job_id = client.post(
        "/v1/trainings", json={"stage": "vqgan", "dataset": "synth-1k", "steps": 3}
    ).get_json()["id"]
    run_worker(datasets_dir=str(datasets))
    job = client.get(f"/v1/jobs/{job_id}").get_json()
    return job, json.dumps(job)


@pytest.mark.parametrize("interrupted", [False, True])
def test_training_job_view_has_no_server_paths(
    client, run_worker, overrides, monkeypatch, tmp_path, interrupted
):
    ran = _fake_trainer(monkeypatch, interrupted)
    job, text = _train(client, run_worker, tmp_path / "srv-datasets")
    out_dir = Path(overrides["objects_dir"]) / "jobs" / job["id"] / "run" / "tokenizer"
    data_dir = tmp_path / "srv-datasets" / "synth-1k"  # too few images to hold some out
    expected_request = VqganRequest(data_dir=data_dir, out_dir=out_dir, config="tiny", steps=3)
    assert ran[0] == (expected_request, False)  # typed, and no progress bar in a worker
    assert overrides["objects_dir"] not in text and str(tmp_path) not in text
    if not interrupted:
        assert job["status"] == "succeeded"
        assert job["output"] == {
            "images": [], "stage": "vqgan", "dataset": "synth-1k", "config": "tiny",
            "steps": {"tokenizer": 3}, "metrics": {"tokenizer": {"psnr": 20.0}},
        }  # fmt: skip
        # the server's own record keeps the paths
        result = json.loads((out_dir.parent.parent / "result.json").read_text())
        assert result["requests"] == [expected_request.describe()]
        assert result["requests"][0]["data_dir"] == str(data_dir)
        assert result["result"]["tokenizer"]["step"] == 3
    else:  # a signal (the worker is stopping): back to the queue to resume, not failed
        assert job["status"] == "queued" and job["error"] is None
        assert job["training"]["stopped_at"] == 3 and job["attempts"] == 1
        assert len(ran) == 1  # the worker stopped after it, as the signal asked


def test_a_cancel_between_two_phases_stops_before_the_second(
    client, run_worker, fake_redis, monkeypatch, tmp_path
):
    """Stage all: the cancel comes as the tokenizer ends; the transformer never starts."""
    ran = []

    def run_stage(request, progress=None):
        ran.append(request.stage)
        fake_redis.hset(f"pixelscene:job:{job_id}", "cancel", "1")
        return TrainResult(3, False, 0.5, {"psnr": 20.0}, last_train={"loss": 0.1})

    monkeypatch.setattr(training, "run_stage", run_stage)
    write_dataset(tmp_path / "sets" / "d", 3, seed=1, captions=1)
    body = {"stage": "all", "dataset": "d", "name": "m", "steps": 3}
    job_id = client.post("/v1/trainings", json=body).get_json()["id"]
    run_worker(datasets_dir=str(tmp_path / "sets"))
    job = client.get(f"/v1/jobs/{job_id}").get_json()
    assert ran == ["vqgan"] and job["status"] == "canceled"
    assert job["output"]["stopped_at"] == 3 and job["training"]["stopped_at"] == 3


def test_training_vqgan_load_error_names_the_model(client, run_worker, overrides, monkeypatch):
    _fake_trainer(monkeypatch)

    def missing(folder):
        raise ModelLoadError(f"no model folder at {folder}")

    monkeypatch.setattr("pixelscene.model_io.resolve_model_dir", missing)
    job_id = client.post(
        "/v1/trainings", json={"stage": "transformer", "dataset": "d", "vqgan": "tiny"}
    ).get_json()["id"]
    run_worker()
    job = client.get(f"/v1/jobs/{job_id}").get_json()
    assert job["status"] == "failed", job  # not left "running"
    assert job["error"] == {
        "code": "model_unavailable",
        "message": "model 'tiny' is unavailable on this worker: see the worker log",
    }


def test_a_training_on_a_missing_dataset_says_so(client, run_worker):
    job_id = client.post(
        "/v1/trainings", json={"stage": "tokenizer", "dataset": "nowhere", "name": "m"}
    ).get_json()["id"]
    run_worker()
    job = client.get(f"/v1/jobs/{job_id}").get_json()
    assert job["status"] == "failed"
    assert job["error"] == {"code": "dataset_not_found", "message": "no dataset 'nowhere'"}


def test_objects_use_the_shared_atomic_writer(tmp_path, monkeypatch):
    from workers.jobstore import objects

    written = []
    monkeypatch.setattr(objects, "atomic_write_bytes", lambda p, d: written.append((p, d)))
    objects.write_json_atomic(tmp_path / "x.json", {"a": 1})
    assert written == [(tmp_path / "x.json", b'{\n  "a": 1\n}\n')]
    assert not hasattr(objects, "write_bytes_atomic")


def test_internal_error_message_hides_details(client, run_worker, fake_model):
    def broken(*a, **k):
        raise ZeroDivisionError("secret")
        yield

    fake_model.iter_generate = broken
    job_id = submit(client)
    run_worker()
    error = client.get(f"/v1/jobs/{job_id}").get_json()["error"]
    assert error["code"] == "internal_error" and "secret" not in error["message"]


def _abandon(fake_redis, settings, job_id):
    """Start the job's execution as a worker that then dies (no heartbeats)."""
    queue = Queue("generate", connection=fake_redis)
    worker = PixelsceneWorker([queue], connection=fake_redis, settings=settings)
    job, _ = queue.dequeue_any([queue], None, connection=fake_redis)
    assert job.id == job_id
    worker.prepare_execution(job)
    worker.prepare_job_execution(job)
    from workers.jobs import _start

    assert _start(worker_context(fake_redis, settings), job_id) is not None


def worker_context(fake_redis, settings):
    from workers import context

    return context.WorkerContext(settings, fake_redis, ModelRegistry(settings.models), "dead-1")


def test_abandoned_job_is_retried_then_fails_with_reason(client, fake_redis, overrides):
    settings = Settings.load({**overrides, "max_retries": 1}, environ={})
    job_id = submit(client)
    from rq.job import Job

    job = Job.fetch(job_id, connection=fake_redis)
    job.retries_left, job.retry_intervals = 1, [0]
    job.save()
    _abandon(fake_redis, settings, job_id)
    assert client.get(f"/v1/jobs/{job_id}").get_json()["status"] == "running"

    registry = StartedJobRegistry("generate", connection=fake_redis)
    future = time.time() + settings.heartbeat_ttl + 1
    registry.cleanup(timestamp=future)  # what reap_abandoned does once the TTL has passed
    job_doc = client.get(f"/v1/jobs/{job_id}").get_json()
    assert job_doc["status"] == "queued" and job_doc["attempts"] == 1
    assert fake_redis.llen("rq:queue:generate") == 1

    _abandon(fake_redis, settings, job_id)
    registry.cleanup(timestamp=time.time() + settings.heartbeat_ttl + 1)
    job_doc = client.get(f"/v1/jobs/{job_id}").get_json()
    assert job_doc["status"] == "failed" and job_doc["attempts"] == 2
    assert job_doc["error"]["code"] == "worker_died"
    assert "2 attempt" in job_doc["error"]["message"]


def test_reaper_leaves_live_jobs_alone(client, fake_redis, overrides):
    settings = Settings.load(overrides, environ={})
    job_id = submit(client)
    _abandon(fake_redis, settings, job_id)
    reap_abandoned(fake_redis, ["generate"])  # heartbeat TTL not yet passed
    assert client.get(f"/v1/jobs/{job_id}").get_json()["status"] == "running"


def test_enqueue_sets_explicit_timeouts_and_retry(client, fake_redis):
    from rq.job import Job

    job = Job.fetch(submit(client), connection=fake_redis)
    s = Settings.load(environ={})
    assert job.timeout == s.job_timeout
    assert job.result_ttl == s.result_ttl and job.failure_ttl == s.failure_ttl
    assert job.retries_left == s.max_retries
    assert isinstance(Retry(max=1), Retry)


class Hook(http.server.BaseHTTPRequestHandler):
    received: list = []
    deliveries: list = []
    hosts: list = []
    fail_first = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Hook.fail_first > 0:
            Hook.fail_first -= 1
            self.send_response(500)
            self.end_headers()
            return
        Hook.received.append((body, self.headers[webhooks.SIGNATURE_HEADER]))
        Hook.deliveries.append(self.headers[webhooks.DELIVERY_HEADER])
        Hook.hosts.append(self.headers["Host"])
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hook_server():
    Hook.received, Hook.deliveries, Hook.hosts, Hook.fail_first = [], [], [], 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_webhook_is_signed_and_retried(make_app, run_worker, fake_redis, overrides, hook_server):
    Hook.fail_first = 2
    client = make_app(**LOOPBACK).test_client()
    job_id = submit(client, webhook=hook_server)
    assert client.get(f"/v1/jobs/{job_id}").get_json()["webhook"] == {
        "status": "pending",
        "detail": None,
    }
    run_worker()  # the job only schedules the delivery
    settings = Settings.load({**overrides, **LOOPBACK}, environ={})

    def delivered():
        webhooks.process_due(fake_redis, settings)
        return Hook.received

    wait_for(delivered, timeout=10)
    body, signature = Hook.received[0]
    assert webhooks.verify_signature("test-secret", body, signature)
    assert not webhooks.verify_signature("other-secret", body, signature)
    assert not webhooks.verify_signature("test-secret", body + b" ", signature)
    doc = json.loads(body)
    assert doc["id"] == job_id and doc["status"] == "succeeded"
    record = get_job(fake_redis, Keys(), job_id)
    assert record["webhook"].startswith("delivered") and "attempt 3" in record["webhook"]
    webhook = client.get(f"/v1/jobs/{job_id}").get_json()["webhook"]
    assert webhook["status"] == "delivered" and "attempt 3" in webhook["detail"]


def test_webhook_claimed_by_a_dead_worker_is_sent_after_its_lease(
    client, fake_redis, overrides, hook_server
):
    settings = Settings.load({**overrides, **LOOPBACK}, environ={})
    keys = Keys()
    job_id = submit(client)
    hooks.schedule(fake_redis, keys, job_id, hook_server)
    (raw,) = fake_redis.zrange(keys.webhooks, 0, -1)
    delivery_id = json.loads(raw)["id"]
    # a dispatcher claimed it and died before sending: the delivery stays queued
    fake_redis.set(keys.webhook_claim(delivery_id), "1", ex=webhooks.claim_lease(settings))
    assert webhooks.process_due(fake_redis, settings) == 0
    assert fake_redis.zcard(keys.webhooks) == 1 and Hook.received == []
    fake_redis.delete(keys.webhook_claim(delivery_id))  # the lease runs out
    assert webhooks.process_due(fake_redis, settings) == 1
    assert len(Hook.received) == 1 and Hook.deliveries == [delivery_id]
    assert fake_redis.zcard(keys.webhooks) == 0
    # claimed while being sent: a second dispatcher that saw it due does not send it again
    assert webhooks.process_due(fake_redis, settings) == 0 and len(Hook.received) == 1


@pytest.mark.parametrize(
    "url, allowed, refused",
    [
        ("http://169.254.169.254/latest/meta-data/", ["private"], "link-local"),
        ("http://[::ffff:169.254.169.254]/x", ["private"], "link-local"),
        ("http://2852039166/x", ["private"], "link-local"),  # 169.254.169.254 as a number
        ("http://0.0.0.0:8080/x", ["private"], "unspecified"),
        ("http://[fe80::1]/x", ["fe80::/10"], "link-local"),
        # private and loopback: refused unless their network is listed
        ("http://127.0.0.1:9/x", [], "private"),
        ("http://10.1.2.3/x", [], "private"),
        ("http://[::1]/x", [], "private"),
        ("http://[::ffff:10.1.2.3]/x", [], "private"),
        ("http://100.64.1.2/x", ["private"], "private"),
        ("http://192.168.1.5/x", ["10.0.0.0/8"], "private"),
        ("http://127.0.0.1:9/x", ["127.0.0.0/8"], None),
        ("http://10.1.2.3/x", ["private"], None),
        ("http://10.1.2.3/x", ["10.1.0.0/16"], None),
        ("http://100.64.1.2/x", ["100.64.0.0/10"], None),
        ("http://8.8.8.8/x", [], None),
        # metadata services that are not link-local: refused even inside listed networks
        ("http://[fd00:ec2::254]/latest/meta-data/", ["private", "fd00::/8"], "metadata"),
        ("http://100.100.100.200/latest/meta-data/", ["100.64.0.0/10"], "metadata"),
        ("http://[::ffff:100.100.100.200]/x", ["100.64.0.0/10"], "metadata"),
        # IPv6 forms that carry IPv4: refused unless listed, then judged by the IPv4 inside
        ("http://[64:ff9b::a9fe:a9fe]/x", [], "NAT64"),
        ("http://[64:ff9b::a9fe:a9fe]/x", ["64:ff9b::/96"], "link-local"),
        ("http://[64:ff9b::808:808]/x", [], "NAT64"),
        ("http://[64:ff9b::808:808]/x", ["64:ff9b::/96"], None),
        ("http://[64:ff9b::a00:1]/x", ["64:ff9b::/96"], "private"),
        ("http://[64:ff9b::6464:64c8]/x", ["64:ff9b::/96", "100.64.0.0/10"], "metadata"),
        ("http://[::169.254.169.254]/x", [], "IPv4-compatible"),
        ("http://[::127.0.0.1]/x", ["private"], "IPv4-compatible"),
        ("http://[::ffff:0:a9fe:a9fe]/x", [], "IPv4-translated"),
        ("http://[2002:a9fe:a9fe::1]/x", [], "6to4 address for 169.254.169.254"),
        ("http://[2002:a9fe:a9fe::1]/x", ["2002::/16"], "link-local"),
        ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x", [], "Teredo"),
    ],
)
def test_webhook_addresses(url, allowed, refused):
    why = hooks.refused_address(url, allowed)
    assert (why is None) if refused is None else (refused in (why or "")), why


def test_webhook_refusal_in_the_job_json_hides_the_address(
    client, fake_redis, overrides, monkeypatch
):
    import socket

    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):
        if host == "hooks.internal":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.20.30.40", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    settings = Settings.load(overrides, environ={})  # no private networks: the default
    job_id = submit(client, webhook="http://hooks.internal/hook")
    hooks.schedule(fake_redis, Keys(), job_id, "http://hooks.internal/hook")
    assert webhooks.process_due(fake_redis, settings) == 1
    record = get_job(fake_redis, Keys(), job_id)
    assert record["webhook"].startswith("refused (") and "10.20.30.40" in record["webhook"]
    webhook = client.get(f"/v1/jobs/{job_id}").get_json()["webhook"]
    assert webhook["status"] == "refused" and "10.20.30.40" not in webhook["detail"]
    assert client.get(f"/v1/jobs/{submit(client)}").get_json()["webhook"] is None


def test_refused_webhook_is_not_sent_or_retried(client, fake_redis, overrides):
    settings = Settings.load(overrides, environ={})
    job_id = submit(client)
    hooks.schedule(fake_redis, Keys(), job_id, "http://169.254.169.254/latest/meta-data/")
    assert webhooks.process_due(fake_redis, settings) == 1
    assert get_job(fake_redis, Keys(), job_id)["webhook"].startswith("refused (")
    assert fake_redis.zcard(Keys().webhooks) == 0


def test_webhook_goes_to_the_address_that_was_checked(
    client, fake_redis, overrides, hook_server, monkeypatch
):
    # the name resolves to this machine when checked, then to the metadata address: the send
    # must use the checked address (no second lookup a DNS answer could change)
    import socket

    real = socket.getaddrinfo
    answers = iter(["127.0.0.1"])

    def fake(host, port, *args, **kwargs):
        if host == "hooks.test":
            ip = next(answers, "169.254.169.254")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    port = hook_server.rsplit(":", 1)[1].split("/")[0]
    settings = Settings.load({**overrides, **LOOPBACK}, environ={})
    job_id = submit(client)
    hooks.schedule(fake_redis, Keys(), job_id, f"http://hooks.test:{port}/hook?x=1")
    assert webhooks.process_due(fake_redis, settings) == 1
    assert len(Hook.received) == 1 and Hook.hosts == [f"hooks.test:{port}"]
    assert get_job(fake_redis, Keys(), job_id)["webhook"].startswith("delivered")


def test_webhook_gives_up_after_max_attempts(make_app, fake_redis, overrides):
    settings = Settings.load({**overrides, **LOOPBACK, "webhook_max_attempts": 2}, environ={})
    client = make_app(**LOOPBACK).test_client()
    job_id = submit(client, webhook="http://127.0.0.1:9/unreachable")
    hooks.schedule(fake_redis, Keys(), job_id, "http://127.0.0.1:9/unreachable")

    def given_up():
        webhooks.process_due(fake_redis, settings)
        return (get_job(fake_redis, Keys(), job_id).get("webhook") or "").startswith("failed")

    wait_for(given_up, timeout=10)
    assert fake_redis.zcard(Keys().webhooks) == 0
    webhook = client.get(f"/v1/jobs/{job_id}").get_json()["webhook"]
    assert webhook["status"] == "failed" and "2 attempts" in webhook["detail"]


def test_registry_lru_evicts_by_version():
    versions = {"a": "a-1", "b": "b-1", "c": "c-1"}
    loaded = []
    registry = ModelRegistry(
        {"a": "/m/a", "b": "/m/b", "c": "/m/c"},
        capacity=2,
        loader=lambda d: loaded.append(str(d)) or FakePixelScene(d),
        versioner=lambda d: versions[Path(d).name],
    )
    first = registry.get("a")
    registry.get("b")
    assert registry.get("a") is first  # cached
    registry.get("c")  # evicts b (least recently used)
    assert registry.loaded_versions() == ["a-1", "c-1"]
    registry.get("b")
    assert loaded == ["/m/a", "/m/b", "/m/c", "/m/b"]
    with pytest.raises(ModelLoadError):
        registry.get("zzz")


def test_the_engine_setting_reaches_the_models_a_worker_loads(tmp_path, monkeypatch):
    import argparse

    from pixelscene.testing import make_random_model_dir
    from workers.commands import worker as worker_command
    from workers.registry import import_loader
    from workers.settings import SettingsError

    settings = Settings.load(environ={"PIXELSCENE_ENGINE": "mlx"})
    assert settings.engine == "mlx" and Settings.load(environ={}).engine == "auto"
    registry = ModelRegistry(
        {"m": str(make_random_model_dir(tmp_path / "m"))},
        loader=import_loader(settings.pipeline_loader, settings.engine),
    )
    assert registry.get("m").engine == "mlx"

    monkeypatch.setenv("PIXELSCENE_ENGINE", "gpu")  # stops the worker before it starts
    args = argparse.Namespace(
        redis=None, objects_dir=None, queues="generate", name=None, burst=True, max_jobs=1
    )
    with pytest.raises(SettingsError, match="PIXELSCENE_ENGINE: engine must be one of"):
        worker_command.run(args)


def test_object_paths_reject_bad_ids(tmp_path):
    for bad in ("../x", "a" * 31, "A" * 32, "a" * 32 + "/..", ""):
        with pytest.raises(ObjectPathError):
            job_dir(tmp_path, bad)
    assert job_dir(tmp_path, "a" * 32) == tmp_path / "jobs" / ("a" * 32)


def test_gc_deletes_only_old_job_folders(tmp_path):
    old, new = tmp_path / "jobs" / ("a" * 32), tmp_path / "jobs" / ("b" * 32)
    for folder in (old, new):
        folder.mkdir(parents=True)
        (folder / "0.png").write_bytes(b"x")
    stranger = tmp_path / "jobs" / "keep-me"
    stranger.mkdir()
    ten_days_ago = time.time() - 10 * 86400
    for path in (old / "0.png", old):
        os.utime(path, (ten_days_ago, ten_days_ago))
    assert collect_garbage(tmp_path, 7, dry_run=True) == [old] and old.exists()
    assert collect_garbage(tmp_path, 7) == [old]
    assert not old.exists() and new.exists() and stranger.exists()


def test_gc_command(tmp_path, capsys, monkeypatch):
    from pixelscene.cli import main

    monkeypatch.setenv("PIXELSCENE_NO_OPENBLAS", "1")  # no re-exec of the test process

    folder = tmp_path / "jobs" / ("c" * 32)
    folder.mkdir(parents=True)
    os.utime(folder, (0, 0))
    assert main(["gc", "--older-than", "1", "--objects-dir", str(tmp_path)]) == 0
    assert not folder.exists() and "deleted 1" in capsys.readouterr().out


def test_settings_from_environment():
    env = {
        "PIXELSCENE_MODELS": "tiny=,base=/srv/base",
        "PIXELSCENE_API_KEYS": "a, b",
        "PIXELSCENE_MAX_QUEUE": "7",
    }
    from service.settings import ServiceSettings, key_hash
    from workers.settings import SettingsError

    s = ServiceSettings.load({"max_queue": 9}, environ=env)
    assert s.models == {"tiny": "", "base": "/srv/base"}
    assert s.api_keys == [key_hash("a"), key_hash("b")]  # held as hashes only
    assert s.max_queue == 9  # overrides beat the environment
    assert ServiceSettings.load(environ=env).max_queue == 7
    assert Settings.load(environ=env).models == s.models  # one environment configures both
    with pytest.raises(SettingsError, match="PIXELSCENE_MAX_QUEUE"):
        ServiceSettings.load(environ={"PIXELSCENE_MAX_QUEUE": "many"})
    assert Settings.load(environ={}).webhook_private_networks == []  # opt-in only

    def networks(value):
        env = {"PIXELSCENE_WEBHOOK_PRIVATE_NETWORKS": value}
        return Settings.load(environ=env).webhook_private_networks

    assert networks("No") == [] and networks("1") == ["private"]  # the old boolean
    assert networks("10.1.2.3/8, FD12::/48,private") == ["10.0.0.0/8", "fd12::/48", "private"]
    assert Settings.load({"webhook_private_networks": True}, environ={}).webhook_private_networks
    for bad in ("maybe", "10.0.0.0/33"):
        with pytest.raises(SettingsError, match="PIXELSCENE_WEBHOOK_PRIVATE_NETWORKS"):
            networks(bad)


def test_pixels_are_uint8_from_fake():
    image = next(s for s in FakePixelScene().iter_generate(["a"]) if s.images).images[0]
    assert image.pixels.dtype == np.uint8


@pytest.fixture
def tls_hook(tmp_path):
    """An HTTPS receiver for hooks.test with a self-signed certificate (also its CA file)."""
    import shutil
    import ssl
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=hooks.test",
         "-addext", "subjectAltName=DNS:hooks.test"],
        check=True, capture_output=True,
    )  # fmt: skip
    Hook.received, Hook.deliveries, Hook.hosts, Hook.fail_first = [], [], [], 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], str(cert)
    server.shutdown()
    server.server_close()


def test_https_webhook_to_a_pinned_address_checks_the_certificate(tls_hook, overrides, monkeypatch):
    port, ca_file = tls_hook
    trusting = Settings.load({**overrides, "webhook_ca_file": ca_file}, environ={})
    url = f"https://hooks.test:{port}/hook"
    # pinned to 127.0.0.1, yet SNI and the certificate are checked against hooks.test
    ok, what = webhooks.deliver(trusting, url, {"id": "x"}, "d1", address="127.0.0.1")
    assert ok and what == "HTTP 204", what
    assert Hook.hosts == [f"hooks.test:{port}"] and Hook.deliveries == ["d1"]
    # the system's CAs alone do not know the receiver's certificate
    plain = Settings.load(overrides, environ={})
    ok, what = webhooks.deliver(plain, url, {"id": "x"}, "d2", address="127.0.0.1")
    assert not ok and "certificate" in what.lower()
    # a name the certificate does not carry, at the same address
    ok, what = webhooks.deliver(
        trusting, f"https://other.test:{port}/hook", {"id": "x"}, "d3", address="127.0.0.1"
    )
    assert not ok and "other.test" in what
    assert len(Hook.received) == 1


def test_unreadable_webhook_ca_file_stops_a_worker_not_a_delivery(tmp_path, overrides):
    from workers.settings import SettingsError

    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    for path in (bad, tmp_path / "missing.pem"):
        settings = Settings.load({**overrides, "webhook_ca_file": str(path)}, environ={})
        with pytest.raises(SettingsError, match="WEBHOOK_CA_FILE"):
            webhooks.check_tls(settings)  # at the worker's start
        ok, what = webhooks.deliver(settings, "https://hooks.test/hook", {}, address="127.0.0.1")
        assert not ok and what  # a failed attempt, not an exception out of the dispatcher


def test_warm_shutdown_does_not_wait_for_the_pubsub_threads_sleep(fake_redis, overrides):
    """Once unsubscribed, RQ's pubsub thread sleeps up to 60 s, and redis-py's stop() waits for
    it: a worker stopping with `up` (or systemd) would take a minute."""
    settings = Settings.load(overrides, environ={})
    worker = PixelsceneWorker(
        [Queue("generate", connection=fake_redis)], connection=fake_redis, settings=settings
    )
    worker.subscribe()
    assert worker.pubsub is not None
    wait_for(lambda: worker.pubsub.subscribed, 5)
    worker.pubsub.unsubscribe()
    wait_for(lambda: not worker.pubsub.subscribed, 5)  # the thread read the reply: now it sleeps
    started = time.monotonic()
    worker.unsubscribe()
    assert time.monotonic() - started < 10
