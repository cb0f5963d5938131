"""GET /metrics: what the API and the workers count into Redis, in Prometheus's format."""

from __future__ import annotations

import http.server
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families
from service_fakes import wait_for

from pixelscene.errors import PixelsceneError
from service import create_app
from workers import webhooks
from workers.jobstore import hooks, metrics
from workers.jobstore.records import Keys
from workers.settings import Settings

ADMIN, GENERATE = "admin-key", "generate-key"


def scrape(client, headers=None):
    """{sample name: {labels as a sorted tuple: value}} of one scrape."""
    resp = client.get("/metrics", headers=headers or {})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.content_type.startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(resp.get_data(as_text=True)):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def submit(client, headers=None, **body):
    resp = client.post("/v1/generations", json={"prompt": "a harbour", **body}, headers=headers)
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()["id"]


def test_jobs_are_counted_by_kind_and_status(client, run_worker, fake_model):
    done = [submit(client, n=2) for _ in range(2)]
    canceled = submit(client)
    assert client.delete(f"/v1/jobs/{canceled}").status_code == 200
    client.post("/v1/trainings", json={"stage": "vqgan", "dataset": "d"})
    before = scrape(client)
    assert value(before, "pixelscene_queue_depth", queue="generate") == 2
    assert value(before, "pixelscene_queue_depth", queue="train") == 1
    assert value(before, "pixelscene_queue_oldest_seconds", queue="generate") > 0
    assert value(before, "pixelscene_jobs_total", kind="generate", status="queued") == 3
    assert value(before, "pixelscene_jobs_total", kind="generate", status="canceled") == 1

    worker = run_worker(queues=("generate",))
    m = scrape(client)
    assert value(m, "pixelscene_queue_depth", queue="generate") == 0
    assert value(m, "pixelscene_jobs_total", kind="generate", status="running") == 2
    assert value(m, "pixelscene_jobs_total", kind="generate", status="succeeded") == 2
    duration = dict(kind="generate", status="succeeded")
    assert value(m, "pixelscene_job_duration_seconds_count", **duration) == 2
    assert value(m, "pixelscene_job_duration_seconds_bucket", le="+Inf", **duration) == 2
    assert value(m, "pixelscene_job_wait_seconds_count", kind="generate") == 2
    for step in ("load", "generate", "write"):
        assert value(m, "pixelscene_job_step_seconds_count", kind="generate", step=step) == 2
    assert value(m, "pixelscene_worker_images_total", worker=worker.name) == 4
    assert value(m, "pixelscene_worker_images_per_second", worker=worker.name) > 0
    assert value(m, "pixelscene_model_loads_total", worker=worker.name, model="tiny") == 1
    assert value(m, "pixelscene_model_load_seconds_count", model="tiny") == 1
    assert all(client.get(f"/v1/jobs/{j}").get_json()["status"] == "succeeded" for j in done)

    def broken(*a, **k):
        raise PixelsceneError("no colours")
        yield

    fake_model.iter_generate = broken
    submit(client)
    run_worker(queues=("generate",))
    m = scrape(client)
    assert value(m, "pixelscene_job_errors_total", kind="generate", code="job_error") == 1
    assert value(m, "pixelscene_job_duration_seconds_count", kind="generate", status="failed") == 1


def test_histogram_buckets_are_cumulative_and_keep_retired_bounds(fake_redis):
    keys = Keys().metrics
    for seconds in (0.2, 0.3, 7.0, 1e6):
        metrics.observe(fake_redis, keys, metrics.JOB_WAIT, seconds, kind="generate")
    metrics.observe(fake_redis, keys, metrics.JOB_WAIT, -1.0, kind="generate")  # clock skew
    # A bound a later version no longer has still counts where it belongs.
    field = metrics._field(metrics.JOB_WAIT, {"kind": "generate"}, "0.3")
    fake_redis.hincrby(keys.farm, field, 1)
    parts = metrics.read(fake_redis, keys)["pixelscene_job_wait_seconds"][(("kind", "generate"),)]
    assert parts["count"] == 4 and parts["sum"] == pytest.approx(1e6 + 7.5)
    buckets = dict(metrics.cumulative(parts, metrics.JOB_WAIT))
    assert buckets[0.1] == 0 and buckets[0.3] == 1 and buckets[0.5] == 3
    assert buckets[10.0] == 4 and buckets[float("inf")] == 5


def test_silent_workers_drop_out(fake_redis, monkeypatch):
    keys = Keys().metrics
    metrics.count(fake_redis, keys, metrics.IMAGES, 3, worker="old")
    monkeypatch.setattr(metrics.time, "time", lambda: 1e12)  # long after
    metrics.count(fake_redis, keys, metrics.IMAGES, 2, worker="new")
    series = metrics.read(fake_redis, keys)["pixelscene_worker_images"]
    assert series == {(("worker", "new"),): {"": 2.0}}
    assert fake_redis.ttl(keys.worker("new")) > 0


