"""The worker: an RQ `SimpleWorker` that runs jobs in its own process and keeps models loaded.

RQ's default worker forks per job, which would reload the model every time and is unsafe once
Metal has started on macOS. This one runs jobs in-process and adds:

- a heartbeat thread while a job runs, so a long generation is not mistaken for a dead worker;
  the heartbeat TTL is short (`heartbeat_ttl`), so a worker that dies is noticed quickly;
- a reaper thread that re-queues jobs whose worker went silent (RQ's StartedJobRegistry
  cleanup with the job's `Retry`), and fails them with a reason once retries run out;
- a webhook dispatcher thread;
- after each job: MLX's buffer cache cleared, peak memory logged.

Exceptions raised by a job are never retried (they would raise again); only abandonment is.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.timeouts import TimerDeathPenalty

from workers import context, webhooks
from workers.context import worker_registry
from workers.jobstore import metrics
from workers.jobstore.records import Keys
from workers.registry import ModelRegistry
from workers.settings import Settings

log = logging.getLogger(__name__)


class PixelsceneWorker(SimpleWorker):
    """SimpleWorker with job heartbeats, a reaper for abandoned jobs and webhook delivery."""

    def __init__(
        self,
        queues: list[Queue],
        connection: redis.Redis,
        settings: Settings,
        registry: ModelRegistry | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("worker_ttl", max(settings.heartbeat_ttl, 20))
        kwargs.setdefault("job_monitoring_interval", max(1, settings.heartbeat_ttl // 3))
        super().__init__(queues, connection=connection, **kwargs)
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.registry = registry or worker_registry(settings)
        self.registry.on_load = self._count_model_load
        context.install(
            context.WorkerContext(settings, connection, self.registry, worker_name=self.name)
        )
        self._threads_stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.job_peaks: list[int] = []

    # RQ adds 60 s to its heartbeat TTLs; ours must be short to notice a dead worker quickly.
    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return self.settings.heartbeat_ttl

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        super().bootstrap(*args, **kwargs)
        self._start_threads()

    def teardown(self) -> None:
        self._threads_stop.set()
        for t in self._threads:
            if isinstance(t, webhooks.WebhookDispatcher):
                t.stop()
            t.join(timeout=5)
        super().teardown()

    def unsubscribe(self) -> None:
        # RQ's pubsub thread, once unsubscribed, can sleep up to 60 s in get_message, and
        # redis-py 8's PubSubWorkerThread.stop() waits for it: a warm shutdown (SIGTERM from
        # `up` or systemd) would take up to a minute. The thread is a daemon: give RQ's
        # unsubscribe a moment, then let the process exit without it.
        stopper = threading.Thread(target=super().unsubscribe, name="rq-unsubscribe", daemon=True)
        stopper.start()
        stopper.join(timeout=2)

    def _start_threads(self) -> None:
        if self._threads:
            return
        reaper = threading.Thread(target=self._reap_loop, name="pixelscene-reaper", daemon=True)
        dispatcher = webhooks.WebhookDispatcher(self.connection, self.settings)
        self._threads = [reaper, dispatcher]
        for t in self._threads:
            t.start()

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        done = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat_loop, args=(job, execution, done), daemon=True
        )
        beat.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            done.set()
            beat.join(timeout=5)
            self._after_job(job)
            ctx = context.current()
            if ctx.stop_requested:  # a training held the signal handler when it came
                ctx.stop_requested = False
                self.request_stop(signal.SIGTERM, None)
        from rq.worker import WorkerStatus

        self.set_state(WorkerStatus.IDLE)

    def _heartbeat_loop(self, job: Job, execution: Any, done: threading.Event) -> None:
        interval = max(0.5, self.settings.heartbeat_ttl / 3)
        while not done.wait(interval):
            try:
                self.maintain_heartbeats(job, execution)
            except redis.RedisError as e:
                log.warning("heartbeat for job %s failed: %s", job.id, e)

    def _after_job(self, job: Job) -> None:
        try:
            import mlx.core as mx
        except ImportError:
            return
        peak = int(mx.get_peak_memory())
        mx.clear_cache()
        self.job_peaks.append(peak)
        del self.job_peaks[:-1000]
        log.info(
            "job %s: MLX peak %.1f MB, active %.1f MB after clearing the cache",
            job.id, peak / 2**20, mx.get_active_memory() / 2**20,
        )  # fmt: skip

    def _count_model_load(self, model: str, version: str, seconds: float) -> None:
        try:
            with self.connection.pipeline(transaction=False) as p:
                m = self.keys.metrics
                metrics.count(p, m, metrics.MODEL_LOADS, worker=self.name, model=model)
                metrics.observe(p, m, metrics.MODEL_LOAD_SECONDS, seconds, model=model)
                p.execute()
        except redis.RedisError as e:  # a lost count must not fail the job that loaded
            log.warning("could not count the load of model %s: %s", model, e)

    def handle_job_failure(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> None:
        # A job that raised would raise again: keep retries for abandoned jobs, and for a
        # training a signal stopped at a checkpoint (`jobs.train`), which resumes.
        if not job.meta.pop("requeue", False):
            job.retries_left = 0
        super().handle_job_failure(job, queue, *args, **kwargs)

    def _reap_loop(self) -> None:
        while not self._threads_stop.wait(self.settings.reap_interval):
            try:
                # A worker killed while it holds the lock holds up reaping until it expires:
                # a few intervals are plenty for a cleanup that takes milliseconds.
                lock = max(5, round(4 * self.settings.reap_interval))
                reap_abandoned(self.connection, [q.name for q in self.queues], lock)
            except redis.RedisError as e:
                log.warning("reaper: %s", e)
            except Exception:
                log.exception("reaper error")


def reap_abandoned(connection: redis.Redis, queue_names: list[str], lock_seconds: int = 30) -> None:
    """Re-queue or fail jobs whose worker stopped sending heartbeats.

    Uses RQ's own cleanup (which honours each job's Retry and calls its failure callback)
    under RQ's per-queue maintenance lock, so two workers never reap the same job twice.
    """
    for name in queue_names:
        queue = Queue(name, connection=connection)
        # RQ's own maintenance lock, but short-lived: a worker killed while holding it must
        # not stop reaping for RQ's default 15 minutes.
        if not connection.set(queue.registry_cleaning_key, 1, nx=True, ex=lock_seconds):
            continue
        try:
            registry = StartedJobRegistry(queue=queue, death_penalty_class=TimerDeathPenalty)
            registry.cleanup()
        finally:
            queue.release_maintenance_lock()


def run_worker(
    settings: Settings,
    queue_names: list[str],
    name: str | None = None,
    burst: bool = False,
    max_jobs: int | None = None,
) -> bool:
    """Start a worker on the given queues (in order of priority) until stopped."""
    connection = redis.Redis.from_url(settings.redis_url)
    queues = [Queue(q, connection=connection) for q in queue_names]
    worker = PixelsceneWorker(
        queues, connection=connection, settings=settings, name=name or _default_name()
    )
    return worker.work(burst=burst, max_jobs=max_jobs, logging_level="INFO")


def _default_name() -> str:
    import socket
    import uuid

    return f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
