"""PUT /v1/internal/jobs/<id>/objects/<name>: a worker without the object directory hands
a result file to the API, which writes it there atomically.

Only for worker keys (or admins), only the files a generation writes (`0.png`,
`codes_0.json`, ..., `result.json`), only while the job runs on the worker that names
itself in `X-Pixelscene-Worker`. Not in /openapi.json: clients never call it.
"""

from __future__ import annotations

import errno
import logging
import re

from flask import Blueprint, request

from pixelscene.model_io import atomic_write_bytes
from service.auth import WORKER, requires
from service.errors import ApiError
from service.state import state
from workers.jobstore.objects import job_dir
from workers.jobstore.records import get_job, valid_job_id

bp = Blueprint("internal", __name__)
log = logging.getLogger("service")

WORKER_HEADER = "X-Pixelscene-Worker"
OBJECT_NAME = re.compile(
    r"(?:(?:0|[1-9][0-9]{0,3})\.png|codes_(?:0|[1-9][0-9]{0,3})\.json|result\.json)"
)
FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


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
        log.error("could not write %s of job %s: %s", name, job_id, e)
        if e.errno in FULL_DISK:
            raise ApiError(
                507, "storage_full", "the object directory is full (no space left for results)"
            ) from None
        raise ApiError(500, "storage_error", "the object directory refused the file") from None
    return "", 204
