"""Jobs: status, listing, cancel, and the files a job wrote to the object directory."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, jsonify, request, send_file
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

from service.api.common import load_job, queue_position
from service.auth import authenticated
from service.errors import ApiError
from service.schemas import ValidationError, check_value
from service.state import state
from workers.jobstore import hooks
from workers.jobstore.objects import codes_path, image_path, sample_path
from workers.jobstore.records import (
    STATUSES,
    TERMINAL,
    decode_record,
    list_job_ids,
    now,
    transition,
    valid_job_id,
)
from workers.jobstore.views import job_view

bp = Blueprint("jobs", __name__)

LIST_PARAMETERS: dict[str, dict[str, Any]] = {
    "status": {"type": "string", "enum": list(STATUSES)},
    "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
    "cursor": {
        "type": "string",
        "pattern": r"^[0-9]{1,20}-[0-9a-f]{32}$",
        "description": "the next_cursor of the previous page",
    },
}
MAX_SCANNED = 5000


@bp.get("/jobs/<job_id>")
def get_job_status(job_id: str) -> Response:
    """A job's status, progress, queue position and output."""
    rec = load_job(job_id)
    position = (
        queue_position(rec.get("kind", "generate"), job_id) if rec["status"] == "queued" else None
    )
    return jsonify(job_view(rec, position=position))


@bp.get("/jobs")
def list_jobs() -> Response:
    """Recent jobs of this key (an admin's: every key's), newest first, optionally by
    status; paged with `cursor`."""
    args = _list_args()
    st = state()
    caller = authenticated()
    index = st.keys.jobs if caller.is_admin else st.keys.owner_jobs(caller.id)
    cursor = None
    if args.get("cursor"):
        score, _, last_id = args["cursor"].partition("-")
        cursor = (int(score), last_id)
    jobs: list[dict[str, Any]] = []
    expired: list[str] = []
    next_cursor = None
    batch: list[tuple[str, int]] = []
    scanned = 0

    def flush() -> bool:
        nonlocal next_cursor
        with st.redis.pipeline(transaction=False) as p:
            for job_id, _ in batch:
                p.hgetall(st.keys.job(job_id))
            raws = p.execute()
        for (job_id, score), raw in zip(batch, raws, strict=True):
            if not raw:
                expired.append(job_id)
                continue
            rec = decode_record(job_id, raw)
            if args.get("status") and rec["status"] != args["status"]:
                continue
            if len(jobs) == args["limit"]:
                return True
            jobs.append(job_view(rec))
            next_cursor = f"{score}-{job_id}"
        batch.clear()
        return False

    more = False
    for item in list_job_ids(st.redis, index, args["limit"], cursor):
        batch.append(item)
        scanned += 1
        if len(batch) >= 100 and flush():
            more = True
            break
        if scanned >= MAX_SCANNED:
            break
    if not more and batch:
        more = flush()
    if expired:
        st.redis.zrem(index, *expired)
    return jsonify({"jobs": jobs, "next_cursor": next_cursor if more else None})


def _list_args() -> dict[str, Any]:
    out: dict[str, Any] = {}
    bad = {name: "is not a known parameter" for name in request.args if name not in LIST_PARAMETERS}
    for name, schema in LIST_PARAMETERS.items():
        raw = request.args.get(name)
        if raw is None:
            if "default" in schema:
                out[name] = schema["default"]
            continue
        value: Any = raw
        if schema["type"] == "integer":
            # Digits only: int() would also take " 5", "1_0" and other scripts' digits.
            if not re.fullmatch(r"-?[0-9]{1,12}", raw):
                bad[name] = "must be an integer"
                continue
            value = int(raw)
        message = check_value(schema, value)
        if message:
            bad[name] = message
        else:
            out[name] = value
    if bad:
        raise ValidationError(bad)
    return out


@bp.delete("/jobs/<job_id>")
def cancel_job(job_id: str) -> tuple[Response, int]:
    """Cancel a job: a queued one at once (200), a running one at its next step (202; a
    training keeps its last checkpoint and says the step it stopped at)."""
    st = state()
    rec = load_job(job_id)
    if rec["status"] == "canceled":
        return jsonify(job_view(rec)), 200
    if rec["status"] in TERMINAL:
        raise ApiError(409, "job_finished", f"job {job_id} already {rec['status']}")
    st.redis.hset(st.keys.job(job_id), "cancel", "1")
    if transition(
        st.redis, st.keys, job_id, ("queued",), "canceled",
        ttl=st.settings.failure_ttl, finished_at=now(),
    ):  # fmt: skip
        try:
            Job.fetch(job_id, connection=st.redis).cancel()
        except (NoSuchJobError, InvalidJobOperation):
            pass  # a worker took it meanwhile: it sees the canceled record and skips it
        if (rec.get("request") or {}).get("webhook"):
            hooks.schedule(st.redis, st.keys, job_id, rec["request"]["webhook"])
        return jsonify(job_view(load_job(job_id))), 200
    return jsonify(job_view(load_job(job_id))), 202


@bp.get("/jobs/<job_id>/images/<int:index>.png")
def get_image(job_id: str, index: int) -> Response:
    """One generated PNG."""
    return _send(job_id, index, "png")


@bp.get("/jobs/<job_id>/codes/<int:index>.json")
def get_codes(job_id: str, index: int) -> Response:
    """One image's code grid as JSON (decode it again with `pixelscene decode`)."""
    return _send(job_id, index, "json")


@bp.get("/jobs/<job_id>/sample.png")
def get_sample(job_id: str) -> Response:
    """A training's latest sample grid (reconstructions, or generated images over their
    captions' originals), written at each evaluation."""
    rec = load_job(job_id)
    path = sample_path(state().settings.objects_dir, job_id)
    if rec.get("kind") != "train" or not path.is_file():
        raise ApiError(404, "sample_not_found", f"job {job_id} has no sample grid (yet)")
    return send_file(path, mimetype="image/png", max_age=0, conditional=True)


def _send(job_id: str, index: int, what: str) -> Response:
    if not valid_job_id(job_id):
        raise ApiError(404, "job_not_found", f"no job {job_id!r}")
    rec = load_job(job_id)
    n = len((rec.get("output") or {}).get("images", []))
    if rec["status"] != "succeeded" or index >= n:
        raise ApiError(
            404, "image_not_found",
            f"job {job_id} has no image {index} (status {rec['status']}, {n} images)",
        )  # fmt: skip
    objects = state().settings.objects_dir
    path = (image_path if what == "png" else codes_path)(objects, job_id, index).resolve()
    if not path.is_file():
        raise ApiError(404, "image_not_found", f"the file of image {index} is gone (retention)")
    mimetype = "image/png" if what == "png" else "application/json"
    return send_file(path, mimetype=mimetype, max_age=86400, conditional=True)
