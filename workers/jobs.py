"""RQ job functions: thin. Get the model from the registry, call pixelscene, write objects.

Each function takes only the job id; the request lives in the job record (jobstore.records),
which is also where status, progress and the result go.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from rq import get_current_job
from rq.exceptions import AbandonedJobError
from rq.timeouts import JobTimeoutException

from pixelscene.errors import ModelLoadError, PixelsceneError
from workers import context, results, training
from workers.jobstore import hooks, models
from workers.jobstore.objects import codes_path, image_path, job_dir, write_json_atomic
from workers.jobstore.records import (
    cancel_requested,
    get_job,
    now,
    record_job_seconds,
    set_progress,
    transition,
)

log = logging.getLogger(__name__)
SAMPLING_KEYS = ("temperature", "top_k", "top_p", "cfg_scale")


class JobRecordMissing(PixelsceneError):
    """The job's record expired or was deleted before a worker reached it."""


def error_doc(
    exc: BaseException, timeout: int | None = None, model: str | None = None
) -> dict[str, str]:
    """What a client sees of a failure: never a traceback, never a server path.

    Model load errors name folders on the server: the client gets the model name only, the
    details stay in the worker log (the caller logs `exc`).
    """
    if isinstance(exc, JobTimeoutException):
        return {"code": "timeout", "message": f"the job ran longer than its limit of {timeout} s"}
    if isinstance(exc, ModelLoadError):
        what = f"model {model!r}" if model else "the model"
        return {
            "code": "model_unavailable",
            "message": f"{what} is unavailable on this worker: see the worker log",
        }
    if isinstance(exc, results.ResultsError):
        return {"code": exc.code, "message": str(exc)}
    if isinstance(exc, PixelsceneError):
        return {"code": "job_error", "message": str(exc)}
    return {
        "code": "internal_error",
        "message": f"the job failed with an internal error ({type(exc).__name__})",
    }


def train_error_doc(exc: BaseException, request: dict[str, Any], timeout: int) -> dict[str, str]:
    """A training failure for clients: trainer messages carry server paths, so name only the
    stage and dataset; the full request and message are in the worker log."""
    if isinstance(exc, training.DatasetMissing):
        return {"code": "dataset_not_found", "message": f"no dataset {request['dataset']!r}"}
    if isinstance(exc, PixelsceneError) and not isinstance(
        exc, ModelLoadError | results.ResultsError
    ):
        return {
            "code": "job_error",
            "message": (
                f"training stage {request['stage']!r} on dataset {request['dataset']!r} "
                "failed: see the worker log"
            ),
        }
    return error_doc(exc, timeout, model=request.get("base_model") or request.get("vqgan"))


def _finish(ctx: context.WorkerContext, job_id: str, status: str, **fields: Any) -> bool:
    s = ctx.settings
    ttl = s.result_ttl if status == "succeeded" else s.failure_ttl
    moved = transition(
        ctx.redis, ctx.keys, job_id, ("queued", "running"), status, ttl=ttl,
        finished_at=now(), **fields,
    )  # fmt: skip
    if moved:
        rec = get_job(ctx.redis, ctx.keys, job_id)
        url = (rec or {}).get("request", {}).get("webhook")
        if url:
            hooks.schedule(ctx.redis, ctx.keys, job_id, url)
    return moved


def _start(ctx: context.WorkerContext, job_id: str) -> dict[str, Any] | None:
    """Mark the job running; None if it was canceled (or already ended) meanwhile."""
    rec = get_job(ctx.redis, ctx.keys, job_id)
    if rec is None:
        raise JobRecordMissing(f"job {job_id} has no record (expired?)")
    if rec.get("cancel") == "1":
        _finish(ctx, job_id, "canceled")
        return None
    started = transition(
        ctx.redis, ctx.keys, job_id, ("queued", "running"), "running",
        started_at=now(), worker=ctx.worker_name, attempts=rec.get("attempts", 0) + 1, progress=0.0,
    )  # fmt: skip
    return rec if started else None


def generate(job_id: str) -> dict[str, Any]:
    """Generate the images of one job into the object directory."""
    ctx = context.current()
    rec = _start(ctx, job_id)
    if rec is None:
        return {"status": "canceled"}
    try:
        return _generate(ctx, job_id, rec["request"])
    except Exception as e:
        log.exception("job %s failed", job_id)
        error = error_doc(e, ctx.settings.job_timeout, model=rec["request"].get("model"))
        _finish(ctx, job_id, "failed", error=error)
        raise


