"""GET /metrics: the farm in Prometheus's text format, for admin keys (or localhost without
keys).

Queue figures are read live from Redis at each scrape; everything else is what the API and
the workers counted into Redis (`workers.jobstore.metrics`), so one scrape of any API
process reports the whole farm.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import redis
from flask import Blueprint, Response, request
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString
from rq.registry import StartedJobRegistry
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

from service.auth import requires
from service.state import state
from workers.jobstore import metrics
from workers.jobstore.queues import QUEUES, get_queue
from workers.jobstore.records import Keys

bp = Blueprint("metrics", __name__)


class FarmCollector(Collector):
    """Reads the farm's metrics from Redis at each `collect()`."""

    def __init__(self, r: redis.Redis, keys: Keys) -> None:
        self.r, self.keys = r, keys

    def describe(self) -> list[Metric]:
        return []  # no Redis round trip at registration

    def collect(self) -> Iterator[Metric]:
        yield from self._queues()
        series = metrics.read(self.r, self.keys.metrics)
        for spec in metrics.METRICS:
            yield _family(spec, series.get(spec.name, {}))

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "pixelscene_queue_depth", "Jobs waiting in each queue", labels=["queue"]
        )
        running = GaugeMetricFamily(
            "pixelscene_queue_running", "Jobs of each queue that a worker is running",
            labels=["queue"],
        )  # fmt: skip
        oldest = GaugeMetricFamily(
            "pixelscene_queue_oldest_seconds",
            "Age of the job at the head of each queue (0 when the queue is empty)",
            labels=["queue"],
        )
        workers = GaugeMetricFamily(
            "pixelscene_queue_workers", "Live workers listening on each queue", labels=["queue"]
        )
        queues = [get_queue(name, self.r) for name in QUEUES]
        with self.r.pipeline(transaction=False) as p:
            for queue in queues:
                p.llen(queue.key)
                p.zcard(StartedJobRegistry(queue=queue).key)
                p.lindex(queue.key, 0)
                p.scard(WORKERS_BY_QUEUE_KEY % queue.name)
            p.scard(REDIS_WORKER_KEYS)
            p.zcard(self.keys.webhooks)
            answers = p.execute()
        now = time.time()
        for i, queue in enumerate(queues):
            n, busy, head, listening = answers[4 * i : 4 * i + 4]
            depth.add_metric([queue.name], n)
            running.add_metric([queue.name], busy)
            workers.add_metric([queue.name], listening)
            created = self.r.hget(self.keys.job(head.decode()), "created_at") if head else None
            oldest.add_metric([queue.name], max(0.0, now - float(created)) if created else 0.0)
        yield from (depth, running, oldest, workers)
        yield GaugeMetricFamily("pixelscene_workers", "Live workers", value=answers[-2])
        yield GaugeMetricFamily(
            "pixelscene_webhooks_pending", "Webhook deliveries waiting to be sent",
            value=answers[-1],
        )  # fmt: skip


def _family(spec: metrics.Metric, series: dict[metrics.Labels, dict[str, float]]) -> Metric:
    labels = list(spec.labels)
    if spec.kind == "histogram":
        family: Metric = HistogramMetricFamily(spec.name, spec.help, labels=labels)
        for key, parts in sorted(series.items()):
            buckets = [(floatToGoString(b), n) for b, n in metrics.cumulative(parts, spec)]
            family.add_metric([v for _, v in key], buckets, parts.get("sum", 0.0))
        return family
    cls = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
    family = cls(spec.name, spec.help, labels=labels)
    for key, parts in sorted(series.items()):
        family.add_metric([v for _, v in key], parts.get("", 0.0))
    return family


@bp.get("/metrics")
@requires("admin")
def prometheus_metrics() -> Response:
    """The farm's queues, jobs, durations, workers, model loads and webhooks for Prometheus."""
    st = state()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FarmCollector(st.redis, st.keys))
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(registry), content_type=content_type)
