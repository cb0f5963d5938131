"""Uploaded datasets in the object directory: `OBJECTS/datasets/<id>/`.

Each folder has the layout `pixelscene synth` writes (`images/*.png`, `captions.jsonl`,
optionally `attributes.jsonl`), so a trainer takes it as `--data` as it is, plus
`dataset.json`: the record `{id, name, owner, images, captions, problems, bytes, created}`.
A folder only appears complete: uploads are unpacked and checked in a temporary folder that
is renamed into place, so a folder under its id always has its `dataset.json`. Dataset ids
are uuid4 hex like job ids and are checked before they touch a path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from pixelscene.data.dataset_check import check_dataset, dataset_root
from pixelscene.errors import PixelsceneError
from workers.jobstore.archives import unpack
from workers.jobstore.objects import write_json_atomic
from workers.jobstore.queues import TRAIN
from workers.jobstore.records import Keys, iso, now, valid_job_id

RECORD_NAME = "dataset.json"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_PROBLEMS = 1000  # kept in the record; `problem_count` has them all
SCAN_PAGE = 1000
# Folders beside the datasets: an upload being unpacked and checked, a dataset being removed.
INCOMING, DELETING = ".incoming-", ".deleting-"


class DatasetNotFoundError(PixelsceneError):
    """A dataset id that is malformed or names no uploaded dataset."""


def datasets_root(settings: Any) -> Path:
    """The folder every uploaded dataset lives under."""
    return Path(settings.objects_dir) / "datasets"


def valid_dataset_id(dataset_id: str) -> bool:
    """Dataset ids are uuid4 hex: 32 lowercase hex digits, nothing that can name a path."""
    return isinstance(dataset_id, str) and valid_job_id(dataset_id)


def dataset_dir(settings: Any, dataset_id: str) -> Path:
    """The folder of an uploaded dataset, ready to pass to a trainer as its data folder.

    Args:
        settings: any settings with `objects_dir` (the API's or a worker's).
        dataset_id: the id `POST /v1/datasets` answered with.

    Returns:
        `<objects_dir>/datasets/<id>`.

    Raises:
        DatasetNotFoundError: the id is malformed, or no complete dataset has it here (on a
            worker without the shared object directory, fetch it first with
            `workers.datasets.fetch_dataset`).
    """
    if not valid_dataset_id(dataset_id):
        raise DatasetNotFoundError(f"invalid dataset id {dataset_id!r} (32 lowercase hex digits)")
    folder = datasets_root(settings) / dataset_id
    if not (folder / RECORD_NAME).is_file():
        raise DatasetNotFoundError(f"no dataset {dataset_id} in {datasets_root(settings)}")
    return folder


def read_record(settings: Any, dataset_id: str) -> dict[str, Any]:
    """A dataset's record (`dataset.json`); raises DatasetNotFoundError as `dataset_dir`."""
    path = dataset_dir(settings, dataset_id) / RECORD_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:  # deleted between the check and the read
        raise DatasetNotFoundError(f"no dataset {dataset_id}") from None


class DatasetInUseError(PixelsceneError):
    """A queued or running training names the dataset; `jobs` holds their ids."""

    def __init__(self, dataset_id: str, jobs: list[str]) -> None:
        super().__init__(
            f"dataset {dataset_id} is used by {len(jobs)} queued or running training(s): "
            + ", ".join(jobs[:10])
        )
        self.jobs = jobs