def _generate(ctx: context.WorkerContext, job_id: str, request: dict[str, Any]) -> dict[str, Any]:
    import mlx.core as mx

    r, keys, s = ctx.redis, ctx.keys, ctx.settings
    rq_job = get_current_job()
    t_start = time.perf_counter()
    model = ctx.registry.get(request["model"])
    t_loaded = time.perf_counter()
    mx.reset_peak_memory()

    n = int(request["n"])
    # The settings actually used (model defaults filled in) go into every file's metadata.
    sampling = model.resolve_settings(**{k: request.get(k) for k in SAMPLING_KEYS})
    steps = model.iter_generate(
        [request["prompt"]], n=n, seed=request["seed"], batch_size=min(n, s.batch_size), **sampling
    )
    images = None
    last_report = 0.0
    canceled = False
    try:
        for step in steps:
            if step.images is not None:
                images = step.images
                break
            t = time.monotonic()
            if t - last_report < s.progress_interval:
                continue
            last_report = t
            # The last 5% is writing the files.
            progress = 0.95 * step.done / max(step.total, 1)
            set_progress(r, keys, job_id, progress)
            if rq_job is not None:
                rq_job.meta["progress"] = round(progress, 4)
                rq_job.save_meta()
            if cancel_requested(r, keys, job_id):
                canceled = True
                break
    finally:
        steps.close()
    if canceled:
        log.info("job %s canceled while running", job_id)
        _finish(ctx, job_id, "canceled")
        return {"status": "canceled"}
    if images is None:
        raise RuntimeError("the pipeline ended without images")
    t_generated = time.perf_counter()
    peak = int(mx.get_peak_memory())

    palette = request.get("palette") or "none"
    scale = int(request.get("scale") or 1)
    try:  # a full or failing object directory: say so, not "internal error"
        result = _write_images(ctx, job_id, request, model, sampling, images, palette, scale)
        t_written = time.perf_counter()
        result["timings"] = {
            "load_s": round(t_loaded - t_start, 4),
            "generate_s": round(t_generated - t_loaded, 4),
            "write_s": round(t_written - t_generated, 4),
            "total_s": round(t_written - t_start, 4),
        }
        result["peak_memory_bytes"] = peak
        write_json_atomic(job_dir(s.objects_dir, job_id) / "result.json", {"id": job_id, **result})
    except OSError as e:
        raise results.storage_error(e) from e
    except PixelsceneError as e:  # the PNG writer's OutputError names the server's path
        if isinstance(e.__cause__, OSError):
            raise results.storage_error(e.__cause__) from e
        raise
    if s.results_url:  # no shared object directory: the API stores the files
        names = [f"{k}.png" for k in range(len(images))]
        names += [f"codes_{k}.json" for k in range(len(images))] + ["result.json"]
        results.upload(s, job_id, ctx.worker_name, names)
    _finish(ctx, job_id, "succeeded", output=result, progress=1.0)
    record_job_seconds(r, keys, t_written - t_start)
    return {"images": len(images), "model_version": model.version}


def _write_images(
    ctx: context.WorkerContext,
    job_id: str,
    request: dict[str, Any],
    model: Any,
    sampling: dict[str, Any],
    images: list[Any],
    palette: str,
    scale: int,
) -> dict[str, Any]:
    """Write each image's PNG and code grid; returns the job's result without timings."""
    from pixelscene import output

    s = ctx.settings
    out_images = []
    for k, image in enumerate(images):
        output.save_generated(
            image_path(s.objects_dir, job_id, k),
            image,
            model_name=request["model"],
            model_version=model.version,
            settings=sampling,
            palette=palette,
            # a server palette's file: the code grid leaves it out (the client has no such file)
            palette_spec=s.palettes.get(palette),
            scale=scale,
            codes_path=codes_path(s.objects_dir, job_id, k),
        )
        out_images.append({"index": k, "seed": int(image.seed)})
    return {"images": out_images, "model": request["model"], "model_version": model.version}


def train(job_id: str) -> dict[str, Any]:
    """Run a training job in its folder (resuming what an earlier try checkpointed); with a
    `name`, its model becomes that model's next version."""
    ctx = context.current()
    rec = _start(ctx, job_id)
    if rec is None:
        return {"status": "canceled"}
    request = rec["request"]
    try:
        return _train(ctx, job_id, request, rec.get("training"))
    except WorkerStopping:
        _requeue(ctx, job_id)
        raise
    except Exception as e:
        log.exception("training job %s failed", job_id)
        _finish(
            ctx, job_id, "failed", error=train_error_doc(e, request, ctx.settings.train_timeout)
        )
        raise


class WorkerStopping(PixelsceneError):
    """A signal (the worker is being stopped) interrupted a training at a checkpoint."""


