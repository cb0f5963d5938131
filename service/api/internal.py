"""What workers without the object directory need from the API, under /v1/internal/.

PUT /v1/internal/jobs/<id>/objects/<name>: a worker hands a result file to the API, which
writes it there atomically: only the files a generation writes (`0.png`, `codes_0.json`,
..., `result.json`), only while the job runs on the worker that names itself in
`X-Pixelscene-Worker`.

GET /v1/internal/datasets/<id>/archive: an uploaded dataset's folder as a tar, which the
worker unpacks into its own object directory (`workers.datasets.fetch_dataset`).

Only for worker keys (or admins); clients never call these.
"""

from __future__ import annotations

import re

from flask import Blueprint, Response, request

from pixelscene.model_io import atomic_write_bytes
from service.api.common import storage_error
from service.auth import WORKER, requires
from service.errors import ApiError
from service.state import state
from workers.jobstore.archives import tar_chunks
from workers.jobstore.datasets import DatasetNotFoundError, dataset_dir
from workers.jobstore.objects import job_dir
from workers.jobstore.records import get_job, valid_job_id

bp = Blueprint("internal", __name__)

WORKER_HEADER = "X-Pixelscene-Worker"
OBJECT_NAME = re.compile(
    r"(?:(?:0|[1-9][0-9]{0,3})\.png|codes_(?:0|[1-9][0-9]{0,3})\.json|result\.json)"
)


@bp.put("/internal/jobs/<job_id>/objects/<name>")
@requires(WORKER)
def put_object(job_id: str, name: str) -> tuple[str, int]:
    """Write one result file of a job running on the calling worker."""
    st = state()
    if not OBJECT_NAME.fullmatch(name):
        raise ApiError(
            400, "invalid_object_name",
            f"{name!r} is not a result file name (N.png, codes_N.json, result.json)",
        )  # fmt: skip
    rec = get_job(st.redis, st.keys, job_id) if valid_job_id(job_id) else None
    if rec is None:
        raise ApiError(404, "job_not_found", f"no job {job_id!r}")
    worker = request.headers.get(WORKER_HEADER, "")
    if rec["status"] != "running" or rec.get("worker") != worker:
        raise ApiError(
            409, "job_not_running_here",
            f"job {job_id} is {rec['status']} and not running on worker {worker!r}",
        )  # fmt: skip
    request.max_content_length = st.settings.max_object_bytes
    data = request.get_data(cache=False)
    try:
        atomic_write_bytes(job_dir(st.settings.objects_dir, job_id) / name, data)
    except OSError as e:
        raise storage_error(e, f"{name} of job {job_id}") from None
    return "", 204


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
