"""Helpers shared by the views: JSON bodies, job lookups, queue figures."""

from __future__ import annotations

import errno
import logging
import math
from typing import Any

from flask import request
from rq import Worker

from service.auth import can_see
from service.errors import ApiError
from service.state import state
from workers.jobstore.records import get_job, valid_job_id

DEFAULT_JOB_SECONDS = 10.0
FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
log = logging.getLogger("service")


def json_body() -> Any:
    """The request's JSON; 415 unless the body is declared JSON, 400 unless it parses."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # json's decoder recurses once per nested array or object
        raise ApiError(400, "invalid_json", "the body's JSON is nested too deeply") from None
    if body is None:
        raise ApiError(400, "invalid_json", "the body is not valid JSON")
    return body


def load_job(job_id: str) -> dict[str, Any]:
    """The job record, or 404: also for ids that are not job ids at all, and for another
    key's job (a 403 would tell the caller that the job exists)."""
    rec = get_job(state().redis, state().keys, job_id) if valid_job_id(job_id) else None
    if rec is None or not can_see(rec):
        raise ApiError(404, "job_not_found", f"no job {job_id!r}")
    return rec


def live_workers() -> int:
    return Worker.count(connection=state().redis)


def queue_position(kind: str, job_id: str) -> int | None:
    """How many jobs are ahead of this one in its queue (0 = next)."""
    return state().queue(kind).get_job_position(job_id)


def queue_figures(kind: str) -> tuple[int, int, float]:
    """(queued jobs, registered workers, mean job seconds) in one round trip."""
    st = state()
    with st.redis.pipeline(transaction=False) as p:
        p.llen(st.queue(kind).key)
        p.scard(Worker.redis_workers_keys)
        p.hget(st.keys.stats, "job_seconds")
        depth, workers, mean = p.execute()
    return int(depth), int(workers), float(mean) if mean is not None else DEFAULT_JOB_SECONDS


def eta_seconds(position: int, workers: int, mean: float) -> float:
    """Rough wait until a job at `position` is done, from the average job time."""
    return round((position + 1) * mean / max(workers, 1), 1)


def retry_after(depth: int, limit: int, workers: int, mean: float) -> str:
    seconds = (depth - limit + 1) * mean / max(workers, 1)
    return str(min(300, max(1, math.ceil(seconds))))


def storage_error(e: OSError, what: str) -> ApiError:
    """The answer when the object directory refuses to store `what`: 507 when it is full."""
    log.error("could not store %s: %s", what, e)
    if e.errno in FULL_DISK:
        return ApiError(
            507, "storage_full", f"the object directory is full (no space left for {what})"
        )
    return ApiError(500, "storage_error", f"the object directory refused {what}")
