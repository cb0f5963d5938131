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
from pathlib import Path
from typing import Any

from pixelscene.errors import PixelsceneError
from workers.jobstore.records import valid_job_id

RECORD_NAME = "dataset.json"


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
