"""The farm's metrics, kept in Redis: every process adds to them, the API renders them.

Workers run in their own processes, often on other machines, so an in-process registry in
each would need scraping one by one. Instead each process increments fields of Redis
hashes (pipelined with what it writes anyway where it can), and `GET /metrics`
(`service.metrics`) reads them back in Prometheus's text format.

- `MetricKeys.farm`: one hash for the farm-wide series;
- `MetricKeys.worker(name)`: a hash per worker for the series labelled by worker, expiring
  `WORKER_TTL` after the worker last wrote to it, and indexed in the sorted set
  `MetricKeys.workers` (score: when it last wrote), so workers that are gone (their names
  carry a process id) drop out of the report instead of piling up.

A field is the JSON `[metric, {label: value}, part]`: part "" for a counter or a gauge; for
a histogram the `le` bound of the smallest bucket the value fits (counts per bucket, made
cumulative when read), "sum" or "count".
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import redis

WORKER_TTL = 7 * 86400
INF = "+Inf"


@dataclass(frozen=True)
class Metric:
    name: str  # a counter's name without `_total`, which the exposition adds
    kind: str  # counter, gauge or histogram
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()  # histograms: upper bounds, +Inf implied


def _durations(*bounds: float) -> tuple[float, ...]:
    return tuple(float(b) for b in bounds)


JOBS = Metric(
    "pixelscene_jobs", "counter",
    "Jobs that entered each status (a job re-run after its worker died enters queued and "
    "running again)",
    ("kind", "status"),
)  # fmt: skip
JOB_ERRORS = Metric(
    "pixelscene_job_errors", "counter", "Failed jobs by the error code clients see",
    ("kind", "code"),
)  # fmt: skip
JOB_WAIT = Metric(
    "pixelscene_job_wait_seconds", "histogram",
    "Time from a job's submission to a worker starting it",
    ("kind",), _durations(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
)  # fmt: skip
JOB_DURATION = Metric(
    "pixelscene_job_duration_seconds", "histogram",
    "Time from a job's (last) start to its end, by how it ended",
    ("kind", "status"),
    _durations(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 900, 3600, 14400, 86400, 172800),
)  # fmt: skip
STEP_DURATION = Metric(
    "pixelscene_job_step_seconds", "histogram",
    "Time a successful job spent in each step of its output's timings (load, generate, write)",
    ("kind", "step"), _durations(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)  # fmt: skip
IMAGES = Metric(
    "pixelscene_worker_images", "counter", "Images a worker generated", ("worker",)
)  # fmt: skip
GENERATE_SECONDS = Metric(
    "pixelscene_worker_generate_seconds", "counter",
    "Seconds a worker spent generating images: rate(pixelscene_worker_images_total) / "
    "rate(pixelscene_worker_generate_seconds_total) is its images per second",
    ("worker",),
)  # fmt: skip
IMAGES_PER_SECOND = Metric(
    "pixelscene_worker_images_per_second", "gauge",
    "Images per second of the worker's last generation job (its generate step)", ("worker",),
)  # fmt: skip
MODEL_LOADS = Metric(
    "pixelscene_model_loads", "counter",
    "Models a worker loaded (its first job for a model, a new version, or after eviction)",
    ("worker", "model"),
)  # fmt: skip
MODEL_LOAD_SECONDS = Metric(
    "pixelscene_model_load_seconds", "histogram", "Time a worker took to load a model",
    ("model",), _durations(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)  # fmt: skip
WEBHOOKS = Metric(
    "pixelscene_webhook_deliveries", "counter",
    "Webhook delivery attempts by outcome: delivered, retried (failed, to be sent again), "
    "failed (failed for the last time) or refused (an address webhooks may not go to)",
    ("outcome",),
)  # fmt: skip
METRICS = (
    JOBS, JOB_ERRORS, JOB_WAIT, JOB_DURATION, STEP_DURATION, IMAGES, GENERATE_SECONDS,
    IMAGES_PER_SECOND, MODEL_LOADS, MODEL_LOAD_SECONDS, WEBHOOKS,
)  # fmt: skip
BY_NAME = {m.name: m for m in METRICS}

Labels = tuple[tuple[str, str], ...]
# metric name -> labels -> part -> value, as `read` returns them
Series = dict[str, dict[Labels, dict[str, float]]]


class MetricKeys:
    """The Redis keys of the metrics under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.farm = f"{prefix}:metrics"
        self.workers = f"{prefix}:metrics:workers"
        self._worker = f"{prefix}:metrics:worker:"

    def worker(self, name: str) -> str:
        return self._worker + name