def test_webhook_outcomes_are_counted(make_app, fake_redis, overrides, monkeypatch):
    settings = Settings.load({**overrides, "webhook_max_attempts": 2}, environ={})
    client = make_app().test_client()
    answers = iter([(True, "HTTP 204"), (False, "HTTP 500"), (False, "HTTP 500")])
    monkeypatch.setattr(webhooks, "deliver", lambda *a, **k: next(answers))
    monkeypatch.setattr(
        webhooks, "check_address", lambda url, allowed: hooks.Target("192.0.2.1", None)
    )
    ok, bad = submit(client), submit(client)
    hooks.schedule(fake_redis, Keys(), ok, "https://hooks.example.com/a")
    webhooks.process_due(fake_redis, settings)
    hooks.schedule(fake_redis, Keys(), bad, "https://hooks.example.com/b")
    wait_for(lambda: webhooks.process_due(fake_redis, settings) == 0 and not fake_redis.zcard(
        Keys().webhooks
    ), timeout=10)  # fmt: skip
    monkeypatch.setattr(
        webhooks, "check_address", lambda url, allowed: hooks.Target(None, "a private address")
    )
    hooks.schedule(fake_redis, Keys(), ok, "https://internal.example.com/c")
    webhooks.process_due(fake_redis, settings)
    m = scrape(client)
    for outcome in ("delivered", "retried", "failed", "refused"):
        assert value(m, "pixelscene_webhook_deliveries_total", outcome=outcome) == 1, outcome


def test_metrics_need_an_admin_key(make_app):
    client = make_app(api_keys=[GENERATE], admin_keys=[ADMIN]).test_client()
    assert client.get("/metrics").status_code == 401
    resp = client.get("/metrics", headers={"Authorization": f"Bearer {GENERATE}"})
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden"
    scrape(client, {"Authorization": f"Bearer {ADMIN}"})
    openmetrics = client.get(
        "/metrics",
        headers={"Authorization": f"Bearer {ADMIN}", "Accept": "application/openmetrics-text"},
    )
    assert openmetrics.content_type.startswith("application/openmetrics-text")
    assert openmetrics.get_data(as_text=True).endswith("# EOF\n")


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.integration
def test_metrics_of_a_real_worker(fake_farm, real_redis, redis_server, tmp_path):
    """Jobs through a `pixelscene worker` process: what it counts reaches the API via Redis."""
    client = create_app(
        {
            "redis_url": redis_server.url,
            "objects_dir": str(tmp_path / "objects"),
            "webhook_secret": "test-secret",
            "webhook_private_networks": "127.0.0.0/8",
            "api_keys": [GENERATE],
            "admin_keys": [ADMIN],
        }
    ).test_client()
    user, admin = ({"Authorization": f"Bearer {k}"} for k in (GENERATE, ADMIN))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        ids = [submit(client, user, n=2) for _ in range(3)]
        ids.append(submit(client, user, webhook=hook))
        queued = scrape(client, admin)
        assert value(queued, "pixelscene_queue_depth", queue="generate") == 4
        assert value(queued, "pixelscene_workers") == 0

        fake_farm.spawn("w-metrics", queues="generate")
        fake_farm.wait_registered(real_redis, 1)

        def finished():
            jobs = [client.get(f"/v1/jobs/{j}", headers=user).get_json() for j in ids]
            assert not [j for j in jobs if j["status"] in ("failed", "canceled")], jobs
            return (
                all(j["status"] == "succeeded" for j in jobs)
                and jobs[-1]["webhook"]["status"] == "delivered"
            )

        wait_for(finished, timeout=60)
        m = scrape(client, admin)
    finally:
        server.shutdown()
        server.server_close()
    assert client.get("/metrics", headers=user).status_code == 403
    assert value(m, "pixelscene_queue_depth", queue="generate") == 0
    assert value(m, "pixelscene_queue_workers", queue="generate") == 1
    assert value(m, "pixelscene_jobs_total", kind="generate", status="queued") == 4
    assert value(m, "pixelscene_jobs_total", kind="generate", status="succeeded") == 4
    duration = dict(kind="generate", status="succeeded")
    assert value(m, "pixelscene_job_duration_seconds_count", **duration) == 4
    assert value(m, "pixelscene_job_duration_seconds_sum", **duration) > 0
    assert value(m, "pixelscene_job_step_seconds_count", kind="generate", step="generate") == 4
    assert value(m, "pixelscene_worker_images_total", worker="w-metrics") == 7
    assert value(m, "pixelscene_worker_generate_seconds_total", worker="w-metrics") > 0
    assert value(m, "pixelscene_worker_images_per_second", worker="w-metrics") > 0
    assert value(m, "pixelscene_model_loads_total", worker="w-metrics", model="tiny") == 1
    assert value(m, "pixelscene_webhook_deliveries_total", outcome="delivered") == 1
