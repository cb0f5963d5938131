"""Job records in Redis: the one source of truth for a job's status, shared by API and workers.

RQ carries jobs between processes; the record here says what the client sees. A record is a
hash `<prefix>:job:<id>` with fields

    kind, status, progress, created_at, started_at, finished_at, attempts, worker, owner,
    request (JSON), output (JSON), error (JSON), cancel ("1" once requested), webhook,
    training (JSON: a training's step, losses, rate, ETA, metrics; `views.training_view`)

and every job id is also in the sorted set `<prefix>:jobs` (score: creation time in
microseconds) for listing, and in `<prefix>:jobs:<owner>` for listing one owner's jobs. The
owner is who created the job as the API names callers (a hash of the API key, never the
key; see `service.auth`). Status only moves along

    queued -> running -> succeeded | failed | canceled     (running -> queued on a retry)
    queued -> canceled

and `transition()` makes each move atomic (WATCH/MULTI), so a cancel and a worker starting
the job cannot both win.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import redis

from workers.jobstore import metrics

STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
TERMINAL = ("succeeded", "failed", "canceled")
JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_JSON_FIELDS = ("request", "output", "error", "training")


class Keys:
    """Redis key names under one prefix."""

    def __init__(self, prefix: str = "pixelscene") -> None:
        self.prefix = prefix
        self.jobs = f"{prefix}:jobs"
        self.stats = f"{prefix}:stats"
        self.webhooks = f"{prefix}:webhooks"
        self.reaper_lock = f"{prefix}:reaper"
        self.metrics = metrics.MetricKeys(prefix)

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def webhook_claim(self, delivery_id: str) -> str:
        return f"{self.prefix}:webhook-claim:{delivery_id}"

    def owner_jobs(self, owner: str) -> str:
        return f"{self.prefix}:jobs:{owner}"

    def idempotency(self, scope: str, key: str) -> str:
        return f"{self.prefix}:idem:{scope}:{key}"

    def rate(self, scope: str) -> str:
        return f"{self.prefix}:rate:{scope}"


def valid_job_id(job_id: str) -> bool:
    """Job ids are uuid4 hex: 32 lowercase hex digits, nothing that can name a path."""
    return bool(JOB_ID_RE.fullmatch(job_id))


def now() -> float:
    return time.time()


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def create_job(
    r: redis.Redis,
    keys: Keys,
    job_id: str,
    kind: str,
    request: dict[str, Any],
    ttl: int,
    pipeline: redis.client.Pipeline | None = None,
    owner: str = "",
) -> float:
    """Write a queued record and index it (also under its owner, if any); returns its
    creation time."""
    created = now()
    p = pipeline if pipeline is not None else r.pipeline()
    fields: dict[str, Any] = {
        "kind": kind,
        "status": "queued",
        "progress": 0.0,
        "created_at": created,
        "attempts": 0,
        "request": json.dumps(request),
    }
    if owner:
        fields["owner"] = owner
    p.hset(keys.job(job_id), mapping=fields)
    p.expire(keys.job(job_id), ttl)
    p.zadd(keys.jobs, {job_id: int(created * 1e6)})
    if owner:
        p.zadd(keys.owner_jobs(owner), {job_id: int(created * 1e6)})
    metrics.count(p, keys.metrics, metrics.JOBS, kind=kind, status="queued")
    if pipeline is None:
        p.execute()
    return created


def get_job(r: redis.Redis, keys: Keys, job_id: str) -> dict[str, Any] | None:
    """The record as a dict (JSON fields decoded, numbers as numbers), or None if unknown."""
    raw = r.hgetall(keys.job(job_id))
    if not raw:
        return None
    return decode_record(job_id, raw)


def decode_record(job_id: str, raw: dict[bytes, bytes]) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": job_id}
    for k, v in raw.items():
        key, value = k.decode(), v.decode()
        if key in _JSON_FIELDS:
            rec[key] = json.loads(value) if value else None
        elif key in ("progress", "created_at", "started_at", "finished_at"):
            rec[key] = float(value)
        elif key == "attempts":
            rec[key] = int(value)
        else:
            rec[key] = value
    if "status" not in rec:  # only stray progress writes survived an expired record
        rec["status"] = "failed"
    return rec


def encode_fields(fields: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in fields.items():
        if key in _JSON_FIELDS:
            out[key] = json.dumps(value)
        elif value is None:
            out[key] = ""
        else:
            out[key] = value
    return out


def transition(
    r: redis.Redis,
    keys: Keys,
    job_id: str,
    allowed_from: Iterable[str],
    to: str,
    ttl: int | None = None,
    **fields: Any,
) -> bool:
    """Move a job to `to` if its status is in `allowed_from`; atomic. Returns whether it moved.

    The move's metrics (`_count_transition`) go in the same MULTI: counted once, by the
    process whose move won.
    """
    key = keys.job(job_id)
    allowed = set(allowed_from)
    with r.pipeline() as p:
        while True:
            try:
                p.watch(key)
                before = dict(zip(_BEFORE, p.hmget(key, *_BEFORE), strict=True))
                current = before["status"]
                if current is None or current.decode() not in allowed:
                    p.unwatch()
                    return False
                p.multi()
                p.hset(key, mapping=encode_fields({"status": to, **fields}))
                if ttl is not None:
                    p.expire(key, ttl)
                _count_transition(p, keys, before, to, fields)
                p.execute()
                return True
            except redis.WatchError:
                continue


_BEFORE = ("status", "kind", "created_at", "started_at", "worker")


def _seconds(raw: bytes | None) -> float | None:
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def _count_transition(
    p: Any, keys: Keys, before: dict[str, bytes | None], to: str, fields: dict[str, Any]
) -> None:
    """The metrics of one move: the status count, the wait for a start, the duration and
    error of an end, and a success's step timings and images (`workers.jobstore.metrics`)."""
    m = keys.metrics
    kind = (before["kind"] or b"generate").decode()
    metrics.count(p, m, metrics.JOBS, kind=kind, status=to)
    created, started = _seconds(before["created_at"]), _seconds(before["started_at"])
    if to == "running" and created is not None and fields.get("started_at") is not None:
        metrics.observe(p, m, metrics.JOB_WAIT, fields["started_at"] - created, kind=kind)
    if to not in TERMINAL:
        return
    finished = fields.get("finished_at")
    if started is not None and finished is not None:
        metrics.observe(p, m, metrics.JOB_DURATION, finished - started, kind=kind, status=to)
    error = fields.get("error")
    if to == "failed" and isinstance(error, dict):
        code = str(error.get("code") or "unknown")
        metrics.count(p, m, metrics.JOB_ERRORS, kind=kind, code=code)
    output = fields.get("output")
    if to != "succeeded" or not isinstance(output, dict):
        return
    timings = output.get("timings") or {}
    for name, seconds in timings.items():
        if name.endswith("_s") and name != "total_s" and isinstance(seconds, int | float):
            step = name.removesuffix("_s")
            metrics.observe(p, m, metrics.STEP_DURATION, seconds, kind=kind, step=step)
    n, generating = len(output.get("images") or []), timings.get("generate_s")
    worker = (before["worker"] or b"").decode()
    if worker and n and isinstance(generating, int | float) and generating > 0:
        metrics.count(p, m, metrics.IMAGES, n, worker=worker)
        metrics.count(p, m, metrics.GENERATE_SECONDS, float(generating), worker=worker)
        metrics.set_gauge(p, m, metrics.IMAGES_PER_SECOND, n / generating, worker=worker)