def _field(metric: Metric, labels: dict[str, Any], part: str = "") -> str:
    if set(labels) != set(metric.labels):
        raise ValueError(f"{metric.name} takes labels {metric.labels}, got {tuple(labels)}")
    values = {k: str(v) for k, v in labels.items()}
    return json.dumps([metric.name, values, part], sort_keys=True, separators=(",", ":"))


def _hash(keys: MetricKeys, labels: dict[str, Any]) -> str:
    """The hash a series lives in: its worker's, or the farm's."""
    worker = labels.get("worker")
    return keys.worker(str(worker)) if worker else keys.farm


def _touch(p: Any, keys: MetricKeys, labels: dict[str, Any]) -> None:
    """After a write to a worker's hash (EXPIRE needs the key to exist): push back its
    expiry and mark the worker seen."""
    worker = labels.get("worker")
    if worker:
        p.expire(keys.worker(str(worker)), WORKER_TTL)
        p.zadd(keys.workers, {str(worker): time.time()})


def _add(p: Any, key: str, field: str, amount: float) -> None:
    if isinstance(amount, int):
        p.hincrby(key, field, amount)
    else:
        p.hincrbyfloat(key, field, amount)


def count(p: Any, keys: MetricKeys, metric: Metric, amount: float = 1, **labels: Any) -> None:
    """Add to a counter. `p` is a Redis connection or a pipeline (in MULTI or not)."""
    assert metric.kind == "counter", metric.name
    _add(p, _hash(keys, labels), _field(metric, labels), amount)
    _touch(p, keys, labels)


def set_gauge(p: Any, keys: MetricKeys, metric: Metric, value: float, **labels: Any) -> None:
    assert metric.kind == "gauge", metric.name
    p.hset(_hash(keys, labels), _field(metric, labels), float(value))
    _touch(p, keys, labels)


def bucket(metric: Metric, value: float) -> str:
    """The `le` bound of the smallest bucket of `metric` that holds `value`."""
    for bound in metric.buckets:
        if value <= bound:
            return repr(bound)
    return INF


def observe(p: Any, keys: MetricKeys, metric: Metric, value: float, **labels: Any) -> None:
    """Add one observation to a histogram (negative or NaN values are dropped: clock skew
    between machines can make an end precede its start)."""
    assert metric.kind == "histogram", metric.name
    if not value >= 0 or math.isinf(value):
        return
    key = _hash(keys, labels)
    p.hincrby(key, _field(metric, labels, bucket(metric, value)), 1)
    p.hincrbyfloat(key, _field(metric, labels, "sum"), float(value))
    p.hincrby(key, _field(metric, labels, "count"), 1)
    _touch(p, keys, labels)


def read(r: redis.Redis, keys: MetricKeys) -> Series:
    """Every stored series (workers silent for `WORKER_TTL` forgotten first)."""
    r.zremrangebyscore(keys.workers, "-inf", time.time() - WORKER_TTL)
    workers = [w.decode() for w in r.zrange(keys.workers, 0, -1)]
    with r.pipeline(transaction=False) as p:
        p.hgetall(keys.farm)
        for worker in workers:
            p.hgetall(keys.worker(worker))
        hashes = p.execute()
    out: Series = defaultdict(lambda: defaultdict(dict))
    for raw in hashes:
        for field, value in raw.items():
            try:
                name, labels, part = json.loads(field)
                number = float(value)
            except (ValueError, TypeError):
                continue  # not ours: skip rather than fail the scrape
            metric = BY_NAME.get(name)
            if metric is None or set(labels) != set(metric.labels):
                continue  # from another version of the code
            key = tuple((k, labels[k]) for k in metric.labels)
            series = out[name][key]
            series[part] = series.get(part, 0.0) + number
    return out


def cumulative(parts: dict[str, float], metric: Metric) -> list[tuple[float, float]]:
    """A histogram's stored parts as (upper bound, cumulative count), +Inf last; the
    bounds are the metric's plus any stored ones it no longer has."""
    stored = {}
    for part, value in parts.items():
        if part in ("sum", "count"):
            continue
        try:
            stored[float(part)] = value
        except ValueError:
            continue
    bounds = sorted(set(metric.buckets) | set(stored) | {math.inf})
    total, out = 0.0, []
    for bound in bounds:
        total += stored.get(bound, 0.0)
        out.append((bound, total))
    return out
