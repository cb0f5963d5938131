"""Datasets studios upload to train on: POST, list, get and delete under /v1/datasets.

An upload is a zip or tar.gz of `images/` and `captions.jsonl` (the layout `pixelscene
synth` writes), sent as the body or as the multipart field `file`. It is unpacked safely
(`workers.jobstore.archives`), checked (`pixelscene.data.dataset_check`) and moved into
`OBJECTS/datasets/<id>/` in one rename (`workers.jobstore.datasets`), all within the request.
Datasets only feed trainings, so, like trainings, they need an admin key.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from service.api.common import storage_error
from service.auth import client_scope, requires
from service.errors import ApiError
from service.schemas import ValidationError
from service.state import state
from workers.jobstore.archives import ArchiveError
from workers.jobstore.datasets import (
    NAME_RE,
    DatasetInUseError,
    DatasetNotFoundError,
    EmptyDatasetError,
    delete_dataset,
    list_datasets,
    read_record,
    store_dataset,
    upload_folder,
)

bp = Blueprint("datasets", __name__)

# Body types taken as the archive itself; what it is comes from its first bytes.
ARCHIVE_TYPES = ("application/zip", "application/x-zip-compressed", "application/gzip",
                 "application/x-gzip", "application/x-tar")  # fmt: skip
ARCHIVE_STATUS = {"invalid_archive": 400, "unsafe_member": 400, "archive_too_large": 413}
CHUNK = 1 << 16
NAME_SCHEMA = {
    "type": "string",
    "pattern": NAME_RE.pattern,
    "description": "a name for the dataset (default: the archive's top-level folder, if any)",
}


@bp.post("/datasets")
@requires("admin")
def upload_dataset() -> tuple[Response, int]:
    """Upload a dataset archive; 201 with its id, counts and problems."""
    st = state()
    limit = st.settings.dataset_max_bytes
    request.max_content_length = limit + (1 << 20)  # room for a multipart envelope
    name = _name(request.args.get("name"))
    work = upload_folder(st.settings)
    try:
        archive = work / "archive"
        try:
            name = _receive(archive, limit) or name
        except RequestEntityTooLarge:
            raise _too_large(limit) from None
        record = store_dataset(st.settings, archive, work, name, owner=client_scope())
    except ArchiveError as e:
        raise ApiError(ARCHIVE_STATUS[e.code], e.code, str(e), {"member": e.member}) from None
    except EmptyDatasetError as e:
        raise ApiError(422, "empty_dataset", str(e), {"problems": e.problems}) from None
    except OSError as e:
        raise storage_error(e, "the dataset") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return jsonify(dataset_view(record)), 201


def _name(name: str | None) -> str | None:
    if name is not None and not NAME_RE.fullmatch(name):
        raise ValidationError({"name": f"must match {NAME_RE.pattern}"})
    return name


def _receive(archive: Path, limit: int) -> str | None:
    """Write the archive the request carries to `archive`: the body, or the multipart field
    `file`; returns the multipart field `name`, if any."""
    mimetype = request.mimetype
    name = None
    if mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise ValidationError({"file": "required: the dataset archive"})
        name = _name(request.form.get("name"))
        source: Any = upload.stream
    elif mimetype in ARCHIVE_TYPES:
        source = request.stream
    else:
        raise ApiError(
            415, "unsupported_media_type",
            "send the archive as the body (Content-Type application/zip or application/gzip) "
            "or as the multipart/form-data field `file`",
        )  # fmt: skip
    written = 0
    with open(archive, "wb") as out:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > limit:
                raise _too_large(limit)
            out.write(chunk)
    return name


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "payload_too_large",
        f"the upload is larger than {limit} bytes (PIXELSCENE_DATASET_MAX_BYTES)",
    )  # fmt: skip


@bp.get("/datasets")
@requires("admin")
def get_datasets() -> Response:
    """Every uploaded dataset, newest first (problems counted, not listed)."""
    records = list_datasets(state().settings)
    return jsonify({"datasets": [dataset_view(rec, problems=False) for rec in records]})


@bp.get("/datasets/<dataset_id>")
@requires("admin")
def get_dataset(dataset_id: str) -> Response:
    """One dataset: its counts and the problems its upload reported."""
    return jsonify(dataset_view(_load(dataset_id)))


@bp.delete("/datasets/<dataset_id>")
@requires("admin")
def remove_dataset(dataset_id: str) -> tuple[str, int]:
    """Delete a dataset; 409 while a queued or running training names it."""
    st = state()
    try:
        delete_dataset(st.redis, st.keys, st.settings, dataset_id)
    except DatasetNotFoundError:
        raise _not_found(dataset_id) from None
    except DatasetInUseError as e:
        raise ApiError(409, "dataset_in_use", str(e), {"jobs": e.jobs}) from None
    return "", 204


def _load(dataset_id: str) -> dict[str, Any]:
    try:
        return read_record(state().settings, dataset_id)
    except DatasetNotFoundError:
        raise _not_found(dataset_id) from None


def _not_found(dataset_id: str) -> ApiError:
    return ApiError(404, "dataset_not_found", f"no dataset {dataset_id!r}")


def dataset_view(record: dict[str, Any], problems: bool = True) -> dict[str, Any]:
    """What clients see of a dataset's record (`workers.jobstore.datasets`)."""
    view = {
        key: record.get(key)
        for key in ("id", "name", "images", "captions", "problem_count", "bytes", "created")
    }
    if problems:
        view["problems"] = record.get("problems", [])
    view["links"] = {"self": f"/v1/datasets/{record['id']}"}
    return view