class EmptyDatasetError(PixelsceneError):
    """An upload with no usable image; `problems` says why each file was left out."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__("the archive holds no usable image (320x200, under images/)")
        self.problems = problems


def upload_folder(settings: Any) -> Path:
    """A new private folder for one upload, beside the datasets (so that the finished one is
    renamed into place); folders a crashed upload or delete left behind a day ago go."""
    root = datasets_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - 86400
    for stale in root.glob(".*-*"):
        if _made_before(stale.name, cutoff):
            shutil.rmtree(stale, ignore_errors=True)
    folder = root / _side_name(INCOMING, uuid.uuid4().hex)
    folder.mkdir()
    return folder


def _side_name(prefix: str, rest: str) -> str:
    """`.incoming-<time>-<rest>` or `.deleting-<time>-<rest>`: the time it was made is in its
    name, as a renamed folder keeps its old times."""
    return f"{prefix}{int(time.time())}-{rest}"


def _made_before(name: str, cutoff: float) -> bool:
    for prefix in (INCOMING, DELETING):
        if name.startswith(prefix):
            made = name[len(prefix) :].split("-", 1)[0]
            return made.isdigit() and int(made) < cutoff
    return False


def store_dataset(
    settings: Any, archive: Path, work: Path, name: str | None = None, owner: str = ""
) -> dict[str, Any]:
    """Unpack an uploaded archive safely, check it and put it in place as a new dataset.

    Args:
        settings: any settings with `objects_dir`, `dataset_max_bytes`, `dataset_max_members`.
        archive: the uploaded file (zip, tar.gz or tar).
        work: the upload's own folder (`upload_folder`); the caller removes it afterwards,
            which removes everything of a refused upload.
        name: the dataset's name; None takes the archive's top-level folder name, if any.
        owner: who uploaded it, as the API names callers.

    Returns:
        The dataset's record, as in its `dataset.json`.

    Raises:
        ArchiveError: the archive is unsafe, too large or not an archive.
        EmptyDatasetError: nothing in it can be trained on.
    """
    unpacked = work / "unpacked"
    unpack(archive, unpacked, settings.dataset_max_bytes, settings.dataset_max_members)
    root, prefix = dataset_root(unpacked)
    check = check_dataset(root, prefix)
    problems = [p.as_dict() for p in check.problems]
    if not check.images:
        raise EmptyDatasetError(problems[:MAX_PROBLEMS])
    folder_name = prefix.rstrip("/")
    dataset_id = uuid.uuid4().hex
    record = {
        "id": dataset_id,
        "name": name or (folder_name if NAME_RE.fullmatch(folder_name) else None),
        "owner": owner,
        "images": check.images,
        "captions": check.captions,
        "problems": problems[:MAX_PROBLEMS],
        "problem_count": len(problems),
        "bytes": sum(p.stat().st_size for p in root.rglob("*") if p.is_file()),
        "created": iso(now()),
    }
    write_json_atomic(root / RECORD_NAME, record)
    os.rename(root, datasets_root(settings) / dataset_id)
    return record


def list_datasets(settings: Any) -> list[dict[str, Any]]:
    """Every dataset's record, newest first."""
    root = datasets_root(settings)
    records = []
    for folder in root.iterdir() if root.is_dir() else ():
        if valid_dataset_id(folder.name):
            try:
                records.append(read_record(settings, folder.name))
            except DatasetNotFoundError:
                continue  # deleted meanwhile
    return sorted(records, key=lambda rec: (rec["created"], rec["id"]), reverse=True)


def delete_dataset(r: redis.Redis, keys: Keys, settings: Any, dataset_id: str) -> None:
    """Remove a dataset no queued or running training names.

    Raises:
        DatasetNotFoundError: no such dataset.
        DatasetInUseError: a queued or running training names it.
    """
    folder = dataset_dir(settings, dataset_id)
    users = trainings_using(r, keys, dataset_id)
    if users:
        raise DatasetInUseError(dataset_id, users)
    # Out of sight first, so a training queued from now on finds no dataset; then look again
    # for one queued between the first look and the rename.
    trash = datasets_root(settings) / _side_name(DELETING, f"{dataset_id}-{uuid.uuid4().hex}")
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        raise DatasetNotFoundError(f"no dataset {dataset_id}") from None
    users = trainings_using(r, keys, dataset_id)
    if users:
        os.rename(trash, folder)
        raise DatasetInUseError(dataset_id, users)
    shutil.rmtree(trash, ignore_errors=True)


def trainings_using(r: redis.Redis, keys: Keys, dataset_id: str) -> list[str]:
    """Ids of the queued or running training jobs whose request names `dataset_id`, from
    the job records (every job is in `Keys.jobs`)."""
    found = []
    start = 0
    while True:
        ids = [raw.decode() for raw in r.zrange(keys.jobs, start, start + SCAN_PAGE - 1)]
        if not ids:
            return found
        start += len(ids)
        with r.pipeline(transaction=False) as p:
            for job_id in ids:
                p.hmget(keys.job(job_id), "kind", "status")
            heads = p.execute()
        live = [
            job_id
            for job_id, (kind, status) in zip(ids, heads, strict=True)
            if kind == TRAIN.encode() and status in (b"queued", b"running")
        ]
        if not live:
            continue
        with r.pipeline(transaction=False) as p:
            for job_id in live:
                p.hget(keys.job(job_id), "request")
            requests = p.execute()
        for job_id, raw in zip(live, requests, strict=True):
            request = json.loads(raw) if raw else None
            if isinstance(request, dict) and request.get("dataset") == dataset_id:
                found.append(job_id)