def _train(
    ctx: context.WorkerContext,
    job_id: str,
    request: dict[str, Any],
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the recipe (`previous`: what an earlier try reported); returns the job's result."""
    s = ctx.settings
    run = training.run_dir(s.objects_dir, job_id)
    base = _model_dir(ctx, request.get("base_model") or request.get("vqgan"))
    init = _model_dir(ctx, request.get("init_from"))
    source = training.dataset_folder(ctx, request["dataset"])
    data, held = training.split_dataset(source, run / "data")
    recipe = training.plan(training.resolve_preset(request, s.presets), run, data, held, base, init)
    reporter = training.Reporter(ctx, job_id, [p.name for p in recipe.phases], previous)
    outcome = training.run_recipe(recipe, reporter, run)
    preset = request.get("preset") or request.get("config")
    result: dict[str, Any] = {
        "images": [],
        "stage": request["stage"],
        "dataset": request["dataset"],
        "config": preset or (None if base else training.DEFAULT_PRESET),
    }
    if outcome.stopped_at is not None:
        reporter.doc["stopped_at"] = outcome.stopped_at
        reporter.save()
        if not outcome.canceled:
            raise WorkerStopping(f"stopped by a signal at step {outcome.stopped_at}")
        log.info("training job %s canceled at step %d", job_id, outcome.stopped_at)
        _finish(ctx, job_id, "canceled", output={**result, "stopped_at": outcome.stopped_at})
        return {"status": "canceled", "stopped_at": outcome.stopped_at}
    result["steps"] = {name: summary["step"] for name, summary in outcome.summaries.items()}
    result["metrics"] = {name: summary["eval"] for name, summary in outcome.summaries.items()}
    if request.get("name"):
        record = _register(ctx, job_id, request, recipe, outcome)
        result.update(model=record["ref"], model_version=record["content_version"])
        log.info("training job %s registered %s", job_id, record["ref"])
    # The server's record keeps the paths; clients see only what they asked for.
    server_doc = {
        "id": job_id,
        "model_dir": str(recipe.model_dir),
        "requests": [phase.request.describe() for phase in recipe.phases],
        "result": outcome.summaries,
    }
    write_json_atomic(job_dir(s.objects_dir, job_id) / "result.json", server_doc)
    _finish(ctx, job_id, "succeeded", output=result, progress=1.0)
    return {k: v for k, v in result.items() if k != "images"}


def _model_dir(ctx: context.WorkerContext, ref: str | None) -> Path | None:
    """The folder of a model a training starts from (a configured one or a version)."""
    if not ref:
        return None
    from pixelscene.model_io import resolve_model_dir

    return resolve_model_dir(ctx.registry.model_dir(ref))


def _register(
    ctx: context.WorkerContext,
    job_id: str,
    request: dict[str, Any],
    recipe: training.Recipe,
    outcome: training.Outcome,
) -> dict[str, Any]:
    """The run's model as the next version of the request's `name`: registered here on the
    shared object directory, or by the API for a worker without it."""
    s = ctx.settings
    export = job_dir(s.objects_dir, job_id) / "export"
    doc = training.version_doc(job_id, request, recipe, outcome)
    doc["content_version"] = training.stage_model(recipe, export, request["name"])
    try:
        if s.results_url:
            return results.register_model(s, job_id, ctx.worker_name, export, doc)
        return models.register(s.objects_dir, request["name"], export, doc)
    finally:
        shutil.rmtree(export, ignore_errors=True)


def _requeue(ctx: context.WorkerContext, job_id: str) -> None:
    """A signal stopped the training at a checkpoint: back to queued (RQ re-runs it, and the
    next try resumes), and the worker, whose signal handler the training loop held
    meanwhile, told to stop after this job as it was asked to."""
    rq_job = get_current_job()
    if rq_job is not None and rq_job.retries_left:
        rq_job.meta["requeue"] = True
        transition(ctx.redis, ctx.keys, job_id, ("running",), "queued", progress=0.0)
    else:
        error = {"code": "worker_stopped", "message": "the worker stopped; no retries left"}
        _finish(ctx, job_id, "failed", error=error)
    ctx.stop_requested = True


def on_failure(job: Any, connection: Any, exc_type: Any, exc_value: Any, tb: Any) -> None:
    """RQ failure callback: record a job abandoned by a dead worker (retried or given up).

    Exceptions raised by the job itself were already recorded by the job function.
    """
    if exc_type is None or not issubclass(exc_type, AbandonedJobError):
        return
    ctx = context.current()
    keys, s = ctx.keys, ctx.settings
    rec = get_job(connection, keys, job.id) or {}
    attempts = rec.get("attempts", 0)
    worker = rec.get("worker") or "?"
    if job.retries_left:
        log.warning("job %s: worker %s died; re-queued (attempt %d)", job.id, worker, attempts)
        transition(connection, keys, job.id, ("running", "queued"), "queued", progress=0.0)
        return
    log.error("job %s: worker %s died; no retries left", job.id, worker)
    error = {
        "code": "worker_died",
        "message": (
            f"the worker running this job stopped responding (crashed, was killed or lost "
            f"Redis) on each of {max(attempts, 1)} attempt(s); last worker: {worker}"
        ),
    }
    moved = transition(
        connection, keys, job.id, ("running", "queued"), "failed",
        ttl=s.failure_ttl, finished_at=now(), error=error,
    )  # fmt: skip
    url = rec.get("request", {}).get("webhook")
    if moved and url:
        hooks.schedule(connection, keys, job.id, url)
