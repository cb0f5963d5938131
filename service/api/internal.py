"""What workers without the object directory need from the API, under /v1/internal/.

PUT /v1/internal/jobs/<id>/objects/<name>: a worker hands a result file to the API, which
writes it there atomically: only the files a generation writes (`0.png`, `codes_0.json`,
..., `result.json`), only while the job runs on the worker that names itself in
`X-Pixelscene-Worker`.

PUT /v1/internal/jobs/<id>/model/<file>, then POST /v1/internal/jobs/<id>/model: a
training's model folder, then its registration as the next version of its model
(`workers.jobstore.models.register`; the same job registers once).

GET /v1/internal/datasets/<id>/archive: an uploaded dataset's folder as a tar, which the
worker unpacks into its own object directory (`workers.datasets.fetch_dataset`).

Only for worker keys (or admins); clients never call these.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, jsonify, request

from pixelscene.errors import PixelsceneError
from pixelscene.model_io import atomic_write_bytes
from service.api.common import json_body, storage_error
from service.auth import WORKER, requires
from service.errors import ApiError
from service.state import state
from workers.jobstore import models
from workers.jobstore.archives import tar_chunks
from workers.jobstore.datasets import DatasetNotFoundError, dataset_dir
from workers.jobstore.objects import job_dir
from workers.jobstore.records import get_job, valid_job_id

bp = Blueprint("internal", __name__)

WORKER_HEADER = "X-Pixelscene-Worker"
OBJECT_NAME = re.compile(
    r"(?:(?:0|[1-9][0-9]{0,3})\.png|codes_(?:0|[1-9][0-9]{0,3})\.json|result\.json"
    r"|sample\.png)"
)


@bp.put("/internal/jobs/<job_id>/objects/<name>")
@requires(WORKER)
def put_object(job_id: str, name: str) -> tuple[str, int]:
    """Write one result file of a job running on the calling worker."""
    st = state()
    if not OBJECT_NAME.fullmatch(name):
        raise ApiError(
            400, "invalid_object_name",
            f"{name!r} is not a result file name (N.png, codes_N.json, result.json, sample.png)",
        )  # fmt: skip
    running_here(job_id)
    request.max_content_length = st.settings.max_object_bytes
    data = request.get_data(cache=False)
    try:
        atomic_write_bytes(job_dir(st.settings.objects_dir, job_id) / name, data)
    except OSError as e:
        raise storage_error(e, f"{name} of job {job_id}") from None
    return "", 204


@bp.put("/internal/jobs/<job_id>/model/<name>")
@requires(WORKER)
def put_model_file(job_id: str, name: str) -> tuple[str, int]:
    """Write one file of the model a training running on the calling worker made."""
    st = state()
    if not models.MODEL_FILES.fullmatch(name):
        raise ApiError(
            400, "invalid_object_name",
            f"{name!r} is not a model file name (config.json, tokenizer.json, *.safetensors)",
        )  # fmt: skip
    rec = running_here(job_id)
    if rec.get("kind") != "train":
        raise ApiError(409, "not_a_training", f"job {job_id} is not a training")
    request.max_content_length = st.settings.max_model_bytes
    try:
        atomic_write_bytes(job_dir(st.settings.objects_dir, job_id) / "export" / name,
                           request.get_data(cache=False))  # fmt: skip
    except OSError as e:
        raise storage_error(e, f"{name} of job {job_id}") from None
    return "", 204


@bp.post("/internal/jobs/<job_id>/model")
@requires(WORKER)
def register_model(job_id: str) -> tuple[Response, int]:
    """Make the model files a running training handed over the next version of its model;
    201 with the version's record."""
    st = state()
    rec = running_here(job_id)
    name = (rec.get("request") or {}).get("name")
    if rec.get("kind") != "train" or not name:
        raise ApiError(409, "not_a_training", f"job {job_id} is not a training with a name")
    doc = json_body()
    if not isinstance(doc, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    doc["job_id"] = job_id
    try:
        record = models.register(
            st.settings.objects_dir, name, job_dir(st.settings.objects_dir, job_id) / "export", doc
        )
    except OSError as e:
        raise storage_error(e, f"the model of job {job_id}") from None
    except PixelsceneError as e:
        raise ApiError(409, "no_model", f"job {job_id} handed over no model: {e}") from None
    return jsonify(record), 201


def running_here(job_id: str) -> dict[str, Any]:
    """The record of a job running on the worker that names itself in the header; 404 or
    409 otherwise."""
    st = state()
    rec = get_job(st.redis, st.keys, job_id) if valid_job_id(job_id) else None
    if rec is None:
        raise ApiError(404, "job_not_found", f"no job {job_id!r}")
    worker = request.headers.get(WORKER_HEADER, "")
    if rec["status"] != "running" or rec.get("worker") != worker:
        raise ApiError(
            409, "job_not_running_here",
            f"job {job_id} is {rec['status']} and not running on worker {worker!r}",
        )  # fmt: skip
    return rec


@bp.get("/internal/datasets/<dataset_id>/archive")
@requires(WORKER)
def get_dataset_archive(dataset_id: str) -> Response:
    """An uploaded dataset's folder as an uncompressed tar (its images are compressed)."""
    try:
        folder = dataset_dir(state().settings, dataset_id)
    except DatasetNotFoundError:
        raise ApiError(404, "dataset_not_found", f"no dataset {dataset_id!r}") from None
    return Response(
        tar_chunks(folder),
        mimetype="application/x-tar",
        headers={"Content-Disposition": f"attachment; filename={dataset_id}.tar"},
    )