def set_progress(
    r: redis.Redis, keys: Keys, job_id: str, progress: float, pipeline: Any = None
) -> None:
    """Record progress in 0..1 (only the progress field; never creates a status)."""
    (pipeline if pipeline is not None else r).hset(keys.job(job_id), "progress", round(progress, 4))


def cancel_requested(r: redis.Redis, keys: Keys, job_id: str) -> bool:
    return r.hget(keys.job(job_id), "cancel") == b"1"


def list_job_ids(
    r: redis.Redis, index: str, limit: int, cursor: tuple[int, str] | None
) -> Iterable[tuple[str, int]]:
    """Job ids of the sorted set `index` (`Keys.jobs`, `Keys.owner_jobs(owner)`) newest
    first, strictly after `cursor` (score, id); yields (id, score)."""
    top: int | str = "+inf" if cursor is None else cursor[0]
    page = max(limit, 50)
    offset = 0
    while True:
        rows = r.zrevrangebyscore(index, top, "-inf", start=offset, num=page, withscores=True)
        if not rows:
            return
        for member, score in rows:
            job_id, score = member.decode(), int(score)
            # Equal scores come in reverse member order: skip those at or before the cursor.
            if cursor is not None and score == cursor[0] and job_id >= cursor[1]:
                continue
            yield job_id, score
        offset += len(rows)


def record_job_seconds(r: redis.Redis, keys: Keys, seconds: float, alpha: float = 0.2) -> None:
    """Keep an exponential moving average of job run time, for queue ETAs."""
    previous = r.hget(keys.stats, "job_seconds")
    value = seconds if previous is None else (1 - alpha) * float(previous) + alpha * seconds
    r.hset(keys.stats, "job_seconds", round(value, 4))


def mean_job_seconds(r: redis.Redis, keys: Keys, default: float = 10.0) -> float:
    value = r.hget(keys.stats, "job_seconds")
    return default if value is None else float(value)
