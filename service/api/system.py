"""GET /v1/health."""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, Response, jsonify
from rq import Worker
from rq.registry import StartedJobRegistry

from service.auth import current_caller
from service.state import state
from workers.jobstore.queues import QUEUES, get_queue

bp = Blueprint("system", __name__)


@bp.get("/health")
def health() -> Response:
    """Always 200: whether Redis answers, queue depths and the live workers.

    Open to load balancers, which see status, Redis, queues and `worker_count`; admin keys
    (and localhost when no keys are set) also see each worker (its name carries the host
    name) and Redis's error text.
    """
    st = state()
    caller = current_caller()
    trusted = caller is not None and caller.is_admin
    doc: dict[str, Any] = {
        "status": "ok",
        "redis": {"reachable": True},
        "queues": {},
        "worker_count": 0,
    }
    workers: list[dict[str, Any]] = []
    try:
        st.redis.ping()
        for name in QUEUES:
            queue = get_queue(name, st.redis)
            running = st.redis.zcard(StartedJobRegistry(queue=queue).key)
            doc["queues"][name] = {"queued": queue.count, "running": running}
        for worker in Worker.all(connection=st.redis):
            job_id = worker.get_current_job_id()
            workers.append(
                {
                    "name": worker.name,
                    "state": getattr(worker.get_state(), "value", worker.get_state()),
                    "queues": worker.queue_names(),
                    "current_job": job_id,
                    "last_heartbeat": worker.last_heartbeat.isoformat()
                    if worker.last_heartbeat
                    else None,
                }
            )
        doc["worker_count"] = len(workers)
        if not workers:
            doc["status"] = "degraded"
    except redis.RedisError as e:
        doc["status"] = "degraded"
        doc["redis"] = {"reachable": False}
        if trusted:
            doc["redis"]["error"] = str(e)
    if trusted:
        doc["workers"] = workers
    return jsonify(doc)
