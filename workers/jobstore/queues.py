"""Queue names and enqueueing: the only place that decides a job's timeouts, TTLs and retries."""

from __future__ import annotations

from typing import Any

import redis
from rq import Callback, Queue, Retry

from workers.jobstore.records import Keys, create_job
from workers.jobstore.settings import JobSettings

GENERATE = "generate"
TRAIN = "train"
QUEUES = (GENERATE, TRAIN)
# Job functions by name, so enqueueing never imports the ML stack.
JOB_FUNCTIONS = {GENERATE: "workers.jobs.generate", TRAIN: "workers.jobs.train"}
ON_FAILURE = "workers.jobs.on_failure"


def get_queue(name: str, connection: redis.Redis) -> Queue:
    return Queue(name, connection=connection)


def enqueue_job(
    r: redis.Redis,
    settings: JobSettings,
    kind: str,
    job_id: str,
    request: dict[str, Any],
    queue: Queue | None = None,
    owner: str = "",
) -> float:
    """Write the job record and put the job on its queue in one round trip.

    Exceptions a job raises are not retried (they would raise again); only a job abandoned
    by a dead worker is re-run, up to `settings.max_retries` times (see workers.worker).
    `owner` (who created the job, as the API names callers) is kept with the record.
    Returns the creation time.
    """
    keys = Keys(settings.key_prefix)
    queue = queue if queue is not None else get_queue(kind, r)
    timeout = settings.train_timeout if kind == TRAIN else settings.job_timeout
    record_ttl = settings.result_ttl + timeout * (settings.max_retries + 1)
    with r.pipeline() as p:
        queue.enqueue_call(
            JOB_FUNCTIONS[kind],
            args=(job_id,),
            job_id=job_id,
            timeout=timeout,
            result_ttl=settings.result_ttl,
            failure_ttl=settings.failure_ttl,
            ttl=record_ttl,
            retry=Retry(max=settings.max_retries) if settings.max_retries else None,
            on_failure=Callback(ON_FAILURE),
            description=f"{kind} {job_id}",
            pipeline=p,
        )
        # Same MULTI/EXEC as the enqueue: no worker can see the job before its record.
        created = create_job(r, keys, job_id, kind, request, record_ttl, pipeline=p, owner=owner)
        p.execute()
    return created
