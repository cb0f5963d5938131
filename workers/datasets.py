"""An uploaded dataset on a worker: the shared object directory's folder, or a local copy
fetched from the API by a worker that cannot see it (`results_url` and `worker_key`).

The copy comes as a tar (`GET /v1/internal/datasets/<id>/archive`) and is unpacked with the
same checks as an upload (`workers.jobstore.archives`: no paths outside the folder, no links
or devices, the size and member limits) into a temporary folder beside the datasets, then
renamed into place, so `dataset_dir` never sees half a copy. The copy stays for the next
training on this worker; it is a copy, so deleting the dataset on the API does not remove it.
"""

from __future__ import annotations

import http.client
import os
import shutil
from pathlib import Path

from workers.jobstore.archives import unpack
from workers.jobstore.datasets import (
    RECORD_NAME,
    DatasetNotFoundError,
    dataset_dir,
    datasets_root,
    upload_folder,
    valid_dataset_id,
)
from workers.results import ResultsError, call_api
from workers.settings import Settings

CHUNK = 1 << 16
RECORD_ROOM = 1 << 20  # the limits count the dataset's files; the copy also has dataset.json


def fetch_dataset(settings: Settings, dataset_id: str) -> Path:
    """The folder of an uploaded dataset on this worker, fetched from the API if need be.

    Args:
        settings: the worker's settings; without `results_url` only the object directory
            is looked in.
        dataset_id: the id `POST /v1/datasets` answered with.

    Returns:
        `<objects_dir>/datasets/<id>`, ready to pass to a trainer as its data folder.

    Raises:
        DatasetNotFoundError: the id is malformed, or neither here nor on the API.
        ResultsError: the API could not be reached in `results_upload_seconds`, or refused.
        ArchiveError: the archive the API sent is not a safe dataset archive.
    """
    try:
        return dataset_dir(settings, dataset_id)
    except DatasetNotFoundError:
        if not settings.results_url or not valid_dataset_id(dataset_id):
            raise
    work = upload_folder(settings)
    try:
        archive = work / "archive.tar"
        _download(settings, dataset_id, archive)
        unpacked = work / "unpacked"
        limit = settings.dataset_max_bytes + RECORD_ROOM
        unpack(archive, unpacked, limit, settings.dataset_max_members + 1)
        if not (unpacked / RECORD_NAME).is_file():
            raise DatasetNotFoundError(f"the API sent dataset {dataset_id} without its record")
        try:
            os.rename(unpacked, datasets_root(settings) / dataset_id)
        except OSError:  # another job on this machine fetched it meanwhile
            pass
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dataset_dir(settings, dataset_id)


def _download(settings: Settings, dataset_id: str, archive: Path) -> None:
    path = f"/v1/internal/datasets/{dataset_id}/archive"
    what = f"dataset {dataset_id}"
    # Tar headers aside, the archive is as large as the files it holds.
    limit = settings.dataset_max_bytes + RECORD_ROOM + 1024 * (settings.dataset_max_members + 1)
    try:
        with call_api(settings, "GET", path, what, f"fetch {what} from") as response:
            written = 0
            with open(archive, "wb") as out:
                while chunk := response.read(CHUNK):
                    written += len(chunk)
                    if written > limit:
                        raise ResultsError(
                            "dataset_too_large",
                            f"{what} is larger than PIXELSCENE_DATASET_MAX_BYTES on this worker",
                        )
                    out.write(chunk)
    except ResultsError as e:
        if e.status == 404:
            raise DatasetNotFoundError(f"no dataset {dataset_id} on the API") from None
        raise
    except (OSError, http.client.HTTPException) as e:  # a broken connection, a full disk
        raise ResultsError("dataset_fetch_failed", f"fetching {what} failed ({e})") from None
