"""Result files to the API, for a worker that cannot see the object directory.

With `PIXELSCENE_RESULTS_URL` (and `PIXELSCENE_WORKER_KEY`) a worker writes a job's files
under its own `objects_dir` as usual, then PUTs each to the API
(`service.api.internal`), which writes it atomically into the farm's object directory;
`result.json` goes last, as it marks a complete folder. The local copy is then removed. A
finished training's model goes the same way (`register_model`), then becomes a version.
An unreachable API (restarting, say) is retried for `results_upload_seconds`; a refusal
fails the job with the API's reason.
"""

from __future__ import annotations

import errno
import http.client
import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pixelscene.errors import PixelsceneError
from workers.jobstore.objects import job_dir
from workers.settings import Settings

WORKER_HEADER = "X-Pixelscene-Worker"
FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class ResultsError(PixelsceneError):
    """The results could not be stored; `code` is what the job's error says."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status  # the API's HTTP status, where it refused


def storage_error(exc: OSError) -> ResultsError:
    """What a client reads when the object directory refuses a write."""
    if exc.errno in FULL_DISK:
        return ResultsError(
            "storage_full", "the object directory is full: no space left to write the results"
        )
    return ResultsError(
        "storage_error",
        f"could not write the results ({errno.errorcode.get(exc.errno, 'OSError')})",
    )


def upload(
    settings: Settings, job_id: str, worker: str, names: Iterable[str], keep: bool = False
) -> None:
    """PUT each named file of the job's local folder to the API, in order; then remove the
    folder (also when an upload fails: the job then fails and nothing stays behind), unless
    `keep` (a running training's sample grid: its folder holds the run)."""
    folder = job_dir(settings.objects_dir, job_id)
    try:
        for name in names:
            _put(settings, job_id, worker, name, (folder / name).read_bytes())
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def register_model(
    settings: Settings, job_id: str, worker: str, export: Path, doc: dict[str, Any]
) -> dict[str, Any]:
    """Hand a finished training's model folder to the API, which makes it the next version
    of the job's model (`workers.jobstore.models.register`); returns the version's record."""
    headers = {"Content-Type": "application/octet-stream", WORKER_HEADER: worker}
    for path in sorted(export.iterdir()):
        route = f"/v1/internal/jobs/{job_id}/model/{path.name}"
        data = path.read_bytes()
        with call_api(settings, "PUT", route, path.name, f"hand {path.name} to", data, headers):
            pass
    body = json.dumps(doc).encode()
    headers = {"Content-Type": "application/json", WORKER_HEADER: worker}
    route = f"/v1/internal/jobs/{job_id}/model"
    with call_api(settings, "POST", route, "the model", "register the model with", body,
                  headers) as resp:  # fmt: skip
        return json.loads(resp.read())


def _put(settings: Settings, job_id: str, worker: str, name: str, data: bytes) -> None:
    headers = {"Content-Type": "application/octet-stream", WORKER_HEADER: worker}
    path = f"/v1/internal/jobs/{job_id}/objects/{name}"
    with call_api(settings, "PUT", path, name, f"hand {name} to", data=data, headers=headers):
        return


def call_api(
    settings: Settings,
    method: str,
    path: str,
    what: str,
    action: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> http.client.HTTPResponse:
    """One request to the API at `results_url` with the worker key; an unreachable or busy
    API (no answer, 5xx, 429) is retried for `results_upload_seconds`.

    Args:
        what: what the request is about, for errors ("0.png", "dataset <id>").
        action: what the request does, for errors: "could not {action} the API at ...".

    Returns:
        The open 2xx response (a context manager).

    Raises:
        ResultsError: `storage_full` (507), `results_refused` (another 4xx; `status` says
            which) or `results_upload_failed` (no answer in time).
    """
    base = settings.results_url.rstrip("/")
    headers = {"Authorization": f"Bearer {settings.worker_key}", **(headers or {})}
    deadline = time.monotonic() + settings.results_upload_seconds
    delay = 0.25
    while True:
        request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=30)
        except urllib.error.HTTPError as e:
            code, message = _api_error(e)
            if e.code == 507:
                raise ResultsError(
                    "storage_full", f"the API could not store {what}: {message}"
                ) from None
            if e.code < 500 and e.code != 429:
                raise ResultsError(
                    "results_refused",
                    f"the API refused {what} ({e.code} {code}: {message})",
                    status=e.code,
                ) from None
            reason = f"{e.code} {code}"
        except OSError as e:  # URLError, refused or reset connections, timeouts
            reason = str(getattr(e, "reason", e))
        if time.monotonic() + delay > deadline:
            raise ResultsError(
                "results_upload_failed",
                f"could not {action} the API at {base} within "
                f"{settings.results_upload_seconds:g} s ({reason})",
            )
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def _api_error(e: urllib.error.HTTPError) -> tuple[str, str]:
    """The code and message of the API's JSON error, or the HTTP reason."""
    try:
        error = json.loads(e.read(64 * 1024))["error"]
        return str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError, OSError):
        return "error", str(e.reason)
